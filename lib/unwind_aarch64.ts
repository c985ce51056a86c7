/**
 * arm64 kernel stack unwinding by frame records (the x29 chain).
 *
 * @module
 */

import type { Kernel } from "./kernel.ts";
import type { RegisterValues } from "./target.ts";
import type { Backtrace } from "./backtrace.ts";
import { formatAddress } from "./symbolize.ts";

/** Options of {@link unwindAarch64}. */
export interface Arm64UnwindOptions {
  taskStack?: bigint;
  cpu?: number;
  maxFrames: number;
}

/** Backtrace of an arm64 kernel stack from its registers. */
export function unwindAarch64(
  kernel: Kernel,
  regs: RegisterValues,
  _options: Arm64UnwindOptions,
): Backtrace {
  const pc = regs.get("pc");
  const sp = regs.get("sp") ?? 0n;
  if (pc === undefined) return { frames: [], stopReason: "no saved pc" };
  return {
    frames: [{ pc, sp, text: formatAddress(kernel, pc), reliable: true }],
    stopReason: "not implemented",
  };
}
