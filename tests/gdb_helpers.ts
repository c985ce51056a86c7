/**
 * Running real gdb against our server, for end-to-end tests.
 */

const ROOT = new URL("..", import.meta.url).pathname;

/** The server command line (for `target remote | …` and for spawning). */
export const SERVER = [
  "deno",
  "run",
  "--allow-read",
  "--allow-net",
  // As deno.json's tasks run it: a small young generation keeps the server's memory bounded
  // (about 10 MiB less at no measurable cost; see BENCHMARKS.md).
  "--v8-flags=--max-semi-space-size=1",
  `${ROOT}cli/main.ts`,
];

/**
 * The same server with every permission, FFI included (`deno run -A`): the live mode's blocking
 * sockets and `pread`, and pipe mode's end of stderr after the banner (cli/pipe_stderr.ts).
 */
export const SERVER_WITH_FFI: readonly string[] = ["deno", "run", "-A", ...SERVER.slice(4)];

/** Output of one gdb run. */
export interface GdbRun {
  out: string;
  code: number;
}

/** Run gdb in batch mode with `-ex` commands; bounded in time. */
export async function runGdb(
  commands: string[],
  options: { gdb?: string; timeoutMs?: number; pre?: string[] } = {},
): Promise<GdbRun> {
  const args = ["-nx", "-batch", ...(options.pre ?? [])];
  for (const c of commands) args.push("-ex", c);
  const cmd = new Deno.Command(options.gdb ?? "gdb", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
  });
  const r = await cmd.output();
  const dec = new TextDecoder();
  return { out: dec.decode(r.stdout) + dec.decode(r.stderr), code: r.code };
}

/** Run the server's command line to its exit (60 s at most): status, output, time taken. */
export async function runServer(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  const r = await new Deno.Command(SERVER[0], {
    args: [...SERVER.slice(1), ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return {
    code: r.code,
    stdout: dec.decode(r.stdout),
    stderr: dec.decode(r.stderr),
    ms: performance.now() - t0,
  };
}

/** `target remote | …` for pipe mode (the live tests pass their server command, with FFI). */
export function pipeTarget(args: string[], server: readonly string[] = SERVER): string {
  return `target remote | ${[...server, "--stdio", ...args].join(" ")}`;
}

/** A TCP server process started for a test. */
export interface ServerProcess {
  port: number;
  /** Everything the server printed on stderr so far. */
  stderr(): string;
  /** The server's exit status, once it exits. */
  status: Promise<number>;
  stop(): Promise<void>;
}

/**
 * Start the server on an ephemeral port and wait for its "listening" line.
 * @param server the command line to run (default: {@link SERVER})
 */
export async function startServer(
  args: string[],
  server: readonly string[] = SERVER,
): Promise<ServerProcess> {
  const child = new Deno.Command(server[0], {
    args: [...server.slice(1), "--port", "0", ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = child.stderr.getReader();
  const dec = new TextDecoder();
  const pump = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text += dec.decode(value);
    }
  })();
  const deadline = Date.now() + 60_000;
  let port = 0;
  while (Date.now() < deadline) {
    const m = text.match(/listening on [^\s]+:(\d+)/);
    if (m) {
      port = Number(m[1]);
      break;
    }
    const status = await Promise.race([
      child.status,
      new Promise((r) => setTimeout(r, 50, undefined)),
    ]);
    if (status) throw new Error(`server exited: ${text}`);
  }
  if (!port) {
    child.kill();
    throw new Error(`server did not start: ${text}`);
  }
  const status = child.status.then((s) => s.code);
  return {
    port,
    stderr: () => text,
    status,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await pump.catch(() => {});
    },
  };
}
