/** Unit tests of the RSP wire layer: framing, checksums, escapes, run-length encoding, acks. */

import assert from "node:assert/strict";
import {
  checksum,
  encodeRuns,
  escapeBinary,
  expandRuns,
  framePacket,
  hexDecode,
  hexEncode,
  InputCursor,
  latin1Bytes,
  latin1String,
  PacketReader,
  ReplyWriter,
  unescapeBinary,
  WireEvent,
} from "../lib/rsp_wire.ts";

/** Every event of a byte stream fed in the given pieces, packets as "$payload" or "!payload". */
function events(pieces: (string | Uint8Array)[], maxPayload = 64): string[] {
  const reader = new PacketReader(maxPayload);
  const input = new InputCursor();
  const out: string[] = [];
  for (const piece of pieces) {
    input.reset(typeof piece === "string" ? latin1Bytes(piece) : piece);
    for (;;) {
      const e = reader.next(input);
      if (e === WireEvent.None) break;
      if (e === WireEvent.Packet) {
        const text = latin1String(reader.payload.subarray(0, reader.length));
        out.push(`${reader.checksumOk ? "$" : "!"}${reader.oversize ? "<oversize>" : text}`);
      } else out.push({ 2: "+", 3: "-", 4: "^C" }[e]!);
    }
  }
  return out;
}

/** Decode a reply stream into payloads (run-length expanded), checking every checksum. */
function replies(bytes: Uint8Array): string[] {
  return events([bytes], 1 << 20).map((e) => {
    if (e === "+" || e === "-") return e;
    assert.equal(e[0], "$", `bad checksum in ${e}`);
    return latin1String(expandRuns(latin1Bytes(e.slice(1)))!);
  });
}

Deno.test("checksum and framing", () => {
  assert.equal(checksum(latin1Bytes("qSupported")), 0x37);
  assert.equal(latin1String(framePacket("?")), "$?#3f");
  assert.equal(latin1String(framePacket("3")), "$3#33");
  assert.equal(latin1String(framePacket("")), "$#00");
  assert.equal(latin1String(framePacket("OK")), "$OK#9a");
});

Deno.test("hex encode and decode", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const hex = hexEncode(all);
  assert.equal(hex.slice(0, 8), "00010203");
  assert.equal(hex.slice(-4), "feff");
  assert.deepEqual(hexDecode(hex), all);
  assert.deepEqual(hexDecode("ABcd"), Uint8Array.of(0xab, 0xcd));
  assert.equal(hexDecode("abc"), undefined);
  assert.equal(hexDecode("zz"), undefined);
  assert.equal(hexDecode("\u0130a"), undefined);
});

Deno.test("binary escape round trip over every byte value", () => {
  const all = Uint8Array.from({ length: 512 }, (_, i) => i & 0xff);
  const escaped = escapeBinary(all);
  for (const c of [0x23, 0x24, 0x2a]) assert.ok(!escaped.includes(c), `raw ${c} left`);
  assert.equal(escaped.length, 512 + 8);
  assert.deepEqual(unescapeBinary(escaped), all);
  assert.equal(latin1String(escapeBinary(latin1Bytes("a#b$c}d*"))), "a}\x03b}\x04c}]d}\x0a");
});

Deno.test("one packet split across reads, byte by byte", () => {
  const bytes = framePacket("qSupported:multiprocess+");
  const pieces = Array.from(bytes, (b) => Uint8Array.of(b));
  assert.deepEqual(events(pieces), ["$qSupported:multiprocess+"]);
});

Deno.test("several packets and acks in one read", () => {
  const f = (p: string) => latin1String(framePacket(p));
  const stream = `+${f("qC")}+${f("g")}-${f("m10,4")}\x03$?#3f`;
  assert.deepEqual(events([stream]), ["+", "$qC", "+", "$g", "-", "$m10,4", "^C", "$?"]);
});

Deno.test("a packet split in the middle of its checksum", () => {
  assert.deepEqual(events(["$OK#9", "a$OK", "#", "9a"]), ["$OK", "$OK"]);
});

Deno.test("bad checksums are reported, not dropped", () => {
  assert.deepEqual(events(["$OK#00", "$OK#zz", "$OK#9A"]), ["!OK", "!OK", "$OK"]);
});

Deno.test("a new $ inside a packet restarts the frame; junk between packets is skipped", () => {
  const reader = new PacketReader(64);
  const input = new InputCursor();
  input.reset(latin1Bytes("garbage\r\n$qC$g#67"));
  assert.equal(reader.next(input), WireEvent.Packet);
  assert.equal(latin1String(reader.payload.subarray(0, reader.length)), "g");
  assert.ok(reader.checksumOk);
  assert.equal(reader.junkBytes, 9 + 3);
});

Deno.test("oversize packets are consumed whole and flagged, keeping the stream in sync", () => {
  const big = "m" + "0".repeat(200);
  const stream = latin1String(framePacket(big)) + latin1String(framePacket("g"));
  assert.deepEqual(events([stream], 64), ["$<oversize>", "$g"]);
  // Split across reads too.
  assert.deepEqual(events([stream.slice(0, 100), stream.slice(100)], 64), ["$<oversize>", "$g"]);
});

/** Run-length encode a string as a reply payload would be. */
function rle(text: string): string {
  const src = latin1Bytes(text);
  const dst = new Uint8Array(src.length);
  return latin1String(dst.subarray(0, encodeRuns(src, src.length, dst, 0)));
}

Deno.test("run-length encoding: known encodings", () => {
  assert.equal(rle("0"), "0");
  assert.equal(rle("000"), "000");
  assert.equal(rle("0000"), "0* "); // 3 more
  assert.equal(rle("00000"), "0*!");
  // 7 zeros would need count 6 ('#') and 8 zeros count 7 ('$'): both are avoided.
  assert.equal(rle("0".repeat(7)), '0*"0');
  assert.equal(rle("0".repeat(8)), '0*"00');
  assert.equal(rle("0".repeat(98)), "0*~");
  assert.equal(rle("xxxxabcd"), "x* abcd");
});

Deno.test("run-length encoding round trip, every run length from 1 to 300", () => {
  for (let n = 1; n <= 300; n++) {
    for (const text of ["0".repeat(n), `a${"0".repeat(n)}b`, `${"f".repeat(n)}${"0".repeat(n)}`]) {
      const encoded = rle(text);
      assert.ok(encoded.length <= text.length, `run ${n} grew`);
      for (let i = 0; i < encoded.length; i++) {
        if (encoded[i] === "*") {
          const count = encoded.charCodeAt(i + 1);
          assert.ok(count >= 32 && count <= 126, `count ${count} not printable`);
          assert.ok(!"#$*}".includes(encoded[i + 1]), `count char ${encoded[i + 1]} for ${n}`);
          i++;
        }
      }
      assert.equal(latin1String(expandRuns(latin1Bytes(encoded))!), text, `run of ${n}`);
    }
  }
});

Deno.test("run-length encoding round trip on hex of random and sparse data", () => {
  let x = 12345;
  const data = new Uint8Array(65536);
  for (let i = 0; i < data.length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    data[i] = i % 3000 < 2000 ? 0 : x >>> 24;
  }
  const hex = hexEncode(data);
  const encoded = rle(hex);
  assert.ok(encoded.length < hex.length / 2);
  assert.equal(latin1String(expandRuns(latin1Bytes(encoded))!), hex);
});

Deno.test("expandRuns rejects a run with nothing to repeat", () => {
  assert.equal(expandRuns(latin1Bytes("* ")), undefined);
  assert.equal(expandRuns(latin1Bytes("a*")), undefined);
});

Deno.test("ReplyWriter: packets, acks, hex, binary, retransmission", () => {
  const w = new ReplyWriter(16); // small: the buffers must grow
  w.ack(true);
  w.packet("OK");
  w.startPacket();
  w.hex(new Uint8Array(64));
  w.endPacket();
  w.startPacket();
  w.text("l");
  w.binary(latin1Bytes("<x>#$}*</x>"));
  w.endPacket();
  w.resend();
  const out = w.take();
  assert.equal(w.pendingBytes, 0);
  const text = latin1String(out);
  assert.ok(text.startsWith("+$OK#9a$0*~0*:#"), text);
  assert.deepEqual(replies(out), [
    "+",
    "OK",
    "0".repeat(128),
    "l<x>}\x03}\x04}]}\x0a</x>",
    "l<x>}\x03}\x04}]}\x0a</x>",
  ]);
});

Deno.test("ReplyWriter.binary stops at the size limit without splitting an escape", () => {
  const w = new ReplyWriter();
  w.startPacket();
  w.text("m");
  const written = w.binary(latin1Bytes("ab#cd"), 4);
  assert.equal(written, 2); // "m" + "ab" = 3 bytes; "}\x03" would make 5
  assert.equal(latin1String(w.body), "mab");
  w.endPacket();
});

Deno.test("ReplyWriter without retransmission copies (no-ack mode)", () => {
  const w = new ReplyWriter();
  w.packet("first");
  w.keepLastPacket = false;
  w.packet("second");
  w.take();
  w.resend();
  assert.equal(latin1String(w.take()), latin1String(framePacket("first")));
});

Deno.test("run-length encoding round trip on random strings over small alphabets", () => {
  let x = 99;
  const rand = (n: number) => {
    x = (x * 1103515245 + 12345) >>> 0;
    return (x >>> 16) % n;
  };
  for (let trial = 0; trial < 3000; trial++) {
    const alphabet = "0ax"[rand(3)] + "0ax1"[rand(4)] + (rand(2) ? "b" : "");
    let text = "";
    const length = rand(120);
    while (text.length < length) {
      text += alphabet[rand(alphabet.length)].repeat(1 + rand(rand(2) ? 3 : 110));
    }
    const encoded = rle(text);
    assert.ok(encoded.length <= text.length);
    assert.ok(!/\*[#$*}]/.test(encoded), encoded);
    assert.equal(latin1String(expandRuns(latin1Bytes(encoded))!), text, JSON.stringify(text));
    // Every run of 4 or more is encoded: no 4 equal literal characters in a row.
    let same = 0;
    for (let i = 0; i < encoded.length; i++) {
      if (encoded[i + 1] === "*") {
        same = 0;
        i += 2;
        continue;
      }
      same = i > 0 && encoded[i] === encoded[i - 1] && encoded[i - 2] !== "*" ? same + 1 : 1;
      assert.ok(same < 4, `${text} -> ${encoded}`);
    }
  }
});

Deno.test("packet reader: the buffer grows to the largest packet allowed, not beyond", () => {
  const max = 0x80000;
  const big = "a".repeat(max);
  // Fed whole and in odd pieces: a packet of exactly the maximum, one byte over it, then a small
  // packet (the stream stays in step after the oversize one).
  const stream = `${latin1String(framePacket(big))}${latin1String(framePacket(big + "b"))}$OK#9a`;
  for (const pieces of [[stream], stream.match(/[^]{1,77777}/g)!]) {
    const seen = events(pieces, max);
    assert.deepEqual(seen.map((e) => e.length), [max + 1, "$<oversize>".length, 3]);
    assert.equal(seen[0], "$" + big);
    assert.deepEqual(seen.slice(1), ["$<oversize>", "$OK"]);
  }
  const reader = new PacketReader(max);
  assert.ok(reader.payload.length < max, "a new reader starts small");
});
