/**
 * Serve a dump in tasks or process mode, for tests and trying things with real gdb until the CLI
 * has the flags:
 *   deno run -A tests/tasks_serve.ts --stdio DUMP --vmlinux VMLINUX --tasks
 *   deno run -A tests/tasks_serve.ts --port 0 DUMP --vmlinux VMLINUX --pid 95
 *   deno run -A tests/tasks_serve.ts --stdio DUMP [--vmlinux VMLINUX] -k tasks.json | -j proc.json
 * Without a mode flag it serves kernel mode (one thread per CPU).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { openDump } from "../lib/open_dump.ts";
import { Kernel } from "../lib/kernel.ts";
import { KernelTarget } from "../lib/kernel_target.ts";
import { tasksTarget } from "../lib/tasks_target.ts";
import { processTarget } from "../lib/process_target.ts";
import { targetFromProcessJson, targetFromTasksJson } from "../lib/tasks_json.ts";
import { serveStdio, serveTcp } from "../lib/transport.ts";
import type { Target } from "../lib/target.ts";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    stdio: { type: "boolean", default: false },
    port: { type: "string", default: "0" },
    vmlinux: { type: "string" },
    tasks: { type: "boolean", default: false },
    pid: { type: "string" },
    k: { type: "string", short: "k" },
    j: { type: "string", short: "j" },
    debug: { type: "boolean", default: false },
  },
});

const log = (line: string) => console.error(line);
const kernel = new Kernel(openDump(positionals), { vmlinux: values.vmlinux });
let target: Target;
if (values.tasks) target = tasksTarget(kernel);
else if (values.pid !== undefined) target = processTarget(kernel, Number(values.pid));
else if (values.k) target = targetFromTasksJson(kernel, values.k);
else if (values.j) target = targetFromProcessJson(kernel, values.j);
else target = new KernelTarget(kernel);
log(`${target.threads().length} threads`);

if (values.stdio) {
  await serveStdio(target, { debug: values.debug, log });
} else {
  const server = await serveTcp(target, { port: Number(values.port), debug: values.debug, log });
  log(`listening on ${server.hostname}:${server.port}`);
  await server.finished;
}
kernel.close();
