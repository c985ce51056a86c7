/**
 * A live x86_64 guest on the fixtures' Debian 6.12 kernel, where `current` lives in `pcpu_hot`
 * (Linux 6.2+): the kernel-aware view over it, and a stop inside a context switch, where
 * `rq->curr` is already the next task while the CPU still runs on the previous one's stack. The
 * thread, kdb's `bt` and its task are the previous one's, whose stack it is.
 */

import assert from "node:assert/strict";
import { runGdb, startServer } from "./gdb_helpers.ts";
import { bootGuest, LIVE_SERVER, liveGuestAvailable } from "./live_guest.ts";

Deno.test({
  name: "live x86_64 guest on Linux 6.12: threads by task, and a stop inside a context switch",
  ignore: !liveGuestAvailable("x86_64", "6.12"),
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const g = await bootGuest({ release: "6.12" });
  try {
    const server = await startServer(
      ["--qemu", `127.0.0.1:${g.gdbPort}`, "--guest-ram", g.ramPath, "--vmlinux", g.vmlinux],
      LIVE_SERVER,
    );
    try {
      assert.match(server.stderr(), /^release: +6\.12\./m, server.stderr());
      const r = await runGdb([
        "set sysroot /",
        `target remote 127.0.0.1:${server.port}`,
        "info threads",
        "break __switch_to_asm if ((struct task_struct *)$rdi)->pid != 0",
        "continue",
        "delete",
        'printf "PREV %d NEXT %d\\n", ((struct task_struct *)$rdi)->pid, ((struct task_struct *)$rsi)->pid',
        "monitor bt",
        "detach",
      ], { timeoutMs: 120_000 });
      assert.match(r.out, /Thread 2 "CPU 1: [^"]+"/, r.out);
      const prev = r.out.match(/^PREV (\d+) NEXT \d+$/m)?.[1];
      assert.ok(prev, r.out);
      assert.match(
        r.out,
        new RegExp(`Thread \\d "CPU \\d: \\S+ \\(pid ${prev}\\)" hit Breakpoint 1`),
        r.out,
      );
      assert.match(r.out, new RegExp(`^Stack traceback for pid ${prev}$`, "m"), r.out);
      assert.match(r.out, /^ __schedule\+0x/m, r.out);
      assert.doesNotMatch(r.out, /on no known stack/, r.out);
    } finally {
      await server.stop();
    }
  } finally {
    await g.stop();
  }
});
