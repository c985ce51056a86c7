/**
 * A small QMP (QEMU Machine Protocol) client: JSON lines over TCP, commands answered in order,
 * asynchronous events (STOP, RESUME, SHUTDOWN…) handed to a callback. The live target uses it
 * to learn whether the guest runs, and to notice a guest resumed or stopped behind gdb's back.
 *
 * @module
 */

import { LiveError } from "./qemu_stub.ts";

/** An asynchronous QMP event. */
export interface QmpEvent {
  /** Event name, e.g. `STOP` or `RESUME`. */
  event: string;
  /** The event's `data` member, when it has one. */
  data?: Record<string, unknown>;
}

/** A connected QMP monitor. */
export class Qmp {
  /** `HOST:PORT` of the QMP socket. */
  readonly address: string;
  #conn: Deno.TcpConn;
  #pending: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  #closed = false;
  /** Called for every event. */
  onEvent: (e: QmpEvent) => void = () => {};
  /** Called once when the connection ends (QEMU quit or was killed). */
  onClose: () => void = () => {};

  private constructor(address: string, conn: Deno.TcpConn) {
    this.address = address;
    this.#conn = conn;
  }

  /**
   * Connect and negotiate capabilities.
   * @throws LiveError when nothing answers QMP there
   */
  static async connect(host: string, port: number): Promise<Qmp> {
    let conn: Deno.TcpConn;
    try {
      conn = await Deno.connect({ hostname: host, port });
    } catch (e) {
      throw new LiveError(
        `cannot reach QEMU's QMP at ${host}:${port}: ${e instanceof Error ? e.message : e}`,
      );
    }
    const qmp = new Qmp(`${host}:${port}`, conn);
    const greeting = new Promise<void>((resolve, reject) => {
      qmp.#pending.push({ resolve: () => resolve(), reject });
    });
    qmp.#readLoop();
    const timeout = setTimeout(() => qmp.close(), 5000);
    try {
      await greeting;
      await qmp.command("qmp_capabilities");
    } catch {
      qmp.close();
      throw new LiveError(
        `QEMU's QMP at ${host}:${port} did not greet within 5 s: not QMP, or another client ` +
          "holds it (QEMU serves one QMP client at a time)",
      );
    } finally {
      clearTimeout(timeout);
    }
    return qmp;
  }

  async #readLoop(): Promise<void> {
    const buf = new Uint8Array(65536);
    const dec = new TextDecoder();
    let text = "";
    try {
      for (;;) {
        const n = await this.#conn.read(buf);
        if (n === null) break;
        text += dec.decode(buf.subarray(0, n), { stream: true });
        let nl;
        while ((nl = text.indexOf("\n")) >= 0) {
          const line = text.slice(0, nl).trim();
          text = text.slice(nl + 1);
          if (line) this.#message(line);
        }
      }
    } catch {
      // the connection failed: same as closed
    }
    this.#closed = true;
    for (const p of this.#pending.splice(0)) p.reject(new LiveError("QMP connection closed"));
    this.onClose();
  }

  #message(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (typeof msg.event === "string") {
      this.onEvent({ event: msg.event, data: msg.data as Record<string, unknown> | undefined });
      return;
    }
    const p = this.#pending.shift();
    if (!p) return;
    if ("error" in msg) {
      const err = msg.error as { desc?: string };
      p.reject(new LiveError(`QMP: ${err.desc ?? JSON.stringify(err)}`));
    } else p.resolve(msg.return ?? msg.QMP);
  }

  /** Run one command; resolves with its `return` value. */
  command(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#closed) return Promise.reject(new LiveError("QMP connection closed"));
    const p = new Promise<unknown>((resolve, reject) => this.#pending.push({ resolve, reject }));
    const line = JSON.stringify(args ? { execute, arguments: args } : { execute }) + "\n";
    this.#conn.write(new TextEncoder().encode(line)).catch(() => {});
    return p;
  }

  /** Whether the guest's CPUs run (`query-status`). */
  async running(): Promise<boolean> {
    const r = await this.command("query-status") as { running?: boolean };
    return r.running === true;
  }

  /** Close the connection (later calls do nothing). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // already closed
    }
  }
}
