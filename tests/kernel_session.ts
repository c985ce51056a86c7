/**
 * The kernel-mode gdb session every real-dump test of the main job runs, and what its output
 * must show: the CPUs as named threads, the panic backtrace, kernel data and registers, all
 * checked against what drgn and the guest's console recorded for the fixture.
 */
import assert from "node:assert/strict";
import { big, type Expected } from "./fixtures.ts";

/** gdb commands after `target remote`. */
export const KERNEL_SESSION = [
  "info threads",
  "bt",
  "p init_task.comm",
  "p linux_banner",
  "info registers rip rsp fs_base gs_base",
];

/** Checks every session makes: threads, the panic backtrace, kernel data, registers. */
export function assertKernelSession(out: string, label: string, e: Expected): void {
  for (const cpu of e.cpus) {
    const name = cpu.pid === 0
      ? `CPU ${cpu.cpu}: idle`
      : `CPU ${cpu.cpu}: ${cpu.comm} (pid ${cpu.pid})`;
    assert.ok(out.includes(name), `${label}: thread name ${name}\n${out}`);
  }
  // The panicking CPU's thread is selected, and its backtrace shows the crash path.
  assert.match(out, new RegExp(`\\* ${e.crashed_cpu + 1} +Thread ${e.crashed_cpu + 1} `), label);
  const bt = out.slice(out.indexOf("#0"));
  assert.match(bt, /in panic \(/, `${label}: panic in bt`);
  assert.match(bt, /in sysrq_handle_crash \(/, `${label}: sysrq_handle_crash in bt`);
  assert.ok(bt.indexOf("panic (") < bt.indexOf("sysrq_handle_crash ("), label);
  assert.match(out, /\$1 = "swapper\/0\\000/, `${label}: init_task.comm`);
  assert.ok(out.includes(e.banner.slice(0, 60)), `${label}: linux_banner`);
  const crashed = e.cpus.find((c: { cpu: number }) => c.cpu === e.crashed_cpu);
  const rip = big(crashed.registers.rip).toString(16);
  assert.match(out, new RegExp(`rip +0x${rip} `), `${label}: rip`);
  assert.match(out, /fs_base +0x[0-9a-f]+/, `${label}: fs_base`);
  assert.match(out, /gs_base +0x[0-9a-f]+/, `${label}: gs_base`);
}

/** gdb-multiarch commands after `target remote`, on an arm64 dump. */
export const ARM64_KERNEL_SESSION = [
  "info threads",
  "bt",
  "p init_task.comm",
  "p linux_banner",
  "info registers pc sp x29 cpsr",
];

/** What an arm64 session must show: threads, the panic, kernel data, drgn's registers. */
export function assertArm64KernelSession(out: string, e: Expected): void {
  for (const cpu of e.cpus) {
    const name = cpu.pid === 0 ? `CPU ${cpu.cpu}: idle` : `CPU ${cpu.cpu}: ${cpu.comm}`;
    assert.ok(out.includes(name), `thread ${name}\n${out}`);
  }
  assert.match(out, /in panic \(/);
  assert.match(out, /"swapper\/0\\000/);
  assert.ok(out.includes(e.banner.slice(0, 50)));
  const crashedCpu = e.cpus.find((c: { cpu: number }) => c.cpu === e.crashed_cpu);
  const regs = crashedCpu.registers;
  assert.match(out, new RegExp(`sp +0x${big(regs.sp).toString(16)} `));
  assert.match(out, new RegExp(`x29 +0x${big(regs.x29).toString(16)} `));
  // The pc is where drgn found the innermost frame, and gdb names the same function.
  const top = crashedCpu.frames[0];
  assert.match(
    out,
    new RegExp(`pc +0x${big(top.pc).toString(16)} +0x[0-9a-f]+ <${top.symbol}[+>]`),
  );
}
