// The kernel's own Call Trace, parsed from a guest's serial console log (tests' oracle).
import assert from "node:assert/strict";

/** The kernel's panic-time Call Trace on the console: its frames and the register lines. */
export function consoleCallTrace(log: string): { frames: string[]; registers: string[] } {
  const lines = log.split(/\r*\n/).map((l) => l.replace(/^\[\s*\d+\.\d+\]\s?/, ""));
  const at = lines.findIndex((l) => /^Call [Tt]race:/.test(l));
  assert.ok(at >= 0, "console.log has a Call Trace");
  const frames: string[] = [];
  const registers: string[] = [];
  for (const l of lines.slice(at + 1)) {
    if (/^ (<\/?\w+>)$/.test(l)) continue;
    const f = /^ (\? )?(\S+\+0x[0-9a-f]+\/0x[0-9a-f]+)( \[\S+\])?$/.exec(l);
    if (f) {
      // `?` frames are the kernel's guesses from scanning the stack, not part of the unwind.
      if (!f[1]) frames.push(f[2]);
      continue;
    }
    if (/^(RIP|RSP|RAX|RDX|RBP|R10|R13): /.test(l)) {
      registers.push(l);
      continue;
    }
    if (/^Code: /.test(l)) continue;
    break;
  }
  return { frames, registers };
}
