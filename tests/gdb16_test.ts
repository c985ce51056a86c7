// gdb 16 (Debian 13's, made by testdata/newer-gdb.sh) on real dumps: the main job works with it as
// with Debian 12's gdb 13, and it reads memory with binary `x` packets once the server offers
// `binary-upload+`; what it reads must be what libkdumpfile, an independent reader, reads at the
// same addresses.
import assert from "node:assert/strict";
import { big, boot, hasBoot, newerGdb } from "./fixtures.ts";
import { pipeTarget, runGdb, startServer } from "./gdb_helpers.ts";
import {
  ARM64_KERNEL_SESSION,
  assertArm64KernelSession,
  assertKernelSession,
  KERNEL_SESSION,
} from "./kernel_session.ts";
import { libkdumpfileRead } from "./libkdumpfile.ts";

const B = boot("x86_64-6.1");
const E = B.expected;
const GDB16 = newerGdb();
const SPAN = 0x400000;

/** `length` bytes at kernel virtual `address` of `dump`, read by libkdumpfile. */
async function libkdumpfileBytes(dump: string, address: bigint, length: number) {
  const [hex] = await libkdumpfileRead(dump, length, [address]);
  assert.ok(hex, `libkdumpfile cannot read ${address.toString(16)} in ${dump}`);
  return Uint8Array.from(hex.match(/../g)!.map((h) => parseInt(h, 16)));
}

/** Where two byte arrays first differ, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

const text = big(E.system_map._text) + big(E.kaslr_offset);
// 1 MiB into the direct map: low RAM with zero runs (run-length encoded in binary) and bytes
// that need escaping; present in full only in the unfiltered ELF dump.
const lowRam = big(E.page_offset_base) + 0x100000n;
const cases: [string, [string, bigint][]][] = [
  ["dump.zlib-d31.kdump", [["kernel text", text]]],
  ["dump.elf", [["kernel text", text], ["direct map", lowRam]]],
];

for (const [file, ranges] of cases) {
  Deno.test({
    name: `gdb 16 reads ${file} with binary x packets: libkdumpfile's bytes`,
    ignore: GDB16 === undefined,
    async fn() {
      const server = await startServer([B.path(file)]);
      const tmp = await Deno.makeTempDir();
      try {
        const target = `target remote 127.0.0.1:${server.port}`;
        // The packets of one small read: `x` asked, `b` + binary answered, no `m`.
        const probe = await runGdb([target, "set debug remote 1", `x/4xb ${text}`, "detach"], {
          gdb: GDB16,
        });
        assert.match(probe.out, /Sending packet: \$x[0-9a-f]+,[0-9a-f]+#/, probe.out);
        assert.match(probe.out, /Packet received: b/, probe.out);
        assert.doesNotMatch(probe.out, /Sending packet: \$m[0-9a-f]+,/, probe.out);
        const dumps = ranges.map(([, at], i) =>
          `dump binary memory ${tmp}/${i}.bin ${at} ${at + BigInt(SPAN)}`
        );
        const r = await runGdb([target, ...dumps, "detach"], { gdb: GDB16 });
        for (const [i, [what, at]] of ranges.entries()) {
          const ours = await Deno.readFile(`${tmp}/${i}.bin`).catch(() => new Uint8Array());
          assert.equal(ours.length, SPAN, `${what}: gdb wrote ${ours.length} bytes\n${r.out}`);
          const theirs = await libkdumpfileBytes(B.path(file), at, SPAN);
          const at1 = firstDifference(ours, theirs);
          assert.equal(at1, -1, `${what}: differs from libkdumpfile at +0x${at1.toString(16)}`);
          // Escapes and runs were exercised: the range holds every byte that needs one.
          for (const special of [0x23, 0x24, 0x7d, 0x2a]) {
            assert.ok(ours.includes(special), `${what} has no byte 0x${special.toString(16)}`);
          }
        }
      } finally {
        await server.stop();
        await Deno.remove(tmp, { recursive: true });
      }
    },
  });
}

for (const file of ["dump.zlib-d31.kdump", "dump.elf"]) {
  Deno.test({
    name: `gdb 16 pipe, zero commands for KASLR: ${file}`,
    ignore: GDB16 === undefined,
    async fn() {
      // gdb 16 loads the vmlinux through qXfer:exec-file and relocates it with qOffsets, as 13.
      const r = await runGdb([
        pipeTarget([B.path(file), "--vmlinux", B.vmlinux]),
        ...KERNEL_SESSION,
      ], {
        gdb: GDB16,
      });
      assertKernelSession(r.out, `gdb 16, ${file}`, E);
    },
  });
}

Deno.test({
  name: "gdb-multiarch 16 on the arm64 dump: threads, bt, kernel data, binary x reads",
  ignore: newerGdb("gdb-multiarch") === undefined || !hasBoot("aarch64-6.1"),
  async fn() {
    const A = boot("aarch64-6.1");
    const r = await runGdb([
      pipeTarget([A.path("dump.zlib-d31.kdump"), "--vmlinux", A.vmlinux]),
      ...ARM64_KERNEL_SESSION,
      "set debug remote 1",
      "x/2gx $sp",
    ], { gdb: newerGdb("gdb-multiarch") });
    assertArm64KernelSession(r.out, A.expected);
    assert.match(r.out, /Sending packet: \$x[0-9a-f]+,[0-9a-f]+#/, r.out);
  },
});
