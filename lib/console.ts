/**
 * A kdb-like text console on the RSP channel: a client that types lines instead of sending
 * packets gets a prompt and the monitor commands. Like kdb, the console hands the channel to the
 * RSP side as soon as its input holds a packet (gdb's first `$qSupported…`, or `$?#3f`); the RSP
 * packet `$3#33` hands it back. Nothing is sent before the client says something, so gdb, which
 * speaks first, never sees console text.
 *
 * @module
 */

import { checksum, type InputCursor } from "./rsp_wire.ts";

const DOLLAR = 0x24;
const HASH = 0x23;
const CR = 0x0d;
const LF = 0x0a;
const BACKSPACE = 0x08;
const DELETE = 0x7f;

/** The console prompt. */
export const CONSOLE_PROMPT = "kdump> ";

/** Lines the console adds to `help`. */
export const CONSOLE_HELP: readonly string[] = [
  "quit         close this connection",
  "(gdb connects to this same port: target remote HOST:PORT)",
];

/** What {@link TextConsole.consume} stopped on. */
export type ConsoleEvent =
  /** The input is drained. */
  | { kind: "drained" }
  /** The input holds an RSP packet: switch to RSP and handle this payload (a copy). */
  | { kind: "packet"; payload: Uint8Array }
  /** The user asked to close the connection. */
  | { kind: "quit" };

/** Runs a command line and writes its output. */
export type ConsoleRunner = (line: string, write: (text: string) => void) => void;

/** Line-buffered text console; the line is bounded, longer input is cut. */
export class TextConsole {
  #line: Uint8Array;
  #length = 0;
  #overflow = false;
  #lastWasCR = false;

  /**
   * @param run executes one command line
   * @param maxLine longest line kept (it must hold an RSP packet the client may start with)
   */
  constructor(private readonly run: ConsoleRunner, maxLine: number) {
    this.#line = new Uint8Array(maxLine);
  }

  /** Forget any partial line (when the channel comes back from RSP). */
  reset(): void {
    this.#length = 0;
    this.#overflow = false;
    this.#lastWasCR = false;
  }

  /** Consume input until it is drained, holds an RSP packet, or the user quits. */
  consume(input: InputCursor, write: (text: string) => void): ConsoleEvent {
    const bytes = input.bytes;
    while (input.pos < bytes.length) {
      const b = bytes[input.pos++];
      const afterCR = this.#lastWasCR;
      this.#lastWasCR = b === CR;
      if (b === CR || b === LF) {
        if (b === LF && afterCR) continue; // CR LF is one line end
        const line = new TextDecoder().decode(this.#line.subarray(0, this.#length)).trim();
        const overflow = this.#overflow;
        this.reset();
        this.#lastWasCR = b === CR;
        if (overflow) write("Line too long, ignored.\n");
        else if (line === "quit" || line === "exit") return { kind: "quit" };
        else if (line !== "") this.run(line, write);
        write(CONSOLE_PROMPT);
        continue;
      }
      if (this.#length === 0 && (b === 0x2b || b === 0x2d || b === 0x03)) continue; // + - ^C
      if (b === BACKSPACE || b === DELETE) {
        if (this.#length > 0) this.#length--;
        continue;
      }
      if (this.#length >= this.#line.length) {
        this.#overflow = true;
        continue;
      }
      this.#line[this.#length++] = b;
      const payload = this.#packetAtEnd();
      if (payload) {
        this.reset();
        return { kind: "packet", payload };
      }
    }
    return { kind: "drained" };
  }

  /**
   * The payload when the line ends with `$payload#hh` and that is a packet: a valid checksum, or
   * gdb's opening `qSupported` (kdb's rule, which does not look at the checksum).
   */
  #packetAtEnd(): Uint8Array | undefined {
    const n = this.#length;
    const line = this.#line;
    if (n < 4 || line[n - 3] !== HASH) return undefined;
    const start = line.lastIndexOf(DOLLAR, n - 4);
    if (start < 0) return undefined;
    const payload = line.slice(start + 1, n - 3);
    const digits = String.fromCharCode(line[n - 2], line[n - 1]);
    const declared = /^[0-9a-fA-F]{2}$/.test(digits) ? parseInt(digits, 16) : -1;
    const text = String.fromCharCode(...payload.subarray(0, 10));
    if (declared === checksum(payload) || text === "qSupported") return payload;
    return undefined;
  }
}
