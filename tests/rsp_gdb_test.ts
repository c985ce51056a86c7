/**
 * End-to-end tests with real gdb (Debian's gdb 13 and gdb-multiarch) against the fake target:
 * over TCP, over a pipe (`target remote | …`), aarch64, several clients, the text console and the
 * `info vmcoreinfo` gdb script. Each gdb run is bounded by a timeout.
 */

import assert from "node:assert/strict";
import { serveTcp } from "../lib/transport.ts";
import { framePacket, latin1String } from "../lib/rsp_wire.ts";
import {
  FAKE_BASE,
  FAKE_THREAD_NAMES,
  FAKE_VMCOREINFO,
  fakeMemory,
  FakeTarget,
} from "./rsp_fake_target.ts";

const GDB_TIMEOUT_MS = 60_000;
const ADDR = `0x${FAKE_BASE.toString(16)}`;
const MIB = 1 << 20;
const SERVE_FAKE = new URL("./rsp_serve_fake.ts", import.meta.url).pathname;
const VMCOREINFO_PY = new URL("../cli/gdb/vmcoreinfo.py", import.meta.url).pathname;

function which(command: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${command}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

const haveGdb = which("gdb");
const haveMultiarch = which("gdb-multiarch");

/** Run gdb in batch mode with `-ex` commands; its combined output. */
async function gdb(commands: string[], binary = "gdb"): Promise<string> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), GDB_TIMEOUT_MS);
  try {
    const out = await new Deno.Command(binary, {
      args: ["-nx", "-batch", ...commands.flatMap((c) => ["-ex", c])],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.ok(!controller.signal.aborted, `gdb timed out:\n${text}`);
    return text;
  } finally {
    clearTimeout(timer);
  }
}

async function withServer(
  target: FakeTarget,
  body: (port: number, log: string[]) => Promise<void>,
): Promise<void> {
  const log: string[] = [];
  const server = await serveTcp(target, { port: 0, log: (l) => log.push(l) });
  try {
    await body(server.port, log);
  } finally {
    await server.close();
  }
}

Deno.test({
  name: "gdb over TCP: threads, registers, memory, vmcoreinfo, monitor, refusals, dump",
  ignore: !haveGdb,
  async fn() {
    const target = new FakeTarget();
    const dir = await Deno.makeTempDir({ prefix: "rsp_gdb_" });
    try {
      await withServer(target, async (port) => {
        const out = await gdb([
          `target remote 127.0.0.1:${port}`,
          "info threads",
          "info registers rip",
          "info registers eflags fs_base orig_rax",
          `x/8gx ${ADDR}`,
          `x/2gx ${ADDR}+${target.memory.length - 8}`,
          "maint packet qlinux.vmcoreinfo",
          "monitor help",
          `set {char}${ADDR} = 1`,
          "set $rax = 5",
          "continue",
          `dump binary memory ${dir}/x ${ADDR} ${ADDR}+${MIB}`,
        ]);
        assert.match(out, /\n\s+1\s+Thread 1 "CPU 0: idle"/);
        assert.ok(
          out.includes(`* 2    Thread 2 "${FAKE_THREAD_NAMES[1]}" (crashed & <panicked>)`),
          out,
        );
        assert.match(out, /rip\s+0xffffffff8155a0f6\s/);
        assert.match(out, /eflags\s+0x10046\s+\[ PF ZF RF \]/);
        assert.match(out, /fs_base\s+0x7f1234567740\s/);
        assert.match(out, /orig_rax\s+0x1\s/);
        assert.ok(
          out.includes(
            `${ADDR}:\t0x1111111111111111\t0x2222222222222222\n` +
              `0xffff888000100010:\t0x3333333333333333\t0x4444444444444444`,
          ),
          out,
        );
        assert.ok(out.includes(`0xffff888000100030:\t0x7777777777777777\t0x8888888888888888`));
        // The readable prefix is shown, then the first unreadable address.
        const end = FAKE_BASE + BigInt(target.memory.length);
        assert.ok(
          out.includes(`Cannot access memory at address 0x${end.toString(16)}`),
          out,
        );
        assert.ok(
          out.includes(`received: "Qlinux.vmcoreinfoOSRELEASE=6.1.0-fake\\x0aPAGESIZE=4096`),
          out,
        );
        assert.match(out, /vmcoreinfo\s+print the VMCOREINFO note/i);
        assert.match(out, /hello\s+say hello/);
        assert.ok(out.includes(`Cannot access memory at address ${ADDR}`), out);
        assert.match(
          out,
          /Could not write register "rax"; remote failure reply 'E\.target is a crash dump/,
        );
        assert.ok(out.includes("Target is a crash dump: it cannot run or step."), out);
        assert.match(out, /received signal SIGSEGV, Segmentation fault/);
        const dumped = await Deno.readFile(`${dir}/x`);
        assert.equal(dumped.length, MIB);
        assert.ok(dumped.every((b, i) => b === target.memory[i]), "dumped memory differs");
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gdb over a pipe: target remote | deno run … --stdio",
  ignore: !haveGdb,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "rsp_pipe_" });
    try {
      const serve = `${Deno.execPath()} run --quiet --no-lock ${SERVE_FAKE} --stdio`;
      const out = await gdb([
        `target remote | ${serve}`,
        "info threads",
        "info registers rip",
        `x/2gx ${ADDR}`,
        "monitor threads",
        `dump binary memory ${dir}/x ${ADDR} ${ADDR}+0x40000`,
        "detach",
      ]);
      assert.ok(out.includes(`Thread 2 "${FAKE_THREAD_NAMES[1]}"`), out);
      assert.match(out, /rip\s+0xffffffff8155a0f6\s/);
      assert.ok(out.includes(`${ADDR}:\t0x1111111111111111\t0x2222222222222222`), out);
      assert.match(out, /\*\s+2\s+1\s+CPU #1/);
      assert.match(out, /Detaching from program|detached/);
      const dumped = await Deno.readFile(`${dir}/x`);
      const expected = fakeMemory(0x110000, "zeros").subarray(0, 0x40000);
      assert.equal(dumped.length, expected.length);
      assert.ok(dumped.every((b, i) => b === expected[i]), "dumped memory differs");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "gdb-multiarch, aarch64: target.xml selects the architecture by itself",
  ignore: !haveMultiarch,
  async fn() {
    await withServer(new FakeTarget({ arch: "aarch64" }), async (port) => {
      const out = await gdb([
        `target remote 127.0.0.1:${port}`,
        "show architecture",
        "info threads",
        "info registers pc sp cpsr x29",
        "info registers v0 fpsr",
        "thread 1",
        "info registers pc",
        `x/2gx ${ADDR}`,
      ], "gdb-multiarch");
      assert.match(out, /currently "aarch64"/);
      assert.ok(out.includes(`Thread 2 "${FAKE_THREAD_NAMES[1]}"`), out);
      assert.match(out, /pc\s+0xffff80000866a0b0\s/);
      assert.match(out, /sp\s+0xffff80000a3cbd10\s/);
      assert.match(out, /cpsr\s+0x80000005\s+\[ SP EL=1 BTYPE=0 N \]/);
      assert.match(out, /v0\s+\{d = \{<unavailable>, <unavailable>\}/);
      assert.match(out, /fpsr\s+<unavailable>/);
      assert.match(out, /pc\s+0xffff800008015b80\s/);
      assert.ok(out.includes(`${ADDR}:\t0x1111111111111111\t0x2222222222222222`), out);
    });
  },
});

Deno.test({
  name: "TCP server: a second client after the first, then two clients at once",
  ignore: !haveGdb,
  async fn() {
    const target = new FakeTarget();
    const dir = await Deno.makeTempDir({ prefix: "rsp_multi_" });
    try {
      const server = await serveTcp(target, { port: 0, log: () => {} });
      const session = (name: string) =>
        gdb([
          `target remote 127.0.0.1:${server.port}`,
          "info registers rip",
          `dump binary memory ${dir}/${name} ${ADDR} ${ADDR}+${MIB}`,
        ]);
      for (const name of ["first", "second"]) {
        assert.match(await session(name), /rip\s+0xffffffff8155a0f6/);
      }
      // A client that connects, sends half a packet and vanishes hurts nobody.
      const rude = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      await rude.write(new TextEncoder().encode("+$qSupp"));
      rude.close();
      const both = await Promise.all([session("a"), session("b")]);
      for (const out of both) assert.match(out, /rip\s+0xffffffff8155a0f6/);
      for (const name of ["first", "second", "a", "b"]) {
        const dumped = await Deno.readFile(`${dir}/${name}`);
        assert.ok(dumped.every((b, i) => b === target.memory[i]), `${name} differs`);
      }
      await server.close();
      assert.equal(server.activeSessions, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "TCP server with once: serves one client, then stops listening",
  ignore: !haveGdb,
  async fn() {
    const server = await serveTcp(new FakeTarget(), { port: 0, once: true, log: () => {} });
    const out = await gdb([`target remote 127.0.0.1:${server.port}`, "info registers rip"]);
    assert.match(out, /rip\s+0xffffffff8155a0f6/);
    await server.finished;
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.port }));
  },
});

Deno.test("TCP server: non-loopback addresses are served with a warning", async () => {
  const log: string[] = [];
  const server = await serveTcp(new FakeTarget(), {
    host: "0.0.0.0",
    port: 0,
    log: (l) => log.push(l),
  });
  await server.close();
  assert.ok(log.some((l) => l.startsWith("warning:") && l.includes("0.0.0.0")), log.join("\n"));
  const quiet: string[] = [];
  const local = await serveTcp(new FakeTarget(), { port: 0, log: (l) => quiet.push(l) });
  await local.close();
  assert.ok(!quiet.some((l) => l.startsWith("warning:")));
});

Deno.test("TCP text console: a typed line gets an answer; gdb's opening switches to RSP", async () => {
  const server = await serveTcp(new FakeTarget(), { port: 0, log: () => {} });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const buffer = new Uint8Array(65536);
  const readUntil = async (end: (t: string) => boolean) => {
    let text = "";
    while (!end(text)) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += latin1String(buffer.subarray(0, n));
    }
    return text;
  };
  try {
    await conn.write(new TextEncoder().encode("vmcoreinfo\r\n"));
    const info = await readUntil((t) => t.endsWith("[1]kdb> "));
    assert.ok(info.startsWith(FAKE_VMCOREINFO), info);
    await conn.write(new Uint8Array([0x2b, ...framePacket("qSupported:multiprocess+")]));
    const reply = await readUntil((t) => /#[0-9a-f]{2}$/.test(t));
    assert.match(reply, /^\+\$PacketSize=/);
    await conn.write(framePacket("3"));
    assert.equal(await readUntil((t) => t.endsWith("[1]kdb> ")), "+\n[1]kdb> ");
    await conn.write(new TextEncoder().encode("quit\n"));
    assert.equal(await readUntil(() => false), "");
  } finally {
    conn.close();
    await server.close();
  }
});

Deno.test({
  name: "gdb script: info vmcoreinfo decodes the escaped note",
  ignore: !haveGdb,
  async fn() {
    await withServer(new FakeTarget(), async (port) => {
      const out = await gdb([
        `target remote 127.0.0.1:${port}`,
        `source ${VMCOREINFO_PY}`,
        "info vmcoreinfo",
        "echo --\\n",
        "info vmcoreinfo KERNELOFFSET",
      ]);
      assert.ok(out.includes(FAKE_VMCOREINFO + "--\nKERNELOFFSET=1a000000\n"), out);
    });
  },
});

Deno.test("TCP server: close() drops connected clients; a busy port is a rejection", async () => {
  const server = await serveTcp(new FakeTarget(), { port: 0, log: () => {} });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  await conn.write(new TextEncoder().encode("threads\n"));
  const buffer = new Uint8Array(4096);
  assert.ok((await conn.read(buffer))! > 0);
  while (server.activeSessions === 0) await new Promise((r) => setTimeout(r, 5));
  await assert.rejects(serveTcp(new FakeTarget(), { port: server.port, log: () => {} }));
  await server.close();
  assert.equal(server.activeSessions, 0);
  let eof = false;
  try {
    eof = (await conn.read(buffer)) === null;
  } catch {
    eof = true; // reset by peer
  }
  assert.ok(eof);
  conn.close();
});
