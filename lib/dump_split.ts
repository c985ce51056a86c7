/**
 * Split sets (`makedumpfile --split`): several kdump files that each hold a range of pfns.
 *
 * @module
 */

import { DumpError } from "./errors.ts";
import { type DumpReader, PageStatus, type VirtualMapping } from "./dump.ts";
import type { ArchName } from "./target.ts";
import type { ElfNote } from "./elf.ts";
import type { VmcoreInfo } from "./vmcoreinfo.ts";
import type { CpuState, QemuCpuState } from "./cpu_notes.ts";
import type { KdumpReader } from "./dump_kdump.ts";

/** Presents the parts of a split set as one dump. Metadata comes from the first part. */
export class SplitDumpReader implements DumpReader {
  /** The parts, sorted by the first pfn each holds. */
  readonly parts: readonly KdumpReader[];
  readonly format: string;
  readonly files: readonly string[];
  lastError = "";
  #first: KdumpReader;

  /**
   * One dump from the files of a `makedumpfile --split` set, in any order.
   * @throws DumpError for a file that is not part of a split set, parts of different dumps, or
   *   overlapping parts
   */
  constructor(parts: KdumpReader[]) {
    const sorted = [...parts].sort((a, b) => a.startPfn - b.startPfn);
    for (const p of sorted) {
      if (!p.isSplit) {
        throw new DumpError(p.files[0], "kdump sub-header", "not part of a split dump set");
      }
      if (p.release !== sorted[0].release || p.maxPfn !== sorted[0].maxPfn) {
        throw new DumpError(
          p.files[0],
          "kdump header",
          `belongs to another dump than ${sorted[0].files[0]}`,
        );
      }
    }
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].startPfn < sorted[i - 1].endPfn) {
        throw new DumpError(sorted[i].files[0], "kdump sub-header", "pfn range overlaps a part");
      }
    }
    this.parts = sorted;
    this.#first = sorted[0];
    this.files = sorted.flatMap((p) => p.files);
    this.format = `split ${this.#first.format}, ${sorted.length} parts`;
  }

  get arch(): ArchName {
    return this.#first.arch;
  }
  get pageSize(): number {
    return this.#first.pageSize;
  }
  get maxPfn(): number {
    return this.#first.maxPfn;
  }
  get notes(): readonly ElfNote[] {
    return this.#first.notes;
  }
  get vmcoreinfo(): VmcoreInfo | undefined {
    return this.#first.vmcoreinfo;
  }
  get cpus(): readonly CpuState[] {
    return this.#first.cpus;
  }
  get qemuCpus(): readonly QemuCpuState[] {
    return this.#first.qemuCpus;
  }
  get compressed(): boolean {
    return true;
  }
  get warnings(): string[] {
    const w = this.parts.flatMap((p) => p.warnings);
    const last = this.parts[this.parts.length - 1];
    if (this.parts[0].startPfn > 0 || last.endPfn < last.maxPfn) {
      w.push("the split set does not cover all memory: a part may be missing");
    }
    for (let i = 1; i < this.parts.length; i++) {
      if (this.parts[i].startPfn > this.parts[i - 1].endPfn) {
        w.push(`no part holds pfns ${this.parts[i - 1].endPfn}..${this.parts[i].startPfn}`);
      }
    }
    return w;
  }
  get details(): Record<string, string | number> {
    // The parts' own "split part" (their pfn ranges) is the set's "split parts" here.
    const { ["split part"]: _, ...details } = this.#first.details;
    return { ...details, "split parts": this.parts.length };
  }
  get virtualMappings(): VirtualMapping[] {
    return [];
  }

  readPage(pfn: number, out: Uint8Array): PageStatus {
    for (const p of this.parts) {
      if (p.holds(pfn)) {
        const s = p.readPage(pfn, out);
        if (s === PageStatus.Corrupt) this.lastError = `${p.files[0]}: ${p.lastError}`;
        return s;
      }
    }
    return PageStatus.Absent;
  }

  close(): void {
    for (const p of this.parts) p.close();
  }
}
