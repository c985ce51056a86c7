/**
 * Top functions of a V8 CPU profile (`deno run --cpu-prof` writes `*.cpuprofile`), by self time
 * and by total time, as a text table for BENCHMARKS.md:
 *   deno run --allow-read bench/profile_summary.ts FILE.cpuprofile [TOP]
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self and total milliseconds per function (name + file:line), heaviest first. */
export function summarize(profile: Profile): { name: string; selfMs: number; totalMs: number }[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode) => {
    const f = n.callFrame;
    const file = f.url ? f.url.replace(/^.*\/(lib|bench|cli|node_modules)\//, "$1/") : "";
    return `${f.functionName || "(anonymous)"}${file ? ` ${file}:${f.lineNumber + 1}` : ""}`;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = (profile.timeDeltas[i + 1] ?? 0) / 1000;
    let id: number | undefined = profile.samples[i];
    const first = byId.get(id)!;
    self.set(label(first), (self.get(label(first)) ?? 0) + dt);
    const seen = new Set<string>();
    while (id !== undefined) {
      const l = label(byId.get(id)!);
      if (!seen.has(l)) {
        total.set(l, (total.get(l) ?? 0) + dt);
        seen.add(l);
      }
      id = parent.get(id);
    }
  }
  return [...total.keys()].map((name) => ({
    name,
    selfMs: self.get(name) ?? 0,
    totalMs: total.get(name) ?? 0,
  })).sort((a, b) => b.selfMs - a.selfMs);
}

if (import.meta.main) {
  const [file, top] = Deno.args;
  const rows = summarize(JSON.parse(Deno.readTextFileSync(file)));
  const all = rows.reduce((s, r) => s + r.selfMs, 0);
  console.log(`total ${all.toFixed(0)} ms sampled`);
  console.log("| self ms | self % | total ms | function |");
  console.log("|---:|---:|---:|---|");
  for (const r of rows.slice(0, Number(top ?? 15))) {
    console.log(
      `| ${r.selfMs.toFixed(0)} | ${(100 * r.selfMs / all).toFixed(1)} | ` +
        `${r.totalMs.toFixed(0)} | ${r.name} |`,
    );
  }
}
