/**
 * Corrupt dumps (issue 8): seeded mutations of the real fixtures (headers, bitmaps, page
 * descriptors, compressed data, notes, VMCOREINFO, ELF program headers, flattened records,
 * truncation at random points), each checked in a worker with a time bound. A case either fails
 * to open with a one-line error naming the file and the structure, or opens and answers damaged
 * reads with errors while the reads the damage cannot touch give exactly the pristine bytes; every
 * tenth case also runs the kernel view, the kernel target and an RSP session on the damaged dump.
 * The fixture files are only ever read. 1000 cases in CI; `deno run -A tests/long_runs.ts` runs
 * 10k. Replay with `KDUMP_FUZZ_SEED=<seed>`.
 *
 * Also: crafted regressions for the bugs the mutations found.
 */

import assert from "node:assert/strict";
import { runCorruptDumps } from "./corrupt_runner.ts";
import { runSeed } from "./fuzz_rng.ts";
import { craftElf, craftKdump, vmcoreinfoNote } from "./crafted.ts";
import type { OpenResult } from "./open_bytes_worker.ts";

const SEED = runSeed(0xc0de);

Deno.test("1000 seeded mutations of the real fixtures: clean refusals or honest reads", async () => {
  const s = await runCorruptDumps({
    seed: SEED,
    count: 1000,
    kernelEvery: 10,
    caseTimeoutMs: 30_000,
  });
  console.log(
    `corrupt dumps: ${s.cases} cases, ${s.outcomes.opened ?? 0} opened, ` +
      `${s.cases - (s.outcomes.opened ?? 0)} refused; server stack built on ${s.kernels.built}; ` +
      `slowest ${s.slowest.ms.toFixed(0)} ms; most memory held ${
        (s.maxHeldBytes / 1048576).toFixed(1)
      } MiB`,
  );
  assert.deepEqual(s.failures, [], `seed ${SEED}`);
  assert.equal(s.cases, 1000);
  // The mutations reach every structure, and both outcomes happen.
  for (const c of ["header", "notes", "vmcoreinfo", "data", "truncate", "descriptor", "phdr"]) {
    assert.ok((s.classes[c] ?? 0) > 10, `class ${c}: ${s.classes[c]}`);
  }
  assert.ok((s.outcomes.opened ?? 0) > 300, "many damaged dumps still open");
  const refusals = Object.keys(s.outcomes).filter((k) => k !== "opened");
  assert.ok(refusals.length >= 5, `refused by ${refusals.join(", ")}`);
  assert.ok((s.statuses.corrupt ?? 0) > 0, "damaged pages are reported");
  assert.ok(s.kernels.built > 50);
});

/** Open crafted bytes in a worker, bounded in time. */
async function openBounded(bytes: Uint8Array, ms = 20_000): Promise<OpenResult> {
  const worker = new Worker(new URL("./open_bytes_worker.ts", import.meta.url), { type: "module" });
  try {
    return await new Promise<OpenResult>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`open did not finish in ${ms} ms`)), ms);
      worker.onmessage = (e) => {
        if (e.data === "loaded") return worker.postMessage({ name: "crafted.vmcore", bytes });
        clearTimeout(timer);
        resolve(e.data);
      };
      worker.onerror = (e) => {
        clearTimeout(timer);
        e.preventDefault();
        reject(new Error(e.message));
      };
    });
  } finally {
    worker.terminate();
  }
}

const VMCOREINFO = "OSRELEASE=6.1.0-test\nPAGESIZE=4096\nKERNELOFFSET=0\n";

function elfWithNotes(text = VMCOREINFO): Uint8Array {
  return craftElf([{ paddr: 0x100000, data: new Uint8Array(8192).fill(7) }], [
    vmcoreinfoNote(text),
  ]);
}

Deno.test("regression: a note size near 2^32 is refused, not an endless loop", async () => {
  const bytes = elfWithNotes();
  const noteAt = 64 + 56 * 2; // the note segment follows the two program headers
  const v = new DataView(bytes.buffer);
  v.setUint32(noteAt, 0xfffffff4, true); // namesz: 12 short of 2^32
  v.setUint32(noteAt + 4, 0, true); // descsz
  const r = await openBounded(bytes);
  assert.equal(r.kind, "DumpError", r.message);
  assert.match(r.message!, /^crafted\.vmcore: ELF notes: /);
  v.setUint32(noteAt, 0xbb6bcd26, true); // a random large size: a RangeError before the fix
  assert.equal((await openBounded(bytes)).kind, "DumpError");
});

Deno.test("regression: an impossible VMCOREINFO PAGESIZE in an ELF dump falls back to 4096", async () => {
  for (const bad of ["409", "0", "3", "99999999999", "-4096", "1048576"]) {
    const r = await openBounded(elfWithNotes(VMCOREINFO.replace("4096", bad)));
    assert.equal(r.kind, "opened", `${bad}: ${r.message}`);
    assert.equal(r.pageSize, 4096, bad);
    assert.ok(r.warnings!.some((w) => w.includes(`PAGESIZE=${Number(bad)}`)), bad);
  }
  const ok = await openBounded(elfWithNotes(VMCOREINFO.replace("4096", "16384")));
  assert.equal(ok.pageSize, 16384);
  assert.deepEqual(ok.warnings, []);
});

Deno.test("regression: 65535 PT_LOAD segments open without overflowing the stack", async () => {
  const count = 65535;
  const phnum = count + 1; // with the note segment: more than e_phnum holds (PN_XNUM)
  const tableAt = 64;
  const shAt = tableAt + 56 * phnum;
  const dataAt = shAt + 64;
  const bytes = new Uint8Array(dataAt + 16);
  const v = new DataView(bytes.buffer);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 4, true);
  v.setUint16(18, 62, true);
  v.setBigUint64(32, BigInt(tableAt), true);
  v.setBigUint64(40, BigInt(shAt), true);
  v.setUint16(54, 56, true);
  v.setUint16(56, 0xffff, true);
  v.setUint16(58, 64, true);
  v.setUint16(60, 1, true);
  v.setUint32(shAt + 44, phnum, true); // section 0 sh_info: the real count
  v.setUint32(tableAt, 4, true); // an empty PT_NOTE
  v.setBigUint64(tableAt + 8, BigInt(dataAt), true);
  for (let i = 1; i < phnum; i++) {
    const o = tableAt + 56 * i;
    v.setUint32(o, 1, true);
    v.setBigUint64(o + 8, BigInt(dataAt), true);
    v.setBigUint64(o + 24, BigInt(i) * 0x2000n, true); // paddr
    v.setBigUint64(o + 32, 1n, true); // filesz: one byte in the file
    v.setBigUint64(o + 40, 0x1000n, true); // memsz: the rest is not
  }
  const r = await openBounded(bytes);
  assert.equal(r.kind, "opened", r.message);
  assert.equal(r.maxPfn, Math.ceil((count * 0x2000 + 0x1000) / 4096));
});

Deno.test("regression: file bytes in an error message cannot break it into lines", async () => {
  const bytes = craftKdump({ maxPfn: 64, pages: new Map([[1, new Uint8Array(4096).fill(1)]]) });
  bytes.set(new TextEncoder().encode("x8\n6\r\x00\x1b[31m"), 12 + 4 * 65); // utsname.machine
  const r = await openBounded(bytes);
  assert.equal(r.kind, "DumpError");
  // deno-lint-ignore no-control-regex
  assert.doesNotMatch(r.message!, /[\x00-\x1f\x7f]/);
  assert.match(r.message!, /^crafted\.vmcore: kdump header: unsupported machine "x8\\u\{a\}6/);
});
