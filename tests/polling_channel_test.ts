// The polling listener (lib/libc_socket.ts SocketListener, lib/polling_channel.ts): the channel
// live sessions use so that gdb's next packet is caught without a wake-up. Real gdb on a real
// dump through it must see what it sees through Deno's own listener; closing, dropped and
// stalled clients and a port in use behave as with Deno's listener.
import assert from "node:assert/strict";
import { bindPolling, ListenError } from "../lib/listen.ts";
import { SocketListener } from "../lib/libc_socket.ts";
import { PollingReader, SocketChannel } from "../lib/polling_channel.ts";
import { serveTcp } from "../lib/transport.ts";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { boot } from "./fixtures.ts";
import { runGdb } from "./gdb_helpers.ts";
import { framePacket } from "../lib/rsp_wire.ts";

const B = boot("x86_64-6.1");
const DUMP = B.path("dump.zlib-d31.kdump");
const available = SocketListener.available("127.0.0.1");
const opts = { ignore: !available, sanitizeResources: false, sanitizeOps: false };

function kernelTarget(): KernelTarget {
  return new KernelTarget(new Kernel(openDump([DUMP]), { vmlinux: B.vmlinux }));
}

const SESSION = [
  "info threads",
  "bt 6",
  "p init_task.comm",
  "x/8gx &init_task",
  "info registers rip rsp",
];

/** gdb's output with the lines that name the server's port taken out. */
async function session(port: number): Promise<string> {
  const r = await runGdb([
    `file ${B.vmlinux}`,
    `target remote 127.0.0.1:${port}`,
    ...SESSION,
    "detach",
  ]);
  return r.out.split("\n").filter((l) => !l.includes(`:${port}`)).join("\n");
}

Deno.test(
  "polling listener: real gdb on a real dump sees what it sees through Deno's",
  opts,
  async () => {
    const target = kernelTarget();
    const polling = await serveTcp(target, {
      listener: bindPolling("127.0.0.1", 0),
      spinMs: 0.1,
      log: () => {},
    });
    const plain = await serveTcp(target, { port: 0, log: () => {} });
    try {
      const a = await session(polling.port);
      const b = await session(plain.port);
      assert.match(a, /swapper\/0/, a);
      assert.match(a, /in panic \(/, a);
      assert.match(a, /rip +0x[0-9a-f]+/, a);
      assert.equal(a, b);
    } finally {
      await polling.close();
      await plain.close();
    }
  },
);

Deno.test(
  "polling listener: close() ends an idle connection and the listener at once",
  opts,
  async () => {
    const lines: string[] = [];
    const server = await serveTcp(kernelTarget(), {
      listener: bindPolling("127.0.0.1", 0),
      spinMs: 0.1,
      log: (l) => lines.push(l),
    });
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    await conn.write(new TextEncoder().encode("$qSupported#37"));
    const buf = new Uint8Array(4096);
    assert.ok((await conn.read(buf)) ?? 0 > 0);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(server.activeSessions, 1);
    const t0 = performance.now();
    await server.close();
    const took = performance.now() - t0;
    assert.ok(took < 500, `close took ${took} ms`);
    assert.equal(await conn.read(buf), null, "the client sees the end of the connection");
    conn.close();
    assert.ok(lines.some((l) => l.endsWith("disconnected")), lines.join("\n"));
  },
);

Deno.test(
  "polling listener: a dropped client lets the next one in; a stalled one blocks nobody",
  opts,
  async () => {
    const server = await serveTcp(kernelTarget(), {
      listener: bindPolling("127.0.0.1", 0),
      spinMs: 0.1,
      log: () => {},
    });
    try {
      // Dropped in the middle of a packet.
      const dropped = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await dropped.write(new TextEncoder().encode("$qSupp"));
      dropped.close();
      // Stalled: asks for 8 MiB of kernel text (16 MiB of replies) and never reads them.
      const stalled = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      const text = (0xffffffff81000000n + BigInt(B.expected.kaslr_offset)).toString(16);
      for (let i = 0; i < 256; i++) {
        await stalled.write(framePacket(`m${text},8000`));
      }
      // Meanwhile a real gdb gets a whole session.
      const out = await session(server.port);
      assert.match(out, /swapper\/0/, out);
      stalled.close();
    } finally {
      await server.close();
    }
  },
);

Deno.test("polling listener: a port in use is one line naming the address", opts, () => {
  const first = SocketListener.listen("127.0.0.1", 0);
  try {
    assert.throws(
      () => bindPolling("127.0.0.1", first.port),
      (e: unknown) =>
        e instanceof ListenError &&
        e.message === `cannot listen on 127.0.0.1:${first.port}: the port is in use (another ` +
            `kdump-gdbserver or gdbserver?); choose another with --port N, or --port 0 for a ` +
            `free one`,
    );
  } finally {
    first.close();
  }
});

Deno.test("polling reader: polls for gdb's next packet after a small reply, not after a large one", async () => {
  let spins = 0;
  let pending: number | undefined;
  const reader = new PollingReader({
    spin: () => {
      spins++;
      return pending !== undefined;
    },
    sleep: () => pending !== undefined,
    tryRead: () => {
      const n = pending;
      pending = undefined;
      return n;
    },
    readable: () => Promise.resolve(),
  }, Infinity); // no event-loop turns: every read polls or not by the rule alone
  const buffer = new Uint8Array(16);
  const read = (written: number) => {
    reader.wrote(written);
    pending = 1;
    return reader.read(buffer);
  };
  assert.equal(await read(20), 1);
  assert.equal(spins, 1, "a stop reply or a short answer: gdb's next packet comes soon");
  assert.equal(await read(0x10000), 1);
  assert.equal(spins, 1, "a 64 KiB memory reply: gdb decodes it longer than a poll lasts");
  // Several writes of one reply count together; each read starts the count again.
  reader.wrote(6000);
  assert.equal(await read(6000), 1);
  assert.equal(spins, 1);
  assert.equal(await read(100), 1);
  assert.equal(spins, 2);
});

Deno.test("polling reader: after the poll, a read sleeps on the main thread, then on the thread pool", async () => {
  const calls: string[] = [];
  /** What arrives, and when: at the poll, during the sleep, or only later. */
  let arrives: "spin" | "sleep" | "later" = "spin";
  let there = false;
  const reader = new PollingReader(
    {
      spin: () => {
        calls.push("spin");
        if (arrives === "spin") there = true;
        return there;
      },
      sleep: (ms) => {
        calls.push(`sleep ${ms}`);
        if (arrives === "sleep") there = true;
        return there;
      },
      tryRead: () => {
        calls.push("read");
        if (!there) return undefined;
        there = false;
        return 7;
      },
      readable: () => {
        calls.push("pool");
        there = true;
        return Promise.resolve();
      },
    },
    Infinity,
    2,
  );
  const buffer = new Uint8Array(16);
  for (
    const [when, expected] of [
      ["spin", ["spin", "read"]],
      ["sleep", ["spin", "read", "sleep 2", "read"]],
      ["later", ["spin", "read", "sleep 2", "read", "pool", "read"]],
    ] as const
  ) {
    arrives = when;
    calls.length = 0;
    assert.equal(await reader.read(buffer), 7, when);
    assert.deepEqual(calls, expected, when);
  }
});

Deno.test(
  "polling channel: a client whose bytes are always there still lets timers run",
  opts,
  async () => {
    const listener = SocketListener.listen("127.0.0.1", 0);
    const peer = await Deno.connect({ hostname: "127.0.0.1", port: listener.port });
    const accepted = await listener.accept();
    assert.ok(accepted);
    const channel = new SocketChannel(accepted.socket, accepted.peer);
    try {
      // Far more than the reads below take (4 bytes each): each finds bytes at once.
      let queued = 0;
      while (queued < 1 << 20) queued += await peer.write(new Uint8Array((1 << 20) - queued));
      let fired = 0;
      const timer = setTimeout(() => fired = performance.now(), 5);
      const buffer = new Uint8Array(4);
      const start = performance.now();
      let reads = 0;
      while (performance.now() - start < 100) {
        assert.equal(await channel.read(buffer), 4);
        reads++;
      }
      clearTimeout(timer);
      assert.ok(fired > 0, `the timer never ran during ${reads} reads`);
      // The event loop turns every 20 ms or so, not only once the reads stop (a loaded machine
      // may add some).
      assert.ok(fired - start < 90, `the timer ran ${fired - start} ms after it was due at 5 ms`);
    } finally {
      channel.close();
      peer.close();
      listener.close();
    }
  },
);

Deno.test("polling reader: an idle read given up reads nothing more, and the next read gets the bytes", async () => {
  let there = false;
  let wake: (() => void) | undefined;
  const reader = new PollingReader(
    {
      spin: () => there,
      sleep: () => there,
      tryRead: () => {
        if (!there) return undefined;
        there = false;
        return 3;
      },
      readable: () => new Promise<void>((resolve) => wake = resolve),
    },
    Infinity,
    0,
  );
  const buffer = new Uint8Array(16);
  // The wait of a running guest: nothing there yet, the read waits on the "thread pool".
  const idle = reader.readIdle(buffer);
  await Promise.resolve();
  assert.ok(wake);
  // The stop came first: the idle read is given up, then gdb's packet arrives and wakes it.
  assert.equal(reader.abandonIdle(), true);
  assert.equal(reader.abandonIdle(), false, "nothing left to give up");
  there = true;
  wake();
  assert.equal(await idle, 0);
  assert.equal(there, true, "the given-up read took the bytes");
  assert.equal(await reader.read(buffer), 3);
  // An idle read that has read already is not given up: its result holds the bytes.
  there = true;
  assert.equal(await reader.readIdle(buffer), 3);
  assert.equal(reader.abandonIdle(), false);
});

Deno.test("polling reader: a turn of the event loop is a zero-timeout wait on the thread pool, then the usual read", async () => {
  const calls: string[] = [];
  let there = false;
  const reader = new PollingReader(
    {
      spin: () => (calls.push("spin"), there),
      sleep: () => (calls.push("sleep"), there),
      tryRead: () => {
        calls.push("read");
        if (!there) return undefined;
        there = false;
        return 1;
      },
      readable: (ms) => {
        calls.push(`pool ${ms}`);
        // The turn's wait returns at once; an idle read's waits until the test is over.
        return ms === 0 ? Promise.resolve() : new Promise(() => {});
      },
    },
    10,
    2,
  );
  const buffer = new Uint8Array(4);
  const later = () => new Promise((r) => setTimeout(r, 15));
  // Long after the reader's last turn: the read turns the loop first, then polls as usual.
  await later();
  there = true;
  assert.equal(await reader.read(buffer), 1);
  assert.deepEqual(calls, ["pool 0", "spin", "read"]);
  // An idle read given up long after that counts as a turn (the loop ran while it waited): the
  // read after it polls at once.
  const idle = reader.readIdle(buffer);
  await later();
  assert.equal(reader.abandonIdle(), true);
  calls.length = 0;
  there = true;
  assert.equal(await reader.read(buffer), 1);
  assert.deepEqual(calls, ["spin", "read"]);
  void idle; // never settles: its wait never returns here
});
