/**
 * Guest physical memory read straight from QEMU's shared RAM file
 * (`-object memory-backend-file,…,share=on -machine memory-backend=…`). Guest-physical addresses
 * map to file offsets by QEMU's own flat memory map (`info mtree -f`), never by assumption: a PC
 * guest with more than 3 GiB puts RAM above 4 GiB at file offset physical − 1 GiB, and arm64's
 * virt machine starts RAM at 1 GiB.
 *
 * @module
 */

import { LiveError } from "./qemu_stub.ts";
import { PreadFile } from "./libc_file.ts";

/** One range of guest-physical RAM backed by the file. */
export interface RamRange {
  /** First guest-physical address. */
  start: number;
  /** One past the last. */
  end: number;
  /** File offset of `start`. */
  fileOffset: number;
}

/** A memory backend as `info memdev` lists it. */
export interface MemoryBackend {
  id: string;
  size: number;
  share: boolean;
}

/** Parse HMP `info memdev`. */
export function parseMemdev(text: string): MemoryBackend[] {
  const out: MemoryBackend[] = [];
  for (const block of text.split(/^memory backend: /m).slice(1)) {
    const id = block.split("\n", 1)[0].trim();
    const size = Number(block.match(/^\s*size:\s*(\d+)/m)?.[1] ?? NaN);
    const share = /^\s*share:\s*true/m.test(block);
    if (id && Number.isFinite(size)) out.push({ id, size, share });
  }
  return out;
}

/**
 * The ranges of the system memory's flat view (HMP `info mtree -f`) that belong to memory region
 * `region` (the backend's id): `START-END (prio P, ram): NAME [@OFFSET]`.
 */
export function parseMtree(text: string, region: string): RamRange[] {
  const ranges: RamRange[] = [];
  // The first flat view rooted at "memory" is the system address space the CPUs see.
  const views = text.split(/^FlatView #\d+/m).slice(1);
  const view = views.find((v) => /Root memory region: (system|memory)\b/.test(v)) ?? views[0];
  if (!view) return ranges;
  for (const line of view.split("\n")) {
    const m = line.match(
      /^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, (?:ram|rom|romd)\): (\S+)(?: @([0-9a-f]+))?/,
    );
    if (!m || m[3] !== region) continue;
    const start = parseInt(m[1], 16);
    const end = parseInt(m[2], 16) + 1;
    ranges.push({ start, end, fileOffset: m[4] ? parseInt(m[4], 16) : 0 });
  }
  return ranges;
}

/**
 * The guest's main RAM in the flat view, without knowing the backend's id (no RAM file given):
 * the `ram` region with the most bytes (`pc.ram`, `mach-virt.ram`, a backend's id).
 */
export function mainRam(mtree: string): RamRange[] {
  const totals = new Map<string, number>();
  for (const m of mtree.matchAll(/^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ram\): (\S+)/gm)) {
    const size = parseInt(m[2], 16) + 1 - parseInt(m[1], 16);
    totals.set(m[3], (totals.get(m[3]) ?? 0) + size);
  }
  let best: string | undefined;
  for (const [name, size] of totals) if (!best || size > totals.get(best)!) best = name;
  return best ? parseMtree(mtree, best) : [];
}

/** The guest's RAM file, read (and written) by guest-physical address. */
export class GuestRam {
  readonly path: string;
  readonly ranges: readonly RamRange[];
  /** One past the highest guest-physical RAM address. */
  readonly top: number;
  #file: Deno.FsFile;
  /** The same file read by `pread` (one call per read), when FFI is granted. */
  #pread: PreadFile | undefined;

  /**
   * @param path the backend's mem-path
   * @param memdev HMP `info memdev` output
   * @param mtree HMP `info mtree -f` output
   * @throws LiveError when the file is not the guest's shared RAM
   */
  constructor(path: string, memdev: string, mtree: string) {
    this.path = path;
    let size: number;
    let file: Deno.FsFile;
    try {
      size = Deno.statSync(path).size;
      file = Deno.openSync(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable) {
        // Deno (2.9) grants paths under /dev/, but for /dev/null and a few others, only with
        // --allow-all: naming them in --allow-read is not enough ("Requires all access").
        throw new LiveError(
          path.startsWith("/dev/")
            ? `${path}: Deno reads files under /dev/ only with --allow-all: run with -A, or ` +
              `give QEMU a mem-path outside /dev/`
            : `${path}: not readable with this run's permissions: run with --allow-read`,
        );
      }
      throw new LiveError(`${path}: ${e instanceof Error ? e.message : e}`);
    }
    try {
      this.ranges = GuestRam.#check(path, size, memdev, mtree);
    } catch (e) {
      file.close();
      throw e;
    }
    this.top = Math.max(...this.ranges.map((r) => r.end));
    this.#file = file;
    this.#pread = PreadFile.open(path);
  }

  static #check(path: string, size: number, memdev: string, mtree: string): RamRange[] {
    const backends = parseMemdev(memdev);
    const backend = backends.find((b) => b.size === size);
    if (!backend) {
      const sizes = backends.map((b) => `${b.id} ${b.size} bytes`).join(", ") || "none";
      throw new LiveError(
        `${path}: ${size} bytes, but no memory backend of the guest has that size (${sizes}): ` +
          "not this guest's RAM file",
      );
    }
    if (!backend.share) {
      throw new LiveError(
        `${path}: the guest's memory backend "${backend.id}" is not shared (add share=on): ` +
          "the file does not show the guest's memory",
      );
    }
    const ranges = parseMtree(mtree, backend.id).filter((r) => r.fileOffset < size);
    if (ranges.length === 0) {
      throw new LiveError(`${path}: QEMU's memory map has no RAM of backend "${backend.id}"`);
    }
    return ranges;
  }

  #range(paddr: number): RamRange | undefined {
    for (const r of this.ranges) if (paddr >= r.start && paddr < r.end) return r;
    return undefined;
  }

  /**
   * Read `out.length` bytes at `paddr`, all within one RAM range (a page never straddles one).
   * Returns false when the address is not RAM of the file.
   */
  read(paddr: number, out: Uint8Array): boolean {
    const r = this.#range(paddr);
    if (!r || paddr + out.length > r.end) return false;
    const at = r.fileOffset + (paddr - r.start);
    if (this.#pread) return this.#pread.read(at, out) === out.length;
    this.#file.seekSync(at, Deno.SeekMode.Start);
    let done = 0;
    while (done < out.length) {
      const n = this.#file.readSync(out.subarray(done));
      if (n === null || n === 0) return false;
      done += n;
    }
    return true;
  }

  close(): void {
    this.#pread?.close();
    try {
      this.#file.close();
    } catch {
      // already closed
    }
  }
}
