/**
 * BTF, the kernel's compact type information (the vmlinux `.BTF` section): enough of it to
 * find structure sizes and member offsets, which is what reading kernel structures needs.
 *
 * @module
 */

const BTF_MAGIC = 0xeb9f;

// BTF kinds.
const KIND_INT = 1;
const KIND_PTR = 2;
const KIND_ARRAY = 3;
const KIND_STRUCT = 4;
const KIND_UNION = 5;
const KIND_ENUM = 6;
const KIND_TYPEDEF = 8;
const KIND_VOLATILE = 9;
const KIND_CONST = 10;
const KIND_RESTRICT = 11;
const KIND_FUNC_PROTO = 13;
const KIND_VAR = 14;
const KIND_DATASEC = 15;
const KIND_DECL_TAG = 17;
const KIND_TYPE_TAG = 18;
const KIND_ENUM64 = 19;

/** A member found by path: its byte offset from the start of the outer struct, and its type. */
export interface MemberInfo {
  /** Byte offset of the member from the start of the outer struct. */
  offset: number;
  /** Type id of the member. */
  type: number;
  /** Size of the member's type in bytes (after typedefs and qualifiers). */
  size: number;
}

/** Parsed BTF type table. */
export class Btf {
  #strings: Uint8Array;
  #view: DataView;
  /** Byte offset of each type record in #view, indexed by type id (id 0 is void). */
  #typeAt: number[] = [0];
  #structsByName = new Map<string, number>();
  #datasecs = new Map<string, number>();

  /**
   * Parse raw BTF (a vmlinux's `.BTF` section, or the kernel's copy in the dump); throws an Error
   * for data that is not BTF.
   */
  constructor(section: Uint8Array) {
    const v = new DataView(section.buffer, section.byteOffset, section.byteLength);
    if (section.length < 24 || v.getUint16(0, true) !== BTF_MAGIC) {
      throw new Error("not BTF data (bad magic)");
    }
    const hdrLen = v.getUint32(4, true);
    const typeOff = v.getUint32(8, true);
    const typeLen = v.getUint32(12, true);
    const strOff = v.getUint32(16, true);
    const strLen = v.getUint32(20, true);
    const typesStart = hdrLen + typeOff;
    const stringsStart = hdrLen + strOff;
    if (typesStart + typeLen > section.length || stringsStart + strLen > section.length) {
      throw new Error("BTF sections run past the data");
    }
    this.#view = new DataView(section.buffer, section.byteOffset + typesStart, typeLen);
    this.#strings = section.subarray(stringsStart, stringsStart + strLen);
    let o = 0;
    while (o + 12 <= typeLen) {
      const id = this.#typeAt.length;
      this.#typeAt.push(o);
      const info = this.#view.getUint32(o + 4, true);
      const kind = (info >>> 24) & 0x1f;
      const vlen = info & 0xffff;
      if ((kind === KIND_STRUCT || kind === KIND_UNION) && this.#view.getUint32(o, true) !== 0) {
        const name = this.#name(this.#view.getUint32(o, true));
        // Keep the first complete definition of a name.
        if (!this.#structsByName.has(name)) this.#structsByName.set(name, id);
      } else if (kind === KIND_DATASEC) {
        this.#datasecs.set(this.#name(this.#view.getUint32(o, true)), id);
      }
      o += 12 + extraSize(kind, vlen);
    }
  }

  /** Type id of a struct or union by name. */
  structId(name: string): number | undefined {
    return this.#structsByName.get(name);
  }

  /** Size in bytes of a struct by name. */
  structSize(name: string): number | undefined {
    const id = this.structId(name);
    return id === undefined ? undefined : this.sizeOf(id);
  }

  /**
   * Offset of a member path such as `thread.sp` or `signal` inside struct `name`, looking into
   * anonymous structs and unions as C does.
   */
  member(structName: string, path: string): MemberInfo | undefined {
    // Types never change: a lookup (a scan of the struct, into its anonymous members: task_struct
    // has hundreds) is done once per name. A live guest asks the same ones at every stop.
    const key = `${structName}\0${path}`;
    if (this.#members.has(key)) return this.#members.get(key);
    const found = this.#member(structName, path);
    this.#members.set(key, found);
    return found;
  }

  #members = new Map<string, MemberInfo | undefined>();

  #member(structName: string, path: string): MemberInfo | undefined {
    let id = this.structId(structName);
    if (id === undefined) return undefined;
    let offset = 0;
    let found: MemberInfo | undefined;
    for (const part of path.split(".")) {
      const m = this.#findMember(this.resolve(id), part);
      if (!m) return undefined;
      offset += m.offset;
      id = m.type;
      found = { offset, type: m.type, size: this.sizeOf(m.type) };
    }
    return found;
  }

  /**
   * Bit position and width of a direct member of struct `name` (bitfields included), e.g.
   * `orc_entry.type`: BTF records the bit offset that byte offsets lose. Width 0 means the
   * member is not a bitfield (its type's size applies).
   */
  memberBits(
    structName: string,
    member: string,
  ): { bitOffset: number; bitSize: number } | undefined {
    const id = this.structId(structName);
    if (id === undefined) return undefined;
    const sid = this.resolve(id);
    const k = this.#kind(sid);
    if (k !== KIND_STRUCT && k !== KIND_UNION) return undefined;
    const at = this.#typeAt[sid];
    const info = this.#view.getUint32(at + 4, true);
    const kindFlag = (info >>> 31) !== 0;
    for (let i = 0; i < (info & 0xffff); i++) {
      const m = at + 12 + i * 12;
      if (this.#name(this.#view.getUint32(m, true)) !== member) continue;
      const bits = this.#view.getUint32(m + 8, true);
      return kindFlag
        ? { bitOffset: bits & 0xffffff, bitSize: bits >>> 24 }
        : { bitOffset: bits, bitSize: 0 };
    }
    return undefined;
  }

  /**
   * Offset of a variable inside a data section, e.g. a per-CPU variable in `.data..percpu`
   * (pahole records those in BTF): what the symbol table would say, relative to the section.
   */
  varOffset(section: string, variable: string): number | undefined {
    const id = this.#datasecs.get(section);
    if (id === undefined) return undefined;
    const at = this.#typeAt[id];
    const vlen = this.#view.getUint32(at + 4, true) & 0xffff;
    for (let i = 0; i < vlen; i++) {
      const e = at + 12 + i * 12;
      const varId = this.#view.getUint32(e, true);
      if (this.#kind(varId) !== KIND_VAR) continue;
      if (this.#name(this.#view.getUint32(this.#typeAt[varId], true)) === variable) {
        return this.#view.getUint32(e + 4, true);
      }
    }
    return undefined;
  }

  /** Follow typedefs and qualifiers to the underlying type id. */
  resolve(id: number): number {
    for (let i = 0; i < 64; i++) {
      const k = this.#kind(id);
      if (
        k !== KIND_TYPEDEF && k !== KIND_VOLATILE && k !== KIND_CONST && k !== KIND_RESTRICT &&
        k !== KIND_TYPE_TAG
      ) return id;
      id = this.#view.getUint32(this.#typeAt[id] + 8, true);
    }
    return id;
  }

  /** Size in bytes of a type (pointers are 8: we only serve 64-bit targets). */
  sizeOf(id: number): number {
    id = this.resolve(id);
    if (id === 0) return 0;
    const at = this.#typeAt[id];
    const k = this.#kind(id);
    switch (k) {
      case KIND_INT:
      case KIND_STRUCT:
      case KIND_UNION:
      case KIND_ENUM:
      case KIND_ENUM64:
      case KIND_DATASEC:
        return this.#view.getUint32(at + 8, true);
      case KIND_PTR:
        return 8;
      case KIND_ARRAY: {
        const elem = this.#view.getUint32(at + 12, true);
        const n = this.#view.getUint32(at + 20, true);
        return this.sizeOf(elem) * n;
      }
    }
    return 0;
  }

  #kind(id: number): number {
    if (id <= 0 || id >= this.#typeAt.length) return 0;
    return (this.#view.getUint32(this.#typeAt[id] + 4, true) >>> 24) & 0x1f;
  }

  #findMember(id: number, name: string): { offset: number; type: number } | undefined {
    const k = this.#kind(id);
    if (k !== KIND_STRUCT && k !== KIND_UNION) return undefined;
    const at = this.#typeAt[id];
    const info = this.#view.getUint32(at + 4, true);
    const vlen = info & 0xffff;
    const bitfieldEncoding = (info >>> 31) !== 0;
    for (let i = 0; i < vlen; i++) {
      const m = at + 12 + i * 12;
      const mname = this.#view.getUint32(m, true);
      const mtype = this.#view.getUint32(m + 4, true);
      let bits = this.#view.getUint32(m + 8, true);
      if (bitfieldEncoding) bits &= 0xffffff;
      const offset = Math.floor(bits / 8);
      if (mname === 0) {
        // Anonymous struct/union: C lets its members be named directly.
        const inner = this.#findMember(this.resolve(mtype), name);
        if (inner) return { offset: offset + inner.offset, type: inner.type };
      } else if (this.#name(mname) === name) {
        return { offset, type: mtype };
      }
    }
    return undefined;
  }

  /** Decoded names by string-table offset: member lookups compare the same names again. */
  #names = new Map<number, string>();

  #name(off: number): string {
    let name = this.#names.get(off);
    if (name === undefined) {
      let end = this.#strings.indexOf(0, off);
      if (end < 0) end = this.#strings.length;
      name = UTF8.decode(this.#strings.subarray(off, end));
      this.#names.set(off, name);
    }
    return name;
  }
}

const UTF8 = new TextDecoder();

function extraSize(kind: number, vlen: number): number {
  switch (kind) {
    case KIND_INT:
    case KIND_VAR:
    case KIND_DECL_TAG:
      return 4;
    case KIND_ARRAY:
      return 12;
    case KIND_STRUCT:
    case KIND_UNION:
    case KIND_DATASEC:
    case KIND_ENUM64:
      return vlen * 12;
    case KIND_ENUM:
    case KIND_FUNC_PROTO:
      return vlen * 8;
  }
  return 0;
}
