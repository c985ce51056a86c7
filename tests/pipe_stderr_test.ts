// Pipe mode (`target remote | kdump-gdbserver --stdio …`) with real gdb on a real dump: gdb runs
// the server with its stderr on a socket and reads that socket after every byte it receives while
// it is open. With FFI the server ends its stderr once the banner is out (cli/pipe_stderr.ts):
// gdb still shows the banner, then holds one socket instead of two, and a 4 MiB read through the
// pipe costs about what it costs over TCP (it took 50 times longer before). The server also asks
// for a send buffer that holds its largest replies (lib/transport.ts).
import assert from "node:assert/strict";
import { big, boot } from "./fixtures.ts";
import { runGdb, SERVER, SERVER_WITH_FFI as WITH_FFI, startServer } from "./gdb_helpers.ts";
import { MAX_PACKET_SIZE } from "../lib/rsp_session.ts";

const B = boot("x86_64-6.1");
const E = B.expected;
const DUMP = B.path("dump.zlib-d31.kdump");
const TEXT = big(E.system_map._text) + big(E.kaslr_offset);
const SPAN = 0x400000;

/** gdb's own open sockets (the pipe to the server, and its stderr while gdb holds it). */
const COUNT_SOCKETS = [
  "python import os",
  "python print('sockets:', sum(1 for f in os.listdir('/proc/self/fd') " +
  "if os.path.exists('/proc/self/fd/' + f) and " +
  "os.readlink('/proc/self/fd/' + f).startswith('socket:')))",
];

/** Commands that time a read of `SPAN` bytes of kernel text into `file`, inside gdb. */
function timedRead(file: string): string[] {
  return [
    "python import time; t0 = time.perf_counter()",
    `dump binary memory ${file} 0x${TEXT.toString(16)} 0x${(TEXT + BigInt(SPAN)).toString(16)}`,
    "python print('read seconds: %.3f' % (time.perf_counter() - t0))",
  ];
}

/**
 * The send buffer of the server's standard output (gdb's pipe, a socket pair), as `ss` tells it:
 * the server is gdb's child, and its descriptor 1 is the socket.
 */
const SERVER_SEND_BUFFER = [
  "python import os, re, subprocess",
  "python kids = subprocess.run(['pgrep', '-P', str(os.getpid())], capture_output=True, " +
  "text=True).stdout.split()",
  "python ss = subprocess.run(['ss', '-xmp'], capture_output=True, text=True).stdout",
  "python print('wmem_max:', open('/proc/sys/net/core/wmem_max').read().strip())",
  "python print('server send buffer:', [m.group(1) for k in kids for m in " +
  "re.finditer(r'pid=%s,fd=1\\).*?tb(\\d+)' % k, ss)])",
];

function seconds(out: string): number {
  const m = out.match(/^read seconds: ([\d.]+)$/m);
  assert.ok(m, out);
  return Number(m[1]);
}

function sockets(out: string): number[] {
  return [...out.matchAll(/^sockets: (\d+)$/gm)].map((m) => Number(m[1]));
}

Deno.test("pipe mode with FFI: the banner shows, then gdb stops polling the server's stderr", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const pipe = `target remote | ${[...WITH_FFI, "--stdio", DUMP].join(" ")}`;
    const r = await runGdb([
      pipe,
      ...COUNT_SOCKETS,
      ...SERVER_SEND_BUFFER,
      ...timedRead(`${tmp}/pipe.bin`),
      "detach",
    ]);
    // The banner reached gdb before the end of stderr, KASLR line included.
    assert.match(r.out, /^kdump-gdbserver \d+\.\d+\.\d+$/m, r.out);
    const offset = big(E.kaslr_offset).toString(16);
    assert.match(r.out, new RegExp(`^symbols: +file <vmlinux> -o 0x${offset}$`, "m"), r.out);
    assert.doesNotMatch(r.out, /^speed:/m, r.out);
    // gdb saw the end of the server's stderr and closed it: the protocol's socket is left.
    assert.deepEqual(sockets(r.out), [1], r.out);
    // The pipe's send buffer holds two of the largest replies (lib/transport.ts), as far as the
    // machine allows (net.core.wmem_max; the kernel doubles what it grants).
    const wmemMax = Number(r.out.match(/^wmem_max: (\d+)$/m)?.[1]);
    const granted = 2 * Math.min(2 * MAX_PACKET_SIZE, wmemMax);
    assert.match(r.out, new RegExp(`^server send buffer: \\['${granted}'\\]$`, "m"), r.out);

    // The same read over TCP, as the yardstick: the pipe no longer costs gdb a system call per
    // byte (6.5-13 s against 0.1-0.3 s for these 4 MiB before).
    const server = await startServer([DUMP], WITH_FFI);
    try {
      const tcp = await runGdb([
        `target remote 127.0.0.1:${server.port}`,
        ...timedRead(`${tmp}/tcp.bin`),
        "detach",
      ]);
      const overPipe = seconds(r.out);
      const overTcp = seconds(tcp.out);
      assert.ok(
        overPipe < 3 * overTcp + 0.5,
        `4 MiB over the pipe took ${overPipe} s, over TCP ${overTcp} s`,
      );
    } finally {
      await server.stop();
    }
    const a = await Deno.readFile(`${tmp}/pipe.bin`);
    const b = await Deno.readFile(`${tmp}/tcp.bin`);
    assert.equal(a.length, SPAN);
    assert.ok(a.every((v, i) => v === b[i]), "the pipe and TCP reads differ");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("pipe mode without FFI: stderr stays open and the banner says what that costs", async () => {
  const pipe = `target remote | ${[...SERVER, "--stdio", DUMP].join(" ")}`;
  const r = await runGdb([pipe, ...COUNT_SOCKETS, "x/2gx $sp", ...COUNT_SOCKETS, "detach"]);
  assert.match(r.out, /^speed: +gdb polls this pipe's stderr after every byte/m, r.out);
  assert.deepEqual(sockets(r.out), [2, 2], r.out);
});

Deno.test("pipe mode with --debug: stderr stays open for the packet log", async () => {
  const pipe = `target remote | ${[...WITH_FFI, "--stdio", "--debug", DUMP].join(" ")}`;
  const r = await runGdb([pipe, ...COUNT_SOCKETS, "x/2gx $sp", "detach"]);
  assert.match(r.out, /^\[stdio\] <- m[0-9a-f]+,[0-9a-f]+$/m, r.out);
  assert.deepEqual(sockets(r.out), [2], r.out);
});

Deno.test("pipe mode with stderr on the protocol's socket (2>&1): left alone, the session works", async () => {
  // gdb skips the banner's text before the first packet; shutting that socket down would end
  // the session.
  const pipe = `target remote | exec ${[...WITH_FFI, "--stdio", DUMP].join(" ")} 2>&1`;
  const r = await runGdb([pipe, "info threads", "p/x $pc", "detach"]);
  assert.match(r.out, /^\* 2 +Thread 2 "CPU 1: .*\[panic\]"/m, r.out);
  assert.match(r.out, /^\$1 = 0x[0-9a-f]+$/m, r.out);
  assert.match(r.out, /Inferior 1 \(Remote target\) detached/, r.out);
});

Deno.test("the larger send buffer is asked for on a Unix socket only, never on TCP", async () => {
  // Standard output as a Unix socket pair (gdb's pipe), then as a TCP connection (whose buffer
  // the kernel sizes by itself), then as a pipe: what the server's function does with each.
  const lib = new URL("../lib/libc_socket.ts", import.meta.url).href;
  const script = `
import socket, subprocess
def run(out):
    r = subprocess.run(["deno", "eval", "import { requestSendBuffer } from '${lib}'; " +
        "console.error(requestSendBuffer(1, 1 << 20))"], stdout=out, stderr=subprocess.PIPE, text=True)
    return r.stderr.strip()
u1, u2 = socket.socketpair()
before = u1.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
print("unix", run(u1.fileno()), before, u1.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
srv = socket.create_server(("127.0.0.1", 0))
c = socket.create_connection(srv.getsockname())
before = c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
print("tcp", run(c.fileno()), before, c.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
print("pipe", run(subprocess.PIPE))
`;
  const r = await new Deno.Command("python3", { args: ["-c", script] }).output();
  const out = new TextDecoder().decode(r.stdout);
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  const unix = out.match(/^unix (\w+) (\d+) (\d+)$/m);
  assert.ok(unix, out);
  assert.equal(unix[1], "true", out);
  assert.ok(Number(unix[3]) > Number(unix[2]), out);
  const tcp = out.match(/^tcp (\w+) (\d+) (\d+)$/m);
  assert.ok(tcp, out);
  assert.equal(tcp[1], "false", out);
  assert.equal(tcp[3], tcp[2], out);
  assert.match(out, /^pipe false$/m);
});
