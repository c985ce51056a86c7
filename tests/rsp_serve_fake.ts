/**
 * Serve the fake target, for tests and measurements with real gdb:
 *   deno run tests/rsp_serve_fake.ts --stdio [--arch aarch64] [--size BYTES] [--fill random]
 *   deno run --allow-net tests/rsp_serve_fake.ts --port 1234 [...]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { serveStdio, serveTcp } from "../lib/transport.ts";
import { FakeTarget } from "./rsp_fake_target.ts";

const { values } = parseArgs({
  options: {
    stdio: { type: "boolean", default: false },
    port: { type: "string", default: "1234" },
    arch: { type: "string", default: "x86_64" },
    size: { type: "string" },
    fill: { type: "string", default: "zeros" },
    debug: { type: "boolean", default: false },
    once: { type: "boolean", default: false },
  },
});

const target = new FakeTarget({
  arch: values.arch === "aarch64" ? "aarch64" : "x86_64",
  memorySize: values.size ? Number(values.size) : undefined,
  fill: values.fill === "random" ? "random" : "zeros",
});

if (values.stdio) {
  await serveStdio(target, { debug: values.debug });
} else {
  const server = await serveTcp(target, {
    port: Number(values.port),
    once: values.once,
    debug: values.debug,
  });
  console.error(`listening on ${server.hostname}:${server.port}`);
  await server.finished;
}
