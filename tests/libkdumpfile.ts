/**
 * libkdumpfile (python3-libkdumpfile), an independent dump reader and address translator, as an
 * oracle for tests: what it reads at kernel virtual addresses of a real dump.
 */
import assert from "node:assert/strict";

const SCRIPT = new URL("./libkdumpfile_read.py", import.meta.url).pathname;

/**
 * `length` bytes at each kernel virtual address of `dump`, read by libkdumpfile, as hex (null
 * where it cannot read them).
 */
export async function libkdumpfileRead(
  dump: string,
  length: number,
  addresses: bigint[],
): Promise<(string | null)[]> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: [SCRIPT, dump, String(length)],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(120_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(addresses.map((a) => a.toString(16)).join("\n") + "\n"));
  await w.close();
  const out = await child.output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim().split("\n").map((l) =>
    l.startsWith("err") ? null : l
  );
}
