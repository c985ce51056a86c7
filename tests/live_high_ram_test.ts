/**
 * A live guest with RAM above 4 GiB (4.5 GiB on QEMU's PC machine: 3 GiB below the PCI hole, 1.5
 * GiB from 4 GiB up, which the RAM file holds from its offset 3 GiB). The server maps
 * guest-physical addresses to file offsets from QMP's `info mtree -f`; this checks that map on a
 * real guest, where the kernel keeps data above 4 GiB (memblock allocates top-down, so the
 * `struct page` array lives there), against gdb straight on QEMU's stub and against the file.
 */

import assert from "node:assert/strict";
import { pipeTarget, runGdb } from "./gdb_helpers.ts";
import { bootGuest, LIVE_SERVER, liveGuestAvailable } from "./live_guest.ts";

const FOUR_GIB = 0x1_0000_0000n;
/** On the PC machine the RAM above 4 GiB follows the 3 GiB below it in the backing file. */
const HIGH_RAM_FILE_SHIFT = 0x4000_0000n;
const LENGTH = 0x10000;

Deno.test({
  name: "live guest with 4.5 GiB: RAM above 4 GiB read through the RAM file's real layout",
  ignore: !liveGuestAvailable(),
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const g = await bootGuest({ memoryMb: 4608 });
  const tmp = await Deno.makeTempDir();
  try {
    const httpd = g.pids.httpd;
    assert.ok(httpd > 0, g.console());
    const viaFile = await runGdb([
      "set sysroot /",
      pipeTarget([
        "--qemu",
        `127.0.0.1:${g.gdbPort}`,
        "--qmp",
        `127.0.0.1:${g.qmpPort}`,
        "--guest-ram",
        g.ramPath,
        "--vmlinux",
        g.vmlinux,
      ], LIVE_SERVER),
      "info threads",
      "p init_task.comm",
      // 1 MiB into the struct page array: the memmap sits at the top of RAM.
      "set $va = (unsigned long)vmemmap_base + 0x100000",
      'eval "monitor vtop %#lx", $va',
      `dump binary memory ${tmp}/file.bin $va $va+${LENGTH}`,
      "p/x (unsigned long)vmcoreinfo_data",
      'eval "monitor vtop %#lx", (unsigned long)vmcoreinfo_data',
      "x/s vmcoreinfo_data",
      "monitor sys",
    ], { timeoutMs: 120_000 });
    const out = viaFile.out;
    assert.match(out, /format: +live QEMU guest, RAM read from \/dev\/shm\//, out);
    assert.match(out, /Thread 1 "CPU 0: [^"]+"/, out);
    assert.match(out, /\$1 = "swapper\/0\\000/, out);
    assert.match(out, /"OSRELEASE=6\.1\.[^"]*\\n/, out);
    const physicals = [...out.matchAll(/^walk: +physical (0x[0-9a-f]+)/gm)].map((m) =>
      BigInt(m[1])
    );
    assert.equal(physicals.length, 2, out);
    const [memmap, vmcoreinfo] = physicals;
    // Both are above 4 GiB: the reads below exercise the high part of the map.
    assert.ok(memmap >= FOUR_GIB, `the memmap page is below 4 GiB: ${out}`);
    assert.ok(vmcoreinfo >= FOUR_GIB, `VMCOREINFO is below 4 GiB: ${out}`);
    const offset = out.match(/kernel offset (0x[0-9a-f]+)/)?.[1];
    assert.ok(offset, out);

    // The same physical range: gdb straight on QEMU's stub (its physical mode), our server
    // without the RAM file (through the stub), and the file itself at the PC machine's offset.
    const direct = await runGdb([
      `target remote 127.0.0.1:${g.gdbPort}`,
      "maint packet Qqemu.PhyMemMode:1",
      `dump binary memory ${tmp}/qemu.bin ${memmap} ${memmap + BigInt(LENGTH)}`,
      "maint packet Qqemu.PhyMemMode:0",
      "detach",
    ], { timeoutMs: 120_000 });
    const viaStub = await runGdb([
      "set sysroot /",
      pipeTarget(["--qemu", `127.0.0.1:${g.gdbPort}`, "--vmlinux", g.vmlinux], LIVE_SERVER),
      "set $va = (unsigned long)vmemmap_base + 0x100000",
      `dump binary memory ${tmp}/stub.bin $va $va+${LENGTH}`,
      "x/s vmcoreinfo_data",
    ], { timeoutMs: 120_000 });
    assert.match(viaStub.out, /"OSRELEASE=6\.1\.[^"]*\\n/, viaStub.out);
    const fileOffset = memmap - HIGH_RAM_FILE_SHIFT;
    const dd = await new Deno.Command("dd", {
      args: [
        `if=${g.ramPath}`,
        `of=${tmp}/dd.bin`,
        "bs=4096",
        "iflag=skip_bytes,count_bytes",
        `skip=${fileOffset}`,
        `count=${LENGTH}`,
        "status=none",
      ],
    }).output();
    assert.ok(dd.success, new TextDecoder().decode(dd.stderr));

    // Without a vmlinux: VMCOREINFO through the kernel image's pointer to it (above 4 GiB:
    // read through the high part of the map, or through the stub), wherever the allocator put
    // it; the same offset, and the kernel's own symbols and types.
    for (const args of [["--guest-ram", g.ramPath], []]) {
      const scan = await runGdb([
        pipeTarget(["--qemu", `127.0.0.1:${g.gdbPort}`, ...args], LIVE_SERVER),
        "info threads",
        "monitor ps httpd",
      ], { timeoutMs: 120_000 });
      assert.match(scan.out, new RegExp(`KASLR: +kernel offset ${offset}\\b`), scan.out);
      assert.match(
        scan.out,
        /^KASLR found: +VMCOREINFO \(guest memory: a pointer in the kernel image's data\)/m,
        `VMCOREINFO is at physical 0x${vmcoreinfo.toString(16)}\n${scan.out}`,
      );
      assert.match(scan.out, /types: +BTF and kallsyms found in guest memory/, scan.out);
      assert.match(scan.out, /Thread 2 "CPU 1: [^"]+"/, scan.out);
      assert.match(scan.out, new RegExp(`^\\s+${httpd}\\s+${httpd}\\s+1 .* httpd$`, "m"), scan.out);
    }

    const file = await Deno.readFile(`${tmp}/file.bin`);
    assert.equal(file.length, LENGTH, out);
    // struct pages: flags, list heads and refcounts, never all zero.
    assert.ok(file.some((b) => b !== 0), "the memmap range read as zeros");
    for (const [name, log] of [["qemu", direct.out], ["stub", viaStub.out], ["dd", ""]]) {
      const bytes = await Deno.readFile(`${tmp}/${name}.bin`).catch(() => new Uint8Array());
      assert.equal(bytes.length, LENGTH, `${name}.bin: ${log}`);
      assert.ok(bytes.every((b, i) => b === file[i]), `${name}.bin differs from ours: ${log}`);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
    await g.stop();
  }
});
