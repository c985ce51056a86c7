// Real dumps cut short (a copy that did not finish): they open with a warning, serve the pages
// that are there exactly as the whole file does, and say "past the end of the file" for the
// rest, in reads and in `monitor vtop`. Flattened files too (they used to be refused).
import assert from "node:assert/strict";
import { openDump } from "../lib/open_dump.ts";
import { PageStatus } from "../lib/dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { boot } from "./fixtures.ts";
import { pipeTarget, runGdb } from "./gdb_helpers.ts";

const B = boot("x86_64-6.1");

/** A copy of the first `fraction` of a fixture file, in a temporary file. */
function prefixCopy(file: string, fraction: number): string {
  const data = Deno.readFileSync(B.path(file));
  const out = Deno.makeTempFileSync({ suffix: "-" + file });
  Deno.writeFileSync(out, data.subarray(0, Math.floor(data.length * fraction)));
  return out;
}

const CASES: [string, number][] = [
  ["dump.zlib-d31.kdump", 0.9],
  ["dump.zlib-d31.kdump", 0.5],
  ["dump.zlib-d31.flat", 0.9],
  ["dump.qemu-kdump-zlib.flat", 0.7],
  ["dump.elf-d31.elf", 0.6],
];

for (const [file, fraction] of CASES) {
  Deno.test(`cut short: ${file} at ${fraction * 100}%: warning, same pages, "past the end" for the rest`, () => {
    const path = prefixCopy(file, fraction);
    const whole = openDump([B.path(file)]);
    const cut = openDump([path]);
    try {
      assert.deepEqual(whole.warnings.filter((w) => /shorter/.test(w)), []);
      assert.ok(
        cut.warnings.some((w) =>
          /^the file is shorter than its header says .*past its end/.test(w)
        ),
        cut.warnings.join("\n"),
      );
      const a = new Uint8Array(whole.pageSize);
      const b = new Uint8Array(whole.pageSize);
      let same = 0;
      let lost = 0;
      for (let pfn = 0; pfn < whole.maxPfn; pfn++) {
        const sw = whole.readPage(pfn, a);
        const sc = cut.readPage(pfn, b);
        if (sc === PageStatus.Present) {
          assert.equal(sw, PageStatus.Present, `pfn ${pfn}`);
          assert.deepEqual(b, a, `pfn ${pfn}`);
          same++;
        } else if (sc === PageStatus.Lost) {
          assert.match(cut.lastError, /past the end of the file/);
          lost++;
        } else {
          assert.equal(sc, sw, `pfn ${pfn}: ${cut.lastError}`);
          if (sw === PageStatus.Corrupt) assert.fail(`pfn ${pfn} corrupt in the whole file`);
        }
      }
      assert.ok(same > 1000 && lost > 1000, `${same} pages read, ${lost} past the end`);
    } finally {
      whole.close();
      cut.close();
      Deno.removeSync(path);
    }
  });
}

Deno.test("cut short: banner types line blames the missing pages, not the kernel", () => {
  const path = prefixCopy("dump.zlib-d31.kdump", 0.5);
  const k = new Kernel(openDump([path]));
  try {
    assert.doesNotMatch(k.typeSource, /no kallsyms in the dump's VMCOREINFO/);
    assert.match(k.typeSource, /unreadable: .*past the end of the file/);
  } finally {
    k.close();
    Deno.removeSync(path);
  }
});

Deno.test("cut short: monitor vtop and gdb say past the end of the file", async () => {
  const path = prefixCopy("dump.zlib-d31.kdump", 0.9);
  const whole = new Kernel(openDump([B.path("dump.zlib-d31.kdump")]));
  const k = new Kernel(openDump([path]));
  try {
    // A direct-map address of the last page the whole file holds: the cut file lost it, or the
    // page tables leading to it (makedumpfile writes pages in pfn order).
    const buf = new Uint8Array(4096);
    let pfn = whole.dump.maxPfn - 1;
    while (whole.dump.readPage(pfn, buf) !== PageStatus.Present) pfn--;
    assert.equal(k.dump.readPage(pfn, buf), PageStatus.Lost);
    const addr = whole.directMapBase! + BigInt(pfn) * 4096n;
    let text = "";
    new KernelTarget(k).monitor(`vtop 0x${addr.toString(16)}`, (s) => text += s);
    assert.match(text, /(walk|page): .*page missing: pfn \d+ is past the end of the file/);
    assert.doesNotMatch(text, /not in the dump/);
    const r = await runGdb([pipeTarget([path]), `monitor vtop 0x${addr.toString(16)}`]);
    assert.match(r.out, /shorter than its header says/);
    assert.match(r.out, /past the end of the file/);
  } finally {
    whole.close();
    k.close();
    Deno.removeSync(path);
  }
});
