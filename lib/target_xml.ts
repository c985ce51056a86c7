/**
 * A stub's target description (`qXfer:features:read:target.xml` and the files it includes), read
 * with a small XML reader: the architecture and every register with its number and size, so a
 * `g` reply can be decoded by register name whatever the stub's order (QEMU's x86_64 file has
 * commented-out entries; its aarch64 file differs entirely).
 *
 * @module
 */

import type { ArchName } from "./target.ts";
import { hexDigit } from "./rsp_wire.ts";

/** One register of a stub's description. */
export interface StubRegister {
  name: string;
  /** Remote register number (`p`/`P`). */
  regnum: number;
  bits: number;
  /** Byte offset in the `g` reply. */
  offset: number;
}

/** What a stub's target description says. */
export interface StubDescription {
  /** gdb's architecture name, e.g. `i386:x86-64`, `aarch64`. */
  architecture: string;
  arch: ArchName;
  registers: StubRegister[];
  byName: Map<string, StubRegister>;
}

/** Attributes of one XML start tag's text (`name="rax" bitsize="64"`). */
function attributes(tag: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of tag.matchAll(/([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
    out.set(m[1], m[2] ?? m[3]);
  }
  return out;
}

/**
 * Parse a description, fetching included files with `fetch(annex)`. Registers are numbered in
 * document order, `regnum` attributes resetting the count, as gdb does.
 * @throws Error when no architecture or no register is found
 */
export function parseTargetDescription(
  fetch: (annex: string) => string,
  annex = "target.xml",
): StubDescription {
  let architecture = "";
  const registers: StubRegister[] = [];
  let next = 0;
  const visit = (file: string, depth: number) => {
    if (depth > 8) throw new Error(`${file}: includes nested too deep`);
    const text = fetch(file).replace(/<!--[\s\S]*?-->/g, "");
    for (
      const m of text.matchAll(
        /<(architecture)>([^<]*)<\/architecture>|<(reg|xi:include)\b([^>]*)>/g,
      )
    ) {
      if (m[1]) {
        architecture = m[2].trim();
      } else if (m[3] === "xi:include") {
        const href = attributes(m[4]).get("href");
        if (href) visit(href, depth + 1);
      } else {
        const a = attributes(m[4]);
        const name = a.get("name");
        const bits = Number(a.get("bitsize"));
        if (!name || !Number.isInteger(bits) || bits <= 0) continue;
        const regnum = a.has("regnum") ? Number(a.get("regnum")) : next;
        next = regnum + 1;
        registers.push({ name, regnum, bits, offset: 0 });
      }
    }
  };
  visit(annex, 0);
  if (!architecture) throw new Error(`${annex}: no <architecture>`);
  if (registers.length === 0) throw new Error(`${annex}: no registers`);
  registers.sort((a, b) => a.regnum - b.regnum);
  let offset = 0;
  for (const r of registers) {
    r.offset = offset;
    offset += Math.ceil(r.bits / 8);
  }
  const arch: ArchName | undefined = architecture.includes("x86-64")
    ? "x86_64"
    : architecture.startsWith("aarch64")
    ? "aarch64"
    : undefined;
  if (!arch) throw new Error(`${annex}: architecture "${architecture}" is not supported`);
  return { architecture, arch, registers, byName: new Map(registers.map((r) => [r.name, r])) };
}

/** Registers of a `g` reply by name (registers sent as `xx…` are left out); up to 64 bits each. */
export function decodeRegisters(desc: StubDescription, reply: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const r of desc.registers) {
    const size = Math.ceil(r.bits / 8);
    if (r.bits > 64) continue;
    const at = r.offset * 2;
    if (at + size * 2 > reply.length) break;
    // Little-endian bytes as two 32-bit halves, straight from the text (a step decodes
    // every register of a `g` at every stop).
    const low = littleEndianHex(reply, at, Math.min(size, 4));
    if (low < 0) continue;
    if (size <= 4) {
      out.set(r.name, BigInt(low));
      continue;
    }
    const high = littleEndianHex(reply, at + 8, size - 4);
    if (high < 0) continue;
    out.set(r.name, (BigInt(high) << 32n) | BigInt(low));
  }
  return out;
}

/** The value of `count` (≤ 4) little-endian hex bytes of `text` from `at`; -1 if not hex. */
function littleEndianHex(text: string, at: number, count: number): number {
  let v = 0;
  for (let i = count - 1; i >= 0; i--) {
    const hi = hexDigit(text.charCodeAt(at + 2 * i));
    const lo = hexDigit(text.charCodeAt(at + 2 * i + 1));
    if (hi < 0 || lo < 0) return -1;
    v = v * 256 + hi * 16 + lo;
  }
  return v;
}

/** A `p` reply's value of one register (up to 64 bits); undefined for `xx…`, `E14` or a wrong size. */
export function decodeRegisterValue(reg: StubRegister, reply: string): bigint | undefined {
  const size = Math.ceil(reg.bits / 8);
  if (reg.bits > 64 || reply.length !== size * 2) return undefined;
  const low = littleEndianHex(reply, 0, Math.min(size, 4));
  const high = size > 4 ? littleEndianHex(reply, 8, size - 4) : 0;
  return low < 0 || high < 0 ? undefined : (BigInt(high) << 32n) | BigInt(low);
}

/** Little-endian hex of a register value, for `P`. */
export function encodeRegisterValue(reg: StubRegister, value: bigint): string {
  const size = Math.ceil(reg.bits / 8);
  let v = BigInt.asUintN(size * 8, value);
  let s = "";
  for (let i = 0; i < size; i++) {
    s += Number(v & 0xffn).toString(16).padStart(2, "0");
    v >>= 8n;
  }
  return s;
}
