#!/usr/bin/python3
"""Write expected.json for the x86_64-6.1-tasks boot (thousands of sleeping processes).

Usage: expected_tasks.py --boot-dir DIR --vmlinux VMLINUX --system-map SYSTEM_MAP
                         [--dump FILE] [--makedumpfile-version TEXT]
       expected_tasks.py --quick --boot-dir DIR --vmlinux VMLINUX --system-map SYSTEM_MAP

The task list of a boot with about 5000 tasks, from drgn (python3-drgn) reading FILE (default
DIR/dump.zlib-d31.kdump, through libkdumpfile), cross-checked with DIR/dump.elf when that is
still there. Unlike expected.py (whose helpers this reuses), no per-task stacks: drgn takes
about 6 ms per stack, and what this boot tests is the length of the list. The guest's console
(guest/init-tasks) says how many sleepers it started; the list must hold exactly that many.

--quick is the check qemu_crash_dump.py runs on each dump.elf it takes: the crashed CPU must
be CPU 1 running the crasher, its stack (drgn, from QEMU's registers) must show
sysrq_handle_crash and panic, else exit status 3 (an unlucky stop: dump again). As in
expected.py, drgn reads a copy of dump.elf whose NT_PRSTATUS pr_pid fields are the pids of the
CPUs' current tasks.

Records: arch, release, build_id, kaslr_offset, system_map, crashed_cpu, cpus[] (cpu, pid,
comm, task), tasks[] (pid, tgid, ppid, comm, state, task, on_cpu, is_kernel_thread; sorted by
pid, idle tasks included), sleepers (how many the guest started), console (crasher pid),
source (the dump file drgn read), tools, notes.
"""

import argparse
import json
import os
import re
import sys

import expected as ex  # testdata/tools/expected.py: sets DRGN_USE_LIBKDUMPFILE_FOR_ELF first
from drgn.helpers.linux.cpumask import for_each_present_cpu
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import idle_task, task_state_to_char

SLEEPER_COMM = "sleep"


def read_console(path):
    """The guest's FIXTURE lines: sleepers started and the crasher's pid."""
    with open(path, "rb") as f:
        text = f.read().decode(errors="replace")
    sleepers = re.search(r"^FIXTURE sleepers (\d+) last (\d+)\s*$", text, re.M)
    crasher = re.search(r"^FIXTURE pid crasher (\d+)\s*$", text, re.M)
    if not sleepers or not crasher:
        ex.fail(f"{path}: no FIXTURE sleepers/crasher line")
    return {"sleepers": int(sleepers.group(1)), "last_sleeper": int(sleepers.group(2)),
            "crasher": int(crasher.group(1))}


def task_list(prog, running_on):
    """Every task (for_each_task, plus the idle tasks, which are in no pid hash), no stacks."""
    tasks, seen = [], set()

    def record(task):
        seen.add(task.value_())
        tasks.append({
            "pid": task.pid.value_(),
            "tgid": task.tgid.value_(),
            "ppid": task.real_parent.pid.value_(),
            "comm": task.comm.string_().decode(errors="replace"),
            "state": task_state_to_char(task),
            "task": ex.hx(task.value_()),
            "on_cpu": running_on.get(task.value_()),
            "is_kernel_thread": bool(task.flags.value_() & ex.PF_KTHREAD),
        })

    for task in for_each_task(prog):
        record(task)
    for cpu in for_each_present_cpu(prog):
        idle = idle_task(prog, cpu)
        if idle.value_() not in seen:
            record(idle)
    tasks.sort(key=lambda t: (t["pid"], t["comm"]))  # idle tasks: swapper/0, swapper/1, ...
    return tasks


def quick(args, elf):
    """The crash happened on CPU 1 in the crasher, and QEMU stopped it inside panic()."""
    console = read_console(os.path.join(args.boot_dir, "console.log"))
    prog = ex.open_program(elf, args.vmlinux)
    cpus = list(for_each_present_cpu(prog))
    curr_pids = [ex.cpu_curr(prog, cpu).pid.value_() for cpu in cpus]
    del prog
    view = os.path.join(args.boot_dir, ".drgn-view.elf")
    ex.copy_with_prstatus_pids(elf, view, curr_pids)
    try:
        prog = ex.open_program(view, args.vmlinux)
        crashed = prog["panic_cpu"].counter.value_()
        if crashed != 1:
            ex.fail(f"panic_cpu is {crashed}, expected 1")
        task = ex.cpu_curr(prog, crashed)
        if task.pid.value_() != console["crasher"]:
            ex.fail(f"CPU 1 runs pid {task.pid.value_()}, not the crasher {console['crasher']}")
        names, _, _, _ = ex.stack_of(prog, task)
        for function in ("sysrq_handle_crash", "panic"):
            if function not in names:
                ex.fail(f"crashed CPU's stack lacks {function}: {names}", ex.EXIT_UNLUCKY)
    finally:
        os.unlink(view)
    print("    drgn: the crashed CPU's stack shows the crash as planned")


def build(args, dump):
    console = read_console(os.path.join(args.boot_dir, "console.log"))
    system_map = ex.read_system_map(args.system_map)
    info = ex.parse_vmcoreinfo(ex.vmcoreinfo_text(dump))
    prog = ex.open_program(dump, args.vmlinux)
    arch = {"X86_64": "x86_64", "AARCH64": "aarch64"}[prog.platform.arch.name]
    kaslr_offset = prog.symbol("_text").address - system_map["_text"]
    if "KERNELOFFSET" in info and int(info["KERNELOFFSET"], 16) != kaslr_offset:
        ex.fail(f"KERNELOFFSET {info['KERNELOFFSET']} != drgn's _text - System.map _text "
                f"{kaslr_offset:#x}")

    cpus = list(for_each_present_cpu(prog))
    running_on = {ex.cpu_curr(prog, cpu).value_(): cpu for cpu in cpus}
    cpu_records = []
    for cpu in cpus:
        task = ex.cpu_curr(prog, cpu)
        cpu_records.append({"cpu": cpu, "pid": task.pid.value_(),
                            "comm": task.comm.string_().decode(errors="replace"),
                            "task": ex.hx(task.value_())})
    tasks = task_list(prog, running_on)

    sleepers = [t for t in tasks if t["comm"] == SLEEPER_COMM and not t["is_kernel_thread"]]
    if len(sleepers) != console["sleepers"]:
        ex.fail(f"{len(sleepers)} {SLEEPER_COMM!r} tasks in the dump, the guest started "
                f"{console['sleepers']}")
    if any(t["state"] != "S" for t in sleepers):
        ex.fail("a sleeper is not in state S")
    crashed_cpu = prog["panic_cpu"].counter.value_()
    if cpu_records[crashed_cpu]["pid"] != console["crasher"]:
        ex.fail(f"CPU {crashed_cpu} runs pid {cpu_records[crashed_cpu]['pid']}, not the crasher")

    elf = os.path.join(args.boot_dir, "dump.elf")
    checked = []
    if os.path.abspath(dump) != os.path.abspath(elf) and os.path.exists(elf):
        other = ex.open_program(elf, args.vmlinux)
        running = {ex.cpu_curr(other, cpu).value_(): cpu for cpu in cpus}
        if task_list(other, running) != tasks:
            ex.fail(f"drgn reads another task list from {elf} than from {dump}")
        checked.append(os.path.basename(elf))
        print(f"    drgn: dump.elf has the same {len(tasks)} tasks")

    symbols = {name: ex.hx(system_map[name]) for name in ("_text", "_stext", "init_task")
               if name in system_map}
    notes = ["no per-task stacks (this boot tests the length of the task list)"]
    if checked:
        notes.append(f"the task list was also read from {', '.join(checked)}: the same")
    return {
        "arch": arch,
        "release": prog["init_uts_ns"].name.release.string_().decode(),
        "build_id": info.get("BUILD-ID"),
        "kaslr_offset": ex.hx(kaslr_offset),
        "system_map": symbols,
        "crashed_cpu": crashed_cpu,
        "cpus": cpu_records,
        "sleepers": console["sleepers"],
        "tasks": tasks,
        "console": {"crasher": console["crasher"], "last_sleeper": console["last_sleeper"]},
        "source": os.path.basename(dump),
        "tools": {
            "drgn": ex.drgn.__version__,
            "libkdumpfile": ex.package_version("python3-libkdumpfile"),
            "qemu": ex.read_first_line(os.path.join(args.boot_dir, "qemu-version.txt")),
            "makedumpfile": args.makedumpfile_version,
        },
        "notes": notes,
    }


def dumps_one_task_per_line(expected):
    """JSON text with each task on one line: readable, and a third of the indented size."""
    tasks = expected["tasks"]
    head = json.dumps({**expected, "tasks": []}, indent=1)
    lines = ",\n".join("  " + json.dumps(t, separators=(",", ":")) for t in tasks)
    return head.replace('"tasks": []', '"tasks": [\n' + lines + "\n ]", 1) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boot-dir", required=True)
    ap.add_argument("--vmlinux", required=True)
    ap.add_argument("--system-map", required=True)
    ap.add_argument("--dump", help="dump file drgn reads (default: dump.zlib-d31.kdump)")
    ap.add_argument("--makedumpfile-version", help="for the tools record")
    ap.add_argument("--quick", action="store_true",
                    help="only check the crashed CPU in dump.elf; write nothing (exit status "
                         f"{ex.EXIT_UNLUCKY}: dump again)")
    args = ap.parse_args()
    if args.quick:
        quick(args, os.path.join(args.boot_dir, "dump.elf"))
        return
    dump = args.dump or os.path.join(args.boot_dir, "dump.zlib-d31.kdump")
    expected = build(args, dump)
    out = os.path.join(args.boot_dir, "expected.json")
    with open(out + ".part", "w") as f:
        f.write(dumps_one_task_per_line(expected))
    os.rename(out + ".part", out)
    print(f"    drgn: {len(expected['tasks'])} tasks, {expected['sleepers']} sleepers")


if __name__ == "__main__":
    sys.exit(main())
