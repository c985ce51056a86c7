/**
 * Packet fuzzing (issue 8): seeded random and mutated RSP traffic (bad checksums, truncated and
 * restarted frames, absurd lengths such as `m0,ffffffffffffffff`, non-hex digits, oversize
 * packets, binary garbage, interleaved acks, 0x03 bytes, console text) against the wire parser,
 * sessions on the fake target and on a real kernel dump, and a whole TCP server. 10k session and
 * server cases in CI; `deno run -A tests/long_runs.ts` runs 1M. Replay a failure with
 * `KDUMP_FUZZ_SEED=<seed>`.
 */

import assert from "node:assert/strict";
import { MAX_PACKET_SIZE, RspSession } from "../lib/rsp_session.ts";
import { framePacket } from "../lib/rsp_wire.ts";
import { SessionClient } from "./rsp_client.ts";
import { serveTcp } from "../lib/transport.ts";
import { runSeed } from "./fuzz_rng.ts";
import {
  type FuzzResult,
  normalTranscript,
  runSessionFuzz,
  runTcpFuzz,
  runWireFuzz,
  ServerLog,
  sessionExchange,
  tcpExchange,
  TcpFuzzClient,
} from "./packet_fuzz.ts";
import { FAKE_BASE, FakeTarget } from "./rsp_fake_target.ts";
import { fakeContext, openKernelTarget, runGdbBatch } from "./fault_support.ts";

const SEED = runSeed(0x6b64756d);

function assertClean(label: string, r: FuzzResult, cases: number): void {
  assert.deepEqual(r.failures, [], `${label}: ${r.failures.length} failures (seed ${SEED})`);
  assert.equal(r.cases, cases, label);
}

Deno.test("packet fuzz: wire parser and reply encoder, 3000 streams", () => {
  const r = runWireFuzz(fakeContext(new FakeTarget()), SEED, 0, 3000);
  assertClean("wire", r, 3000);
  assert.ok(r.wellFormed > 3000);
});

Deno.test("packet fuzz: 5000 cases against sessions on the fake target", async () => {
  const target = new FakeTarget({
    execFile: "/boot/vmlinux-fake",
    textSegment: 0xffffffff81000000n,
  });
  const ctx = fakeContext(target);
  const before = await normalTranscript(sessionExchange(new RspSession(target)), ctx);
  const r = runSessionFuzz(target, ctx, SEED, 0, 5000);
  assertClean("session", r, 5000);
  assert.ok(r.wellFormed > 10000, `${r.wellFormed} well-formed packets`);
  const after = await normalTranscript(sessionExchange(new RspSession(target)), ctx);
  assert.deepEqual(after, before);
});

Deno.test("packet fuzz: 2000 cases against a real kernel dump; page cache stays bounded", async () => {
  const { kernel, target, ctx } = openKernelTarget("dump.zlib-d31.kdump", 1 << 20);
  try {
    const before = await normalTranscript(sessionExchange(new RspSession(target)), ctx);
    const r = runSessionFuzz(target, ctx, SEED, 100_000, 2000);
    assertClean("kernel session", r, 2000);
    const cache = kernel.phys.cache;
    assert.ok(cache.size <= cache.capacity, `${cache.size} pages cached, bound ${cache.capacity}`);
    assert.ok(cache.misses > cache.capacity, "the storm went through the page cache");
    const after = await normalTranscript(sessionExchange(new RspSession(target)), ctx);
    assert.deepEqual(after, before);
  } finally {
    kernel.close();
  }
});

Deno.test("packet fuzz: 3000 cases against TCP servers; then the same answers, to real gdb too", async () => {
  const target = new FakeTarget();
  const ctx = fakeContext(target);
  const log = new ServerLog();
  const server = await serveTcp(target, { port: 0, debug: true, log: log.log });
  const gdbCommands = [
    `target remote 127.0.0.1:${server.port}`,
    "info threads",
    "info registers rip rsp rbp eflags",
    `x/8gx 0x${FAKE_BASE.toString(16)}`,
    "monitor threads",
    "detach",
  ];
  const session = async () => {
    const client = await TcpFuzzClient.connect(server.port);
    try {
      return await normalTranscript(tcpExchange(client), ctx);
    } finally {
      await client.close();
    }
  };
  try {
    const before = await session();
    const gdbBefore = await runGdbBatch(gdbCommands);
    assert.match(gdbBefore, /0x1111111111111111\s+0x2222222222222222/, gdbBefore);
    const r = await runTcpFuzz(target, ctx, SEED, 200_000, 2000, { server, log });
    assertClean("tcp", r, 2000);
    // And 1000 cases on a server without debug logging (bulk reads may be prepared ahead).
    assertClean(
      "quiet tcp",
      await runTcpFuzz(target, ctx, SEED, 300_000, 1000, undefined, true),
      1000,
    );
    assert.deepEqual(await session(), before);
    assert.equal(await runGdbBatch(gdbCommands), gdbBefore);
    assert.deepEqual(log.problems(), []);
  } finally {
    await server.close();
  }
});

Deno.test("resource bounds: PacketSize advertised and enforced, absurd requests answered small and fast", () => {
  const { kernel, target, ctx } = openKernelTarget("dump.zlib-d31.kdump", 1 << 20);
  try {
    const c = new SessionClient(new RspSession(target));
    const supported = c.handshake();
    assert.ok(supported.includes(`PacketSize=${MAX_PACKET_SIZE.toString(16)}`), supported);
    const direct = ctx.addresses[5].toString(16);
    for (
      const p of [
        "m0,ffffffffffffffff",
        "mffffffffffffffff,ffffffffffffffff",
        `m${direct},ffffffff`,
        `x${direct},ffffffffffffffff`,
        `m${direct},${"f".repeat(40)}`,
        "qXfer:features:read:target.xml:0,ffffffffffffffff",
        "qXfer:threads:read::ffffffffffffffff,ffffffff",
        "qXfer:exec-file:read:1:0,ffffffffffffffff",
        "qXfer:vmcoreinfo:read::0,ffffffffffffffff",
        `qRcmd,${"68656c70".repeat(1000)}`,
        "qRcmd,7379732073797320737973",
      ]
    ) {
      const t0 = performance.now();
      const replies = c.packets(p);
      const ms = performance.now() - t0;
      assert.ok(replies.length >= 1, p);
      for (const r of replies) assert.ok(r.length <= MAX_PACKET_SIZE, `${p}: ${r.length} bytes`);
      assert.ok(ms < 2000, `${p}: ${ms} ms`);
    }
    // One byte over the limit: refused whole, and the stream stays in step.
    const over = framePacket("m" + "0".repeat(MAX_PACKET_SIZE));
    assert.deepEqual(c.send(new Uint8Array([...over, ...framePacket("qC")])), ["E01", "QC2"]);
    const cache = kernel.phys.cache;
    assert.ok(cache.size <= cache.capacity);
  } finally {
    kernel.close();
  }
});
