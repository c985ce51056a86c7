/**
 * The end of the banner in pipe mode (`target remote | kdump-gdbserver --stdio …`).
 *
 * gdb runs the server with its stderr on a socket and, while that socket is open, reads it
 * after every byte it receives from the server, to show the server's messages as they come:
 * one system call per byte, which made a 4 MiB memory read take 6.5 s instead of 0.12 s (gdb 16;
 * gdb 13: 12.3 s instead of 0.2 s). So once the banner is out the server ends its stderr
 * (lib/libc_file.ts), and later messages are not shown; `--debug`, which logs every packet
 * there, keeps it.
 *
 * @module
 */

import { endStandardError } from "../lib/libc_file.ts";

/**
 * End stderr for gdb once the banner is written (see the module's text), or say in one banner
 * line why not, when that costs speed: without FFI the server cannot end it.
 */
export function finishPipeBanner(debug: boolean, log: (line: string) => void): void {
  if (debug || Deno.stderr.isTerminal() || endStandardError()) return;
  if (Deno.permissions.querySync({ name: "ffi" }).state === "granted") return; // not a socket
  log(
    "speed:        gdb polls this pipe's stderr after every byte it reads, which slows large " +
      "reads; with FFI (deno run -A) the server ends its stderr here, or serve over --port",
  );
}
