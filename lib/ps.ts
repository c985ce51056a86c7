/**
 * `monitor ps`: rows describing kernel tasks, and their text, shared by every mode.
 *
 * @module
 */

import type { KernelTasks, TaskInfo } from "./tasks.ts";

/** One row of `monitor ps`; absent fields print as `-`. */
export interface PsRow {
  /** gdb thread id of the task, when it is a thread of the target. */
  threadId?: number;
  pid: number;
  tid: number;
  ppid?: number;
  uid?: number;
  cpu?: number;
  /** CPU it was running on at the time of the dump. */
  running?: number;
  state?: string;
  address?: bigint;
  comm: string;
}

/** Name of a task as `ps` shows it: kernel threads in brackets. */
export function psComm(comm: string, kernelThread: boolean): string {
  return kernelThread ? `[${comm}]` : comm;
}

/** Format `monitor ps` lines. `>` marks tasks running on a CPU, as crash does. */
export function formatPs(rows: readonly PsRow[]): string {
  const dash = (v: number | string | undefined) => (v === undefined ? "-" : String(v));
  const lines = ["    PID     TID    PPID  CPU ST   UID  THREAD   TASK                COMM"];
  for (const r of rows) {
    const mark = r.running !== undefined ? ">" : " ";
    lines.push(
      `${mark}${dash(r.pid).padStart(6)} ${dash(r.tid).padStart(7)} ${dash(r.ppid).padStart(7)} ` +
        `${dash(r.running ?? r.cpu).padStart(4)} ${dash(r.state).padEnd(2)} ` +
        `${dash(r.uid).padStart(5)}  ${dash(r.threadId).padEnd(8)} ` +
        `${(r.address === undefined ? "-" : "0x" + r.address.toString(16)).padEnd(19)} ${r.comm}`,
    );
  }
  lines.push(`${rows.length} task${rows.length === 1 ? "" : "s"}; > marks tasks running on a CPU.`);
  return lines.join("\n") + "\n";
}

/** Filter ps rows by a monitor argument: a pid/tid, or a substring of the name. */
export function filterPs(rows: readonly PsRow[], arg: string | undefined): readonly PsRow[] {
  if (!arg) return rows;
  if (/^\d+$/.test(arg)) {
    const n = Number(arg);
    return rows.filter((r) => r.pid === n || r.tid === n);
  }
  return rows.filter((r) => r.comm.includes(arg));
}

/** ps rows of kernel tasks (uid read on demand: one more pointer per task). */
export function taskPsRow(tasks: KernelTasks, t: TaskInfo, threadId?: number): PsRow {
  return {
    threadId,
    pid: t.tgid,
    tid: t.pid,
    ppid: t.ppid,
    get uid() {
      return tasks.uid(t);
    },
    cpu: t.cpu,
    running: t.runningOn,
    state: t.state,
    address: t.address,
    comm: psComm(t.comm, t.kernelThread),
  };
}
