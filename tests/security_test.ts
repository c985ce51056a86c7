/**
 * Security defaults (issue 8): the server listens on 127.0.0.1 unless told otherwise and warns
 * for other addresses; the dump and vmlinux are opened read-only and never written; the only file
 * named to gdb is the `--vmlinux` the user named (through qXfer:exec-file), and the only file sent
 * over vFile is the unwind table the server generates in memory (no host file I/O); the tasks
 * and the compiled binary ask for no permission beyond --allow-read and --allow-net (and
 * --allow-env), and the server works with exactly those.
 */

import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { parseCli } from "../cli/args.ts";
import { RspSession } from "../lib/rsp_session.ts";
import { serveTcp } from "../lib/transport.ts";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { SessionClient } from "./rsp_client.ts";
import { FakeTarget } from "./rsp_fake_target.ts";
import { boot } from "./fixtures.ts";
import { runGdb } from "./gdb_helpers.ts";
import denoJson from "../deno.json" with { type: "json" };

const B = boot("x86_64-6.1");
const DUMP = B.path("dump.zlib-d31.kdump");
const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
/** The permissions the server may have, and nothing else. */
const ALLOWED = new Set(["--allow-read", "--allow-net", "--allow-env"]);

function which(command: string): boolean {
  return new Deno.Command("sh", { args: ["-c", `command -v ${command}`], stdout: "null" })
    .outputSync().success;
}

/** This machine's IPv4 addresses other than loopback (none when `hostname -I` is missing). */
function localAddresses(): string[] {
  try {
    const out = new Deno.Command("hostname", { args: ["-I"], stdout: "piped", stderr: "null" })
      .outputSync();
    return new TextDecoder().decode(out.stdout).trim().split(/\s+/)
      .filter((ip) => /^\d+\.\d+\.\d+\.\d+$/.test(ip) && !ip.startsWith("127."));
  } catch {
    return [];
  }
}

/** Deno permission flags of a command line. */
function permissionFlags(command: string): string[] {
  return command.split(/\s+/).filter((w) =>
    /^(-A|--allow-[\w-]+(=.*)?|--deny-[\w-]+(=.*)?|-[A-Za-z]*A[A-Za-z]*)$/.test(w)
  ).map((w) => w.replace(/=.*$/, ""));
}

/** The server started like `deno task start`, with the task's own permissions. */
function startTaskArgs(): string[] {
  const task = (denoJson.tasks as Record<string, string>).start;
  return [...permissionFlags(task), MAIN];
}

Deno.test("deno.json: the server's tasks and the compiled binary ask only for read, net (and env)", () => {
  const tasks = denoJson.tasks as Record<string, string>;
  // Every task that runs or compiles the server.
  const serverTasks = Object.entries(tasks).filter(([, cmd]) =>
    /\bdeno (run|compile)\b.*cli\/main\.ts/.test(cmd)
  );
  assert.ok(serverTasks.some(([name]) => name === "start"), "a start task runs the server");
  assert.ok(serverTasks.some(([name]) => name === "compile"), "a compile task builds the binary");
  for (const [name, cmd] of serverTasks) {
    const flags = permissionFlags(cmd);
    assert.ok(flags.includes("--allow-read"), `${name}: needs --allow-read`);
    for (const f of flags) assert.ok(ALLOWED.has(f), `${name}: ${f} is not allowed (${cmd})`);
  }
  assert.match(tasks.compile, /^deno compile\b/);
});

/** What the server started like `deno task start` prints up to "listening on", then stopped. */
async function serverBanner(extra: string[]): Promise<string> {
  const child = new Deno.Command("deno", {
    args: ["run", ...startTaskArgs(), DUMP, "--port", "0", ...extra],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = child.stderr.getReader();
  while (!/listening on/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  child.kill("SIGTERM");
  await child.status;
  await reader.cancel();
  return text;
}

Deno.test("the printed pipe command and the test harness use the same permissions", async () => {
  const text = await serverBanner(["--once"]);
  const pipe = text.match(/target remote \| (.*)$/m);
  assert.ok(pipe, text);
  for (const f of permissionFlags(pipe[1])) assert.ok(ALLOWED.has(f), `printed command: ${f}`);
  const { SERVER } = await import("./gdb_helpers.ts");
  for (const f of permissionFlags(SERVER.join(" "))) assert.ok(ALLOWED.has(f), `harness: ${f}`);
});

Deno.test("listens on 127.0.0.1 by default; other addresses work only when asked, with a warning", async () => {
  assert.equal(parseCli([DUMP]).host, "127.0.0.1");
  assert.equal(parseCli(["-f", DUMP]).host, "127.0.0.1");
  const lines: string[] = [];
  const server = await serveTcp(new FakeTarget(), { port: 0, log: (l) => lines.push(l) });
  try {
    assert.equal(server.hostname, "127.0.0.1");
    assert.deepEqual(lines.filter((l) => l.startsWith("warning")), []);
    // Reachable on loopback, not on this machine's other addresses.
    (await Deno.connect({ hostname: "127.0.0.1", port: server.port })).close();
    for (const ip of localAddresses()) {
      await assert.rejects(
        Deno.connect({ hostname: ip, port: server.port }),
        `reachable on ${ip}`,
      );
    }
  } finally {
    await server.close();
  }
  const wide = await serveTcp(new FakeTarget(), {
    host: "0.0.0.0",
    port: 0,
    log: (l) => lines.push(l),
  });
  await wide.close();
  assert.ok(
    lines.some((l) => /^warning: listening on 0\.0\.0\.0:\d+, not a loopback address/.test(l)),
    lines.join("\n"),
  );
  const local = await serveTcp(new FakeTarget(), {
    host: "localhost",
    port: 0,
    log: (l) => lines.push(l),
  });
  await local.close();
  assert.equal(lines.filter((l) => l.startsWith("warning")).length, 1);
});

Deno.test("the CLI warns on stderr for a non-loopback --host, not for the default", async () => {
  const run = serverBanner;
  const plain = await run([]);
  assert.match(plain, /listening on 127\.0\.0\.1:\d+/);
  assert.doesNotMatch(plain, /warning: listening/);
  const wide = await run(["--host", "0.0.0.0"]);
  assert.match(wide, /warning: listening on 0\.0\.0\.0:\d+, not a loopback address/);
});

Deno.test("only the named vmlinux is named to gdb, and vFile serves only the generated files", () => {
  const kernel = new Kernel(openDump([DUMP]), { vmlinux: B.vmlinux, cacheBytes: 1 << 20 });
  try {
    const c = new SessionClient(new RspSession(new KernelTarget(kernel)));
    const supported = c.handshake();
    assert.match(supported, /qXfer:exec-file:read\+/);
    assert.doesNotMatch(supported, /qXfer:libraries\+|qXfer:osdata/);
    // The exec file is the --vmlinux path, whatever annex (pid) gdb gives; relative (so gdb reads
    // it from its own disk, not through vFile), resolving to that file from any directory.
    for (const annex of ["", "1", "ffff", "../../etc/passwd", "/etc/passwd"]) {
      const reply = c.request(`qXfer:exec-file:read:${annex}:0,fff`);
      assert.match(reply, /^l\.\.\//);
      for (const cwd of ["/", "/tmp", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p"]) {
        assert.equal(resolve(cwd, reply.slice(1)), resolve(B.vmlinux));
      }
    }
    // No host file I/O: nothing on disk opens, and unopened descriptors read nothing.
    assert.equal(c.request("vFile:setfs:0"), "F0");
    const hex = (t: string) =>
      Array.from(new TextEncoder().encode(t), (b) => b.toString(16).padStart(2, "0")).join("");
    for (
      const path of ["/etc/passwd", resolve(B.vmlinux), DUMP, "/proc/self/maps", "just probing"]
    ) {
      assert.equal(c.request(`vFile:open:${hex(path)},0,0`), "F-1,2", path);
    }
    for (const p of ["vFile:pread:0,100,0", "vFile:pread:7,100,0", "vFile:fstat:0"]) {
      assert.equal(c.request(p), "F-1,9", p);
    }
    assert.equal(c.request(`vFile:readlink:${hex("/proc/self/exe")}`), "F-1,2");
    // The one file: the generated library, read-only.
    const list = c.request("qXfer:libraries-svr4:read::0,fff");
    const name = /name="target:([^"]+)"/.exec(list)![1];
    assert.equal(c.request(`vFile:open:${hex(name)},1,0`), "F-1,d");
    const fd = c.request(`vFile:open:${hex(name)},0,0`);
    assert.match(fd, /^F[0-9a-f]+$/);
    assert.match(c.request(`vFile:pread:${fd.slice(1)},4,0`), /^F4;\x7fELF$/);
    assert.equal(c.request(`vFile:close:${fd.slice(1)}`), "F0");
    // Other objects and annexes name nothing on disk.
    assert.equal(c.request("qXfer:features:read:../../../../etc/passwd:0,fff"), "E00");
    assert.equal(c.request("qXfer:features:read:/etc/passwd:0,fff"), "E00");
    for (const obj of ["libraries", "osdata", "auxv", "siginfo", "fdpic"]) {
      assert.equal(c.request(`qXfer:${obj}:read::0,fff`), "", obj);
    }
  } finally {
    kernel.close();
  }
  // Without --vmlinux the exec file is the generated one (the kernel's symbols from the dump), a
  // name on no file system, served from memory; still nothing on disk opens, and no library list.
  const bare = new Kernel(openDump([DUMP]), { cacheBytes: 1 << 20 });
  try {
    const c = new SessionClient(new RspSession(new KernelTarget(bare)));
    const supported = c.handshake();
    assert.match(supported, /qXfer:exec-file:read\+/);
    assert.doesNotMatch(supported, /libraries/);
    const hex = (t: string) =>
      Array.from(new TextEncoder().encode(t), (b) => b.toString(16).padStart(2, "0")).join("");
    for (const annex of ["", "1", "../../etc/passwd"]) {
      assert.equal(
        c.request(`qXfer:exec-file:read:${annex}:0,fff`),
        "ltarget:/kdump-gdbserver/kernel-symbols-from-dump",
      );
    }
    for (const path of ["/etc/passwd", DUMP, "/kdump-gdbserver", "/kdump-gdbserver/other"]) {
      assert.equal(c.request(`vFile:open:${hex(path)},0,0`), "F-1,2", path);
    }
    const fd = c.request(`vFile:open:${hex("/kdump-gdbserver/kernel-symbols-from-dump")},0,0`);
    assert.match(fd, /^F[0-9a-f]+$/);
    assert.match(c.request(`vFile:pread:${fd.slice(1)},4,0`), /^F4;\x7fELF$/);
    assert.equal(c.request("qXfer:libraries-svr4:read::0,fff"), "");
  } finally {
    bare.close();
  }
});

/** Size, times and (for the dump) a SHA-256 of the files a session uses. */
async function fingerprint(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const st = statSync(p);
    let line = `${p} ${st.size} ${st.mtimeMs} ${st.ctimeMs} ${st.mode.toString(8)}`;
    if (st.size < 64 << 20) {
      const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(p));
      line += " " +
        Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
    }
    out.push(line);
  }
  return out;
}

/** Paths Deno itself writes while running a script (its caches), not the program. */
function denoOwn(path: string): boolean {
  const denoDir = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
  const modules = new URL("../node_modules/.deno", import.meta.url).pathname;
  return path.startsWith(denoDir + "/") || path.startsWith(modules) || path.startsWith("/dev/");
}

Deno.test("a gdb session with the start task's permissions opens dump and vmlinux read-only and writes nothing", async () => {
  const files = [DUMP, B.vmlinux];
  const before = await fingerprint(files);
  const trace = await Deno.makeTempFile({ prefix: "kdump-strace-" });
  const strace = which("strace") &&
    new Deno.Command("strace", { args: ["-qq", "-o", "/dev/null", "true"] }).outputSync().success;
  try {
    const server = [
      ...(strace
        ? ["strace", "-f", "-qq", "-o", trace, "-e", "trace=%file,truncate,ftruncate"]
        : []),
      "deno",
      "run",
      ...startTaskArgs(),
      "--stdio",
      DUMP,
      "--vmlinux",
      B.vmlinux,
    ];
    const r = await runGdb([
      `target remote | ${server.join(" ")}`,
      "bt 4",
      "p linux_banner",
      "x/4gx &init_task",
      "monitor sys",
      "detach",
    ], { timeoutMs: 90_000 });
    assert.match(r.out, /in panic \(/, r.out);
    assert.match(r.out, /<linux_banner> "Linux version/, r.out);
    assert.deepEqual(await fingerprint(files), before, "the dump and the vmlinux are unchanged");
    if (!strace) {
      console.log("strace unavailable: open flags not checked");
      return;
    }
    const lines = (await Deno.readTextFile(trace)).split("\n");
    const opens = (path: string) =>
      lines.filter((l) => l.includes(`"${path}"`) && /open/.test(l) && !/ENOENT/.test(l));
    for (const f of files) {
      const real = Deno.realPathSync(f);
      const found = opens(real);
      assert.ok(found.length > 0, `${real} was opened`);
      for (const l of found) {
        assert.match(l, /O_RDONLY/, l);
        assert.doesNotMatch(l, /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND/, l);
      }
    }
    // Nothing else is created, written, renamed or removed, except Deno's own caches.
    const writes = lines.filter((l) =>
      /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|\b(unlink|unlinkat|rename|renameat2?|mkdir|mkdirat|creat|truncate|ftruncate|symlink|link|linkat|chmod|fchmodat)\(/
        .test(l) && !/= -1 E/.test(l)
    );
    const foreign = writes.filter((l) => {
      const path = /"([^"]+)"/.exec(l)?.[1];
      return path === undefined ? !/ftruncate\(/.test(l) : !denoOwn(path);
    });
    assert.deepEqual(foreign, [], "files written by the server");
  } finally {
    await Deno.remove(trace);
  }
});

Deno.test("the server works with --allow-read and --allow-net alone", async () => {
  // Proof that nothing needs more; --allow-env in the tasks is a convenience, not a need.
  const r = await runGdb([
    `target remote | deno run --allow-read --allow-net ${MAIN} --stdio ${
      B.path("dump.zstd-d31.kdump")
    } --vmlinux ${B.vmlinux}`,
    "p linux_banner",
    "info threads",
    "detach",
  ], { timeoutMs: 90_000 });
  assert.match(r.out, /<linux_banner> "Linux version/, r.out);
  assert.doesNotMatch(r.out, /NotCapable|PermissionDenied|Requires/, r.out);
});
