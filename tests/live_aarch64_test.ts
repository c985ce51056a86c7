/**
 * A live aarch64 guest (the fixtures' Debian 6.1 arm64 kernel under qemu-system-aarch64 -M virt,
 * KASLR on) behind kdump-gdbserver --qemu, driven by gdb-multiarch: the same code as x86_64, with
 * registers named by QEMU's own target description and VMCOREINFO found by a scan of guest RAM.
 */

import assert from "node:assert/strict";
import { runGdb, SERVER } from "./gdb_helpers.ts";
import { bootGuest, liveGuestAvailable } from "./live_guest.ts";

const available = liveGuestAvailable("aarch64");
const LIVE_SERVER = ["deno", "run", "-A", ...SERVER.slice(4)];

Deno.test({
  name: "live aarch64 guest: threads, relocation, breakpoint, ps; QEMU killed while running",
  ignore: !available,
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const g = await bootGuest({ arch: "aarch64" });
  try {
    const vmlinux = g.vmlinux;
    const server = [...LIVE_SERVER, "--stdio", "--qemu", `127.0.0.1:${g.gdbPort}`];
    const r = await runGdb([
      "set sysroot /",
      `target remote | ${[...server, "--guest-ram", g.ramPath, "--vmlinux", vmlinux].join(" ")}`,
      "info threads",
      "p init_task.comm",
      "break do_nanosleep",
      "continue",
      "bt 3",
      "monitor ps httpd",
    ], { gdb: "gdb-multiarch", timeoutMs: 120_000 });
    assert.match(r.out, /format: +live QEMU guest, RAM read from .*aarch64/, r.out);
    assert.match(r.out, /KASLR found: +VMCOREINFO \(a scan of guest RAM\)/, r.out);
    assert.match(r.out, /Thread 2 "CPU 1: [^"]+"/, r.out);
    assert.match(r.out, /\$1 = "swapper\/0\\000/, r.out);
    assert.match(r.out, /Thread \d "CPU \d: sleep \(pid \d+\)" hit Breakpoint 1/, r.out);
    assert.match(r.out, /^#1 .* in hrtimer_nanosleep /m, r.out);
    const httpd = g.pids.httpd;
    assert.match(r.out, new RegExp(`^\\s+${httpd}\\s+${httpd}\\s+1 .* httpd$`, "m"), r.out);

    // QEMU killed while the guest runs under gdb's `continue`: one line, the server exits, gdb
    // sees the connection close; nothing hangs.
    const err = await Deno.makeTempFile();
    try {
      const killer = new Promise((r) => setTimeout(r, 8000)).then(() =>
        Deno.kill(g.pid, "SIGKILL")
      );
      const started = Date.now();
      const k = await runGdb([
        `target remote | ${[...server, "--guest-ram", g.ramPath].join(" ")} 2>${err}`,
        "continue",
      ], { gdb: "gdb-multiarch", timeoutMs: 60_000 });
      await killer;
      assert.ok(Date.now() - started < 50_000);
      // Either gdb reads the server's last words (the reason, then "exited with SIGKILL"), or
      // the server is gone first.
      assert.match(
        k.out,
        /Program terminated with signal SIGKILL|Remote connection closed|Remote communication error/,
        k.out,
      );
      const text = await Deno.readTextFile(err);
      assert.match(
        text,
        /^kdump-gdbserver: QEMU's gdbstub at 127\.0\.0\.1:\d+: QEMU closed the gdbstub connection$/m,
        text,
      );
      assert.doesNotMatch(text, /^\s+at /m, text);
    } finally {
      await Deno.remove(err);
    }
  } finally {
    await g.stop();
  }
});
