/**
 * The two links to QEMU's gdbstub (the blocking socket on the main thread, and the worker
 * thread) against a scripted stub (tests/fake_gdbstub_worker.ts): the same answers, stops and
 * faults from both. Real QEMU is in tests/live_gdb_test.ts; this covers what QEMU does rarely
 * or never (nacks, bad checksums) and pins down the prefetch of a stop's registers.
 */

import assert from "node:assert/strict";
import { DirectStub } from "../lib/qemu_stub_direct.ts";
import { ThreadedStub } from "../lib/qemu_stub_threaded.ts";
import { LiveError, type QemuStub, type StubNotice } from "../lib/qemu_stub.ts";
import { BlockingSocket } from "../lib/libc_socket.ts";
import { hexBytes } from "../lib/rsp_client.ts";

const LINKS: [string, (host: string, port: number) => QemuStub][] = [
  ["blocking socket", DirectStub.connect],
  ["worker thread", ThreadedStub.connect],
];

async function fakeStub(): Promise<{ port: number; stop: () => void }> {
  const worker = new Worker(new URL("./fake_gdbstub_worker.ts", import.meta.url).href, {
    type: "module",
  });
  const port = await new Promise<number>((resolve) => {
    worker.onmessage = (e) => resolve(e.data.port);
  });
  return { port, stop: () => worker.terminate() };
}

function log(stub: QemuStub): { received: string[]; acks: number; reads: number[] } {
  return JSON.parse(new TextDecoder().decode(hexBytes(stub.request("qLog"))));
}

function events(stub: QemuStub): StubNotice[] {
  const seen: StubNotice[] = [];
  stub.onEvent = (n) => seen.push(n);
  return seen;
}

async function until(f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 5));
  }
}

const available = BlockingSocket.available("127.0.0.1");

for (const [name, connect] of LINKS) {
  /** A test of this link against a fresh scripted stub: `body` gets the link and what it told. */
  const linkTest = (title: string, body: (stub: QemuStub, seen: StubNotice[]) => Promise<void>) =>
    Deno.test({
      name: `QEMU stub link (${name}): ${title}`,
      ignore: name === "blocking socket" && !available,
      sanitizeOps: false,
      sanitizeResources: false,
    }, async () => {
      const fake = await fakeStub();
      const stub = connect("127.0.0.1", fake.port);
      try {
        await body(stub, events(stub));
      } finally {
        stub.close();
        fake.stop();
      }
    });

  linkTest(`a stop that came while nobody waited is not the next resume's`, async (stub, seen) => {
    assert.equal(stub.request("qStopLater"), "OK");
    await new Promise((r) => setTimeout(r, 100)); // the stop is in the socket, unread
    // The continue runs (the fake stops it only on ^C): no stop of it yet.
    assert.equal(stub.resume("vCont;c"), undefined);
    await new Promise((r) => setTimeout(r, 50));
    const ours = () => seen.filter((n) => n.ev === "stop" && !n.unsolicited);
    assert.deepEqual(ours(), []);
    stub.interrupt();
    await until(() => ours().length > 0);
    assert.equal(stub.request("qC"), "QCp01.01");
    // The old stop is told apart, as one nobody asked for (at once, or at the next request).
    await until(() => seen.length === 2);
    assert.deepEqual(seen.filter((n) => n.ev === "stop" && n.unsolicited), [
      { ev: "stop", text: "T02thread:p01.01;", unsolicited: true },
    ]);
    assert.deepEqual(ours(), [{ ev: "stop", text: "T02thread:p01.01;" }]);
  });

  linkTest(`replies, acks, nacks, bad checksums, unsolicited stops`, async (stub, seen) => {
    assert.equal(stub.request("qC"), "QCp01.01");
    // A nack: the packet goes again; a bad checksum: we ask again.
    assert.equal(stub.request("qNack"), "OK");
    assert.equal(stub.request("qBadSum"), "OK");
    // A stop before the answer is not the answer; it is told as unsolicited.
    assert.equal(stub.request("qUnsolicited"), "OK");
    await until(() => seen.length > 0);
    assert.deepEqual(seen[0], { ev: "stop", text: "T02thread:p01.02;", unsolicited: true });
    // Pages come as several `m` packets, pipelined; a refusal ends the read short.
    const bytes = stub.readMemory(0xf000n, 0x1800);
    assert.equal(bytes.length, 0x1000);
    assert.ok(bytes.every((b, i) => b === ((0xf000 + i) & 0xff)));
    // A scan's samples: the start of every block, many packets in flight, a refused one
    // (≥ 0x10000) left zero without ending the scan.
    const samples = stub.sampleMemory(0xe000n, 0x1000, 40, 3);
    assert.equal(samples.length, 120);
    for (let k = 0; k < 40; k++) {
      const at = 0xe000 + k * 0x1000;
      const want = at >= 0x10000 ? [0, 0, 0] : [0, 1, 2].map((i) => (at + i) & 0xff);
      assert.deepEqual([...samples.subarray(k * 3, k * 3 + 3)], want, `block ${k}`);
    }
    assert.equal(stub.request("qC"), "QCp01.01"); // every sample's reply was taken
    const l = log(stub);
    assert.equal(l.received.filter((p) => p === "qNack").length, 2, JSON.stringify(l));
    const sampleReads = new Set(
      l.received.flatMap((p, i) => /^m[0-9a-f]+,3$/.test(p) ? [l.reads[i]] : []),
    );
    assert.equal(l.received.filter((p) => /^m[0-9a-f]+,3$/.test(p)).length, 40);
    // On the blocking socket 32 go in one write (TCP may split it, never into 40).
    if (name === "blocking socket") assert.ok(sampleReads.size <= 8, `${sampleReads.size}`);
    assert.equal(l.received.filter((p) => p.startsWith("m")).length, 43, JSON.stringify(l));
    // Every packet of the stub's was acked (the last, qLog's own, not yet).
    assert.ok(l.acks >= l.received.length - 2, JSON.stringify(l));
  });

  linkTest(`a stop's registers asked for at the stop, taken or skipped`, async (stub, seen) => {
    stub.request("qC");
    // A step's stop reply: returned by resume when it came during resume's wait (the blocking
    // socket waits for a step on the spot), else told as an event; never both. The stub is
    // asked for `g` right then.
    const step = () => {
      const now = stub.resume("vCont;s:p01.01");
      if (now) seen.push(now);
    };
    step();
    await until(() => seen.some((n) => n.ev === "stop"));
    assert.deepEqual(seen.at(-1), { ev: "stop", text: "T05thread:p01.01;" });
    // The first request of the stop is `g`: the answer to the prefetch, no second `g`.
    stub.selectThread("p01.01"); // the CPU that stopped: no Hg
    assert.equal(stub.request("g"), "0100ff00");
    assert.equal(log(stub).received.filter((p) => p === "g").length, 1);
    // Another stop where the first request is not `g`: the prefetch's answer is skipped, not
    // taken for that request's; a later `g` is asked for again (read after the request).
    step();
    await until(() => seen.filter((n) => n.ev === "stop" && !n.unsolicited).length === 2);
    assert.equal(stub.request("qC"), "QCp01.01");
    assert.equal(stub.request("g"), "0300ff00");
    // A resume right after a stop, before any request: the prefetch answer is skipped too.
    step();
    await until(() => seen.filter((n) => n.ev === "stop" && !n.unsolicited).length === 3);
    step();
    await until(() => seen.filter((n) => n.ev === "stop" && !n.unsolicited).length === 4);
    assert.equal(stub.request("qC"), "QCp01.01");
    const l = log(stub);
    assert.equal(l.received.filter((p) => p === "g").length, 5, JSON.stringify(l));
    // A step, and a continue, answered at once: the blocking socket returns the stop (its `g`
    // asked for), which is then not told as well; the worker tells it. A loaded machine may keep
    // the fake from answering within the on-the-spot wait: a few tries, each stop counted once.
    const told = () => seen.filter((n) => n.ev === "stop" && !n.unsolicited).length;
    const toldBefore = told();
    const seenBefore = seen.length;
    let onTheSpot = 0;
    let tries = 0;
    while (tries < 6 && onTheSpot < 2) {
      tries++;
      // A step, then a continue that stops at once (a breakpoint just ahead).
      const quick = stub.resume(onTheSpot === 0 ? "vCont;s:p01.02" : "vCont;c:p01.02");
      if (quick) {
        onTheSpot++;
        assert.deepEqual(quick, { ev: "stop", text: "T05thread:p01.01;" });
        assert.match(stub.request("g"), /^[0-9a-f]{2}00ff00$/);
      } else await until(() => told() === toldBefore + tries - onTheSpot);
    }
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(told(), toldBefore + tries - onTheSpot, "a stop told as well as returned");
    if (name === "blocking socket") {
      assert.equal(onTheSpot, 2, `${onTheSpot} of ${tries} on the spot`);
    } else assert.equal(onTheSpot, 0);
    seen.length = seenBefore; // as if only the 4 steps above had stopped
    // Continue, then ^C: the stop arrives as an event while the event loop stays free.
    assert.equal(stub.resume("vCont;c"), undefined);
    await new Promise((r) => setTimeout(r, 30));
    // Each step's stop once, however it came.
    assert.equal(seen.filter((n) => n.ev === "stop" && !n.unsolicited).length, 4);
    stub.interrupt();
    await until(() => seen.filter((n) => n.ev === "stop" && !n.unsolicited).length === 5);
    assert.deepEqual(seen.at(-1), { ev: "stop", text: "T02thread:p01.01;" });
    assert.equal(seen.filter((n) => n.ev === "stop" && !n.unsolicited).length, 5);
    assert.equal(stub.request("qC"), "QCp01.01");
  });

  Deno.test({
    name: `QEMU stub link (${name}): nothing listening, no answer, the stub going away`,
    ignore: name === "blocking socket" && !available,
    sanitizeOps: false,
    sanitizeResources: false,
  }, async () => {
    const fake = await fakeStub();
    // A port nothing listens on: the fake's, once it is gone.
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const deadPort = (closed.addr as Deno.NetAddr).port;
    closed.close();
    assert.throws(
      () => connect("127.0.0.1", deadPort),
      (e: Error) =>
        e instanceof LiveError &&
        /^cannot reach QEMU's gdbstub at 127\.0\.0\.1:\d+: .*refused/i.test(e.message),
    );
    const stub = connect("127.0.0.1", fake.port);
    try {
      assert.throws(
        () => stub.request("qSilent", 300),
        (e: Error) => e instanceof LiveError && /did not answer within 0\.3 s$/.test(e.message),
      );
    } finally {
      stub.close();
    }
    // The stub closes the connection while the guest is stopped and nothing is asked: the
    // loss is told as an event, and the next request says why.
    const again = connect("127.0.0.1", fake.port);
    try {
      const seen = events(again);
      again.resume("vCont;s:p01.01");
      await until(() => seen.some((n) => n.ev === "stop"));
      try {
        again.request("qClose", 1000);
      } catch {
        // the stub closed instead of answering
      }
      await until(() => seen.some((n) => n.ev === "lost"));
      assert.deepEqual(seen.find((n) => n.ev === "lost"), {
        ev: "lost",
        reason: "QEMU closed the gdbstub connection",
      });
      assert.throws(
        () => again.request("qC"),
        (e: Error) =>
          e instanceof LiveError &&
          /^QEMU's gdbstub at 127\.0\.0\.1:\d+: QEMU closed the gdbstub connection$/.test(
            e.message,
          ),
      );
    } finally {
      again.close();
      fake.stop();
    }
  });
}

// The worker-thread link has no post: its callers wait for each reply.
Deno.test({
  name: "QEMU stub link (blocking socket): posted packets go with the next one, replies in order",
  ignore: !available,
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const fake = await fakeStub();
  const stub = DirectStub.connect("127.0.0.1", fake.port);
  try {
    assert.equal(stub.monitor("info kvm"), "kvm support: disabled\r\n");
    const replies: string[] = [];
    // Held: the next request carries them, in the same write; their replies reach their
    // callbacks in order, and the request gets its own.
    stub.post!("Z0,1000,1", (r) => replies.push(`Z0:${r}`));
    stub.post!("Z0,dead,1", (r) => replies.push(`refused:${r}`));
    assert.equal(replies.length, 0);
    assert.equal(stub.request("qC"), "QCp01.01");
    assert.deepEqual(replies, ["Z0:OK", "refused:E22"]);
    let l = log(stub);
    const at = (p: string) => l.reads[l.received.lastIndexOf(p)];
    assert.equal(at("Z0,1000,1"), at("qC"), JSON.stringify(l));
    assert.equal(at("Z0,dead,1"), at("qC"), JSON.stringify(l));
    // With a resume; the stop's registers asked for meanwhile are not a posted reply.
    stub.post!("z0,1000,1", (r) => replies.push(`z0:${r}`));
    const now = stub.resume("vCont;s:p01.01");
    if (!now) await new Promise((r) => setTimeout(r, 50));
    stub.post!("z0,1000,1", (r) => replies.push(`again:${r}`)); // QEMU holds it no more
    assert.equal(stub.request("qC"), "QCp01.01");
    assert.deepEqual(replies.slice(2), ["z0:OK", "again:E22"]);
    l = log(stub);
    assert.equal(at("z0,1000,1"), at("qC"), JSON.stringify(l));
    assert.equal(l.received[l.received.indexOf("vCont;s:p01.01") - 1], "z0,1000,1");
    // An interrupt goes alone (QEMU takes the first byte that comes while the guest runs for
    // one and drops it); a callback that throws loses no reply after its own.
    stub.post!("Z0,3000,1", () => {
      throw new Error("a failing callback");
    });
    stub.post!("z0,3000,1", (r) => replies.push(`after:${r}`));
    stub.interrupt();
    assert.equal(stub.request("qC"), "QCp01.01");
    assert.deepEqual(replies.slice(4), ["after:OK"]);
    l = log(stub);
    assert.equal(at("Z0,3000,1"), at("qC"), JSON.stringify(l));
    // Nothing else to send: it goes alone a little later.
    stub.post!("Z0,2000,1", (r) => replies.push(`alone:${r}`));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(stub.request("qC"), "QCp01.01");
    assert.deepEqual(replies.slice(5), ["alone:OK"]);
    l = log(stub);
    assert.ok(at("Z0,2000,1") < at("qC"), JSON.stringify(l));
  } finally {
    stub.close();
    fake.stop();
  }
});
