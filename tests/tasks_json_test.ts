// The original tool's -k and -j JSON files: exact 64-bit values, the extensions our gdb script
// writes, and one-line errors naming the file and the entry at fault.
import assert from "node:assert/strict";
import { join } from "node:path";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { DumpError } from "../lib/errors.ts";
import {
  packAuxv,
  readProcessJson,
  readTasksJson,
  targetFromProcessJson,
  targetFromTasksJson,
} from "../lib/tasks_json.ts";
import { assignThreadIds } from "../lib/tasks_target.ts";
import { big, boot } from "./fixtures.ts";

const dir = Deno.makeTempDirSync({ prefix: "tasks_json_" });
globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

function write(name: string, text: string): string {
  const path = join(dir, name);
  Deno.writeTextFileSync(path, text);
  return path;
}

/** Assert a DumpError whose single-line message starts with the file and names `where`. */
function assertJsonError(fn: () => unknown, path: string, where: RegExp): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof DumpError, `${e}`);
    assert.ok(e.message.startsWith(`${path}: `), e.message);
    assert.ok(!e.message.includes("\n"), "one line");
    assert.match(e.message, where);
    return true;
  });
}

Deno.test("-k: 64-bit integers stay exact, hex strings and aliases are accepted", () => {
  const path = write(
    "k.json",
    `{"threads": [
      {"pid": 1, "tid": 1, "comm": "init", "registers": {"rip": 18446744071687966269,
       "rsp": "0xffffcb4e4040bb50", "rflags": 514, "bogus": 1}},
      {"pid": 1, "tid": 7, "comm": "init", "registers": {"rip": 1}, "task": 18446615005666566144,
       "cpu": 1, "state": "R"}]}`,
  );
  const json = readTasksJson(path, "x86_64");
  assert.equal(json.threads.length, 2);
  const r = json.threads[0].registers;
  assert.equal(r.get("rip"), 0xffffffff87810e3dn);
  assert.equal(r.get("rsp"), 0xffffcb4e4040bb50n);
  assert.equal(r.get("eflags"), 514n);
  assert.deepEqual(json.ignoredRegisters, ["bogus"]);
  assert.equal(json.threads[1].task, 0xffff8a9d01256000n);
  assert.equal(json.threads[1].cpu, 1);
  assert.equal(json.threads[1].tid, 7);

  const arm = write(
    "k-arm.json",
    `{"threads": [{"pid": 0, "tid": 0, "comm": "[swapper/0]",
      "registers": {"pc": 1, "fp": 2, "lr": 3, "pstate": 4, "x19": 5}}]}`,
  );
  const a = readTasksJson(arm, "aarch64").threads[0].registers;
  assert.deepEqual([...a.entries()].sort(), [
    ["cpsr", 4n],
    ["pc", 1n],
    ["x19", 5n],
    ["x29", 2n],
    ["x30", 3n],
  ]);
});

Deno.test("-k and -j: bad files give one-line errors naming the file and the entry", () => {
  const missing = join(dir, "nope.json");
  assertJsonError(() => readTasksJson(missing, "x86_64"), missing, /cannot read the file/);
  const cases: [string, RegExp][] = [
    ["{", /JSON: not valid JSON/],
    ["[]", /JSON: expected an object at the top/],
    [`{"threads": 3}`, /threads: expected an array/],
    [`{"threads": []}`, /threads: the list is empty/],
    [`{"threads": [5]}`, /threads\[0\]: expected an object/],
    [`{"threads": [{"pid": 1, "tid": 1, "registers": {}}]}`, /threads\[0\]\.comm: expected/],
    [`{"threads": [{"pid": 1, "tid": 1, "comm": "a"}]}`, /threads\[0\]\.registers: expected/],
    [
      `{"threads": [{"pid": 1, "tid": 1, "comm": "a", "registers": {"rip": 1.5}}]}`,
      /threads\[0\]\.registers\.rip: expected an integer, found 1\.5/,
    ],
    [
      `{"threads": [{"pid": "x", "tid": 1, "comm": "a", "registers": {"rip": 1}}]}`,
      /threads\[0\]\.pid: expected an integer, found "x"/,
    ],
    [
      `{"threads": [{"pid": 1, "tid": 1, "comm": "a", "registers": {"pc": 1}}]}`,
      /no thread has a "rip" register.*another architecture than the dump's \(x86_64\)/,
    ],
  ];
  cases.forEach(([text, where], i) => {
    const path = write(`bad${i}.json`, text);
    assertJsonError(() => readTasksJson(path, "x86_64"), path, where);
  });
  const good = `"threads": [{"pid": 1, "tid": 1, "comm": "a", "registers": {"rip": 1}}]`;
  const noRoot = write("j0.json", `{${good}}`);
  assertJsonError(() => readProcessJson(noRoot, "x86_64"), noRoot, /rootpgt: expected an integer/);
  const badAuxv = write("j1.json", `{"rootpgt": 4096, ${good}, "auxv": [[1]]}`);
  assertJsonError(() => readProcessJson(badAuxv, "x86_64"), badAuxv, /auxv\[0\]: expected a/);
});

Deno.test("thread ids: pids when unique, idle tasks and duplicates above PID_MAX_LIMIT", () => {
  assert.deepEqual(assignThreadIds([0, 0, 1, 2, 5, 5, 9]), [
    4194305,
    4194306,
    1,
    2,
    4194307,
    4194308,
    9,
  ]);
});

Deno.test("-k target: running tasks keep the CPU's registers; -j target: bad rootpgt", () => {
  const b = boot("x86_64-6.1");
  const k = new Kernel(openDump([b.path("dump.zlib-d31.kdump")]), { vmlinux: b.vmlinux });
  try {
    const e = b.expected;
    const crasher = e.cpus.find((c: { pid: number }) => c.pid === e.console.crasher);
    // The original tool's file has no "cpu" key: the dump's per-CPU task tells.
    const path = write(
      "k-real.json",
      JSON.stringify({
        threads: [
          { pid: 0, tid: 0, comm: "[swapper/1]", registers: { rip: 1 } },
          { pid: crasher.pid, tid: crasher.pid, comm: crasher.comm, registers: { rip: 2 } },
          { pid: 98, tid: 98, comm: "nc", registers: { rip: 3 } },
        ],
      }),
    );
    const target = targetFromTasksJson(k, path);
    const threads = target.threads();
    assert.deepEqual(threads.map((t) => t.name), [
      "0 [swapper/1]",
      `${crasher.pid} ${crasher.comm} (CPU ${crasher.cpu})`,
      "98 nc",
    ]);
    assert.equal(target.stopThread(), crasher.pid);
    assert.deepEqual(target.registers(crasher.pid), k.dump.cpus[crasher.cpu].registers);
    assert.deepEqual([...target.registers(98)], [["rip", 3n]]);
    // swapper/1 was not running (CPU 1 ran the crasher): its own registers.
    assert.deepEqual([...target.registers(threads[0].id)], [["rip", 1n]]);

    const badRoot = write(
      "j-bad.json",
      `{"rootpgt": 4096, "loadaddr": 0, "threads": [{"pid": 1, "tid": 1, "comm": "a",
        "registers": {"rip": 1}}]}`,
    );
    assertJsonError(() => targetFromProcessJson(k, badRoot), badRoot, /rootpgt: page table root/);

    const auxv: [bigint, bigint][] = [[6n, 4096n], [0n, 0n]];
    const packed = packAuxv(auxv);
    assert.equal(packed.length, 32);
    assert.equal(new DataView(packed.buffer).getBigUint64(8, true), 4096n);

    // A pgd is above 2^53: written as JSON digits it must survive exactly.
    const proc = write(
      "j.json",
      `{"rootpgt": ${big(e.process.pgd)}, "loadaddr": 4198400, "auxv": [[6, 4096], [0, 0]],
        "threads": [{"pid": 95, "tid": 95, "comm": "sleep", "registers": {"rip": 4980195}}]}`,
    );
    const pt = targetFromProcessJson(k, proc);
    assert.equal(pt.view.loadAddress, 4198400n);
    assert.deepEqual(pt.auxv(), packed);
    assert.deepEqual(pt.threads().map((t) => t.name), ["95 sleep"]);
  } finally {
    k.close();
  }
});
