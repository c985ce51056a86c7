/**
 * Drives corrupt-dump cases in a worker with a time bound per case: a case that does not finish
 * in time is reported as a hang, the worker is stopped, and a new one goes on after it.
 *
 * @module
 */

import type { CorruptMessage, CorruptRequest } from "./corrupt_worker.ts";
import { type CorruptSummary, emptySummary } from "./dump_mutations.ts";
import { FIXTURES } from "./fixtures.ts";

/** Options of a run. */
export interface CorruptRunOptions {
  seed: number;
  first?: number;
  count: number;
  /** Run the server stack on every n-th case. */
  kernelEvery: number;
  /** Longest a case may take. */
  caseTimeoutMs: number;
  /** Called now and then with the number of cases done. */
  progress?: (done: number) => void;
}

function merge(into: CorruptSummary, part: CorruptSummary): void {
  into.cases += part.cases;
  for (const key of ["outcomes", "classes", "statuses"] as const) {
    for (const [k, v] of Object.entries(part[key])) into[key][k] = (into[key][k] ?? 0) + v;
  }
  into.kernels.built += part.kernels.built;
  into.kernels.refused += part.kernels.refused;
  if (part.slowest.ms > into.slowest.ms) into.slowest = part.slowest;
  into.maxHeldBytes = Math.max(into.maxHeldBytes, part.maxHeldBytes);
  into.failures.push(...part.failures);
}

/** Run cases [first, first + count) and return what they did. */
export async function runCorruptDumps(options: CorruptRunOptions): Promise<CorruptSummary> {
  const total = emptySummary();
  let next = options.first ?? 0;
  const end = next + options.count;
  while (next < end) {
    const worker = new Worker(new URL("./corrupt_worker.ts", import.meta.url), { type: "module" });
    const request: CorruptRequest = {
      fixtures: FIXTURES,
      seed: options.seed,
      first: next,
      count: end - next,
      kernelEvery: options.kernelEvery,
    };
    let current = { at: next - 1, what: "setup" };
    const outcome = await new Promise<CorruptSummary | "hung">((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const arm = (ms: number) => {
        clearTimeout(timer);
        timer = setTimeout(() => resolve("hung"), ms);
      };
      arm(120_000); // opening the fixtures
      worker.onerror = (e) => {
        clearTimeout(timer);
        e.preventDefault();
        reject(new Error(`corrupt-dump worker crashed after ${current.what}: ${e.message}`));
      };
      worker.onmessage = (e: MessageEvent<CorruptMessage>) => {
        const m = e.data;
        if ("loaded" in m) {
          worker.postMessage(request);
        } else if ("ready" in m) {
          arm(options.caseTimeoutMs);
        } else if ("at" in m) {
          current = m;
          arm(options.caseTimeoutMs);
          if (options.progress && m.at % 100 === 0) options.progress(m.at - (options.first ?? 0));
        } else {
          clearTimeout(timer);
          resolve(m.summary);
        }
      };
    }).finally(() => worker.terminate());
    if (outcome === "hung") {
      total.cases++;
      total.failures.push(`${current.what}: no answer within ${options.caseTimeoutMs} ms (hang)`);
      next = current.at + 1;
      continue;
    }
    merge(total, outcome);
    next = end;
  }
  return total;
}
