/**
 * A fake {@link Target} for the RSP tests: two threads whose names carry XML and RSP special
 * characters, fixed registers, one memory region (zero-heavy or random), a VMCOREINFO text and a
 * monitor command.
 *
 * @module
 */

import type { ArchName, MemoryRead, MonitorOutput, Target, ThreadInfo } from "../lib/target.ts";

/** Start of the fake memory region (a kernel direct-map address). */
export const FAKE_BASE = 0xffff888000100000n;

/** Thread names as gdb must show them. */
export const FAKE_THREAD_NAMES = ["CPU 0: idle", `CPU #1: crasher.sh (pid 105) <a&b> "q" $*}`];

/** VMCOREINFO text, with characters that need binary escapes on the wire. */
export const FAKE_VMCOREINFO = "OSRELEASE=6.1.0-fake\nPAGESIZE=4096\n" +
  "SYMBOL(init_uts_ns)=ffffffff82a12340\nNUMBER(phys_base)=-75497472\n" +
  "KERNELOFFSET=1a000000\nTEST(escapes)=#$}*\n";

/** Register values of the x86_64 fake, thread by thread. */
export const FAKE_X86_REGS: Record<number, Record<string, bigint>> = {
  1: {
    rip: 0xffffffff81e3b1c2n,
    rsp: 0xffffc90000083e98n,
    rbp: 0xffffc90000083ea8n,
    rax: 0n,
    rbx: 0x1111n,
    eflags: 0x246n,
    cs: 0x10n,
    ss: 0x18n,
    orig_rax: -1n,
    gs_base: 0xffff88803ec00000n,
  },
  2: {
    rip: 0xffffffff8155a0f6n,
    rsp: 0xffffc9000024bd50n,
    rbp: 0xffffc9000024bd60n,
    rax: 0x63n,
    rbx: 0x2222n,
    eflags: 0x10046n,
    cs: 0x10n,
    ss: 0x18n,
    orig_rax: 1n,
    fs_base: 0x7f1234567740n,
    gs_base: 0xffff88803ed00000n,
  },
};

/** Register values of the aarch64 fake. */
export const FAKE_ARM64_REGS: Record<number, Record<string, bigint>> = {
  1: {
    x0: 0n,
    x29: 0xffff80000800bd30n,
    x30: 0xffff800008015b7cn,
    sp: 0xffff80000800bd30n,
    pc: 0xffff800008015b80n,
    cpsr: 0x600003c5n,
  },
  2: {
    x0: 0x63n,
    x1: 0x1n,
    x29: 0xffff80000a3cbd10n,
    x30: 0xffff80000866a0a8n,
    sp: 0xffff80000a3cbd10n,
    pc: 0xffff80000866a0b0n,
    cpsr: 0x80000005n,
  },
};

/** What memory the fake holds. */
export type FakeFill = "zeros" | "random";

/** Options of {@link FakeTarget}. */
export interface FakeTargetOptions {
  arch?: ArchName;
  /** Size of the memory region in bytes. Default 1 MiB + 64 KiB. */
  memorySize?: number;
  /** Zero-heavy (a few words per page) or random bytes. Default zeros. */
  fill?: FakeFill;
  /** Extra threads after the two named ones (tests of thread lists that need many packets). */
  extraThreads?: number;
  /** Path offered through qXfer:exec-file:read. */
  execFile?: string;
  /** qOffsets TextSeg value. */
  textSegment?: bigint;
}

/** Deterministic memory: mostly zeros with a recognisable word every 512 bytes, or xorshift noise. */
export function fakeMemory(size: number, fill: FakeFill): Uint8Array {
  const mem = new Uint8Array(size);
  const view = new DataView(mem.buffer);
  if (fill === "random") {
    let x = 0x9e3779b9;
    for (let i = 0; i + 4 <= size; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      view.setUint32(i, x >>> 0, true);
    }
  } else {
    for (let i = 0; i + 8 <= size; i += 512) {
      view.setBigUint64(i, 0x1000n * BigInt(i) + 0xabn, true);
    }
  }
  // The first 64 bytes are the same for both fills: tests read them with x/8gx.
  for (let i = 0; i < 8; i++) view.setBigUint64(i * 8, 0x1111111111111111n * BigInt(i + 1), true);
  return mem;
}

/** The fake target. */
export class FakeTarget implements Target {
  readonly arch: ArchName;
  readonly memory: Uint8Array;
  readonly #threads: ThreadInfo[];
  readonly #options: FakeTargetOptions;

  constructor(options: FakeTargetOptions = {}) {
    this.#options = options;
    this.arch = options.arch ?? "x86_64";
    this.memory = fakeMemory(options.memorySize ?? 0x110000, options.fill ?? "zeros");
    this.#threads = [
      { id: 1, name: FAKE_THREAD_NAMES[0], core: 0 },
      { id: 2, name: FAKE_THREAD_NAMES[1], core: 1, extra: "crashed & <panicked>" },
    ];
    for (let i = 0; i < (options.extraThreads ?? 0); i++) {
      this.#threads.push({ id: 3 + i, name: `task ${3 + i}` });
    }
  }

  threads(): ThreadInfo[] {
    return this.#threads;
  }

  stopThread(): number {
    return 2;
  }

  stopSignal(): number {
    return 11;
  }

  registers(threadId: number): ReadonlyMap<string, bigint> {
    const table = this.arch === "aarch64" ? FAKE_ARM64_REGS : FAKE_X86_REGS;
    return new Map(Object.entries(table[threadId] ?? {}));
  }

  readMemory(address: bigint, length: number): MemoryRead {
    const end = FAKE_BASE + BigInt(this.memory.length);
    if (address < FAKE_BASE || address >= end) {
      return { data: new Uint8Array(0), error: "address outside the fake region" };
    }
    const offset = Number(address - FAKE_BASE);
    const n = Math.min(length, this.memory.length - offset);
    const data = this.memory.subarray(offset, offset + n);
    return n < length ? { data, error: "end of the fake region" } : { data };
  }

  execFile(): string | undefined {
    return this.#options.execFile;
  }

  textSegment(): bigint | undefined {
    return this.#options.textSegment;
  }

  vmcoreinfo(): Uint8Array {
    return new TextEncoder().encode(FAKE_VMCOREINFO);
  }

  monitor(command: string, out: MonitorOutput): boolean {
    if (command !== "hello") return false;
    out("hello from the fake target\n");
    return true;
  }

  monitorHelp(): string[] {
    return ["hello        say hello"];
  }
}
