/**
 * {@link QemuStub} through a worker thread, for when blocking sockets are not to be had (no
 * `--allow-ffi`, a host name rather than an address): the socket lives in a worker
 * (lib/qemu_stub_worker.ts); each call posts a request and waits for the answer with
 * `Atomics.wait` on a SharedArrayBuffer, so the synchronous dump stack (page cache, page-table
 * walks, the kernel view) can read a live guest unchanged. Stop replies after a resume and the
 * loss of the connection arrive asynchronously through {@link QemuStub.onEvent}.
 *
 * Buffer layout: lib/qemu_stub_layout.ts. The registers of the CPU that stopped are asked for by
 * the worker as the stop reply arrives and left in the buffer: gdb's first `g` of a stop is then
 * answered without a round trip through the worker.
 *
 * @module
 */

import { bytesHex, latin1 } from "./rsp_client.ts";
import {
  FIRST_PACKET,
  LiveError,
  type QemuStub,
  REQUEST_TIMEOUT_MS,
  type StubNotice,
} from "./qemu_stub.ts";
import {
  ANSWER_BYTES,
  PREFETCH_BYTES,
  PREFETCH_PENDING,
  PREFETCH_READY,
  SHARED_BYTES,
} from "./qemu_stub_layout.ts";

/** QEMU's gdbstub, reached synchronously through a worker thread. */
export class ThreadedStub implements QemuStub {
  readonly address: string;
  readonly link = "worker thread";
  #worker: Worker;
  #ctrl: Int32Array;
  #data: Uint8Array;
  #lost: string | undefined;
  /** Called for stop replies after a resume, unsolicited stops, and the loss of the link. */
  onEvent: (notice: StubNotice) => void = () => {};

  private constructor(address: string) {
    this.address = address;
    const sab = new SharedArrayBuffer(SHARED_BYTES);
    this.#ctrl = new Int32Array(sab, 0, 8);
    this.#data = new Uint8Array(sab, 32, ANSWER_BYTES);
    this.#prefetchData = new Uint8Array(sab, 32 + ANSWER_BYTES, PREFETCH_BYTES);
    this.#worker = new Worker(new URL("./qemu_stub_worker.ts", import.meta.url).href, {
      type: "module",
    });
    this.#worker.onmessage = (e: MessageEvent<StubNotice>) => {
      if (e.data.ev === "lost") this.#lost = e.data.reason;
      // QEMU makes the CPU that stopped the target of `g` (gdb_set_stop_cpu). An unsolicited
      // stop may be handled here after later requests: forget instead of guessing.
      else if (e.data.unsolicited) this.#general = undefined;
      else {
        this.#general = e.data.text.match(/thread:([^;]+)/)?.[1];
        this.#prefetchValid = true;
      }
      this.onEvent(e.data);
    };
    this.#post({ op: "init" }, sab);
  }

  /**
   * Connect to the stub at `host:port`.
   * @throws LiveError when nothing listens there
   */
  static connect(host: string, port: number): ThreadedStub {
    const stub = new ThreadedStub(`${host}:${port}`);
    const r = stub.#call({ op: "connect", host, port }, 5000);
    if (r.status !== 0) {
      stub.#worker.terminate();
      throw new LiveError(`cannot reach QEMU's gdbstub at ${host}:${port}: ${latin1(r.bytes)}`);
    }
    return stub;
  }

  /** Why the link is gone, once it is. */
  get lost(): string | undefined {
    return this.#lost;
  }

  #sab?: SharedArrayBuffer;

  #post(msg: Record<string, unknown>, sab?: SharedArrayBuffer): void {
    if (sab) this.#sab = sab;
    if (msg.op === "init") return;
    this.#worker.postMessage(msg.op === "connect" ? { ...msg, sab: this.#sab } : msg);
  }

  /** The stop's `g` reply, when this stop has had no request yet (lib/qemu_stub_layout.ts). */
  #takePrefetched(): string | undefined {
    if (!this.#prefetchValid) return undefined;
    this.#prefetchValid = false;
    if (this.#lost !== undefined) return undefined;
    Atomics.wait(this.#ctrl, 3, PREFETCH_PENDING, REQUEST_TIMEOUT_MS);
    if (Atomics.load(this.#ctrl, 3) !== PREFETCH_READY) return undefined;
    return latin1(this.#prefetchData.subarray(0, Atomics.load(this.#ctrl, 4)));
  }

  #prefetchData: Uint8Array;
  /** Whether no request has been made since the last stop (its `g` reply may be taken). */
  #prefetchValid = false;

  #call(msg: Record<string, unknown>, timeoutMs = REQUEST_TIMEOUT_MS) {
    // Any request but the first `g` of a stop: the worker has dropped the prefetched reply.
    this.#prefetchValid = false;
    if (this.#lost !== undefined && msg.op !== "close") {
      throw new LiveError(`QEMU's gdbstub at ${this.address}: ${this.#lost}`);
    }
    Atomics.store(this.#ctrl, 0, 0);
    this.#post(msg);
    const r = Atomics.wait(this.#ctrl, 0, 0, timeoutMs);
    if (r === "timed-out") {
      this.#lost = "no answer";
      throw new LiveError(
        `QEMU's gdbstub at ${this.address} did not answer within ${timeoutMs / 1000} s` +
          (msg.text === FIRST_PACKET
            ? " (is another debugger attached? QEMU's gdbstub serves one at a time)"
            : ""),
      );
    }
    const status = Atomics.load(this.#ctrl, 1);
    const n = Atomics.load(this.#ctrl, 2);
    return { status, bytes: this.#data.slice(0, n) };
  }

  /** The thread QEMU's `g`/`P`/`M` apply to, when known. */
  #general: string | undefined;

  /**
   * Make `id` (QEMU's form, `p01.02`) the thread of `g`, `P` and virtual `M`: one `Hg` unless it
   * already is (after a stop it is the CPU that stopped, which is the one gdb asks about first).
   */
  selectThread(id: string): void {
    if (this.#general === id) return;
    this.#general = undefined;
    const r = this.request(`Hg${id}`);
    if (r !== "OK") throw new LiveError(`QEMU's gdbstub refused thread ${id} (${r})`);
    this.#general = id;
  }

  /** Send one packet and return the stub's reply (qXfer data unescaped), as latin1 text. */
  request(packet: string, timeoutMs = REQUEST_TIMEOUT_MS): string {
    if (packet === "g") {
      const early = this.#takePrefetched();
      if (early !== undefined) return early;
    }
    const r = this.#call({ op: "packet", text: packet }, timeoutMs);
    if (r.status !== 0) throw new LiveError(`QEMU's gdbstub: ${latin1(r.bytes)}`);
    return latin1(r.bytes);
  }

  /** Run a QEMU monitor (HMP) command through `qRcmd`; its output text. */
  monitor(command: string): string {
    const r = this.#call({
      op: "monitor",
      text: "qRcmd," + bytesHex(new TextEncoder().encode(command)),
    });
    const text = new TextDecoder().decode(r.bytes);
    if (r.status !== 0) throw new LiveError(`QEMU monitor command "${command}": ${text}`);
    return text;
  }

  /** Read memory with `m` packets (≤ 0x800 bytes each): the readable prefix. */
  readMemory(address: bigint, length: number): Uint8Array {
    const r = this.#call({ op: "read", address: address.toString(16), length });
    if (r.status !== 0) throw new LiveError(`QEMU's gdbstub: ${latin1(r.bytes)}`);
    return r.bytes;
  }

  /** The start of `count` blocks `stride` apart: one request each (this link is the fallback). */
  sampleMemory(address: bigint, stride: number, count: number, length: number): Uint8Array {
    const out = new Uint8Array(count * length);
    for (let k = 0; k < count; k++) {
      try {
        out.set(this.readMemory(address + BigInt(k) * BigInt(stride), length), k * length);
      } catch (e) {
        if (this.#lost !== undefined) throw e;
        // an unreadable block stays zero
      }
    }
    return out;
  }

  /** Send a resume packet (`vCont;…`, `c`, `s`); its stop reply arrives through `onEvent`. */
  resume(packet: string): undefined {
    if (this.#lost !== undefined) {
      throw new LiveError(`QEMU's gdbstub at ${this.address}: ${this.#lost}`);
    }
    this.#general = undefined;
    this.#prefetchValid = false;
    // Not waited for: the worker sends it in order before any later request.
    this.#post({ op: "resume", text: packet });
  }

  /** Send the interrupt byte (0x03) to a running guest. */
  interrupt(): void {
    this.#general = undefined;
    this.#call({ op: "interrupt" });
  }

  /** Close the link, sending `finalPacket` first (e.g. `D;1`), and end the worker. */
  close(finalPacket?: string): void {
    try {
      if (this.#lost === undefined) this.#call({ op: "close", text: finalPacket }, 3000);
    } catch {
      // closing anyway
    }
    this.#lost ??= "closed";
    this.#worker.terminate();
  }
}
