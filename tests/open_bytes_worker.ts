/**
 * Worker that opens crafted dump bytes and describes the result, so that a test can bound the
 * time an open may take (a synchronous hang cannot be interrupted from its own thread).
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { MemorySource } from "../lib/file_source.ts";
import { openSource } from "../lib/open_dump.ts";
import { DumpError } from "../lib/errors.ts";

/** What opening the bytes gave. */
export interface OpenResult {
  /** "opened", "DumpError" or the name of anything else thrown. */
  kind: string;
  message?: string;
  pageSize?: number;
  warnings?: string[];
  maxPfn?: number;
}

self.onmessage = (e: MessageEvent<{ name: string; bytes: Uint8Array }>) => {
  let result: OpenResult;
  try {
    const dump = openSource(new MemorySource(e.data.name, e.data.bytes));
    result = {
      kind: "opened",
      pageSize: dump.pageSize,
      warnings: [...dump.warnings],
      maxPfn: dump.maxPfn,
    };
    dump.close();
  } catch (err) {
    result = err instanceof DumpError
      ? { kind: "DumpError", message: err.message }
      : { kind: err instanceof Error ? err.name : typeof err, message: String(err) };
  }
  self.postMessage(result);
};

self.postMessage("loaded");
