/**
 * Register layouts shared by the architectures: a layout lists the registers in remote register
 * number order (which is the order of the `g` packet and of the target description), builds the
 * `target.xml` gdb reads, and encodes `g` and `p` replies from {@link RegisterValues}.
 *
 * @module
 */

import type { ArchName, RegisterValues } from "./target.ts";

/** One register as gdb's target description declares it. */
export interface RegisterDef {
  /** gdb's name, also the key in {@link RegisterValues}. */
  name: string;
  /** Size in bits (a multiple of 8). */
  bits: number;
  /** Target description type: `int`, `int64`, `code_ptr`, `data_ptr`, `i387_ext`, a flags id… */
  type: string;
  /** Register group (`general`, `float`, …) when not the default for its type. */
  group?: string;
}

/** One `<feature>` of a target description. */
export interface RegisterFeature {
  /** Feature name gdb recognises, e.g. `org.gnu.gdb.i386.core`. */
  name: string;
  /** XML type definitions (flags, vectors, unions) the registers refer to. */
  typesXml?: string;
  /** Registers of the feature, in `g` order. */
  registers: RegisterDef[];
  /**
   * Registers read one at a time (`p`), outside the `g` block and stop replies, as QEMU keeps
   * its system registers: reading them costs the target a request each. Such features come last.
   */
  outsideG?: boolean;
}

/** A complete register layout of one architecture. */
export interface RegisterLayout {
  /** Architecture it describes. */
  readonly arch: ArchName;
  /** Registers in remote number order (`p` numbers index this). */
  readonly registers: readonly RegisterDef[];
  /** Byte offset of each register in the `g` block. */
  readonly offsets: readonly number[];
  /** Size of the whole `g` block in bytes. */
  readonly gBytes: number;
  /** How many registers the `g` block holds (the first ones); the others are read with `p`. */
  readonly gCount: number;
  /** The target description, UTF-8. */
  readonly targetXml: Uint8Array;
}

/**
 * Build a layout from its features.
 * @param arch our architecture name
 * @param bfdArchitecture gdb's `<architecture>` value, e.g. `i386:x86-64`
 * @param features features in `g` order
 */
export function defineLayout(
  arch: ArchName,
  bfdArchitecture: string,
  features: RegisterFeature[],
): RegisterLayout {
  const registers = features.flatMap((f) => f.registers);
  const firstOutside = features.findIndex((f) => f.outsideG);
  if (firstOutside >= 0 && features.slice(firstOutside).some((f) => !f.outsideG)) {
    throw new Error("registers outside the g block must come last");
  }
  const gCount = features.filter((f) => !f.outsideG).reduce((n, f) => n + f.registers.length, 0);
  const offsets: number[] = [];
  let offset = 0;
  let gBytes = 0;
  for (const r of registers) {
    if (r.bits % 8 !== 0) throw new Error(`register ${r.name}: ${r.bits} bits is not whole bytes`);
    offsets.push(offset);
    offset += r.bits / 8;
    if (offsets.length === gCount) gBytes = offset;
  }
  const lines = [
    `<?xml version="1.0"?>`,
    `<!DOCTYPE target SYSTEM "gdb-target.dtd">`,
    `<target version="1.0">`,
    `<architecture>${bfdArchitecture}</architecture>`,
    `<osabi>GNU/Linux</osabi>`,
  ];
  for (const f of features) {
    lines.push(`<feature name="${f.name}">`);
    if (f.typesXml) lines.push(f.typesXml.trim());
    for (const r of f.registers) {
      const group = r.group ? ` group="${r.group}"` : "";
      lines.push(`<reg name="${r.name}" bitsize="${r.bits}" type="${r.type}"${group}/>`);
    }
    lines.push(`</feature>`);
  }
  lines.push(`</target>`, "");
  return {
    arch,
    registers,
    offsets,
    gBytes,
    gCount,
    targetXml: new TextEncoder().encode(lines.join("\n")),
  };
}

/** Sink for register hex: the reply writer's payload methods. */
export interface RegisterSink {
  /** Append hex of bytes. */
  hex(data: Uint8Array): void;
  /** Append ASCII text. */
  text(s: string): void;
}

const scratch = new Uint8Array(64);

/** Append one register: little-endian hex of its value, or `x` digits when it is unavailable. */
function encodeOne(def: RegisterDef, value: bigint | undefined, sink: RegisterSink): void {
  const size = def.bits / 8;
  if (value === undefined) {
    sink.text("x".repeat(size * 2));
    return;
  }
  const bytes = size <= scratch.length ? scratch.subarray(0, size) : new Uint8Array(size);
  if (size <= 8) {
    // Two 32-bit halves as numbers: a live stop reply carries every register, and BigInt
    // arithmetic byte by byte made its encoding a visible part of the stop.
    const v = BigInt.asUintN(64, value);
    let lo = Number(v & 0xffffffffn);
    let hi = Number(v >> 32n);
    for (let i = 0; i < size; i++) {
      if (i < 4) {
        bytes[i] = lo & 0xff;
        lo >>>= 8;
      } else {
        bytes[i] = hi & 0xff;
        hi >>>= 8;
      }
    }
  } else {
    let v = BigInt.asUintN(def.bits, value);
    for (let i = 0; i < size; i++) {
      bytes[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  sink.hex(bytes);
}

/** Encode the `g` reply: every register of the `g` block, in order. */
export function encodeAllRegisters(
  layout: RegisterLayout,
  values: RegisterValues,
  sink: RegisterSink,
): void {
  for (let i = 0; i < layout.gCount; i++) {
    const def = layout.registers[i];
    encodeOne(def, values.get(def.name), sink);
  }
}

/** Encode a `p` reply for register number `regno`; false when the layout has no such register. */
export function encodeRegister(
  layout: RegisterLayout,
  regno: number,
  values: RegisterValues,
  sink: RegisterSink,
): boolean {
  const def = layout.registers[regno];
  if (def === undefined) return false;
  encodeOne(def, values.get(def.name), sink);
  return true;
}
