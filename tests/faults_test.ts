/**
 * Connection faults (issue 8): clients that vanish mid-packet, mid-reply and between packets,
 * 1000 connect/disconnect cycles without leaking file descriptors, two clients at once, a client
 * that never reads (server memory stays bounded, other clients unaffected), and `--stdio` ending
 * cleanly when its pipe closes. After every fault the server gives the same answers as before.
 */

import assert from "node:assert/strict";
import { type RspServer, serveTcp } from "../lib/transport.ts";
import { framePacket, latin1Bytes } from "../lib/rsp_wire.ts";
import {
  normalTranscript,
  replyPayloads,
  ServerLog,
  tcpExchange,
  TcpFuzzClient,
} from "./packet_fuzz.ts";
import { FAKE_BASE, FakeTarget } from "./rsp_fake_target.ts";
import { fakeContext } from "./fault_support.ts";
import { boot } from "./fixtures.ts";
import { SERVER } from "./gdb_helpers.ts";
import { Rng } from "./fuzz_rng.ts";
import { LiveError } from "../lib/errors.ts";
import type { RunControl } from "../lib/target.ts";

const target = new FakeTarget({ memorySize: 4 << 20, fill: "random" });
const ctx = fakeContext(target);

/** Open file descriptors of this process (read by `ls`: Deno guards /proc/self itself). */
function openFds(): number {
  const out = new Deno.Command("ls", { args: [`/proc/${Deno.pid}/fd`], stdout: "piped" })
    .outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => l.trim()).length - 1;
}

async function transcript(port: number): Promise<string[]> {
  const client = await TcpFuzzClient.connect(port);
  try {
    return await normalTranscript(tcpExchange(client), ctx);
  } finally {
    await client.close();
  }
}

/** Wait until the server has no session left (sessions end asynchronously after a close). */
async function idle(server: RspServer, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (server.activeSessions > 0) {
    if (Date.now() > deadline) throw new Error(`${server.activeSessions} sessions still open`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function withServer(body: (server: RspServer, log: ServerLog) => Promise<void>) {
  const log = new ServerLog();
  const server = await serveTcp(target, { port: 0, log: log.log });
  try {
    await body(server, log);
    assert.deepEqual(log.problems(), []);
  } finally {
    await server.close();
  }
}

/** A handshake in ack mode, then no-ack mode: gdb's opening. */
async function handshake(c: TcpFuzzClient): Promise<void> {
  const ex = tcpExchange(c);
  await ex("qSupported:xmlRegisters=i386");
  await ex("QStartNoAckMode");
}

Deno.test("clients vanishing mid-packet, mid-reply and between packets leave the server serving", async () => {
  await withServer(async (server) => {
    const before = await transcript(server.port);
    const rng = new Rng(0xfa17);
    const bigRead = latin1Bytes(
      Array.from({ length: 8 }, (_, i) =>
        new TextDecoder().decode(
          framePacket(`m${(FAKE_BASE + BigInt(i) * 0x10000n).toString(16)},10000`),
        )).join(""),
    );
    for (let round = 0; round < 60; round++) {
      const c = await TcpFuzzClient.connect(server.port);
      const kind = round % 3;
      if (kind === 0) {
        // Mid-packet: part of a request, then gone.
        await handshake(c);
        const p = framePacket(`m${FAKE_BASE.toString(16)},1000`);
        await c.write(p.subarray(0, 1 + rng.int(p.length - 1)));
      } else if (kind === 1) {
        // Mid-reply: 1 MiB of replies asked, a few bytes read, gone (the kernel resets the
        // connection because unread data is pending).
        await handshake(c);
        c.clear();
        await c.write(bigRead);
        await c.until(() => c.length > rng.int(100_000), 5000);
      } else {
        // Between packets.
        await handshake(c);
        await tcpExchange(c)("qfThreadInfo");
      }
      await c.close();
    }
    await idle(server);
    assert.deepEqual(await transcript(server.port), before);
  });
});

Deno.test("1000 connect/disconnect cycles: no file descriptor leaked, same answers", async () => {
  await withServer(async (server, log) => {
    const before = await transcript(server.port);
    for (let i = 0; i < 10; i++) await (await TcpFuzzClient.connect(server.port)).close();
    await idle(server);
    const fds = openFds();
    for (let i = 0; i < 1000; i++) {
      const c = await TcpFuzzClient.connect(server.port);
      if (i % 4 === 0) await handshake(c);
      else if (i % 4 === 1) await c.write(latin1Bytes("$qSupp"));
      await c.close();
    }
    await idle(server);
    // A leak would leave one descriptor per session; other tests' workers and child processes
    // may still be closing theirs meanwhile, so only growth counts.
    const after = openFds();
    assert.ok(
      after <= fds + 5,
      `open file descriptors: ${fds} before 1000 sessions, ${after} after`,
    );
    assert.equal(log.problems().length, 0);
    assert.deepEqual(await transcript(server.port), before);
  });
});

Deno.test("two clients at once get the same answers as one alone", async () => {
  await withServer(async (server) => {
    const alone = await transcript(server.port);
    const [a, b] = await Promise.all([transcript(server.port), transcript(server.port)]);
    assert.deepEqual(a, alone);
    assert.deepEqual(b, alone);
    // And with bulk reads interleaved on both.
    const bulk = async () => {
      const c = await TcpFuzzClient.connect(server.port);
      await handshake(c);
      const ex = tcpExchange(c);
      const out: string[] = [];
      for (let i = 0; i < 16; i++) {
        out.push(...await ex(`m${(FAKE_BASE + BigInt(i) * 0x10000n).toString(16)},10000`));
      }
      await c.close();
      return out;
    };
    const [x, y] = await Promise.all([bulk(), bulk()]);
    assert.equal(x.length, 16);
    assert.deepEqual(x, y);
  });
});

Deno.test("clients beyond maxClients are refused with a line; a freed place is served", async () => {
  const lines: string[] = [];
  const server = await serveTcp(target, { port: 0, maxClients: 2, log: (l) => lines.push(l) });
  try {
    const alone = await transcript(server.port);
    const held = [
      await TcpFuzzClient.connect(server.port),
      await TcpFuzzClient.connect(server.port),
    ];
    for (const c of held) await handshake(c);
    assert.equal(server.activeSessions, 2);
    // A third connection is told why, in its own terms, then closed: a console user (silent)
    // gets a line of text, gdb an error reply to its first packet.
    const reason = "2 clients already connected, the most served at once";
    assert.equal(await refusedWith(server.port), `kdump-gdbserver: ${reason}\n`);
    const gdbSaw = await refusedWith(server.port, "$qSupported#37");
    assert.equal(gdbSaw, `+${new TextDecoder().decode(framePacket(`E.${reason}`))}`);
    const refused = lines.filter((l) => l.includes("] refused: "));
    assert.equal(refused.length, 2, lines.join("\n"));
    assert.match(refused[0], /^\[127\.0\.0\.1:\d+\] refused: 2 clients already connected/);
    // The two held sessions still answer, and once one leaves the next client is served.
    assert.deepEqual(await tcpExchange(held[0])("?"), await tcpExchange(held[1])("?"));
    await held[0].close();
    await waitFor(() => server.activeSessions < 2);
    assert.deepEqual(await transcript(server.port), alone);
    await held[1].close();
  } finally {
    await server.close();
  }
});

Deno.test("--once: a second client is told why while the first is served; then the port closes", async () => {
  const lines: string[] = [];
  const server = await serveTcp(target, { port: 0, once: true, log: (l) => lines.push(l) });
  try {
    const first = await TcpFuzzClient.connect(server.port);
    await handshake(first);
    const reason = "this server serves one client (--once), and it is connected";
    assert.equal(
      await refusedWith(server.port, "$qSupported#37"),
      `+${new TextDecoder().decode(framePacket(`E.${reason}`))}`,
    );
    assert.ok(lines.some((l) => l.endsWith(`refused: ${reason}`)), lines.join("\n"));
    // The first client is served on, and when it leaves the server ends.
    assert.ok((await tcpExchange(first)("?")).length > 0);
    await first.close();
    await server.finished;
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.port }));
  } finally {
    await server.close();
  }
});

/** Connect, send `first` if given, and read everything until the server closes. */
async function refusedWith(port: number, first?: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    if (first) await conn.write(new TextEncoder().encode(first));
    let text = "";
    const buf = new Uint8Array(256);
    for (let n; (n = await conn.read(buf)) !== null;) {
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    conn.close();
  }
}

async function waitFor(done: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A server process on a real dump: its port and pid. */
async function spawnServer(args: string[]) {
  const child = new Deno.Command(SERVER[0], {
    args: [...SERVER.slice(1), "--port", "0", ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = child.stderr.getReader();
  const pump = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += new TextDecoder().decode(value);
    }
  })();
  const deadline = Date.now() + 60_000;
  let port = 0;
  while (!port) {
    const m = text.match(/listening on [^\s]+:(\d+)/);
    if (m) port = Number(m[1]);
    else if (Date.now() > deadline) {
      child.kill();
      throw new Error(`server did not start: ${text}`);
    } else await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    pid: child.pid,
    stderr: () => text,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await pump.catch(() => {});
    },
  };
}

/** Resident memory of a process, in KiB (read by `cat`: Deno guards /proc/PID itself). */
function rssKiB(pid: number): number {
  const out = new Deno.Command("cat", { args: [`/proc/${pid}/status`], stdout: "piped" })
    .outputSync();
  return Number(/VmRSS:\s+(\d+)/.exec(new TextDecoder().decode(out.stdout))![1]);
}

Deno.test("a client that never reads: server memory stays bounded, others unaffected", async () => {
  const B = boot("x86_64-6.1");
  const server = await spawnServer([B.path("dump.zlib-d31.kdump"), "--cache-mb", "8"]);
  try {
    // The kernel's direct map (from the banner): real pages, through the page cache.
    const base = /direct map: +0x([0-9a-f]+)/.exec(server.stderr());
    assert.ok(base, server.stderr());
    const direct = BigInt(`0x${base[1]}`) + 0x1000000n;
    const reads = Array.from(
      { length: 64 },
      (_, i) => `m${(direct + BigInt(i) * 0x10000n).toString(16)},10000`,
    );
    const session = async () => {
      const c = await TcpFuzzClient.connect(server.port);
      await handshake(c);
      const ex = tcpExchange(c, 30_000);
      const out: string[] = [];
      for (const r of reads.slice(0, 8)) out.push((await ex(r))[0].slice(0, 64));
      out.push(...await ex("qXfer:threads:read::0,fff"));
      await c.close();
      return out;
    };
    const before = await session();
    const rss0 = rssKiB(server.pid);

    // The stuck client: asks for megabytes of replies and never reads them.
    const stuck = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    let sent = 0;
    const request = latin1Bytes(
      reads.map((r) => new TextDecoder().decode(framePacket(r))).join(""),
    );
    await stuck.write(latin1Bytes("+"));
    for (let i = 0; i < 400; i++) {
      const w = stuck.write(request);
      w.catch(() => {}); // a write still pending fails when the connection closes below
      const t = await Promise.race([w, new Promise((r) => setTimeout(r, 1000, "blocked"))]);
      if (t === "blocked") break; // the server stopped reading: backpressure works
      sent += request.length;
    }
    const asked = (sent / request.length) * reads.length * 0x20000;
    const rss1 = rssKiB(server.pid);
    // Other clients are served as before while the stuck one waits.
    assert.deepEqual(await session(), before);
    const rss2 = rssKiB(server.pid);
    const grown = Math.max(rss1, rss2) - rss0;
    console.log(
      `never-reading client: ${sent} request bytes accepted, ${(asked / 1048576).toFixed(0)} MiB ` +
        `of replies asked; server RSS ${rss0} KiB -> ${rss1} -> ${rss2} KiB`,
    );
    assert.ok(asked > 32 << 20, "the stuck client asked for more than the server may buffer");
    assert.ok(grown < 64 * 1024, `server RSS grew by ${grown} KiB`);
    stuck.close();
    assert.deepEqual(await session(), before);
    assert.doesNotMatch(server.stderr(), /session ended by error|Uncaught|panicked/);
  } finally {
    await server.stop();
  }
});

/** Run the server with --stdio on a real dump; `drive` talks to it, then its pipes close. */
async function stdio(
  drive: (
    w: WritableStreamDefaultWriter<Uint8Array>,
    out: ReadableStream<Uint8Array>,
    stderr: () => string,
  ) => Promise<void>,
) {
  const B = boot("x86_64-6.1");
  const child = new Deno.Command(SERVER[0], {
    args: [...SERVER.slice(1), "--stdio", B.path("dump.zlib-d31.kdump")],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let errText = "";
  const pump = (async () => {
    for await (const chunk of child.stderr) errText += new TextDecoder().decode(chunk);
  })();
  const writer = child.stdin.getWriter();
  await drive(writer, child.stdout, () => errText);
  const timeout = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const status = await child.status;
  clearTimeout(timeout);
  await pump;
  return { status, stderr: errText };
}

async function readReply(out: ReadableStreamDefaultReader<Uint8Array>): Promise<string[]> {
  let data = new Uint8Array(0);
  for (;;) {
    const replies = replyPayloads(data);
    if (replies.length > 0) return replies;
    const { value, done } = await out.read();
    if (done) throw new Error("stdout ended");
    const grown = new Uint8Array(data.length + value.length);
    grown.set(data);
    grown.set(value, data.length);
    data = grown;
  }
}

Deno.test("--stdio ends cleanly when its pipe closes: between packets, mid-packet, mid-reply", async () => {
  // Between packets.
  let r = await stdio(async (w, out) => {
    const reader = out.getReader();
    await w.write(framePacket("qSupported"));
    const replies = await readReply(reader);
    assert.match(replies[0], /^PacketSize=/);
    await w.close();
    await reader.cancel();
  });
  assert.equal(r.status.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /error|Uncaught|panicked/i);
  // Mid-packet.
  r = await stdio(async (w, out) => {
    await w.write(latin1Bytes("+$qSupported:xmlRegisters=i3"));
    await w.close();
    await out.cancel();
  });
  assert.equal(r.status.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /error|Uncaught|panicked/i);
  // Mid-reply: gdb asks for megabytes and goes away without reading them.
  r = await stdio(async (w, out, stderr) => {
    const reader = out.getReader();
    await w.write(framePacket("qSupported"));
    await readReply(reader);
    const base = /direct map: +0x([0-9a-f]+)/.exec(stderr());
    assert.ok(base, stderr());
    const direct = BigInt(`0x${base[1]}`) + 0x1000000n;
    let many = "";
    for (let i = 0; i < 64; i++) {
      many += new TextDecoder().decode(
        framePacket(`m${(direct + BigInt(i) * 0x10000n).toString(16)},10000`),
      );
    }
    await w.write(latin1Bytes("+" + many));
    await reader.read();
    await reader.cancel();
    await w.close();
  });
  assert.equal(r.status.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /Uncaught|panicked/i);
});

Deno.test("a live guest whose stop cannot be read as gdb attaches: one line, the guest let go, the next gdb served", async () => {
  let failures = 1;
  const released: boolean[] = [];
  const run = {
    attach: () => Promise.resolve(undefined),
    release: (resume: boolean) => released.push(resume),
  };
  class GuestGoneAtAttach extends FakeTarget {
    run = run as unknown as RunControl;
    // Building the session looks at the stop (kdb's first CPU): that look is what fails.
    get kernel(): undefined {
      if (failures-- > 0) throw new LiveError("QEMU's gdbstub: no answer to g (simulated)");
      return undefined;
    }
  }
  const lines: string[] = [];
  const server = await serveTcp(new GuestGoneAtAttach(), { port: 0, log: (l) => lines.push(l) });
  try {
    const first = await TcpFuzzClient.connect(server.port);
    assert.ok(await first.until(() => first.closed, 5000), "the first client is let go");
    await first.close();
    await idle(server);
    assert.deepEqual(released, [false]);
    const failure = lines.filter((l) => l.includes("cannot serve"));
    assert.equal(failure.length, 1, lines.join("\n"));
    assert.match(failure[0], /no answer to g/);
    const second = await TcpFuzzClient.connect(server.port);
    try {
      assert.deepEqual(await tcpExchange(second)("qC"), ["QC2"]);
    } finally {
      await second.close();
    }
    await idle(server);
    assert.deepEqual(released, [false, false]);
    assert.ok(!lines.some((l) => /Uncaught|session failed/.test(l)), lines.join("\n"));
  } finally {
    await server.close();
  }
});
