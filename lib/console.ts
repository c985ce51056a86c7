/**
 * The text side of the RSP channel: kdb's console. A client that types lines gets the
 * `[N]kdb> ` prompt and kdb's commands. As in kdb (kdb_io.c), the line goes to the RSP side as
 * soon as the input ends with `$?#3f` or `$qSupported` (gdb's first packet, before its checksum
 * has arrived: the RSP side then reads the rest and checks it like any packet), or when the
 * `kgdb` command is typed; the RSP packet `$3#33` hands it back. Beyond kdb, a whole packet with a
 * valid checksum also switches (so clients that open with another packet, such as lldb's
 * `QStartNoAckMode`, still connect).
 *
 * Telnet negotiation (IAC sequences) and the NUL of telnet's CR NUL are ignored, so
 * `telnet HOST PORT` works as well as `nc`.
 *
 * @module
 */

import { checksum, type InputCursor } from "./rsp_wire.ts";

const CR = 0x0d;
const LF = 0x0a;
const NUL = 0x00;
const BACKSPACE = 0x08;
const DELETE = 0x7f;
const IAC = 0xff;
const SB = 0xfa;
const SE = 0xf0;
const WILL = 0xfb;
const DONT = 0xfe;
/** Longest telnet subnegotiation followed (terminal type, window size: a few bytes). */
const MAX_SUBNEGOTIATION = 64;

/** Longest command line kept; longer lines are refused as kdb refuses them. */
export const MAX_CONSOLE_LINE = 4096;

/** The console's own commands, for `help`. */
export const CONSOLE_HELP: readonly string[] = [
  "quit         close this connection (gdb connects to this same port: target remote HOST:PORT)",
];

/** kdb's input triggers that hand the line to the gdb stub. */
const TRIGGERS = ["$?#3f", "$qSupported"].map((t) => new TextEncoder().encode(t));
const TAIL = Math.max(...TRIGGERS.map((t) => t.length));

/** What {@link TextConsole.consume} stopped on. */
export type ConsoleEvent =
  /** The input is drained. */
  | { kind: "drained" }
  /** Switch to RSP: feed `replay` (the trigger's bytes, possibly empty) then the rest. */
  | { kind: "rsp"; replay: Uint8Array }
  /** The user asked to close the connection. */
  | { kind: "quit" }
  /** A command let the target run (`go`, `ss`): kdb reads nothing more until it stops. */
  | { kind: "running" };

/** What a command line leads to. */
export type ConsoleAction = "continue" | "kgdb" | "running";

/** Runs a command line, writing its output. */
export type ConsoleRunner = (line: string, write: (text: string) => void) => ConsoleAction;

/** Line-buffered kdb console. */
export class TextConsole {
  #line = new Uint8Array(MAX_CONSOLE_LINE);
  #length = 0;
  #overflow = false;
  #lastWasCR = false;
  #tail = new Uint8Array(TAIL);
  #tailLength = 0;
  /** Telnet state: 0 normal, 1 after IAC, 2 after IAC WILL/WONT/DO/DONT, 3 in SB, 4 IAC in SB. */
  #telnet = 0;
  /** Bytes left of a subnegotiation before it is given up (stray 0xff 0xfa must not eat input). */
  #sbLeft = 0;

  /**
   * @param run executes one command line
   * @param prompt the prompt to show after each line
   */
  constructor(private readonly run: ConsoleRunner, private readonly prompt: () => string) {}

  /** Forget any partial line (when the channel comes back from RSP). */
  reset(): void {
    this.#length = 0;
    this.#overflow = false;
    this.#lastWasCR = false;
    this.#tailLength = 0;
    this.#telnet = 0;
  }

  /** Consume input until it is drained, hands the line to RSP, or the user quits. */
  consume(input: InputCursor, write: (text: string) => void): ConsoleEvent {
    const bytes = input.bytes;
    while (input.pos < bytes.length) {
      const b = bytes[input.pos++];
      if (this.#telnet !== 0 || b === IAC) {
        this.#telnetByte(b);
        continue;
      }
      if (b === NUL) continue; // telnet's CR NUL
      const afterCR = this.#lastWasCR;
      this.#lastWasCR = b === CR;
      if (b === CR || b === LF) {
        if (b === LF && afterCR) continue; // CR LF is one line end
        const typed = new TextDecoder().decode(this.#line.subarray(0, this.#length));
        const line = typed.trim();
        const overflow = this.#overflow;
        this.reset();
        this.#lastWasCR = b === CR;
        let action: ConsoleAction = "continue";
        if (overflow) write("kdb_parse: command buffer overflow, command ignored\n");
        else if (line === "quit" || line === "exit") return { kind: "quit" };
        // Only a line with nothing at all repeats kdb's last command (blanks reset it, as in kdb).
        else action = this.run(line === "" ? typed : line, write);
        if (action === "kgdb") return { kind: "rsp", replay: new Uint8Array(0) };
        // kdb prints no prompt after `go` or `ss`: its next is after the entry line, at the stop.
        if (action === "running") return { kind: "running" };
        write(this.prompt());
        continue;
      }
      if (this.#length === 0 && (b === 0x2b || b === 0x2d || b === 0x03)) continue; // + - ^C
      if (b === BACKSPACE || b === DELETE) {
        if (this.#length > 0) this.#length--;
        if (this.#tailLength > 0) this.#tailLength--;
        continue;
      }
      if (this.#length < this.#line.length) this.#line[this.#length++] = b;
      else this.#overflow = true;
      const replay = this.#pushTail(b) ?? this.#packetAtEnd();
      if (replay) {
        this.reset();
        return { kind: "rsp", replay };
      }
    }
    return { kind: "drained" };
  }

  /** Track the last bytes typed; the trigger's bytes when they end with one. */
  #pushTail(b: number): Uint8Array | undefined {
    const tail = this.#tail;
    if (this.#tailLength === TAIL) {
      tail.copyWithin(0, 1);
      this.#tailLength--;
    }
    tail[this.#tailLength++] = b;
    for (const t of TRIGGERS) {
      if (this.#tailLength < t.length) continue;
      let match = true;
      for (let i = 0; i < t.length && match; i++) {
        match = tail[this.#tailLength - t.length + i] === t[i];
      }
      if (match) return t.slice();
    }
    return undefined;
  }

  /** The line's tail from its last `$` when it is a packet `$payload#hh` with a valid checksum. */
  #packetAtEnd(): Uint8Array | undefined {
    const n = this.#length;
    const line = this.#line;
    if (this.#overflow || n < 4 || line[n - 3] !== 0x23) return undefined;
    const start = line.lastIndexOf(0x24, n - 4);
    if (start < 0) return undefined;
    const digits = String.fromCharCode(line[n - 2], line[n - 1]);
    if (!/^[0-9a-fA-F]{2}$/.test(digits)) return undefined;
    if (parseInt(digits, 16) !== checksum(line, start + 1, n - 3)) return undefined;
    return line.slice(start, n);
  }

  #telnetByte(b: number): void {
    switch (this.#telnet) {
      case 0: // IAC
        this.#telnet = 1;
        return;
      case 1:
        if (b >= WILL && b <= DONT) this.#telnet = 2;
        else if (b === SB) {
          this.#telnet = 3;
          this.#sbLeft = MAX_SUBNEGOTIATION;
        } else this.#telnet = 0; // a two-byte command (or IAC IAC, a data 0xff: not text)
        return;
      case 2: // the option byte
        this.#telnet = 0;
        return;
      case 3:
        if (b === IAC) this.#telnet = 4;
        else if (--this.#sbLeft <= 0) this.#telnet = 0;
        return;
      default:
        this.#telnet = b === SE ? 0 : 3;
    }
  }
}
