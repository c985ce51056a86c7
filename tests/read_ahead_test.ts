/**
 * The session's read-ahead for bulk reads (lib/rsp_session.ts): the reply to the next sequential
 * `m` is prepared while the client decodes the previous one, and must be byte for byte what the
 * request would have got, for the thread and address space current when it is asked.
 */

import assert from "node:assert/strict";
import { RspSession } from "../lib/rsp_session.ts";
import { framePacket } from "../lib/rsp_wire.ts";
import type { MemoryRead } from "../lib/target.ts";
import { SessionClient } from "./rsp_client.ts";
import { FAKE_BASE, FakeTarget } from "./rsp_fake_target.ts";

/** A fake target whose memory differs per thread, and which counts the reads it serves. */
class CountingTarget extends FakeTarget {
  reads: { address: bigint; length: number; thread?: number }[] = [];

  constructor() {
    super({ memorySize: 0x100000, fill: "random" });
  }

  override readMemory(address: bigint, length: number, thread?: number): MemoryRead {
    this.reads.push({ address, length, thread });
    const r = super.readMemory(address, length);
    if (thread !== 2) return r;
    return { ...r, data: r.data.map((b) => b ^ 0x5a) }; // thread 2 sees other memory
  }
}

const CHUNK = 0x10000;

function session(options: { debug?: boolean } = {}): [SessionClient, CountingTarget] {
  const target = new CountingTarget();
  const c = new SessionClient(new RspSession(target, { ...options, log: () => {} }));
  c.handshake();
  return [c, target];
}

function m(address: bigint, length = CHUNK): string {
  return `m${address.toString(16)},${length.toString(16)}`;
}

Deno.test("read-ahead: sequential bulk reads get exactly the bytes of a plain session", () => {
  const [fast, target] = session();
  const [plain] = session({ debug: true }); // debug logging turns read-ahead off
  for (let i = 0; i < 8; i++) {
    const request = m(FAKE_BASE + BigInt(i * CHUNK));
    assert.deepEqual(fast.raw(framePacket(request)), plain.raw(framePacket(request)), request);
    // Each reply was followed by a read of the next chunk, before it was asked for.
    const last = target.reads[target.reads.length - 1];
    assert.equal(last.address, FAKE_BASE + BigInt((i + 1) * CHUNK));
  }
  // 8 requests, the first answered directly and 7 from read-ahead, plus one read-ahead left over.
  assert.equal(target.reads.length, 9);
});

Deno.test("read-ahead: a thread switch discards the prepared reply", () => {
  const [c, target] = session();
  const first = c.request(m(FAKE_BASE));
  assert.equal(c.request("Hg2"), "OK");
  const second = c.request(m(FAKE_BASE + BigInt(CHUNK)));
  const [plain] = session({ debug: true });
  plain.request(m(FAKE_BASE));
  plain.request("Hg2");
  assert.equal(second, plain.request(m(FAKE_BASE + BigInt(CHUNK))));
  assert.equal(first.length, 2 * CHUNK);
  assert.equal(target.reads[target.reads.length - 1].thread, 2);
});

Deno.test("read-ahead: a request elsewhere or of another size is answered afresh", () => {
  const [c] = session();
  const [plain] = session({ debug: true });
  const requests = [
    m(FAKE_BASE),
    m(FAKE_BASE + 0x8000n), // overlaps the prediction
    m(FAKE_BASE + 0x18000n, 0x8000), // right place, other size
    m(FAKE_BASE + 0x20000n, 0x8000),
    m(FAKE_BASE + BigInt(0x100000 - CHUNK)), // up to the end of the fake memory
    m(FAKE_BASE + 0x100000n), // beyond: an error, prepared or not
  ];
  for (const r of requests) assert.equal(c.request(r), plain.request(r), r);
});

Deno.test("read-ahead: small reads do not trigger it, and ack mode can resend its replies", () => {
  const target = new CountingTarget();
  const c = new SessionClient(new RspSession(target, { log: () => {} }));
  for (let i = 0; i < 4; i++) c.request(m(FAKE_BASE + BigInt(i * 16), 16));
  assert.equal(target.reads.length, 4);
  // Ack mode (no handshake): a read-ahead reply is kept for retransmission like any other.
  const first = c.send(framePacket(m(FAKE_BASE)));
  const second = c.send(framePacket(m(FAKE_BASE + BigInt(CHUNK))));
  assert.equal(second[0], "+");
  assert.notEqual(second[1], first[1]);
  assert.deepEqual(c.send("-"), [second[1]]);
});
