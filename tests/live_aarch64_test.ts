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
  name: "live aarch64 guest: threads, relocation, breakpoint, ps",
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
  } finally {
    await g.stop();
  }
});
