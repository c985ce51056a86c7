/**
 * A synchronous client of QEMU's gdbstub, as the live target uses it: the dump stack (page
 * cache, page-table walks, the kernel view) reads guest memory synchronously, so each request
 * returns its answer; stop replies after a resume, and the loss of the connection, arrive
 * asynchronously through {@link QemuStub.onEvent}.
 *
 * Two links implement it. With `--allow-ffi` (`-A`) and a numeric address, a blocking socket on
 * the main thread (lib/qemu_stub_direct.ts): a request costs two system calls. Otherwise the
 * socket lives in a worker thread (lib/qemu_stub_threaded.ts) and each request crosses it.
 * `KDUMP_QEMU_LINK=worker` picks the second (for comparisons).
 *
 * @module
 */

import { BlockingSocket } from "./libc_socket.ts";
import { DirectStub } from "./qemu_stub_direct.ts";
import { ThreadedStub } from "./qemu_stub_threaded.ts";

/** How long a request may take before the stub is declared unresponsive. */
export const REQUEST_TIMEOUT_MS = 15_000;

/** How long connecting may take. */
export const CONNECT_TIMEOUT_MS = 5_000;

/** The first packet of a connection (its answer tells whether the stub is ours to use). */
export const FIRST_PACKET = "qSupported:multiprocess+;xmlRegisters=i386";

/** Largest `m` QEMU 7.2 answers (larger ones get E22). */
export const MAX_M = 0x800;

/** `m` requests sent ahead of their replies: a page is two `m` packets, one round trip. */
export const READ_PIPELINE = 4;

/**
 * Small `m` requests of a scan ({@link QemuStub.sampleMemory}) sent ahead of their replies:
 * measured on QEMU 7.2, 8 in flight already bring a 10-byte read from 30 µs to 17 µs; more gain
 * nothing.
 */
export const SAMPLE_PIPELINE = 32;

export { LiveError } from "./errors.ts";

/** Something the stub said without being asked. */
export type StubNotice =
  | { ev: "stop"; text: string; unsolicited?: boolean }
  | { ev: "lost"; reason: string };

/** QEMU's gdbstub, reached synchronously. */
export interface QemuStub {
  /** `host:port`, for messages. */
  readonly address: string;
  /** How packets travel ("blocking socket" or "worker thread"), for the banner. */
  readonly link: string;
  /** Why the link is gone, once it is. */
  readonly lost: string | undefined;
  /** Called for stop replies after a resume, unsolicited stops, and the loss of the link. */
  onEvent: (notice: StubNotice) => void;
  /**
   * Make `id` (QEMU's form, `p01.02`) the thread of `g`, `P` and virtual `M`: one `Hg` unless it
   * already is (after a stop it is the CPU that stopped, which is the one gdb asks about first).
   */
  selectThread(id: string): void;
  /** Send one packet and return the stub's reply (qXfer data unescaped), as latin1 text. */
  request(packet: string, timeoutMs?: number): string;
  /**
   * Send one packet without waiting for its reply: `onReply` gets it when it arrives, in order
   * with every other reply (QEMU answers one packet after another). It may be held (up to 20
   * ms) to go with the next packet, never behind one sent after it. Links without it
   * make the caller wait, with {@link request}.
   */
  post?(packet: string, onReply: (reply: string) => void): void;
  /** Run a QEMU monitor (HMP) command through `qRcmd`; its output text. */
  monitor(command: string): string;
  /** Read memory with `m` packets (≤ {@link MAX_M} bytes each): the readable prefix. */
  readMemory(address: bigint, length: number): Uint8Array;
  /**
   * The first `length` (≤ {@link MAX_M}) bytes of `count` blocks `stride` apart from `address`,
   * block k at `k * length` of the result; a block that cannot be read is left zero. For scans
   * that look at the start of many pages: the packets are sent many at a time.
   */
  sampleMemory(address: bigint, stride: number, count: number, length: number): Uint8Array;
  /**
   * Send a resume packet (`vCont;…`, `c`, `s`). Its stop reply arrives through `onEvent`, or is
   * returned when it came before this returned (a link may wait a few milliseconds on the spot:
   * a single step, a breakpoint just ahead): the caller then reports it at once, sparing gdb's
   * next packet a wait on the thread pool.
   */
  resume(packet: string): StubNotice | undefined;
  /** Send the interrupt byte (0x03) to a running guest. */
  interrupt(): void;
  /** Close the link, sending `finalPacket` first (e.g. `D;1`). */
  close(finalPacket?: string): void;
}

/** Connecting to QEMU's gdbstub. */
export const QemuStub: { connect(host: string, port: number): QemuStub } = {
  /**
   * Connect to the stub at `host:port`, on the fastest link available.
   * @throws LiveError when nothing listens there
   */
  connect(host: string, port: number): QemuStub {
    const direct = linkChoice() !== "worker" && BlockingSocket.available(host);
    return direct ? DirectStub.connect(host, port) : ThreadedStub.connect(host, port);
  },
};

/** `KDUMP_QEMU_LINK`, when the environment may be read. */
function linkChoice(): string | undefined {
  try {
    const name = "KDUMP_QEMU_LINK";
    return Deno.permissions.querySync({ name: "env", variable: name }).state === "granted"
      ? Deno.env.get(name)
      : undefined;
  } catch {
    return undefined;
  }
}
