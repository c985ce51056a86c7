/**
 * VMCOREINFO: the kernel's `KEY=VALUE` note telling debuggers where things are.
 *
 * @module
 */

/** Parsed VMCOREINFO with typed accessors. Values are kept as the kernel wrote them. */
export class VmcoreInfo {
  /** The note text exactly as found in the dump. */
  readonly raw: Uint8Array;
  /** Every key in order of appearance (later duplicates win in `get`). */
  readonly entries: ReadonlyMap<string, string>;

  /**
   * Parse the note's `KEY=value` lines.
   * @param raw the note's bytes (NUL padding after the text is dropped)
   */
  constructor(raw: Uint8Array) {
    // The note is NUL-padded; keep the bytes up to the first NUL for debuggers.
    let end = raw.indexOf(0);
    if (end < 0) end = raw.length;
    this.raw = raw.subarray(0, end);
    const map = new Map<string, string>();
    for (const line of new TextDecoder().decode(this.raw).split("\n")) {
      const eq = line.indexOf("=");
      if (eq <= 0) continue;
      map.set(line.slice(0, eq), line.slice(eq + 1).trim());
    }
    this.entries = map;
  }

  /** The raw value of a key such as `OSRELEASE` or `SYMBOL(swapper_pg_dir)`. */
  get(key: string): string | undefined {
    return this.entries.get(key);
  }

  /** `SYMBOL(name)`: an address, written in hex without prefix. */
  symbol(name: string): bigint | undefined {
    const v = this.get(`SYMBOL(${name})`);
    return v === undefined ? undefined : parseHex(v);
  }

  /**
   * `NUMBER(name)`: decimal, possibly negative (`NUMBER(phys_base)=-75497472` is real), or hex
   * with a 0x prefix on some architectures (`NUMBER(kimage_voffset)=0xffff…`).
   */
  number(name: string): bigint | undefined {
    const v = this.get(`NUMBER(${name})`);
    return v === undefined ? undefined : parseSignedNumber(v);
  }

  /** `SIZE(type)` in bytes. */
  size(type: string): number | undefined {
    return this.decimal(`SIZE(${type})`);
  }

  /** `OFFSET(type.member)` in bytes. */
  offset(member: string): number | undefined {
    return this.decimal(`OFFSET(${member})`);
  }

  /** `LENGTH(name)`. */
  length(name: string): number | undefined {
    return this.decimal(`LENGTH(${name})`);
  }

  /** `KERNELOFFSET`: how far KASLR moved kernel text (hex without prefix); 0 when absent. */
  get kernelOffset(): bigint | undefined {
    const v = this.get("KERNELOFFSET");
    return v === undefined ? undefined : parseHex(v);
  }

  /** `OSRELEASE`, the kernel release (`uname -r`). */
  get osRelease(): string | undefined {
    return this.get("OSRELEASE");
  }

  /** `BUILD-ID` of the running vmlinux, hex. */
  get buildId(): string | undefined {
    return this.get("BUILD-ID");
  }

  /** `PAGESIZE` of the kernel. */
  get pageSize(): number | undefined {
    return this.decimal("PAGESIZE");
  }

  /** `CRASHTIME` (seconds since the epoch), set by the kernel's kdump path only. */
  get crashTime(): number | undefined {
    return this.decimal("CRASHTIME");
  }

  /** A key's value as a decimal number; undefined when absent or not a number. */
  private decimal(key: string): number | undefined {
    const v = this.get(key);
    if (v === undefined) return undefined;
    const n = Number(parseSignedNumber(v));
    return Number.isFinite(n) ? n : undefined;
  }
}

function parseHex(v: string): bigint | undefined {
  const s = v.startsWith("0x") || v.startsWith("0X") ? v.slice(2) : v;
  if (!/^[0-9a-fA-F]+$/.test(s)) return undefined;
  return BigInt("0x" + s);
}

function parseSignedNumber(v: string): bigint | undefined {
  const neg = v.startsWith("-");
  const s = neg ? v.slice(1) : v;
  let n: bigint | undefined;
  if (s.startsWith("0x") || s.startsWith("0X")) n = parseHex(s);
  else if (/^[0-9]+$/.test(s)) n = BigInt(s);
  if (n === undefined) return undefined;
  return neg ? -n : n;
}
