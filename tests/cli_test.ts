// The command line as a user meets it, on real dumps: a port in use, --help, the banner.
import assert from "node:assert/strict";
import { boot, FIXTURES } from "./fixtures.ts";
import { pipeTarget, runGdb, runServer, startServer } from "./gdb_helpers.ts";

const B = boot("x86_64-6.1");

const run = runServer;

Deno.test("port in use: one line naming address and port and what to do, before the dump is read", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = busy.addr.port;
    // QEMU's flattened file takes seconds to index; the port is checked before that.
    const r = await run([B.path("dump.qemu-kdump-zlib.flat"), "--port", String(port)]);
    assert.equal(r.code, 1);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      new RegExp(`^kdump-gdbserver: cannot listen on 127\\.0\\.0\\.1:${port}: `),
    );
    assert.match(lines[0], /in use/);
    assert.match(lines[0], /--port 0/);
    assert.doesNotMatch(r.stderr, /indexing|at .*\.ts:\d+/);
  } finally {
    busy.close();
  }
});

Deno.test("an address that is not this machine's: one line, before the dump is read", async () => {
  const r = await run([B.path("dump.qemu-kdump-zlib.flat"), "--host", "192.0.2.7", "--port", "0"]);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    "kdump-gdbserver: cannot listen on 192.0.2.7:0: no such local address; give one of this " +
      "machine's addresses with --host (default 127.0.0.1)\n",
  );
});

Deno.test("an empty or non-decimal --port or --pid (an unset shell variable): one usage line, exit 2", async () => {
  for (
    const [args, line] of [
      [["--port="], '--port: "" is not a port number'],
      [["--port", "0x4d2"], '--port: "0x4d2" is not a port number'],
      [["--pid="], '--pid: "" is not a process id'],
      [["--pid", "1e2"], '--pid: "1e2" is not a process id'],
      [
        ["--cache-mb", "-1"],
        '--cache-mb: its value starts with "-"; write --cache-mb=VALUE if that is meant',
      ],
    ] as const
  ) {
    const r = await run([B.path("dump.elf"), ...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.ok(r.stderr.startsWith(`kdump-gdbserver: ${line}\n`), r.stderr);
  }
});

Deno.test("--help: the usage on stdout, ending in a newline; exit 0", async () => {
  const r = await run(["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^usage: kdump-gdbserver /);
  assert.ok(r.stdout.endsWith(".\n"), JSON.stringify(r.stdout.slice(-20)));
  assert.equal(r.stderr, "");
});

Deno.test("banner: nothing but progress before its first line; open time folded into it", async () => {
  const s = await startServer([B.path("dump.qemu-kdump-zlib.flat"), "--once"]);
  try {
    const lines = s.stderr().split("\n");
    const first = lines.findIndex((l) => l.startsWith("kdump-gdbserver "));
    assert.ok(first >= 0, s.stderr());
    for (const l of lines.slice(0, first)) assert.match(l, /^indexing flattened dump: \d+%$/);
    // The open time, when shown, is a banner line like the others.
    for (const l of lines.filter((l) => /opened in/.test(l))) {
      assert.match(l, /^opened in: +\d+\.\d s$/);
      assert.ok(lines.indexOf(l) > first);
    }
  } finally {
    await s.stop();
  }
});

Deno.test("a vmlinux of the other architecture is refused in one line, both ways", async () => {
  const arm = boot("aarch64-6.1");
  const cases: [string, string, string, string][] = [
    [B.path("dump.zlib-d31.kdump"), arm.vmlinux, "aarch64", "x86_64"],
    [arm.path("dump.zlib-d31.kdump"), B.vmlinux, "x86_64", "aarch64"],
  ];
  for (const [dump, vmlinux, vmlinuxArch, dumpArch] of cases) {
    const r = await run(["--stdio", dump, "--vmlinux", vmlinux]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, "", "nothing offered to gdb");
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.ok(lines[0].startsWith(`kdump-gdbserver: ${vmlinux}: `), lines[0]);
    assert.match(
      lines[0],
      new RegExp(`vmlinux for ${vmlinuxArch}, but the dump is of an ${dumpArch} kernel`),
    );
  }
});

/** The permission flags of a deno.json task's command line (`--allow-…`, `-A`), in order. */
function permissionFlags(task: string): string[] {
  return task.split(/\s+/).filter((w) => w === "-A" || w.startsWith("--allow-"));
}

Deno.test("deno task start and compile: the live link under the task's own permissions (no FFI)", async () => {
  const root = new URL("..", import.meta.url);
  const tasks = JSON.parse(await Deno.readTextFile(new URL("deno.json", root))).tasks;
  const start: string[] = tasks.start.split(/\s+/);
  assert.deepEqual(start.slice(0, 2), ["deno", "run"]);
  assert.equal(start.at(-1), "cli/main.ts");
  // The binary gets what the task gets, and every worker module of lib/ (not found by
  // `deno compile` from the static imports).
  assert.deepEqual(permissionFlags(tasks.compile), permissionFlags(tasks.start));
  for (const file of Deno.readDirSync(new URL("lib/", root))) {
    const text = Deno.readTextFileSync(new URL(`lib/${file.name}`, root));
    for (const m of text.matchAll(/new Worker\(new URL\("\.\/([\w.]+)"/g)) {
      assert.ok(tasks.compile.includes(`--include lib/${m[1]}`), `compile includes ${m[1]}`);
    }
  }

  // Under the task's flags (no FFI: the sandbox keeps a dump read-only whatever the code does):
  // QEMU's gdbstub (a scripted one) through the worker thread, the guest RAM file through Deno,
  // and a RAM file under /dev/ refused with what to do.
  const lib = (name: string) => JSON.stringify(new URL(`lib/${name}`, root).href);
  const probe = await Deno.makeTempFile({ prefix: "kdump_task_probe_", suffix: ".ts" });
  const ramFile = await Deno.makeTempFile({ prefix: "kdump_task_ram_" });
  await Deno.writeTextFile(
    probe,
    `import { QemuStub } from ${lib("qemu_stub.ts")};
import { PreadFile } from ${lib("libc_file.ts")};
import { GuestRam } from ${lib("guest_ram.ts")};
const fake = new Worker(${
      JSON.stringify(new URL("tests/fake_gdbstub_worker.ts", root).href)
    }, { type: "module" });
const port = await new Promise((resolve) => fake.onmessage = (e) => resolve(e.data.port));
const stub = QemuStub.connect("127.0.0.1", port);
const out = { link: stub.link, qC: stub.request("qC"), pread: !!PreadFile.open(Deno.args[0]) };
stub.close();
try {
  new GuestRam("/dev/shm/kdump-gdbserver-absent-file", "", "");
} catch (e) {
  out.devRam = e.message;
}
console.log(JSON.stringify(out));
fake.terminate();
`,
  );
  const runProbe = async (env: Record<string, string> = {}, flags = start.slice(1, -1)) => {
    const r = await new Deno.Command(start[0], {
      args: [...flags, probe, ramFile],
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    const dec = new TextDecoder();
    assert.equal(r.code, 0, dec.decode(r.stderr));
    return JSON.parse(dec.decode(r.stdout));
  };
  try {
    const sandboxed = await runProbe();
    assert.equal(sandboxed.link, "worker thread");
    assert.equal(sandboxed.qC, "QCp01.01");
    assert.equal(sandboxed.pread, false, "no pread through the C library without FFI");
    assert.equal(
      sandboxed.devRam,
      "/dev/shm/kdump-gdbserver-absent-file: Deno reads files under /dev/ only with --allow-all: " +
        "run with -A, or give QEMU a mem-path outside /dev/",
    );
    // With -A (as the README runs live guests): the blocking socket and pread; the worker
    // thread still when KDUMP_QEMU_LINK asks for it.
    const all = await runProbe({}, ["run", "-A"]);
    assert.equal(all.link, "blocking socket");
    assert.equal(all.qC, "QCp01.01");
    assert.equal(all.pread, true, "pread through the C library");
    const worker = await runProbe({ KDUMP_QEMU_LINK: "worker" }, ["run", "-A"]);
    assert.equal(worker.link, "worker thread");
    assert.equal(worker.qC, "QCp01.01");
  } finally {
    await Deno.remove(probe);
    await Deno.remove(ramFile);
  }

  // The task itself, as the README runs it.
  const task = async (...args: string[]) => {
    const r = await new Deno.Command("deno", {
      args: ["task", "start", ...args],
      cwd: root,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    return { code: r.code, stdout: new TextDecoder().decode(r.stdout) };
  };
  const help = await task("--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: kdump-gdbserver /);
  const bt = await task(B.path("dump.zlib-d31.kdump"), "-c", "bt");
  assert.equal(bt.code, 0);
  assert.match(bt.stdout, /^Stack traceback for pid \d+$/m);
});

Deno.test("process mode: the banner's symbols line, followed in gdb, puts the executable where it runs", async () => {
  const pid = String(B.expected.process.pid);
  const s = await startServer([B.path("dump.elf"), "--pid", pid, "--once"]);
  let banner: string;
  try {
    banner = s.stderr();
  } finally {
    await s.stop();
  }
  // No offset: gdb relocates a PIE itself from the auxv, and busybox is not one (ET_EXEC), so
  // any `-o` would move it off its code. The vmlinux's KASLR line is kernel mode's, not shown.
  assert.match(banner, /^symbols: +file <executable> +\(or --exe FILE\)$/m, banner);
  assert.match(
    banner,
    /^mappings: +monitor maps +\(gdb's info proc reads a live \/proc\)$/m,
    banner,
  );
  assert.match(banner, /^gdb commands:\n {2}file <executable>\n {2}target remote /m, banner);
  assert.doesNotMatch(banner, / -o 0x|<vmlinux>|^warning/m, banner);
  assert.match(banner, /^ {2}target remote \| exec deno run .*--stdio .*--pid \d+$/m, banner);

  const busybox = `${FIXTURES}/busybox/amd64/busybox`;
  const r = await runGdb([
    pipeTarget([B.path("dump.elf"), "--pid", pid]),
    `file ${busybox}`,
    "info files",
    "p/x $pc",
  ]);
  const text = r.out.match(/(0x[0-9a-f]+) - (0x[0-9a-f]+) is \.text$/m);
  const pc = r.out.match(/^\$1 = (0x[0-9a-f]+)$/m);
  assert.ok(text && pc, r.out);
  const at = BigInt(pc[1]);
  assert.ok(BigInt(text[1]) <= at && at < BigInt(text[2]), `pc ${pc[1]} in .text\n${r.out}`);
});

Deno.test("process mode on a dump without user pages (-d 31): the banner says why gdb gets no stack", async () => {
  const r = await run([
    B.path("dump.zlib-d31.kdump"),
    "--pid",
    String(B.expected.process.pid),
    "--stdio",
  ]);
  assert.match(
    r.stderr,
    /^warning: +user stack unreadable: 0x[0-9a-f]+ \(physical 0x[0-9a-f]+\): page excluded from the dump \(filtered by the dump level\)\. gdb gets the registers but no backtrace; user pages are kept by an ELF dump, or by makedumpfile without -d 8$/m,
    r.stderr,
  );
});

Deno.test("the vmlinux given as the dump: one line saying so, exit 1", async () => {
  const r = await run([B.vmlinux, "-c", "sys"]);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr,
    `kdump-gdbserver: ${B.vmlinux}: ELF header: an executable (ET_EXEC), not a vmcore (ET_CORE): ` +
      "a vmlinux? give the dump first and the vmlinux with --vmlinux\n",
  );
  assert.equal(r.stdout, "");
});

Deno.test("one part of a --split set alone: the banner warns; the whole set says how many parts", async () => {
  const [one, two] = [B.path("dump.split-d31.1.kdump"), B.path("dump.split-d31.2.kdump")];
  const alone = await run([two, "--stdio"]);
  const part = alone.stderr.match(/^split part: +pfns (\d+)\.\.(\d+)$/m);
  assert.ok(part, alone.stderr);
  assert.match(
    alone.stderr,
    new RegExp(
      `^warning: +one part of a makedumpfile --split set \\(pfns ${part[1]}\\.\\.${
        part[2]
      } of \\d+\\): ` +
        "the other pages read as missing; give every part, in any order$",
      "m",
    ),
    alone.stderr,
  );
  const set = await run([two, one, "--stdio"]);
  assert.match(set.stderr, /^split parts: +2$/m, set.stderr);
  assert.doesNotMatch(set.stderr, /^split part:|^warning/m, set.stderr);
});

Deno.test("a dump that does not exist: one line with the path once, exit 1", async () => {
  const r = await run(["/nonexistent/vmcore", "-c", "sys"]);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    "kdump-gdbserver: /nonexistent/vmcore: open: no such file or directory (ENOENT)\n",
  );
});

Deno.test("-j file without auxv (the original tool's): the banner says gdb needs a PIE's base", async () => {
  const p = B.expected.process;
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/process.json`;
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        // Hex strings: 64-bit values, which JSON numbers would round here.
        rootpgt: p.pgd,
        loadaddr: "0x401000",
        threads: [{ pid: p.pid, tid: p.pid, comm: p.comm, registers: p.user_registers }],
      }),
    );
    const r = await run([B.path("dump.elf"), "-j", file, "--stdio"]);
    assert.match(
      r.stderr,
      /^symbols: +file <executable>, with -o BASE for a PIE \(no auxv in the file; its first executable mapping starts at 0x401000\)$/m,
      r.stderr,
    );
    // Neither --exe (it goes with --pid) nor monitor maps (it needs the kernel's VMAs) applies.
    assert.doesNotMatch(r.stderr, /--exe|^mappings:/m, r.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
