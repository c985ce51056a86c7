// The command line as a user meets it, on real dumps: a port in use, --help, the banner.
import assert from "node:assert/strict";
import { boot } from "./fixtures.ts";
import { runServer, startServer } from "./gdb_helpers.ts";

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
