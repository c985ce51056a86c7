/**
 * Worker for tests/codecs_test.ts: feeds one codec every truncation and many
 * random corruptions of real pages. It runs in a worker so that the test can
 * stop it and fail if a decoder ever hangs (a synchronous loop cannot be
 * interrupted from the same thread). It reports progress as it goes and a
 * summary at the end.
 */

/// <reference lib="deno.worker" />

import { CodecError, decompressPage, type PageCodec } from "../lib/codecs.ts";
import { loadCodecVectors, sha256Hex } from "./codecs_vectors.ts";

/** What the test asks for. */
export interface FuzzRequest {
  codec: PageCodec;
  seed: number;
  /** Random corruptions per page. */
  corruptions: number;
}

/** The worker's final message. */
export interface FuzzSummary {
  done: true;
  cases: number;
  rejected: number;
  decoded: number;
  slowestMs: number;
  failures: string[];
}

/**
 * What the worker answers: "ready" once loaded (a message sent before that
 * can be lost while the decoders initialise), progress, then one summary.
 */
export type FuzzMessage = { ready: true } | { progress: number; current: string } | FuzzSummary;

/** Small deterministic PRNG (mulberry32) so failures can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

self.onmessage = async (e: MessageEvent<FuzzRequest>) => {
  const { codec, seed, corruptions } = e.data;
  const rand = prng(seed);
  const all = loadCodecVectors().filter((v) => v.codec === codec && !v.file.endsWith("999.bin"));
  // A few real kernel pages, every edge-case kind, and the larger page sizes.
  const chosen = [
    ...all.filter((v) => v.kind === "kernel" && v.size === 4096).slice(0, 4),
    ...all.filter((v) => v.kind !== "kernel" && v.size === 4096),
    ...all.filter((v) => v.size > 4096 && v.src.length < 8192),
  ];
  let cases = 0, rejected = 0, decoded = 0, slowestMs = 0;
  const failures: string[] = [];

  const attempt = (label: string, src: Uint8Array, size: number) => {
    const out = new Uint8Array(size);
    const t0 = performance.now();
    try {
      decompressPage(codec, src, out);
      decoded++;
    } catch (err) {
      if (err instanceof CodecError) rejected++;
      else failures.push(`${label}: ${String(err)}`);
    }
    slowestMs = Math.max(slowestMs, performance.now() - t0);
    if (++cases % 500 === 0) self.postMessage({ progress: cases, current: label });
  };

  for (const [n, v] of chosen.entries()) {
    const name = `${v.kind}#${n}/${v.size}`;
    // Every truncation must be rejected: a shorter stream cannot hold the whole page.
    for (let len = 0; len < v.src.length; len++) {
      const before = rejected;
      attempt(`${name} cut to ${len}`, v.src.subarray(0, len), v.size);
      if (rejected === before) failures.push(`${name} cut to ${len} was not rejected`);
    }
    // Random corruptions: reject, or decode to exactly a page (checked by the API).
    for (let i = 0; i < corruptions; i++) {
      const bad = v.src.slice();
      const flips = 1 + Math.floor(rand() * 3);
      for (let f = 0; f < flips; f++) {
        bad[Math.floor(rand() * bad.length)] ^= 1 + Math.floor(rand() * 255);
      }
      attempt(`${name} corruption ${i}`, bad, v.size);
    }
    // Random garbage of random length.
    for (let i = 0; i < corruptions / 10; i++) {
      const junk = new Uint8Array(Math.floor(rand() * 2 * v.size));
      for (let j = 0; j < junk.length; j++) junk[j] = rand() * 256;
      attempt(`${name} garbage ${i}`, junk, v.size);
    }
  }

  // The decoders keep state between calls (wasm memory): it must still be intact.
  for (const v of all) {
    const out = new Uint8Array(v.size);
    try {
      decompressPage(codec, v.src, out);
      if ((await sha256Hex(out)) !== v.sha256) {
        failures.push(`${v.file} ${v.kind}: wrong after fuzzing`);
      }
    } catch (err) {
      failures.push(`${v.file} ${v.kind}: fails after fuzzing: ${String(err)}`);
    }
  }

  self.postMessage({ done: true, cases, rejected, decoded, slowestMs, failures });
};

self.postMessage({ ready: true });
