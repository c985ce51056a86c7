/**
 * Edge cases of what the live target parses from QEMU, on synthetic input shaped like QEMU 7.2's
 * (the real thing is exercised by tests/live_gdb_test.ts): target descriptions with includes,
 * comments and regnum, memory maps with RAM split around the PCI hole, memdev listings, and the
 * client side of the wire.
 */

import assert from "node:assert/strict";
import { decodeRegisters, encodeRegisterValue, parseTargetDescription } from "../lib/target_xml.ts";
import { mainRam, parseMemdev, parseMtree } from "../lib/guest_ram.ts";
import {
  framePacket,
  isStopReply,
  latin1,
  StubDecoder,
  unescapeBinary,
} from "../lib/rsp_client.ts";

Deno.test("target description: includes, commented-out registers, regnum, g decoding", () => {
  const files: Record<string, string> = {
    "target.xml": `<?xml version="1.0"?><target><architecture>i386:x86-64</architecture>
      <xi:include href="core.xml"/></target>`,
    "core.xml": `<feature name="x">
      <reg name="rax" bitsize="64" type="int64" regnum="0"/>
      <reg name="rbx" bitsize="64"/>
      <!--reg name="cs_base" bitsize="64" type="int64"/>
      <reg name="ss_base" bitsize="64" type="int64"/-->
      <reg name="eflags" bitsize="32"/>
      <reg name="st0" bitsize="80"/>
      <reg name="cr3" bitsize="64"/></feature>`,
  };
  const d = parseTargetDescription((a) => files[a]);
  assert.equal(d.arch, "x86_64");
  assert.deepEqual(d.registers.map((r) => [r.name, r.regnum, r.offset]), [
    ["rax", 0, 0],
    ["rbx", 1, 8],
    ["eflags", 2, 16],
    ["st0", 3, 20],
    ["cr3", 4, 30],
  ]);
  const hex = "0100000000000000" + "ffffffffffffffff" + "46020000" + "00".repeat(10) +
    "00a0010100000000";
  const regs = decodeRegisters(d, hex);
  assert.equal(regs.get("rax"), 1n);
  assert.equal(regs.get("rbx"), 0xffffffffffffffffn);
  assert.equal(regs.get("eflags"), 0x246n);
  assert.equal(regs.get("st0"), undefined); // wider than 64 bits: not decoded
  assert.equal(regs.get("cr3"), 0x101a000n);
  assert.equal(encodeRegisterValue(d.byName.get("eflags")!, 0x246n), "46020000");
  // A short reply (registers sent as x or missing) keeps what it has.
  assert.equal(decodeRegisters(d, "xxxxxxxxxxxxxxxx0200000000000000").get("rbx"), 2n);
  assert.throws(
    () =>
      parseTargetDescription(() =>
        "<target><architecture>mips</architecture><reg name='a' bitsize='32'/></target>"
      ),
    /not supported/,
  );
  assert.equal(
    parseTargetDescription(() =>
      "<target><architecture>aarch64</architecture><reg name='x0' bitsize='64'/></target>"
    ).arch,
    "aarch64",
  );
});

const MTREE_4G = `FlatView #0
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): ram
  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
  00000000000c0000-00000000000dffff (prio 1, rom): pc.rom
  00000000000e0000-00000000000fffff (prio 1, rom): isa-bios
  0000000000100000-00000000bfffffff (prio 0, ram): ram @0000000000100000
  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios
  0000000100000000-000000013fffffff (prio 0, ram): ram @00000000c0000000

FlatView #1
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
`;

Deno.test("memory map: RAM above 4 GiB sits at file offset physical − 1 GiB", () => {
  const r = parseMtree(MTREE_4G, "ram");
  assert.deepEqual(r, [
    { start: 0, end: 0xa0000, fileOffset: 0 },
    { start: 0x100000, end: 0xc0000000, fileOffset: 0x100000 },
    { start: 0x100000000, end: 0x140000000, fileOffset: 0xc0000000 },
  ]);
  // Without a backend id, the biggest RAM region is the guest's RAM (not vga.vram).
  assert.deepEqual(mainRam(MTREE_4G), r);
  assert.deepEqual(parseMtree(MTREE_4G, "nosuch"), []);
});

Deno.test("memdev: size and share flag per backend", () => {
  const text = `memory backend: ram
  size:  4294967296
  merge: true
  share: true
memory backend: other
  size:  1048576
  share: false
`;
  assert.deepEqual(parseMemdev(text), [
    { id: "ram", size: 4294967296, share: true },
    { id: "other", size: 1048576, share: false },
  ]);
});

Deno.test("client wire: framing, split packets, acks, escapes and run-length encoding", () => {
  assert.equal(latin1(framePacket("qC")), "$qC#b4");
  const d = new StubDecoder();
  const bytes = new TextEncoder().encode("+$OK#9a$T05thr");
  const first = d.push(bytes);
  assert.deepEqual(first.map((e) => e.kind), ["ack", "packet"]);
  const rest = d.push(new TextEncoder().encode("ead:p01.02;#c9-"));
  assert.equal(rest.length, 2);
  assert.equal(rest[0].kind, "packet");
  if (rest[0].kind === "packet") {
    assert.equal(latin1(rest[0].payload), "T05thread:p01.02;");
    assert.equal(rest[0].checksumOk, false); // c9 is not its checksum
  }
  assert.equal(rest[1].kind, "nack");
  // `}` escapes and `*` repeats: "0* " is "0" then 3 more.
  assert.equal(latin1(unescapeBinary(new TextEncoder().encode("a}\x03b0* "))), "a#b0000");
  assert.ok(isStopReply("T05thread:01;"));
  assert.ok(isStopReply("S05"));
  assert.ok(!isStopReply("OK"));
  assert.ok(!isStopReply("E22"));
  assert.ok(!isStopReply("0011aabb"));
});
