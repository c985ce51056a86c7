/**
 * Worker for the corrupt-dump runs: says it has loaded, then opens the fixtures once, then checks seeded mutations one by
 * one, announcing each case before it starts so that the driver (tests/corrupt_runner.ts) can
 * stop it and report the case if it ever hangs (a synchronous loop cannot be interrupted from
 * its own thread).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { existsSync } from "node:fs";
import { join } from "node:path";
import { caseSeed } from "./fuzz_rng.ts";
import {
  type Base,
  BASE_SPECS,
  checkCase,
  closeBase,
  type CorruptSummary,
  emptySummary,
  type KernelMode,
  mutate,
  openBase,
} from "./dump_mutations.ts";

/** What the driver asks for. */
export interface CorruptRequest {
  fixtures: string;
  seed: number;
  first: number;
  count: number;
  /** Run the server stack on every n-th case (0: never). */
  kernelEvery: number;
}

/** Messages from the worker. */
export type CorruptMessage =
  | { loaded: true }
  | { ready: true; setupMs: number; bases: string[] }
  | { at: number; what: string }
  | { done: true; summary: CorruptSummary };

const STATUS_NAMES = ["present", "zero", "excluded", "absent", "corrupt", "lost"];
/** External memory one case may hold while its dump is open. */
const MAX_HELD_BYTES = 512 * 1024 * 1024;

self.onmessage = (e: MessageEvent<CorruptRequest>) => {
  const { fixtures, seed, first, count, kernelEvery } = e.data;
  const t0 = performance.now();
  // The x86_64-6.1 boot is required; other boots join when their fixtures were built.
  const bases: Base[] = BASE_SPECS
    .filter((spec) =>
      spec.boot === "x86_64-6.1" ||
      spec.files.every((f) => existsSync(join(fixtures, spec.boot, f)))
    )
    .map((spec) => openBase(fixtures, spec));
  self.postMessage(
    {
      ready: true,
      setupMs: performance.now() - t0,
      bases: bases.map((b) => b.label),
    } satisfies CorruptMessage,
  );
  const summary = emptySummary();
  const bump = (map: Record<string, number>, key: string) => map[key] = (map[key] ?? 0) + 1;
  for (let i = first; i < first + count; i++) {
    const base = bases[i % bases.length];
    const mutation = mutate(base, caseSeed(seed, i));
    const k = kernelEvery > 0 && i % kernelEvery === 0;
    const mode: KernelMode = !k ? "none" : (i / kernelEvery) % 2 === 0 ? "vmlinux" : "dump";
    const what = `seed ${seed} case ${i}: ${base.label}: ${
      [...mutation.notes, ...mutation.classes].join("; ")
    }${mode === "none" ? "" : ` (+ server stack, symbols from ${mode})`}`;
    self.postMessage({ at: i, what } satisfies CorruptMessage);
    const out = checkCase(base, mutation, mode);
    summary.cases++;
    bump(summary.outcomes, out.outcome);
    for (const c of mutation.classes) bump(summary.classes, c.slice(0, c.indexOf(":")));
    out.statuses.forEach((n, s) => {
      if (n) summary.statuses[STATUS_NAMES[s]] = (summary.statuses[STATUS_NAMES[s]] ?? 0) + n;
    });
    if (out.kernel === "built") summary.kernels.built++;
    if (out.kernel === "dump error") summary.kernels.refused++;
    if (out.ms > summary.slowest.ms) summary.slowest = { ms: out.ms, what };
    summary.maxHeldBytes = Math.max(summary.maxHeldBytes, out.heldBytes);
    if (out.heldBytes > MAX_HELD_BYTES) {
      out.failures.push(`held ${(out.heldBytes / 1048576).toFixed(0)} MiB while open`);
    }
    for (const f of out.failures) {
      if (summary.failures.length < 50) summary.failures.push(`${what}: ${f}`);
    }
  }
  for (const b of bases) closeBase(b);
  self.postMessage({ done: true, summary } satisfies CorruptMessage);
};

// Messages sent before the modules above finish loading (the codecs initialise with a top-level
// await) would be lost: the driver waits for this one first.
self.postMessage({ loaded: true } satisfies CorruptMessage);
