/**
 * A live aarch64 guest (the fixtures' Debian 6.1 arm64 kernel under qemu-system-aarch64 -M virt,
 * KASLR on) behind kdump-gdbserver --qemu, driven by gdb-multiarch: the same code as x86_64, with
 * registers named by QEMU's own target description. The KASLR offset comes from VBAR_EL1 against
 * the vmlinux's `vectors` (no RAM file needed), and must agree with VMCOREINFO found independently
 * by a scan of the RAM file.
 */

import assert from "node:assert/strict";
import { runGdb, startServer } from "./gdb_helpers.ts";
import {
  bootGuest,
  LIVE_SERVER,
  liveGuestAvailable,
  openConsole,
  qmpCommand,
  runLiveServer,
} from "./live_guest.ts";
import { boot, hasBoot } from "./fixtures.ts";
import { Vmlinux } from "../lib/vmlinux.ts";

const available = liveGuestAvailable("aarch64");
const banner = runLiveServer;

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
      // A single step off the breakpoint moves the pc (a step QEMU did not run is sent again).
      "set $before = $pc",
      "stepi",
      "p $pc != $before",
      "delete",
      // A hardware watchpoint (QEMU's Z2 on arm64), its stop reply's watch: field kept.
      "watch jiffies",
      "continue",
      "delete",
      // Inside a context switch rq->curr is already the next task; the CPU is still on the
      // previous one's stack (x0), which SP_EL0 (`current`) names.
      "break __switch_to if ((struct task_struct *)$x0)->pid != 0",
      "continue",
      "delete",
      'printf "PREV %d\\n", ((struct task_struct *)$x0)->pid',
      "monitor bt",
      // The EL1 system registers QEMU keeps out of `g`.
      "monitor sysregs 0",
      "monitor sysregs 7",
      // gdb's own registers too, read as on QEMU's stub (outside `g`, one `p` each).
      "thread 1",
      'printf "VBAR %#lx ESR %#lx\\n", $VBAR_EL1, $ESR_EL1',
    ], { gdb: "gdb-multiarch", timeoutMs: 150_000 });
    assert.match(r.out, /format: +live QEMU guest, RAM read from .*aarch64/, r.out);
    assert.match(
      r.out,
      /KASLR found: +VMCOREINFO \(guest memory: the kernel's vmcoreinfo_data\), agreeing with VBAR_EL1 against the vmlinux's vectors, confirmed by its linux_banner/,
      r.out,
    );
    assert.match(r.out, /Thread 2 "CPU 1: [^"]+"/, r.out);
    assert.match(r.out, /\$1 = "swapper\/0\\000/, r.out);
    assert.match(r.out, /Thread \d "CPU \d: sleep \(pid \d+\)" hit Breakpoint 1/, r.out);
    assert.match(r.out, /^#1 .* in hrtimer_nanosleep /m, r.out);
    assert.match(r.out, /^\$2 = 1$/m, r.out);
    const httpd = g.pids.httpd;
    assert.match(r.out, new RegExp(`^\\s+${httpd}\\s+${httpd}\\s+1 .* httpd$`, "m"), r.out);
    const change = r.out.match(
      /hit Hardware watchpoint 2: jiffies\n\nOld value = (\d+)\nNew value = (\d+)\n/,
    );
    assert.ok(change && BigInt(change[2]) > BigInt(change[1]), r.out);

    const offset = r.out.match(/^KASLR: +kernel offset (0x[0-9a-f]+)$/m)?.[1];
    assert.ok(offset && offset !== "0x0", r.out);
    const prev = r.out.match(/^PREV (\d+)$/m)?.[1];
    assert.ok(prev, r.out);
    assert.match(
      r.out,
      new RegExp(`Thread \\d "CPU \\d: \\S+ \\(pid ${prev}\\)" hit Breakpoint`),
      r.out,
    );
    assert.match(r.out, new RegExp(`^Stack traceback for pid ${prev}$`, "m"), r.out);
    assert.doesNotMatch(r.out, /is on no known stack/, r.out);
    // VBAR_EL1 holds the kernel's vectors: the vmlinux's, moved by the KASLR offset.
    const vbar = r.out.match(/^ {2}VBAR_EL1 +(0x[0-9a-f]{16})$/m)?.[1];
    assert.ok(vbar, r.out);
    const seen = r.out.match(/^VBAR (0x[0-9a-f]+) ESR (0x[0-9a-f]+|0)$/m);
    assert.ok(seen, r.out);
    assert.equal(BigInt(seen[1]), BigInt(vbar));
    const image = new Vmlinux(vmlinux);
    const vectors = image.symbol("vectors");
    image.close();
    assert.ok(vectors !== undefined);
    assert.equal(BigInt(vbar), vectors + BigInt(offset));
    for (const name of ["ESR_EL1", "FAR_EL1", "ELR_EL1", "SPSR_EL1", "SP_EL0", "TTBR1_EL1"]) {
      assert.match(r.out, new RegExp(`^ {2}${name} +0x[0-9a-f]{16}$`, "m"), r.out);
    }
    assert.match(r.out, /^sysregs: no CPU 7 \(the guest has 2\)$/m, r.out);

    // Without the RAM file: the offset from VBAR_EL1, VMCOREINFO read through the gdbstub.
    const bare = await runGdb([
      "set sysroot /",
      `target remote | ${[...server, "--vmlinux", vmlinux].join(" ")}`,
      "p init_task.comm",
      "info symbol $pc",
      "bt 3",
    ], { gdb: "gdb-multiarch", timeoutMs: 120_000 });
    assert.match(bare.out, /format: +live QEMU guest, RAM read through the gdbstub/, bare.out);
    assert.match(
      bare.out,
      /KASLR found: +VMCOREINFO \(guest memory: the kernel's vmcoreinfo_data\), agreeing with VBAR_EL1 against the vmlinux's vectors, confirmed by its linux_banner/,
      bare.out,
    );
    assert.match(bare.out, new RegExp(`^KASLR: +kernel offset ${offset}$`, "m"), bare.out);
    assert.match(bare.out, /\$1 = "swapper\/0\\000/, bare.out);
    // gdb names the vmlinux ("of …") now that it also loaded the server's unwind tables.
    assert.match(bare.out, /^\w+( \+ \d+)? in section \.text( of \S+vmlinux)?$/m, bare.out);
    assert.match(bare.out, /^#1 +0x[0-9a-f]+ in \w+ /m, bare.out);

    // Another arm64 kernel's vmlinux: one line says it is not the running kernel's.
    if (hasBoot("aarch64-6.12")) {
      const w = await banner([
        "--qemu",
        `127.0.0.1:${g.gdbPort}`,
        "--vmlinux",
        boot("aarch64-6.12").vmlinux,
      ]);
      assert.equal(w.code, 0, w.err);
      const lines = w.err.match(/^warning: .*does not match the running kernel.*$/gm) ?? [];
      assert.equal(lines.length, 1, w.err);
      assert.match(
        lines[0],
        /^warning: +\S+aarch64-6\.12\/vmlinux does not match the running kernel: CPU \d's VBAR_EL1 puts its vectors at KASLR offset 0x[0-9a-f]+, but its linux_banner is not at 0x[0-9a-f]+ \(.*\)$/,
      );
      // VMCOREINFO, found through the kernel image's data, still gives the right offset.
      assert.match(
        w.err,
        /^KASLR found: +VMCOREINFO \(guest memory: a pointer in the kernel image's data\)$/m,
        w.err,
      );
      assert.match(w.err, new RegExp(`^KASLR: +kernel offset ${offset}$`, "m"), w.err);
    }
    // Neither --vmlinux nor --guest-ram: VMCOREINFO through the kernel image's data (VBAR_EL1's
    // image, TTBR1_EL1's linear map) read through the gdbstub, the same offset as VBAR_EL1 gave
    // against the vmlinux, and the kernel's own kallsyms and BTF.
    const none = await banner(["--qemu", `127.0.0.1:${g.gdbPort}`]);
    assert.equal(none.code, 0, none.err);
    assert.match(
      none.err,
      /^KASLR found: +VMCOREINFO \(guest memory: a pointer in the kernel image's data\)$/m,
      none.err,
    );
    assert.match(none.err, new RegExp(`^KASLR: +kernel offset ${offset}$`, "m"), none.err);
    assert.match(none.err, new RegExp(`^symbols: +file <vmlinux> -o ${offset}$`, "m"), none.err);
    assert.match(none.err, /^types: +BTF found in guest memory/m, none.err);
    assert.match(none.err, /^ +2 +CPU 1: \S/m, none.err);

    // kdb's console on the same code: a software breakpoint (QEMU's `Z0`, kind 4 on arm64), a
    // single step, rd.
    const tcp = await startServer(
      ["--qemu", `127.0.0.1:${g.gdbPort}`, "--guest-ram", g.ramPath, "--vmlinux", vmlinux],
      LIVE_SERVER,
    );
    try {
      const con = await openConsole(tcp.port);
      const kdb = async (line: string) => {
        const from = con.text().length;
        await con.send(line + "\n");
        const to = await con.waitFor(/\[\d\]kdb> $/, from);
        return con.text().slice(from, to);
      };
      await con.waitFor(/kdb> $/, 0);
      const bp = (await kdb("bp do_nanosleep")).match(/BP #0 at (0x[0-9a-f]{16}) \(do_nanosleep\)/);
      assert.ok(bp, con.text());
      const hit = (await kdb("go")).match(/due to Breakpoint @ (0x[0-9a-f]+)\n/);
      assert.ok(hit && BigInt(hit[1]) === BigInt(bp[1]), con.text());
      const step = (await kdb("ss")).match(/due to SS trap @ (0x[0-9a-f]+)\n/);
      assert.ok(step, con.text());
      assert.match(
        await kdb("rd"),
        new RegExp(`pc: ${BigInt(step[1]).toString(16).padStart(16, "0")}`),
      );
      assert.match(await kdb("bc 0"), /^Breakpoint 0 at 0x[0-9a-f]+ cleared$/m);
      await con.send("quit\n");
      await con.reader;
    } finally {
      await tcp.stop();
    }

    // QEMU killed while the guest runs under gdb's `continue`: one line, the server exits, gdb
    // sees the connection close; nothing hangs.
    const err = await Deno.makeTempFile();
    try {
      // Killed once gdb's `continue` runs the guest: QEMU's run state goes paused (gdb attached)
      // then running. A fixed delay killed it, on a slow run, while gdb was still attaching.
      const killer = (async () => {
        const deadline = Date.now() + 40_000;
        let attached = false;
        while (Date.now() < deadline) {
          const status = (await qmpCommand(g.qmpPort, "query-status") as { status: string })
            .status;
          if (status !== "running") attached = true;
          else if (attached) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        await new Promise((r) => setTimeout(r, 500));
        Deno.kill(g.pid, "SIGKILL");
      })();
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
      // No vmlinux here: VMCOREINFO through the kernel image's data (read from the RAM file)
      // agrees with VBAR_EL1 against the vmlinux.
      assert.match(
        text,
        /^KASLR found: +VMCOREINFO \(guest memory: a pointer in the kernel image's data\)$/m,
        text,
      );
      assert.match(text, new RegExp(`^KASLR: +kernel offset ${offset}$`, "m"), text);
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
