// kdb's console on the server's channel, on a real dump: the prompt greets a silent client, gdb
// (which speaks first) sees no text, and kgdb -> RSP -> $3#33 -> console round trips over TCP
// and over --stdio, as the server program runs them.
import assert from "node:assert/strict";
import { boot, hasBoot } from "./fixtures.ts";
import { runGdb, SERVER, startServer } from "./gdb_helpers.ts";
import { framePacket, latin1String } from "../lib/rsp_wire.ts";

const NAME = "x86_64-6.1";
const ignore = !hasBoot(NAME);
const enc = new TextEncoder();

/** Reads from a byte stream until a condition holds, bounded in time. */
class Reader {
  text = "";
  #pending?: Promise<number | null>;
  #buf = new Uint8Array(1 << 16);
  constructor(private readonly read: (b: Uint8Array) => Promise<number | null>) {}

  /** Read until `done(text)`; the text so far (and forget it). */
  async until(done: (t: string) => boolean, ms = 20_000): Promise<string> {
    const deadline = Date.now() + ms;
    while (!done(this.text)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${JSON.stringify(this.text.slice(-300))}`);
      this.#pending ??= this.read(this.#buf);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.#pending,
        new Promise<"time">((r) => timer = setTimeout(() => r("time"), left)),
      ]);
      clearTimeout(timer);
      if (n === "time") continue;
      this.#pending = undefined;
      if (n === null) break;
      this.text += latin1String(this.#buf.subarray(0, n));
    }
    const t = this.text;
    this.text = "";
    return t;
  }

  /** Whatever arrives within `ms`. */
  async quiet(ms: number): Promise<string> {
    try {
      return await this.until(() => false, ms);
    } catch {
      const t = this.text;
      this.text = "";
      return t;
    }
  }
}

/** The console conversation both transports must hold. */
async function roundTrip(
  write: (s: string | Uint8Array) => Promise<unknown>,
  r: Reader,
  lastLogLine: string,
): Promise<void> {
  const prompt = "[1]kdb> ";
  // A silent client is greeted with the prompt of the panic CPU.
  assert.equal(await r.until((t) => t.endsWith(prompt)), prompt);
  await write("dmesg 1\r\n");
  // kdb's dmesg puts the record's syslog priority in front of the console's line.
  const logged = await r.until((t) => t.endsWith(prompt));
  assert.match(logged, /^<\d+>\[/);
  assert.equal(logged.replace(/^<\d+>/, ""), `${lastLogLine}\n${prompt}`);
  // Bad input: one kdb line each, and the console goes on.
  await write("frobnicate\n");
  assert.equal(
    await r.until((t) => t.endsWith(prompt)),
    `Unknown kdb command: 'frobnicate'\n${prompt}`,
  );
  await write("x".repeat(1 << 20) + "\n");
  assert.equal(
    await r.until((t) => t.endsWith(prompt)),
    `kdb_parse: command buffer overflow, command ignored\n${prompt}`,
  );
  await write("pid 31337\n");
  assert.equal(await r.until((t) => t.endsWith(prompt)), `No task with pid=31337\n${prompt}`);
  // kgdb: kdb's words, then the line speaks RSP.
  await write("kgdb\n");
  assert.equal(
    await r.until((t) => t.endsWith("\n")),
    "Entering please attach debugger or use $D#44+ or $3#33\n",
  );
  await write(framePacket("qSupported:multiprocess+"));
  const features = await r.until((t) => /#[0-9a-f]{2}$/.test(t));
  assert.match(features, /^\+\$PacketSize=/);
  await write("+");
  await write(
    framePacket(
      "qRcmd," + [...enc.encode("summary")].map((b) => b.toString(16).padStart(2, "0")).join(""),
    ),
  );
  const summary = await r.until((t) => t.endsWith("$OK#9a"));
  assert.ok(summary.startsWith("+$O"), summary);
  await write("+");
  // $3#33 hands the line back to kdb.
  await write("$3#33");
  assert.equal(await r.until((t) => t.endsWith(prompt)), `+\n${prompt}`);
  await write("cpu\n");
  assert.equal(
    await r.until((t) => t.endsWith(prompt)),
    `Currently on cpu 1\nAvailable cpus: 0-1\n${prompt}`,
  );
}

function lastKernelLine(): string {
  const lines = Deno.readTextFileSync(boot(NAME).path("console.log")).replaceAll("\r", "")
    .split("\n").filter((l) => /^\[ *\d+\.\d{6}\] /.test(l));
  return lines.at(-1)!;
}

Deno.test({
  name: "kdb console over TCP: prompt for nc, kgdb -> RSP -> $3#33 -> console; gdb sees no text",
  ignore,
  async fn() {
    const b = boot(NAME);
    const server = await startServer([b.path("dump.zlib-d31.kdump")]);
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        await roundTrip(
          (s) => conn.write(typeof s === "string" ? enc.encode(s) : s),
          new Reader((b) => conn.read(b)),
          lastKernelLine(),
        );
      } finally {
        conn.close();
      }
      // A client that speaks first (as gdb does) gets protocol only, never the prompt.
      const gdb = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      try {
        await gdb.write(enc.encode("+" + latin1String(framePacket("qSupported:multiprocess+"))));
        const r = new Reader((b) => gdb.read(b));
        const first = await r.until((t) => /#[0-9a-f]{2}$/.test(t));
        assert.match(first, /^\+\$PacketSize=[^#]*#[0-9a-f]{2}$/);
        assert.equal(await r.quiet(600), "", "nothing after the reply");
      } finally {
        gdb.close();
      }
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "kdb console over --stdio: the same round trip on stdin/stdout",
  ignore,
  async fn() {
    const b = boot(NAME);
    const child = new Deno.Command(SERVER[0], {
      args: [...SERVER.slice(1), "--stdio", b.path("dump.zlib-d31.kdump")],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const writer = child.stdin.getWriter();
    const reader = child.stdout.getReader();
    let rest = new Uint8Array(0);
    const r = new Reader(async (buf) => {
      if (rest.length === 0) {
        const { value, done } = await reader.read();
        if (done) return null;
        rest = value;
      }
      const n = Math.min(buf.length, rest.length);
      buf.set(rest.subarray(0, n));
      rest = rest.subarray(n);
      return n;
    });
    try {
      await roundTrip(
        (s) => writer.write(typeof s === "string" ? enc.encode(s) : s),
        r,
        lastKernelLine(),
      );
      await writer.write(enc.encode("quit\n"));
      await writer.close();
      assert.equal((await child.status).code, 0);
    } finally {
      try {
        child.kill();
      } catch {
        // already gone
      }
      await reader.cancel().catch(() => {});
    }
  },
});

Deno.test({
  name:
    "gdb monitor: kdb's commands (bt, dmesg, log, ps A) through qRcmd; --tasks help and threads",
  ignore,
  async fn() {
    const b = boot(NAME);
    const e = b.expected;
    const console = Deno.readTextFileSync(b.path("console.log")).replaceAll("\r", "")
      .split("\n").filter((l) => /^\[ *\d+\.\d{6}\] /.test(l));
    const target = (
      extra: string[],
    ) => [...SERVER.slice(1), "--stdio", b.path("dump.zlib-d31.kdump"), ...extra];
    const r = await runGdb([
      `target remote | ${SERVER[0]} ${target([]).join(" ")}`,
      "monitor dmesg 2",
      "monitor log 1",
      "monitor bt",
      "monitor ps A",
      `monitor pid ${e.console.listener}`,
      "monitor frobnicate",
      "monitor help",
      "monitor quit",
      "monitor vtop linux_banner",
      "monitor vtop linux_banner+0x10",
      "monitor bt",
      "thread 1",
      "monitor bt",
      `monitor cpu ${e.crashed_cpu}`,
      "monitor bt",
    ]);
    const unprefixed = r.out.replace(/^<\d+>\[/gm, "[");
    assert.ok(
      unprefixed.includes(console.slice(-2).join("\n") + "\n" + console.at(-1) + "\n"),
      r.out,
    );
    assert.ok(r.out.includes(`Stack traceback for pid ${e.console.crasher}\n`), r.out);
    assert.match(r.out, /^Task Addr {16}Pid {3}Parent \[\*\] cpu State Thread {13}Command$/m);
    assert.ok(r.out.includes(`KDB current process is nc(pid=${e.console.listener})`), r.out);
    assert.ok(r.out.includes("Unknown kdb command: 'frobnicate'"), r.out);
    // help is one table: the server's and target's commands have their arguments in the Usage
    // column too, and quit (the text console's) says where it works instead of being unknown.
    assert.match(r.out, /^vtop {12}ADDRESS {13}translate a kernel virtual address/m);
    assert.match(r.out, /^sys {13} {20}kernel release/m);
    assert.ok(r.out.includes("quit: closes the text console only; in gdb, use detach or quit"));
    // vtop takes a symbol (and sym+offset) as kdb's commands do: linux_banner as System.map
    // places it, moved by the KASLR offset drgn found.
    const banner = BigInt(e.system_map.linux_banner) + BigInt(e.kaslr_offset);
    assert.ok(r.out.includes(`virtual  0x${banner.toString(16)}\nwalk:    physical`), r.out);
    assert.ok(r.out.includes(`virtual  0x${(banner + 16n).toString(16)}\n`), r.out);
    // monitor follows gdb's selected thread (README): bt stays on the task `monitor pid N` chose
    // while gdb's selection holds, gdb's thread 1 moves it to CPU 0's task, and `monitor cpu N`
    // moves it again, as at the console.
    const traces = [...r.out.matchAll(/^Stack traceback for pid (\d+)$/gm)].map((m) =>
      Number(m[1])
    );
    const cpu0 = e.cpus.find((c: { cpu: number }) => c.cpu === 0).pid;
    assert.deepEqual(traces.slice(-4), [
      e.console.crasher,
      e.console.listener,
      cpu0,
      e.console.crasher,
    ]);

    // --tasks: help lists ps once; threads shows the remote thread ids (the pids) as "Thread".
    const t = await runGdb([
      `target remote | ${SERVER[0]} ${target(["--tasks"]).join(" ")}`,
      "monitor help",
      "monitor threads",
      "info threads",
    ]);
    assert.equal((t.out.match(/^ps /gm) ?? []).length, 1, t.out);
    assert.match(t.out, /^ +Thread +CPU +Name$/m);
    assert.match(
      t.out,
      new RegExp(`^ +${e.console.sleeper} +\\d+ +${e.console.sleeper} sleep$`, "m"),
    );
    assert.ok(t.out.includes(`Thread ${e.console.sleeper} "${e.console.sleeper} sleep"`), t.out);
  },
});
