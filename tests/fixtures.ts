/**
 * Access to the real-kernel fixtures built by `deno task fixtures` (testdata/build-fixtures.sh).
 * Expected values come from independent tools (drgn, System.map, the guest console), recorded
 * by the fixture script next to each dump.
 */

import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

/** Directory holding one subdirectory per boot. */
export const FIXTURES = Deno.env.get("KDUMP_FIXTURES") ??
  new URL("../testdata/fixtures", import.meta.url).pathname;

/** One dump file variant of a boot. */
export interface Variant {
  file: string;
  format: "elf" | "kdump" | "flattened";
  codec: string;
  dump_level: number;
  source: string;
  split_part?: number;
}

/** What drgn and the console recorded about a boot (see testdata/README.md). */
// deno-lint-ignore no-explicit-any
export type Expected = Record<string, any>;

/** A boot's fixture directory with its manifest and expectations. */
export interface Boot {
  name: string;
  dir: string;
  expected: Expected;
  variants: Variant[];
  path(file: string): string;
  vmlinux: string;
}

/** Load a boot's fixtures, or throw a message telling how to build them. */
export function boot(name: string): Boot {
  const dir = join(FIXTURES, name);
  const exp = join(dir, "expected.json");
  if (!existsSync(exp)) {
    throw new Error(`fixture ${dir} is missing: run "deno task fixtures ${name}" first`);
  }
  const expected = JSON.parse(readFileSync(exp, "utf8"));
  const manifest = join(dir, "manifest.json");
  const variants: Variant[] = existsSync(manifest)
    ? JSON.parse(readFileSync(manifest, "utf8"))
    : [];
  return {
    name,
    dir,
    expected,
    variants: variants.filter((v) => existsSync(join(dir, v.file))),
    path: (f: string) => join(dir, f),
    vmlinux: join(dir, "vmlinux"),
  };
}

/** True when a boot's fixtures exist (for tests of optional boots). */
export function hasBoot(name: string): boolean {
  return existsSync(join(FIXTURES, name, "expected.json"));
}

/** Parse a "0x…" string (or number) from expected.json. */
export function big(v: string | number): bigint {
  return typeof v === "number" ? BigInt(v) : BigInt(v);
}

/**
 * Debian 13's gdb (16.x), or its gdb-multiarch, made by testdata/newer-gdb.sh beside the
 * fixtures, or undefined when it is not there. gdb 16 reads memory with binary `x` packets;
 * Debian 12's gdb 13 only with `m`.
 */
export function newerGdb(program: "gdb" | "gdb-multiarch" = "gdb"): string | undefined {
  const path = join(FIXTURES, "gdb-trixie", program);
  return existsSync(path) ? path : undefined;
}
