/**
 * The long runs of issue 8, too slow for CI: 1M packet-fuzz cases (sessions on the fake target
 * and on a real kernel dump, each with a twin without debug logging, and TCP servers with and
 * without debug logging) plus 200k wire-parser streams, and 10k corrupt-dump
 * cases (every fifth with the whole server stack). Prints counts, time and results; exits 1 on any
 * failure.
 *
 *   deno run -A tests/long_runs.ts [--packets N] [--dumps N] [--seed S]
 *
 * Writes nothing. Takes about 20 minutes on 2 cores.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { serveTcp } from "../lib/transport.ts";
import { RspSession } from "../lib/rsp_session.ts";
import {
  type FuzzContext,
  type FuzzResult,
  normalTranscript,
  runSessionFuzz,
  runTcpFuzz,
  runWireFuzz,
  ServerLog,
  sessionExchange,
  tcpExchange,
  TcpFuzzClient,
} from "./packet_fuzz.ts";
import { fakeContext, openKernelTarget } from "./fault_support.ts";
import { FakeTarget } from "./rsp_fake_target.ts";
import { runCorruptDumps } from "./corrupt_runner.ts";
import type { Target } from "../lib/target.ts";

const { values } = parseArgs({
  options: {
    packets: { type: "string", default: "1000000" },
    dumps: { type: "string", default: "10000" },
    seed: { type: "string", default: String(Date.now() % 1_000_000_007) },
  },
});
const PACKETS = Number(values.packets);
const DUMPS = Number(values.dumps);
const SEED = Number(values.seed) >>> 0;
const CHUNK = 10_000;

const failures: string[] = [];
const report: string[] = [];

function log(line: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
}

function total(): FuzzResult {
  return { cases: 0, wellFormed: 0, bytes: 0, closes: 0, failures: [] };
}

function add(into: FuzzResult, r: FuzzResult): void {
  into.cases += r.cases;
  into.wellFormed += r.wellFormed;
  into.bytes += r.bytes;
  into.closes += r.closes;
  into.failures.push(...r.failures);
}

async function phase(
  name: string,
  count: number,
  run: (first: number, n: number) => FuzzResult | Promise<FuzzResult>,
  offset: number,
): Promise<FuzzResult> {
  const t0 = performance.now();
  const sum = total();
  for (let done = 0; done < count; done += CHUNK) {
    const n = Math.min(CHUNK, count - done);
    add(sum, await run(offset + done, n));
    if ((done + n) % 100_000 === 0 || done + n === count) {
      log(`${name}: ${done + n}/${count} cases, ${sum.failures.length} failures`);
    }
    if (sum.failures.length > 20) break;
  }
  const s = (performance.now() - t0) / 1000;
  const line = `${name}: ${sum.cases} cases, ${sum.wellFormed} well-formed packets, ` +
    `${(sum.bytes / 1048576).toFixed(0)} MiB of traffic, ${sum.closes} sessions ended by the ` +
    `traffic, ${sum.failures.length} failures, ${s.toFixed(0)} s`;
  report.push(line);
  log(line);
  failures.push(...sum.failures);
  return sum;
}

/** A normal session before and after, on a fresh session: the answers must not change. */
async function sameAnswers(
  name: string,
  target: Target,
  ctx: FuzzContext,
  body: () => Promise<void>,
) {
  const before = await normalTranscript(sessionExchange(new RspSession(target)), ctx);
  await body();
  const after = await normalTranscript(sessionExchange(new RspSession(target)), ctx);
  if (JSON.stringify(before) !== JSON.stringify(after)) failures.push(`${name}: answers changed`);
}

const started = performance.now();
log(`seed ${SEED}: ${PACKETS} packet cases, ${DUMPS} corrupt-dump cases`);

// Packets: 60% sessions on the fake target, 20% on a real dump, 20% through TCP; plus the wire.
const fake = new FakeTarget({ execFile: "/boot/vmlinux-fake", textSegment: 0xffffffff81000000n });
const fakeCtx = fakeContext(fake);
await phase(
  "wire parser and encoder",
  Math.round(PACKETS / 5),
  (f, n) => runWireFuzz(fakeCtx, SEED, f, n),
  0,
);
await sameAnswers("fake sessions", fake, fakeCtx, async () => {
  await phase(
    "sessions, fake target",
    Math.round(PACKETS * 0.6),
    (f, n) => runSessionFuzz(fake, fakeCtx, SEED, f, n),
    0,
  );
});
const k = openKernelTarget("dump.zlib-d31.kdump", 4 << 20);
await sameAnswers("kernel sessions", k.target, k.ctx, async () => {
  await phase(
    "sessions, real kernel dump",
    Math.round(PACKETS * 0.2),
    (f, n) => runSessionFuzz(k.target, k.ctx, SEED, f, n),
    10_000_000,
  );
});
const cache = k.kernel.phys.cache;
report.push(`page cache after the storm: ${cache.size} of ${cache.capacity} pages`);
if (cache.size > cache.capacity) failures.push("page cache over its bound");
k.kernel.close();
{
  const slog = new ServerLog();
  const server = await serveTcp(fake, { port: 0, debug: true, log: slog.log });
  const session = async () => {
    const c = await TcpFuzzClient.connect(server.port);
    try {
      return await normalTranscript(tcpExchange(c), fakeCtx);
    } finally {
      await c.close();
    }
  };
  const before = await session();
  const tcp = PACKETS - Math.round(PACKETS * 0.6) - Math.round(PACKETS * 0.2);
  await phase(
    "TCP server with debug log, fake target",
    Math.round(tcp / 2),
    (f, n) => runTcpFuzz(fake, fakeCtx, SEED, f, n, { server, log: slog }),
    20_000_000,
  );
  await phase(
    "TCP server without debug log, accountable traffic",
    tcp - Math.round(tcp / 2),
    (f, n) => runTcpFuzz(fake, fakeCtx, SEED, f, n, undefined, true),
    30_000_000,
  );
  if (JSON.stringify(await session()) !== JSON.stringify(before)) {
    failures.push("TCP: answers changed");
  }
  if (slog.problems().length) failures.push(...slog.problems());
  await server.close();
}

// Corrupt dumps.
if (DUMPS > 0) {
  const t0 = performance.now();
  const s = await runCorruptDumps({
    seed: SEED,
    count: DUMPS,
    kernelEvery: 5,
    caseTimeoutMs: 60_000,
    progress: (done) => {
      if (done % 1000 === 0) log(`corrupt dumps: ${done}/${DUMPS}`);
    },
  });
  const secs = (performance.now() - t0) / 1000;
  const opened = s.outcomes.opened ?? 0;
  const refusals = Object.entries(s.outcomes).filter(([k]) => k !== "opened")
    .sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(", ");
  report.push(
    `corrupt dumps: ${s.cases} cases (${
      Object.entries(s.classes).map(([k, v]) => `${k} ${v}`).join(", ")
    }); ` +
      `${opened} opened, ${s.cases - opened} refused with a one-line error (${refusals}); ` +
      `sample reads: ${Object.entries(s.statuses).map(([k, v]) => `${k} ${v}`).join(", ")}; ` +
      `server stack built on ${s.kernels.built} damaged dumps; slowest case ${
        s.slowest.ms.toFixed(0)
      } ms; ` +
      `most memory held ${
        (s.maxHeldBytes / 1048576).toFixed(1)
      } MiB; ${s.failures.length} failures; ${secs.toFixed(0)} s`,
  );
  log(report[report.length - 1]);
  failures.push(...s.failures);
}

console.log(
  "\n== long runs, seed " + SEED + ", " + ((performance.now() - started) / 60000).toFixed(1) +
    " min ==",
);
for (const line of report) console.log("- " + line);
if (failures.length) {
  console.log(`\n${failures.length} FAILURES:`);
  for (const f of failures.slice(0, 50)) console.log("  " + f.slice(0, 2000));
  Deno.exit(1);
}
console.log("all passed");
