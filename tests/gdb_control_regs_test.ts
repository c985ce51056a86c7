// Real gdb on real dumps: the control registers of QEMU's notes under QEMU's names (x86_64:
// $cr3 is the page-table root of the task the CPU ran, as the kernel's own memory says; arm64's
// system registers are declared, and unavailable in a dump), and the read-only refusal of writes
// in words gdb shows.
import assert from "node:assert/strict";
import { big, boot } from "./fixtures.ts";
import { pipeTarget, runGdb } from "./gdb_helpers.ts";

for (const name of ["x86_64-6.1", "x86_64-6.1-la57"]) {
  Deno.test(`gdb ${name}: $cr3 is the running task's page tables, $cr0/$cr4 the CPU's mode`, async () => {
    const B = boot(name);
    const cmds = [
      "set sysroot /",
      pipeTarget([B.path("dump.zlib-d31.kdump"), "--vmlinux", B.vmlinux]),
    ];
    for (const c of B.expected.cpus) {
      cmds.push(
        `thread ${c.cpu + 1}`,
        `p/x $cr3 & ~0xfff`,
        // The kernel's view: the physical address of the task's active_mm->pgd.
        `p/x (unsigned long)((struct task_struct *)${c.task})->active_mm->pgd - page_offset_base`,
        `p/x $cr0 & 0x80000001`,
        `p/x ($cr4 >> 12) & 1`,
        `p $cr8`,
        `p $efer`,
      );
    }
    const r = await runGdb(cmds);
    const values = [...r.out.matchAll(/^\$\d+ = (.*)$/gm)].map((m) => m[1]);
    assert.equal(values.length, 6 * B.expected.cpus.length, r.out);
    for (let i = 0; i < B.expected.cpus.length; i++) {
      const [cr3, pgd, cr0, la57, cr8, efer] = values.slice(6 * i, 6 * i + 6);
      assert.match(cr3, /^0x[0-9a-f]+$/, r.out);
      assert.equal(cr3, pgd, `cpu ${i}: $cr3 vs active_mm->pgd`);
      assert.equal(cr0, "0x80000001", "paging and protected mode on");
      assert.equal(BigInt(la57), big(B.expected.pgtable_l5_enabled), "CR4.LA57 = 5-level paging");
      // QEMU's note has no CR8 or EFER.
      assert.equal(cr8, "<unavailable>");
      assert.equal(efer, "<unavailable>");
    }
  });
}

Deno.test("gdb: writes are refused in words gdb shows", async () => {
  const B = boot("x86_64-6.1");
  // init_task, relocated (no vmlinux: gdb starts in a moment).
  const addr = `0x${
    (big(B.expected.system_map.init_task) + big(B.expected.kaslr_offset)).toString(16)
  }`;
  const r = await runGdb([
    pipeTarget([B.path("dump.zlib-d31.kdump")]),
    "set var $rax = 1",
    `x/wx ${addr}`,
    `set {int}${addr} = 0x12345678`,
    `x/wx ${addr}`,
  ]);
  assert.match(
    r.out,
    /Could not write register "rax"; remote failure reply 'E\.target is a crash dump: memory and registers are read-only'/,
  );
  // gdb itself only says "Cannot access memory" for a memory write; the server's line says why.
  assert.match(
    r.out,
    new RegExp(`kdump-gdbserver: memory write at ${addr} refused: target is a crash dump`),
  );
  assert.match(r.out, new RegExp(`Cannot access memory at address ${addr}`));
  const words = [...r.out.matchAll(/:\s+(0x[0-9a-f]{8})\s*$/gm)].map((m) => m[1]);
  assert.equal(words.length, 2, r.out);
  assert.equal(words[0], words[1], "memory unchanged");
  assert.notEqual(words[1], "0x12345678");
});

Deno.test("gdb-multiarch aarch64-6.1: the EL1 system registers are gdb's, unavailable in a dump", async () => {
  const B = boot("aarch64-6.1");
  const r = await runGdb([
    pipeTarget([B.path("dump.zlib-d31.kdump")]),
    "p $ESR_EL1",
    "info registers system",
    "p/x $pc",
  ], { gdb: "gdb-multiarch" });
  // Outside `g` (as QEMU's stub keeps them): the core registers still come whole.
  assert.match(r.out, /^\$1 = <unavailable>$/m, r.out);
  for (const name of ["FAR_EL1", "TTBR1_EL1", "SP_EL0"]) {
    assert.match(r.out, new RegExp(`^${name} +<unavailable>$`, "m"), r.out);
  }
  const pc = r.out.match(/^\$2 = (0x[0-9a-f]+)$/m)?.[1];
  const crashed = B.expected.cpus.find((c: { cpu: number }) => c.cpu === B.expected.crashed_cpu);
  assert.ok(pc, r.out);
  assert.equal(BigInt(pc), big(crashed.frames[0].pc), "the panic CPU's pc, as drgn unwound it");
});
