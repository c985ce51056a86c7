/**
 * Shared setup of the fuzz, fault and security tests: fuzz contexts for the fake target and for a
 * real kernel dump, and a bounded real-gdb run.
 *
 * @module
 */

import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { AARCH64_LAYOUT } from "../lib/regs_aarch64.ts";
import { X86_64_LAYOUT } from "../lib/regs_x86_64.ts";
import type { Target } from "../lib/target.ts";
import { boot } from "./fixtures.ts";
import { runGdb } from "./gdb_helpers.ts";
import type { FuzzContext } from "./packet_fuzz.ts";
import { FAKE_BASE, type FakeTarget } from "./rsp_fake_target.ts";

function registerCount(target: Target): number {
  return (target.arch === "aarch64" ? AARCH64_LAYOUT : X86_64_LAYOUT).registers.length;
}

/** Fuzz context of the fake target: its region's edges and the holes around it. */
export function fakeContext(target: FakeTarget): FuzzContext {
  const size = BigInt(target.memory.length);
  return {
    addresses: [
      FAKE_BASE,
      FAKE_BASE + 0x1000n,
      FAKE_BASE + size - 8n,
      FAKE_BASE + size,
      FAKE_BASE - 1n,
      0xffff888000000000n,
    ],
    threadIds: target.threads().map((t) => t.id),
    registerCount: registerCount(target),
    monitorCommands: ["hello"],
    probeBase: FAKE_BASE,
  };
}

/** A kernel target on a fixture of the x86_64-6.1 boot, with its vmlinux, and its fuzz context. */
export function openKernelTarget(
  file: string,
  cacheBytes: number,
): { kernel: Kernel; target: KernelTarget; ctx: FuzzContext } {
  const B = boot("x86_64-6.1");
  const kernel = new Kernel(openDump([B.path(file)]), { vmlinux: B.vmlinux, cacheBytes });
  const target = new KernelTarget(kernel);
  const sym = (name: string) => {
    const v = kernel.symbol(name);
    if (v === undefined) throw new Error(`no symbol ${name}`);
    return v;
  };
  const direct = kernel.directMapBase ?? 0xffff888000000000n;
  const physTop = BigInt(kernel.dump.maxPfn * kernel.dump.pageSize);
  const ctx: FuzzContext = {
    addresses: [
      sym("linux_banner"),
      sym("init_task"),
      sym("jiffies"),
      sym("swapper_pg_dir"),
      kernel.textSegment()!,
      direct,
      direct + physTop - 8n,
      direct + physTop,
      0xffffffff80000000n, // below the kernel image
      0xffffc90000000000n, // vmalloc
      0xffffea0000000000n, // vmemmap
      0x400000n, // user space
    ],
    threadIds: target.threads().map((t) => t.id),
    registerCount: registerCount(target),
    monitorCommands: ["sys", "cache", "sym init_task", "vtop 0xffffffff81000000", "vtop"],
    probeBase: sym("linux_banner"),
  };
  return { kernel, target, ctx };
}

/** gdb in batch mode on `-ex` commands: its combined output (bounded to a minute). */
export async function runGdbBatch(commands: string[]): Promise<string> {
  const r = await runGdb(commands, { timeoutMs: 60_000 });
  return r.out;
}
