/**
 * Run by tests/live_gdb_test.ts in a process of its own: the RAM file is under /dev/shm, which
 * Deno opens only with --allow-all (the test runner has less). Prints, as JSON, the pages that
 * start with `OSRELEASE=` by the two RAM scans of the server: every page of the RAM file, and
 * the first bytes of each page through QEMU's gdbstub in its physical mode.
 *
 * Usage: deno run -A tests/live_scans.ts GDB_PORT RAM_FILE
 */

import { GuestRam } from "../lib/guest_ram.ts";
import { ramFileScan, stubScan } from "../lib/live_discovery.ts";
import type { LiveSource } from "../lib/live_dump.ts";
import { QemuStub } from "../lib/qemu_stub.ts";

const [port, ramPath] = Deno.args;
const stub = QemuStub.connect("127.0.0.1", Number(port));
try {
  const ram = new GuestRam(ramPath, stub.monitor("info memdev"), stub.monitor("info mtree -f"));
  try {
    const file = [...ramFileScan(ram).candidates()];
    if (stub.request("Qqemu.PhyMemMode:1") !== "OK") throw new Error("no physical mode");
    const src = { stub, ramRanges: ram.ranges } as unknown as LiveSource;
    const scan = stubScan(src);
    const gdbstub = [...scan.candidates()];
    stub.request("Qqemu.PhyMemMode:0");
    console.log(JSON.stringify({ file, gdbstub, notFound: scan.notFound() }));
  } finally {
    ram.close();
  }
} finally {
  stub.close("D;1");
}
