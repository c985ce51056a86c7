/**
 * What the benchmarks share: where the fixtures and the bench's own output live, the 64 MiB
 * direct-map range every reader is measured on, and a kernel view opened the way the server
 * opens it.
 *
 * @module
 */

import { existsSync } from "node:fs";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";

/**
 * The x86_64 Linux 6.1 fixture directory (dumps of one 512 MiB QEMU guest), under
 * KDUMP_FIXTURES like the tests, else testdata/fixtures.
 */
export const FIXTURES = (Deno.env.get("KDUMP_FIXTURES") ??
  new URL("../testdata/fixtures", import.meta.url).pathname) + "/x86_64-6.1/";
/** Git-ignored directory for everything the bench builds (C programs, crafted dumps, results). */
export const OUT = new URL("./out/", import.meta.url).pathname;

/** Fixture path by file name. */
export function fixture(name: string): string {
  return FIXTURES + name;
}

/**
 * The unfiltered (`-d 0`) dumps every page of the range is present in, by label. The LZO one is
 * made by the bench (bench/run.sh) into bench/out/.
 */
export const UNFILTERED: Record<string, string> = {
  zlib: fixture("dump.zlib-d0.kdump"),
  lzo: OUT + "dump.lzo-d0.kdump",
  elf: fixture("dump.elf"),
};

/** The filtered (`-d 31`) dumps, one per codec. */
export const FILTERED: Record<string, string> = {
  zlib: fixture("dump.zlib-d31.kdump"),
  lzo: fixture("dump.lzo-d31.kdump"),
  snappy: fixture("dump.snappy-d31.kdump"),
  zstd: fixture("dump.zstd-d31.kdump"),
};

/** The debug vmlinux matching the fixtures. */
export const VMLINUX = fixture("vmlinux");

/**
 * The measured range: 64 MiB of the direct map from physical 1 MiB (the first 64 MiB of RAM
 * above the legacy hole: kernel image, page tables and early allocations, about 60% of its
 * pages non-zero; the rest of this guest's RAM is mostly zero pages).
 */
export const RANGE_PHYS_START = 0x100000;
/** Length of the measured range. */
export const RANGE_BYTES = 64 * 1024 * 1024;

/** Whether every path exists. */
export function haveFiles(...paths: string[]): boolean {
  return paths.every((p) => existsSync(p));
}

/** A kernel view on one dump, as the CLI builds it (no vmlinux unless given). */
export function openKernel(path: string, cacheBytes?: number, vmlinux?: string): Kernel {
  return new Kernel(openDump([path]), { cacheBytes, vmlinux });
}

/** Kernel virtual address of the range start (direct map base + 1 MiB). */
export function rangeStart(kernel: Kernel): bigint {
  if (kernel.directMapBase === undefined) throw new Error("no direct map in this dump");
  return kernel.directMapBase + BigInt(RANGE_PHYS_START);
}

/** A small deterministic generator (xorshift32), so every run reads the same addresses. */
export function randomGenerator(seed = 0x9e3779b9): () => number {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/**
 * Wait for a server started with `--port 0` (stderr piped) to print its "listening on" line:
 * its port (0 if it did not within 30 s), its stderr so far, and the end of that stream.
 */
export async function listeningPort(
  child: Deno.ChildProcess,
): Promise<{ port: number; stderr: () => string; drained: Promise<void> }> {
  let text = "";
  const drained = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) text += c;
  })().catch(() => {});
  let port = 0;
  for (let i = 0; i < 600 && !port; i++) {
    port = Number(text.match(/listening on [^\s]+:(\d+)/)?.[1] ?? 0);
    if (!port) await new Promise((r) => setTimeout(r, 50));
  }
  return { port, stderr: () => text, drained };
}
