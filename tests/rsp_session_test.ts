/** Session tests: the packet dispatcher against a fake target, without sockets or gdb. */

import assert from "node:assert/strict";
import { MAX_PACKET_SIZE, RspSession } from "../lib/rsp_session.ts";
import { escapeBinary, framePacket, hexEncodeText, latin1String } from "../lib/rsp_wire.ts";
import { serveChannel } from "../lib/transport.ts";
import { DumpError } from "../lib/errors.ts";
import { X86_64_LAYOUT } from "../lib/regs_x86_64.ts";
import { AARCH64_LAYOUT } from "../lib/regs_aarch64.ts";
import type { ArchName } from "../lib/target.ts";
import type { MemoryRead, ResumeAction, RunControl, StopEvent } from "../lib/target.ts";
import { MemoryChannel, parseReplies, SessionClient, unescape, unhex } from "./rsp_client.ts";
import {
  FAKE_BASE,
  FAKE_THREAD_NAMES,
  FAKE_VMCOREINFO,
  FakeTarget,
  type FakeTargetOptions,
} from "./rsp_fake_target.ts";

const BASE = FAKE_BASE.toString(16);

function client(options: FakeTargetOptions = {}, log?: (line: string) => void): SessionClient {
  return new SessionClient(new RspSession(new FakeTarget(options), { log: log ?? (() => {}) }));
}

function connected(options: FakeTargetOptions = {}): SessionClient {
  const c = client(options);
  c.handshake();
  return c;
}

/** Little-endian hex of a value of `bytes` bytes. */
function leHex(v: bigint, bytes: number): string {
  let s = "";
  for (let i = 0; i < bytes; i++) {
    s += ((v >> (8n * BigInt(i))) & 0xffn).toString(16).padStart(2, "0");
  }
  return s;
}

/** Little-endian hex of a 64-bit value. */
function le64(v: bigint): string {
  return leHex(v, 8);
}

Deno.test("qSupported offers only what the target has", () => {
  const plain = client().session;
  const c = new SessionClient(plain);
  const features = c.handshake().split(";");
  assert.ok(features.includes(`PacketSize=${MAX_PACKET_SIZE.toString(16)}`));
  for (const f of ["qXfer:features:read+", "qXfer:threads:read+", "QStartNoAckMode+"]) {
    assert.ok(features.includes(f), f);
  }
  assert.ok(features.includes("qXfer:vmcoreinfo:read+"));
  assert.ok(!features.some((f) => f.startsWith("qXfer:exec-file")));
  assert.ok(!features.some((f) => f.startsWith("qXfer:auxv")));
  const withExec = connected({ execFile: "/boot/vmlinux" });
  assert.ok(withExec.request("qSupported").includes("qXfer:exec-file:read+"));
});

Deno.test("ack mode: every packet is acked, bad checksums are refused, - resends", () => {
  const c = client();
  assert.deepEqual(c.send(framePacket("qAttached")), ["+", "1"]);
  assert.deepEqual(c.send("$qAttached#00"), ["-"]);
  assert.deepEqual(c.send("-"), ["1"]); // the last packet again
  assert.deepEqual(c.send(framePacket("vMustReplyEmpty")), ["+", ""]);
  // After no-ack mode: no acks, and a bad checksum is handled anyway.
  assert.deepEqual(c.send(framePacket("QStartNoAckMode")), ["+", "OK"]);
  assert.deepEqual(c.send("+" + latin1String(framePacket("qAttached"))), ["1"]);
  assert.deepEqual(c.send("$qAttached#00"), ["1"]);
  assert.deepEqual(c.send("-"), []);
});

Deno.test("ack mode: gdb's resend of a packet not yet answered is acked, not answered twice", () => {
  // A server still opening its dump finds gdb's qSupported and its resend (after gdb's 2 s
  // remote timeout) waiting together: one answer, or gdb takes the second for its next packet's.
  const c = client();
  const q = latin1String(framePacket("qSupported:xmlRegisters=i386"));
  const replies = c.send(q + q);
  assert.deepEqual(replies.filter((r) => r === "+"), ["+", "+"]);
  assert.equal(replies.filter((r) => r !== "+").length, 1);
  assert.deepEqual(c.send(framePacket("vMustReplyEmpty")), ["+", ""]);
  // The same packet again once its answer went out is a new question, and is answered.
  assert.deepEqual(c.send(framePacket("qAttached")), ["+", "1"]);
  assert.deepEqual(c.send(framePacket("qAttached")), ["+", "1"]);
});

Deno.test("ack mode: gdb's resend of qSupported arriving after its answer went out is not answered", () => {
  // The server answered just after gdb's 2 s timeout: gdb resent qSupported, took the first
  // answer, and asks vMustReplyEmpty; a second qSupported answer would be taken for its reply.
  const c = client();
  const q = framePacket("qSupported:xmlRegisters=i386");
  const first = c.send(q);
  assert.equal(first.filter((r) => r !== "+").length, 1);
  assert.deepEqual(c.send(q), ["+"]);
  assert.deepEqual(c.send(framePacket("vMustReplyEmpty")), ["+", ""]);
  // Only the opening packet, only right after itself.
  assert.equal(c.send(q).filter((r) => r !== "+").length, 1);
});

Deno.test("target.xml is served in chunks that reassemble to the layout's description", () => {
  for (const arch of ["x86_64", "aarch64"] as const) {
    const c = connected({ arch });
    const layout = arch === "x86_64" ? X86_64_LAYOUT : AARCH64_LAYOUT;
    for (const chunk of [0x1000, 100, 7]) {
      assert.deepEqual(c.xfer("features", "target.xml", chunk), layout.targetXml);
    }
    assert.equal(c.request("qXfer:features:read:other.xml:0,100"), "E00");
    assert.equal(c.request("qXfer:features:read:target.xml:zz,100"), "E00");
    assert.equal(c.request(`qXfer:features:read:target.xml:ffff,100`), "l");
  }
  const xml = new TextDecoder().decode(X86_64_LAYOUT.targetXml);
  const names = [...xml.matchAll(/<reg name="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(names.length, 50);
  assert.deepEqual(names.slice(0, 3), ["rax", "rbx", "rcx"]);
  // QEMU's names for the control registers, after gdbserver's layout.
  assert.deepEqual(names.slice(43), ["k_gs_base", "cr0", "cr2", "cr3", "cr4", "cr8", "efer"]);
  assert.deepEqual(names.slice(40, 43), ["orig_rax", "fs_base", "gs_base"]);
  assert.equal(X86_64_LAYOUT.gBytes, 356);
  assert.equal(AARCH64_LAYOUT.gBytes, 788);
});

Deno.test("threads: XML with escaped names, qfThreadInfo, qC, H, T, extra info", () => {
  const c = connected();
  const xml = new TextDecoder().decode(c.xfer("threads", "", 50));
  assert.ok(xml.includes(`<thread id="1" core="0" name="CPU 0: idle"></thread>`), xml);
  assert.ok(
    xml.includes(
      `name="CPU #1: crasher.sh (pid 105) &lt;a&amp;b&gt; &quot;q&quot; $*}">crashed &amp; &lt;panicked&gt;</thread>`,
    ),
    xml,
  );
  // On the wire, # $ } * are escaped.
  const wire = c.request("qXfer:threads:read::0,1000");
  assert.ok(!/[#$*]/.test(wire.replace(/}./g, "")), wire);
  assert.equal(c.request("qfThreadInfo"), "m1,2");
  assert.equal(c.request("qsThreadInfo"), "l");
  assert.equal(c.request("qC"), "QC2");
  assert.equal(c.request("Hg1"), "OK");
  assert.equal(c.request("qC"), "QC1");
  assert.equal(c.request("Hg0"), "OK");
  assert.equal(c.request("qC"), "QC2");
  assert.equal(c.request("Hg63"), "E01");
  assert.equal(c.request("Hgxyz"), "E01");
  assert.equal(c.request("Hc-1"), "OK");
  assert.equal(c.request("Hg-1"), "OK");
  assert.equal(c.request("Hgp1.1"), "OK");
  assert.equal(c.request("T1"), "OK");
  assert.equal(c.request("T2"), "OK");
  assert.equal(c.request("T3"), "E01");
  assert.equal(unhex(c.request("qThreadExtraInfo,1")), FAKE_THREAD_NAMES[0]);
  assert.equal(unhex(c.request("qThreadExtraInfo,2")), "crashed & <panicked>");
  assert.equal(c.request("qThreadExtraInfo,9"), "E01");
});

Deno.test("thousands of threads: many ids per qsThreadInfo packet, chunked XML", () => {
  // Enough ids (5 hex digits and a comma each) to fill more than one packet.
  const extraThreads = Math.max(40000, Math.ceil(MAX_PACKET_SIZE / 4));
  const c = connected({ extraThreads });
  const ids: string[] = [];
  let reply = c.request("qfThreadInfo");
  let packets = 0;
  while (reply !== "l") {
    assert.equal(reply[0], "m");
    assert.ok(reply.length <= MAX_PACKET_SIZE);
    for (const id of reply.slice(1).split(",")) ids.push(id);
    packets++;
    reply = c.request("qsThreadInfo");
  }
  assert.equal(ids.length, extraThreads + 2);
  assert.equal(ids.at(-1), (extraThreads + 2).toString(16));
  assert.ok(packets >= 2 && packets < 10, `${packets} packets`);
  const xml = new TextDecoder().decode(c.xfer("threads", "", 0x10000));
  assert.equal([...xml.matchAll(/<thread /g)].length, extraThreads + 2);
});

Deno.test("stop reply and registers (g, p) follow the layout", () => {
  const c = connected();
  assert.equal(c.request("?"), "T0bthread:2;");
  const g = c.request("g");
  assert.equal(g.length, 712);
  assert.equal(g.slice(0, 16), le64(0x63n)); // rax
  assert.equal(g.slice(16, 32), le64(0x2222n)); // rbx
  assert.equal(g.slice(32, 48), "x".repeat(16)); // rcx unavailable
  assert.equal(g.slice(128 * 2, 136 * 2), le64(0xffffffff8155a0f6n)); // rip
  assert.equal(g.slice(136 * 2, 140 * 2), "46000100"); // eflags, 32 bits
  assert.equal(g.slice(140 * 2, 144 * 2), "10000000"); // cs
  assert.equal(g.slice(164 * 2, 276 * 2), "x".repeat(224)); // x87
  assert.equal(g.slice(276 * 2, 284 * 2), le64(1n)); // orig_rax
  assert.equal(g.slice(284 * 2, 292 * 2), le64(0x7f1234567740n)); // fs_base
  assert.equal(g.slice(292 * 2, 300 * 2), le64(0xffff88803ed00000n)); // gs_base
  assert.equal(g.slice(300 * 2), "x".repeat(112)); // k_gs_base..efer: not in this target
  assert.equal(c.request("p10"), le64(0xffffffff8155a0f6n));
  assert.equal(c.request("p2"), "x".repeat(16));
  assert.equal(c.request("p18"), "x".repeat(20)); // st0: 10 bytes
  assert.equal(c.request("p2b"), "x".repeat(16)); // k_gs_base
  assert.equal(c.request("p32"), "E01");
  assert.equal(c.request("pzz"), "E01");
  c.request("Hg1");
  assert.equal(c.request("p28"), le64(0xffffffffffffffffn)); // orig_rax -1 of thread 1
  assert.equal(c.request("p29"), "x".repeat(16)); // thread 1 has no fs_base
});

Deno.test("aarch64 registers: x0-x30, sp, pc, 32-bit cpsr, fpu unavailable", () => {
  const c = connected({ arch: "aarch64" });
  const g = c.request("g");
  assert.equal(g.length, 788 * 2);
  assert.equal(g.slice(0, 16), le64(0x63n));
  assert.equal(g.slice(32 * 16, 33 * 16), le64(0xffff80000866a0b0n)); // pc
  assert.equal(g.slice(33 * 16, 33 * 16 + 8), "05000080"); // cpsr
  assert.equal(g.slice(33 * 16 + 8), "x".repeat((512 + 8) * 2));
  assert.equal(c.request("p20"), le64(0xffff80000866a0b0n));
  assert.equal(c.request("p21"), "05000080");
  assert.equal(c.request("p22"), "x".repeat(32)); // v0
  // The system registers follow, outside `g`: each a `p`, unavailable where the target has none.
  const esr = AARCH64_LAYOUT.registers.findIndex((r) => r.name === "ESR_EL1");
  assert.equal(esr, AARCH64_LAYOUT.gCount);
  assert.equal(c.request(`p${esr.toString(16)}`), "x".repeat(16));
  // A target that reads them (a live vCPU) answers the `p` from its own read.
  const asked: string[] = [];
  const live = Object.assign(new FakeTarget({ arch: "aarch64" }), {
    systemRegister(_thread: number, name: string) {
      asked.push(name);
      return name === "ESR_EL1" ? 0x96000045n : undefined;
    },
  });
  const lc = new SessionClient(new RspSession(live));
  lc.handshake();
  assert.equal(lc.request(`p${esr.toString(16)}`), le64(0x96000045n));
  assert.equal(lc.request("g").length, 788 * 2);
  assert.deepEqual(asked, ["ESR_EL1"], "g reads none of them");
});

Deno.test("G on aarch64: the g block's registers only; one reaching a system register is refused", () => {
  const { c, registerWrites } = writableTarget(false, "aarch64");
  const g = c.request("g");
  assert.equal(g.length, AARCH64_LAYOUT.gBytes * 2);
  assert.equal(c.request("G" + g), "OK");
  const before = registerWrites.length;
  // ESR_EL1's 8 bytes after the block: written with P, never through G.
  assert.equal(c.request("G" + g + "00".repeat(8)), "E01");
  assert.equal(registerWrites.length, before);
});

Deno.test("memory reads: hex prefix, errors, clamps, binary x", () => {
  const target = new FakeTarget();
  const c = new SessionClient(new RspSession(target));
  c.handshake();
  const hex = c.request(`m${BASE},10`);
  assert.equal(hex, "11".repeat(8) + "22".repeat(8));
  // Readable prefix only, at the end of the region.
  const end = FAKE_BASE + BigInt(target.memory.length);
  assert.equal(c.request(`m${(end - 4n).toString(16)},10`), "00000000");
  assert.equal(c.request(`m${end.toString(16)},10`), "E14");
  assert.equal(c.request("m0,8"), "E14");
  // Absurd lengths are clamped, never allocated.
  const big = c.request(`m${BASE},ffffffffffffffff`);
  assert.equal(big.length, MAX_PACKET_SIZE);
  assert.equal(c.request("m0,ffffffffffffffff"), "E14");
  assert.equal(c.request("mffffffffffffffff,ffffffffffffffff"), "E14");
  // Malformed.
  for (const bad of ["m", "m1234", "mzz,4", "m1,", "m,1", "m1,2,3", "m11111111111111111,1"]) {
    assert.equal(c.request(bad), "E01", bad);
  }
  assert.equal(c.request(`m${BASE},0`), "");
  // Binary read: 'b' and escaped bytes.
  const x = c.request(`x${BASE},10`);
  assert.equal(x[0], "b");
  assert.deepEqual(unescape(x.slice(1)), target.memory.subarray(0, 16));
  assert.equal(c.request("x0,4"), "E14");
});

Deno.test("memory replies are run-length encoded on the wire", () => {
  const c = connected({ memorySize: 0x20000 });
  const wire = c.raw(framePacket(`m${(FAKE_BASE + 0x1000n).toString(16)},1000`));
  assert.ok(wire.length < 400, `${wire.length} bytes for a mostly-zero page`);
  assert.equal(parseReplies(wire)[0].length, 0x2000);
});

Deno.test("a dump cannot be written or run", () => {
  const c = connected();
  for (
    const p of [`M${BASE},1:00`, `X${BASE},1:a`, "G00", "P10=00", `Z0,${BASE},1`, `z0,${BASE},1`]
  ) {
    assert.match(c.request(p), /^E\./, p);
  }
  for (const p of ["c", "s", "C0b", "S05", "vCont;c", "vCont;s:2;c", "vCont;c:1"]) {
    const replies = c.packets(p);
    assert.equal(replies.length, 2, p);
    assert.equal(replies[0][0], "O");
    assert.match(unhex(replies[0].slice(1)), /crash dump.*cannot run/);
    assert.equal(replies[1], "T0bthread:2;");
  }
  assert.equal(c.request("vCont?"), "vCont;c;C;s;S");
  assert.equal(c.request("vCont;q"), "E01");
  assert.equal(c.request("vCont"), "E01");
});

Deno.test("monitor commands: O output packets then OK", () => {
  const c = connected();
  const monitor = (cmd: string) => {
    const replies = c.packets(`qRcmd,${hexEncodeText(cmd)}`);
    assert.equal(replies.at(-1), "OK");
    return replies.slice(0, -1).map((r) => {
      assert.equal(r[0], "O");
      return unhex(r.slice(1));
    }).join("");
  };
  const help = monitor("help");
  for (const word of ["help", "vmcoreinfo", "threads", "hello"]) assert.ok(help.includes(word));
  assert.equal(monitor("vmcoreinfo"), FAKE_VMCOREINFO);
  assert.ok(monitor("threads").includes(FAKE_THREAD_NAMES[1]));
  assert.equal(monitor("hello"), "hello from the fake target\n");
  // kdb's wording for a word it does not know, and kdb's own commands on a target without a
  // kernel say what they lack.
  assert.equal(monitor("frobnicate now"), "Unknown kdb command: 'frobnicate now'\n");
  assert.match(monitor("dmesg"), /no kernel behind this target/);
  assert.match(monitor("kgdb"), /already attached/);
  assert.equal(c.request("qRcmd,zz"), "E01");
});

Deno.test("long monitor output is split in several O packets", () => {
  // Each thread's line is over 8 bytes, 16 hex digits: more than one packet in all.
  const extraThreads = Math.max(20000, Math.ceil(MAX_PACKET_SIZE / 8));
  const c = connected({ extraThreads });
  const replies = c.packets(`qRcmd,${hexEncodeText("threads")}`);
  assert.ok(replies.length > 2);
  for (const r of replies.slice(0, -1)) assert.ok(r.length <= MAX_PACKET_SIZE);
  const text = replies.slice(0, -1).map((r) => unhex(r.slice(1))).join("");
  assert.ok(text.includes(`task ${extraThreads + 2}\n`));
});

Deno.test("vmcoreinfo: qlinux.vmcoreinfo and qXfer:vmcoreinfo:read", () => {
  const c = connected();
  const reply = c.request("qlinux.vmcoreinfo");
  assert.ok(reply.startsWith("Qlinux.vmcoreinfo"));
  const text = new TextDecoder().decode(unescape(reply.slice("Qlinux.vmcoreinfo".length)));
  assert.equal(text, FAKE_VMCOREINFO);
  for (const chunk of [0x1000, 10, 3]) {
    assert.equal(new TextDecoder().decode(c.xfer("vmcoreinfo", "", chunk)), FAKE_VMCOREINFO);
  }
});

Deno.test("exec-file, qOffsets, auxv absence, other queries", () => {
  const c = connected({ execFile: "/tmp/vm linux#1", textSegment: 0xffffffff9a000000n });
  assert.equal(new TextDecoder().decode(c.xfer("exec-file", "", 0x1000)), "/tmp/vm linux#1");
  assert.equal(new TextDecoder().decode(c.xfer("exec-file", "2a", 4)), "/tmp/vm linux#1");
  assert.equal(c.request("qOffsets"), "TextSeg=ffffffff9a000000");
  assert.equal(c.request("qXfer:auxv:read::0,100"), "");
  assert.equal(c.request("qXfer:libraries:read::0,100"), "");
  assert.equal(c.request("qXfer:features:write:target.xml:0:abc"), "");
  const plain = connected();
  assert.equal(plain.request("qOffsets"), "");
  assert.equal(plain.request("qXfer:exec-file:read::0,100"), "");
  assert.equal(plain.request("qAttached:1"), "1");
  assert.equal(plain.request("qTStatus"), "");
  assert.equal(plain.request("qSymbol::"), "OK");
  assert.equal(plain.request("vMustReplyEmpty"), "");
  assert.equal(plain.request("qSomethingNew:1"), "");
  assert.equal(plain.request("!"), "");
  assert.equal(plain.request("vFile:setfs:0"), "");
});

Deno.test("D and k end the session", () => {
  const d = connected();
  assert.equal(d.request("D"), "OK");
  assert.ok(d.session.closed);
  const k = connected();
  assert.deepEqual(k.packets("k"), []);
  assert.ok(k.session.closed);
  const v = connected();
  assert.equal(v.request("vKill;1"), "OK");
  assert.ok(v.session.closed);
});

Deno.test("interrupts are ignored; oversize packets get an error and the stream stays in sync", () => {
  const lines: string[] = [];
  const c = client({}, (l) => lines.push(l));
  c.handshake();
  assert.deepEqual(c.send("\x03"), []);
  const huge = framePacket("X0,1:" + "a".repeat(MAX_PACKET_SIZE + 10));
  const replies = c.send(new Uint8Array([...huge, ...framePacket("qC")]));
  assert.deepEqual(replies, ["E01", "QC2"]);
  assert.ok(lines.some((l) => l.includes("larger than")));
});

Deno.test("a throwing target yields an error reply, and the session goes on", () => {
  const target = new FakeTarget();
  target.registers = () => {
    throw new Error("boom");
  };
  target.readMemory = (): MemoryRead => {
    throw new Error("bang");
  };
  const lines: string[] = [];
  const c = new SessionClient(new RspSession(target, { log: (l) => lines.push(l) }));
  c.handshake();
  assert.equal(c.request("g"), "E01");
  assert.equal(c.request("m0,4"), "E01");
  assert.equal(c.request("qC"), "QC2");
  assert.ok(lines.some((l) => l.includes("boom")));
});

Deno.test("a page the read-ahead cannot read: the session goes on, gdb's own read gets E. with clean text", () => {
  const target = new FakeTarget({ memorySize: 0x10000, fill: "random" });
  const bad = FAKE_BASE + 0x1000n;
  const plain = target.readMemory.bind(target);
  target.readMemory = (address: bigint, length: number): MemoryRead => {
    if (address <= bad && bad < address + BigInt(length)) {
      // A file name with characters whose low bytes are `#`, `$` and `*`, and one that is `#`.
      throw new DumpError("/srv/\u0423\u0424\u042a#/vmcore", "page", "read: EIO");
    }
    return plain(address, length);
  };
  const lines: string[] = [];
  const c = new SessionClient(new RspSession(target, { log: (l) => lines.push(l) }));
  c.handshake();
  assert.equal(c.request(`m${BASE},1000`).length, 0x2000);
  c.raw(new Uint8Array(0)); // the turn where the next page is read ahead
  assert.ok(!c.session.closed);
  // One whole packet, its checksum right (parseReplies checks it), the text made ASCII.
  assert.deepEqual(c.packets(`m${bad.toString(16)},1000`), [
    "E./srv/????/vmcore: page: read: EIO",
  ]);
  assert.equal(c.request(`m${BASE},10`).length, 0x20);
  assert.ok(lines.every((l) => !l.includes("session")), lines.join("\n"));
});

Deno.test("a batch of requests is answered in bounded pieces", () => {
  const c = connected({ memorySize: 0x280000, fill: "random" });
  let batch = "";
  for (let i = 0; i < 40; i++) {
    batch += latin1String(framePacket(`m${(FAKE_BASE + BigInt(i) * 0x10000n).toString(16)},10000`));
  }
  const replies = c.send(batch);
  assert.equal(replies.length, 40);
  assert.ok(replies.every((r) => r.length === 0x20000));
  assert.ok(c.writes.length > 4, `${c.writes.length} writes`);
  assert.ok(c.writes.every((w) => w.length < 600 * 1024));
});

Deno.test("debug log shows packets in and out, truncated", () => {
  const lines: string[] = [];
  const s = new RspSession(new FakeTarget(), {
    debug: true,
    log: (l) => lines.push(l),
    label: "t",
  });
  const c = new SessionClient(s);
  c.handshake();
  c.request(`m${BASE},1000`);
  assert.ok(lines.includes("[t] <- QStartNoAckMode"));
  assert.ok(lines.includes("[t] -> OK"));
  const out = lines.find((l) => l.startsWith("[t] -> 111111"))!;
  assert.ok(out.length < 300 && out.endsWith("(8192 bytes)"), out);
});

Deno.test("text console: kdb prompt, commands, switch to RSP and back", () => {
  const c = client();
  const text = (s: string) => latin1String(c.raw(s));
  // Nothing is sent before the client speaks; the transport asks for a greeting when it stays
  // silent, which is the prompt of the stop thread's CPU (1).
  assert.equal(text(""), "");
  assert.equal(latin1String(c.session.greeting()), "[1]kdb> ");
  assert.equal(latin1String(c.session.greeting()), "", "only once");
  const help = text("help\r\n");
  assert.ok(help.startsWith("Command         Usage                Description\n"), help);
  assert.ok(help.includes("vmcoreinfo") && help.includes("quit") && help.endsWith("[1]kdb> "));
  assert.ok(text("threads\n").includes(FAKE_THREAD_NAMES[1]));
  assert.ok(text("vmcore").length === 0); // partial line: nothing yet
  assert.ok(text("info\n").includes("OSRELEASE=6.1.0-fake"));
  assert.equal(text("nonsense\n"), "Unknown kdb command: 'nonsense'\n[1]kdb> ");
  assert.equal(text("\n"), "[1]kdb> ");
  // Telnet negotiation (IAC DO/WILL, a subnegotiation) and CR NUL are not text.
  assert.equal(
    text("\xff\xfd\x01\xff\xfb\x03\xff\xfa\x18\x01\xff\xf0nons\xff\xfd\x01ense\r\x00"),
    "Unknown kdb command: 'nonsense'\n[1]kdb> ",
  );
  // A line of 1 MB: one line of kdb's wording, and the console goes on.
  assert.equal(
    text("x".repeat(1 << 20) + "\n"),
    "kdb_parse: command buffer overflow, command ignored\n[1]kdb> ",
  );
  assert.ok(c.session.consoleMode);
  // gdb connects: '+' then qSupported, split across reads.
  const qs = latin1String(framePacket("qSupported:multiprocess+"));
  assert.equal(text("+" + qs.slice(0, 8)), "");
  const replies = parseReplies(c.raw(qs.slice(8)));
  assert.equal(replies[0], "+");
  assert.ok(replies[1].startsWith("PacketSize="));
  assert.ok(!c.session.consoleMode);
  assert.equal(c.request("qC"), "QC2");
  // $3#33 hands the line back to the console, with its prompt.
  assert.equal(text("$3#33"), "+\n[1]kdb> ");
  assert.ok(c.session.consoleMode);
  assert.ok(text("help\n").includes("threads"));
  // kdb's other trigger: $?#3f, after some typing.
  const stop = parseReplies(c.raw("junk $?#3f"));
  assert.deepEqual(stop, ["+", "T0bthread:2;"]);
  c.raw("$3#33");
  // $qSupported switches without looking at the checksum (kdb's rule); the packet is then
  // checked as every packet is: a wrong checksum is refused with '-', and gdb's resend works.
  assert.deepEqual(c.send("$qSupported:x#00"), ["-"]);
  assert.ok(!c.session.consoleMode);
  const again = c.send(framePacket("qSupported:x"));
  assert.equal(again[0], "+");
  assert.ok(again[1].startsWith("PacketSize="));
  c.raw("$3#33");
  // kdb's kgdb command hands the line over with kdb's words.
  assert.equal(text("kgdb\n"), "Entering please attach debugger or use $D#44+ or $3#33\n");
  assert.ok(!c.session.consoleMode);
  assert.equal(c.request("qC"), "QC2");
  c.raw("$3#33");
  assert.equal(text("quit\n"), "");
  assert.ok(c.session.closed);
});

Deno.test("transport loop: split reads, partial writes, end of input", async () => {
  const [server, peer] = MemoryChannel.pair({ readSize: 5, writeSize: 3 });
  const done = serveChannel(new FakeTarget(), server, { log: () => {} });
  await peer.write(framePacket("qSupported"));
  const first = await peer.readUntil((t) => t.includes("#", 2) && /#[0-9a-f]{2}$/.test(t));
  assert.ok(first.startsWith("+$PacketSize="), first);
  await peer.write(latin1Bytes2(`+${latin1String(framePacket("QStartNoAckMode"))}`));
  assert.equal(await peer.readUntil((t) => t.endsWith("#9a")), "+$OK#9a");
  await peer.write(framePacket(`m${BASE},8`));
  assert.equal(await peer.readUntil((t) => /#..$/.test(t)), `$1*,#${checksumHex("1*,")}`);
  peer.close();
  await done;
});

Deno.test("transport loop: detach ends the session; a vanished peer does not throw", async () => {
  const [server, peer] = MemoryChannel.pair();
  const done = serveChannel(new FakeTarget(), server, { log: () => {} });
  await peer.write(framePacket("D"));
  assert.equal(await peer.readUntil((t) => t.endsWith("#9a")), "+$OK#9a");
  await done;
  const [server2, peer2] = MemoryChannel.pair();
  const lines: string[] = [];
  const done2 = serveChannel(new FakeTarget(), server2, { log: (l) => lines.push(l) });
  peer2.close();
  await peer2.write(framePacket("g")).catch(() => {});
  await done2;
  assert.deepEqual(lines, []);
});

function latin1Bytes2(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

function checksumHex(s: string): string {
  let sum = 0;
  for (const c of s) sum += c.charCodeAt(0);
  return (sum & 0xff).toString(16).padStart(2, "0");
}

Deno.test("kdb go: a dump cannot run; with gdb attached a live target is continued from gdb", () => {
  const monitor = (c: SessionClient, cmd: string) =>
    c.packets(`qRcmd,${hexEncodeText(cmd)}`).slice(0, -1).map((r) => unhex(r.slice(1))).join("");
  assert.equal(
    monitor(connected(), "go"),
    "go: the target is a crash dump: it cannot continue execution\n",
  );
  // A target that can run: resuming it behind gdb's back would leave gdb believing it stopped.
  let resumed = 0;
  const run = { resume: () => void resumed++, nextStop: () => new Promise(() => {}) };
  const live = Object.assign(new FakeTarget(), { run: run as unknown as RunControl });
  const c = new SessionClient(new RspSession(live, { log: () => {} }));
  c.handshake();
  assert.equal(monitor(c, "go"), "go: gdb is attached: continue from gdb (continue, or c)\n");
  assert.equal(resumed, 0);
  assert.equal(monitor(c, "go 1 2"), "diag: -2: Improper argument count, see usage.\n");
});

/** A fake live target: writes land in its memory and are recorded; `readOnly` refuses them. */
function writableTarget(readOnly = false, arch: ArchName = "x86_64") {
  const target = new FakeTarget({ arch });
  const memoryWrites: { address: bigint; data: Uint8Array }[] = [];
  const registerWrites: { thread: number; values: Map<string, bigint> }[] = [];
  const run = {
    writeMemory(address: bigint, data: Uint8Array): string | undefined {
      if (readOnly) return "E.read-only: memory";
      memoryWrites.push({ address, data: data.slice() });
      target.memory.set(data, Number(address - FAKE_BASE));
      return undefined;
    },
    writeRegisters(thread: number, values: ReadonlyMap<string, bigint>): string | undefined {
      if (readOnly) return "E.read-only: registers";
      registerWrites.push({ thread, values: new Map(values) });
      return undefined;
    },
  };
  const live = Object.assign(target, { run: run as unknown as RunControl });
  const c = new SessionClient(new RspSession(live, { log: () => {} }));
  c.handshake();
  return { c, target, memoryWrites, registerWrites };
}

Deno.test("live X: binary writes with escapes, gdb's empty probe, malformed ones refused", () => {
  const { c, target, memoryWrites } = writableTarget();
  // gdb's probe: an empty write, answered OK without writing anything.
  assert.equal(c.request(`X${BASE},0:`), "OK");
  assert.deepEqual(memoryWrites.map((w) => w.data.length), [0]);
  // Every byte value, the four that must be escaped among them, through one X.
  const data = Uint8Array.from({ length: 512 }, (_, i) => (i * 7 + 0x23) & 0xff);
  data.set([0x23, 0x24, 0x7d, 0x2a], 0); // # $ } *
  const address = FAKE_BASE + 0x40n;
  const escaped = latin1String(escapeBinary(data));
  assert.ok(!/[#$*]/.test(escaped.replace(/}./g, "")));
  assert.equal(c.request(`X${address.toString(16)},${data.length.toString(16)}:${escaped}`), "OK");
  assert.equal(memoryWrites.length, 2);
  assert.equal(memoryWrites[1].address, address);
  assert.deepEqual(memoryWrites[1].data, data);
  // Read back through the session: the write is what `m` sees now.
  assert.equal(c.request(`m${address.toString(16)},4`), "23247d2a");
  // Any byte may be escaped, not only the four.
  assert.equal(c.request(`X${BASE},2:}\x41}\x10`), "OK");
  assert.deepEqual(target.memory.subarray(0, 2), Uint8Array.of(0x61, 0x30));
  // An escaped `}` followed by nothing else is complete.
  assert.equal(c.request(`X${BASE},2:a}}`), "OK");
  assert.deepEqual(target.memory.subarray(0, 2), Uint8Array.of(0x61, 0x5d));
  // Malformed: lengths that are not the data's, an escape with nothing after it, bad headers.
  for (
    const bad of [
      `X${BASE},3:ab`,
      `X${BASE},1:ab`,
      `X${BASE},2:a}`,
      `X${BASE},1:}`,
      `X${BASE},2:a}}}`, // a, an escaped `}`, then a lone escape
      `X${BASE},1`,
      `X${BASE}:a`,
      "Xzz,1:a",
      `X,1:a`,
      `X${BASE},:`,
      "X11111111111111111,1:a",
      `X${BASE},111111111:a`,
    ]
  ) {
    assert.equal(c.request(bad), "E01", JSON.stringify(bad));
  }
  // A write past the top of the address space.
  assert.equal(c.request("Xffffffffffffffff,2:ab"), "E14");
  assert.equal(memoryWrites.length, 4);
});

Deno.test("live G: only the registers that differ are written; bad blocks refused", () => {
  const { c, registerWrites } = writableTarget();
  const g = c.request("g");
  assert.equal(g.length, X86_64_LAYOUT.gBytes * 2);
  // The block as read: nothing to write, no register write reaches the target.
  assert.equal(c.request(`G${g}`), "OK");
  assert.deepEqual(registerWrites.map((w) => w.values.size), [0]);
  // rbx changed: one write, of rbx, for the current thread (2, the stop thread).
  const rbx = g.slice(0, 16) + le64(0x1234abcdn) + g.slice(32);
  assert.equal(c.request(`G${rbx}`), "OK");
  assert.deepEqual(registerWrites[1], { thread: 2, values: new Map([["rbx", 0x1234abcdn]]) });
  // gdb's own G carries zeros for registers it has no value of (rcx here): left alone; a value
  // there is written. st0 (80 bits) keeps all its bytes.
  const zeros = g.replace(/x/g, "0");
  assert.equal(c.request(`G${zeros}`), "OK");
  assert.equal(registerWrites[2].values.size, 0);
  const st0 = 0x4000c90fdaa22168c235n;
  let withValues = g.slice(0, 32) + le64(7n) + g.slice(48);
  const st0At = X86_64_LAYOUT.offsets[X86_64_LAYOUT.registers.findIndex((r) => r.name === "st0")];
  withValues = withValues.slice(0, st0At * 2) + leHex(st0, 10) + withValues.slice(st0At * 2 + 20);
  assert.equal(c.request(`G${withValues}`), "OK");
  assert.deepEqual([...registerWrites[3].values], [["rcx", 7n], ["st0", st0]]);
  // The first registers only (up to a register boundary): rax and rbx.
  assert.equal(c.request(`G${le64(0x63n)}${le64(0x5555n)}`), "OK");
  assert.deepEqual([...registerWrites[4].values], [["rbx", 0x5555n]]);
  // Hg selects whose registers G writes.
  assert.equal(c.request("Hg1"), "OK");
  assert.equal(c.request(`G${le64(1n)}`), "OK");
  assert.deepEqual(registerWrites[5], { thread: 1, values: new Map([["rax", 1n]]) });
  const before = registerWrites.length;
  for (
    const bad of [
      "G",
      `G${g.slice(0, 10)}`, // inside rax
      `G${g.slice(0, 17)}`, // odd length
      `G${g}00`, // longer than the block
      `G${g.slice(0, 16)}${"x".repeat(8)}00000000`, // x digits and hex in one register
      `G${"zz".repeat(8)}`,
    ]
  ) {
    assert.equal(c.request(bad), "E01", bad.slice(0, 40));
  }
  assert.equal(registerWrites.length, before);
  // P takes a register's full size, nothing else.
  assert.equal(c.request(`P18=${leHex(st0, 10)}`), "OK");
  assert.deepEqual([...registerWrites[before].values], [["st0", st0]]);
  assert.equal(c.request(`P0=${le64(1n).slice(0, 8)}`), "E01");
  assert.equal(c.request(`P0=${le64(1n)}00`), "E01");
});

Deno.test("live writes refused by the target: X (probe too) and G (unchanged too) say so", () => {
  const { c, memoryWrites, registerWrites } = writableTarget(true);
  const g = c.request("g");
  assert.equal(c.request(`X${BASE},0:`), "E.read-only: memory");
  assert.equal(c.request(`X${BASE},1:a`), "E.read-only: memory");
  assert.equal(c.request(`M${BASE},1:61`), "E.read-only: memory");
  assert.equal(c.request(`G${g}`), "E.read-only: registers");
  assert.equal(c.request(`P0=${le64(1n)}`), "E.read-only: registers");
  assert.equal(memoryWrites.length + registerWrites.length, 0);
});

Deno.test("dump: X and G are refused as writes, with a log line naming them", () => {
  const lines: string[] = [];
  const c = client({}, (line) => lines.push(line));
  c.handshake();
  const g = c.request("g");
  for (const p of [`X${BASE},0:`, `X${BASE},2:}\x03b`, `G${g}`]) {
    assert.equal(c.request(p), "E.target is a crash dump: memory and registers are read-only", p);
  }
  assert.deepEqual(lines, [
    `kdump-gdbserver: memory write at 0x${BASE} refused: target is a crash dump: memory and registers are read-only`,
    "kdump-gdbserver: register write refused: target is a crash dump: memory and registers are read-only",
  ]);
});

Deno.test("live stop: the thread list and the stopped thread's reads are built after the stop reply is out", async () => {
  const target = new FakeTarget();
  const log: string[] = [];
  const threads = target.threads.bind(target);
  target.threads = () => {
    log.push("threads");
    return threads();
  };
  const run = {
    resume: () => void log.push("resume"),
    nextStop: () => Promise.resolve({ kind: "stopped", reply: "T05thread:2;" }),
    afterStop: (thread: number) => void log.push(`afterStop ${thread}`),
  };
  const live = Object.assign(target, { run: run as unknown as RunControl });
  const session = new RspSession(live, { log: () => {} });
  const c = new SessionClient(session);
  c.handshake();
  assert.deepEqual(c.packets("vCont;c"), []);
  log.length = 0;
  session.stopped(await session.pendingStop!);
  // First the stop reply, with nothing else done yet; the transport writes it, then calls again.
  const reply = new TextDecoder().decode(session.produce());
  assert.match(reply, /^\$T05thread:2;/);
  assert.deepEqual(log, []);
  assert.equal(session.inputDrained, false);
  assert.equal(session.produce().length, 0);
  assert.deepEqual(log, ["afterStop 2", "threads"]);
  assert.equal(session.inputDrained, true);
  // gdb's thread list is the one built then.
  assert.match(c.request("qXfer:threads:read::0,1000"), /<thread id="2"/);
  assert.deepEqual(log, ["afterStop 2", "threads"]);
  // A user's stepi (the other threads run on) is worked after too; gdb's step off a breakpoint
  // (one thread, the others stopped) is not: it puts the breakpoint back at once.
  for (const [packet, after] of [["vCont;s:2;c", true], ["vCont;s:2", false]] as const) {
    assert.deepEqual(c.packets(packet), []);
    log.length = 0;
    session.stopped(await session.pendingStop!);
    while (session.produce().length > 0 || !session.inputDrained) { /* write it out */ }
    assert.deepEqual(log, after ? ["afterStop 2", "threads"] : [], packet);
  }
});

Deno.test("live stop: a step that stopped before resume returned is answered with the vCont itself", async () => {
  const target = new FakeTarget();
  const log: string[] = [];
  const queued: StopEvent[] = [];
  const run = {
    resume: (actions: ResumeAction[]) => {
      log.push("resume");
      // The target's link waited for a single step on the spot; a continue stops later.
      if (actions.some((a) => a.action === "s")) {
        queued.push({ kind: "stopped", reply: "T05thread:2;" });
      }
    },
    stopNow: () => queued.shift(),
    nextStop: () => {
      log.push("nextStop");
      return Promise.resolve<StopEvent>({ kind: "stopped", reply: "T02thread:1;" });
    },
    afterStop: (thread: number) => void log.push(`afterStop ${thread}`),
  };
  const live = Object.assign(target, { run: run as unknown as RunControl });
  const session = new RspSession(live, { log: () => {} });
  const c = new SessionClient(session);
  c.handshake();
  // The stop reply comes back as the answer to the step; nothing waits for a stop; the stop's
  // work is done once the reply is out, as for a stop that came later.
  const replies = c.packets("vCont;s:2;c");
  assert.equal(replies.length, 1);
  assert.match(replies[0], /^T05thread:2;/);
  assert.equal(session.pendingStop, undefined);
  assert.deepEqual(log, ["resume", "afterStop 2"]);
  assert.equal(session.inputDrained, true);
  // A continue that has not stopped yet waits on nextStop as before.
  log.length = 0;
  assert.deepEqual(c.packets("vCont;c"), []);
  assert.deepEqual(log, ["resume", "nextStop"]);
  session.stopped(await session.pendingStop!);
  assert.match(new TextDecoder().decode(session.produce()), /^\$T02thread:1;/);
});

/** A channel that also reads "idle" (as a live session's does) and can give such a read up. */
class IdleChannel extends MemoryChannel {
  readonly log: string[] = [];
  #idleReads = 0;
  #idlePending = false;

  override async read(buffer: Uint8Array): Promise<number | null> {
    this.log.push("read");
    const n = await super.read(buffer);
    this.log.push(`read got ${n}`);
    return n;
  }

  async readIdle(buffer: Uint8Array): Promise<number | null> {
    const mine = ++this.#idleReads;
    this.#idlePending = true;
    this.log.push("idle");
    // Waits as the only reader until another read() takes its place (MemoryChannel wakes the
    // last reader that waited), as a given-up thread-pool wait would find its bytes taken.
    const n = await super.read(buffer);
    if (mine !== this.#idleReads) {
      this.log.push("idle read after it was given up");
      return 0;
    }
    this.#idlePending = false;
    this.log.push(`idle got ${n}`);
    return n;
  }

  abandonIdleRead(): boolean {
    this.log.push("abandon");
    if (!this.#idlePending) return false;
    this.#idleReads++;
    this.#idlePending = false;
    return true;
  }
}

Deno.test("transport loop: a stop that comes first gives up the idle read; gdb's next packet goes to a new read", async () => {
  const [, peer] = MemoryChannel.pair();
  const channel = new IdleChannel();
  channel.peer = peer;
  peer.peer = channel;
  let stop: ((e: StopEvent) => void) | undefined;
  const run = {
    attach: () => Promise.resolve(undefined),
    release: () => {},
    resume: () => undefined,
    interrupt: () => {},
    nextStop: () => new Promise<StopEvent>((resolve) => stop = resolve),
    generation: 0,
  };
  const target = Object.assign(new FakeTarget(), { run: run as unknown as RunControl });
  const done = serveChannel(target, channel, { log: () => {} });
  await peer.write(framePacket("QStartNoAckMode"));
  assert.equal(await peer.readUntil((t) => t.endsWith("#9a")), "+$OK#9a");
  await peer.write(framePacket("vCont;c"));
  // The guest runs: the transport waits for gdb (its ^C) on an idle read, and for the stop.
  for (let i = 0; i < 50 && !channel.log.includes("idle"); i++) {
    await new Promise((r) => setTimeout(r, 1));
  }
  assert.ok(stop, "the session waits for a stop");
  channel.log.length = 0;
  stop({ kind: "stopped", reply: "T05thread:1;" });
  assert.match(await peer.readUntil((t) => /#..$/.test(t)), /^\$T05thread:1;/);
  await peer.write(framePacket("qC"));
  assert.match(await peer.readUntil((t) => /#..$/.test(t)), /^\$QC/);
  assert.deepEqual(channel.log.slice(0, 4), ["abandon", "read", "read got 6", "read"]);
  assert.ok(!channel.log.some((l) => l.startsWith("idle")), channel.log.join(", "));
  peer.close();
  await done;
});
