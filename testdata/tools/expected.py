#!/usr/bin/python3
"""Write expected.json for one fixture boot, from independent tools only.

Usage: expected.py --boot-dir DIR --vmlinux VMLINUX --system-map SYSTEM_MAP [--check DUMP...]

Facts come from drgn (python3-drgn, reading the dump through libkdumpfile), libkdumpfile
(VMCOREINFO), the System.map and the guest's console log; never from the project's own code.
drgn reads DIR/dump.elf, the full memory image QEMU wrote.

One adjustment is needed for drgn to use QEMU's CPU registers: QEMU writes the NT_PRSTATUS
pid of each CPU as vCPU index + 1, while a kernel-written vmcore has the pid of the task running
on that CPU, and drgn (which pairs notes with CPUs by their order) only uses a CPU's registers
for a task whose pid matches. So drgn reads a temporary copy of dump.elf whose NT_PRSTATUS
pr_pid fields are set to the pid of each CPU's current task (runqueues.curr, read by drgn
first). The registers themselves are QEMU's, unchanged.

drgn 0.0.22 only knows the ORC unwind format of kernels before 6.4 ("unknown ORC entry type"
on 6.12). For such a kernel drgn gets a temporary copy of vmlinux whose ORC sections are
renamed, so that it unwinds with the DWARF call frame information (.debug_frame) instead.
Both adjustments are listed in expected.json's "notes".

With --check, drgn also opens each further dump (e.g. the makedumpfile outputs) and the stacks
of all tasks that are not running on a CPU must match the ones from dump.elf.
"""

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys

os.environ.setdefault("DRGN_USE_LIBKDUMPFILE_FOR_ELF", "1")

import drgn  # noqa: E402
import kdumpfile  # noqa: E402
from drgn import Object  # noqa: E402
from drgn.helpers.linux.cpumask import for_each_present_cpu  # noqa: E402
from drgn.helpers.linux.mm import cmdline  # noqa: E402
from drgn.helpers.linux.percpu import per_cpu  # noqa: E402
from drgn.helpers.linux.pid import find_task, for_each_task  # noqa: E402
from drgn.helpers.linux.sched import idle_task, task_cpu, task_state_to_char  # noqa: E402

PF_KTHREAD = 0x00200000
VM_EXEC = 0x4
NT_PRSTATUS = 1
PRSTATUS_PID_OFFSET = 32  # elf_prstatus.pr_pid on 64-bit targets (x86_64 and aarch64)

# What each console-reported process must be, and a function its stack must contain.
GUEST_PROCESSES = {
    "sleeper": ("sleep", "do_nanosleep"),
    "fifo": ("cat", "fifo_open"),
    "listener": ("nc", "inet_csk_accept"),
    "spinner": ("spinner.sh", None),
    "crasher": ("crasher.sh", "sysrq_handle_crash"),
}


def hx(value):
    return f"{value:#x}"


# Exit status when the dump is fine but the moment QEMU stopped the guest was unlucky (e.g. the
# panicking CPU was entering an interrupt, where drgn cannot unwind): boot again.
EXIT_UNLUCKY = 3


def fail(msg, status=1):
    print(f"expected.py: {msg}", file=sys.stderr)
    sys.exit(status)


# --- ELF notes -------------------------------------------------------------------------------


def note_segment(path):
    """(file offset, size) of the PT_NOTE segment of an ELF64 core file."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        e_phoff, = struct.unpack_from("<Q", ehdr, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", ehdr, 54)
        for i in range(e_phnum):
            f.seek(e_phoff + i * e_phentsize)
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type == 4:
                return p_offset, p_filesz
    fail(f"{path}: no PT_NOTE segment")


def iter_notes(buf):
    """Yield (name, type, desc offset in buf, desc size) for each ELF note in buf."""
    off = 0
    while off + 12 <= len(buf):
        namesz, descsz, ntype = struct.unpack_from("<III", buf, off)
        name = bytes(buf[off + 12:off + 12 + namesz]).rstrip(b"\0")
        desc = off + 12 + ((namesz + 3) & ~3)
        yield name, ntype, desc, descsz
        off = desc + ((descsz + 3) & ~3)


def prstatus_pids(path):
    off, size = note_segment(path)
    with open(path, "rb") as f:
        f.seek(off)
        buf = f.read(size)
    return [struct.unpack_from("<i", buf, d + PRSTATUS_PID_OFFSET)[0]
            for name, t, d, _ in iter_notes(buf) if name == b"CORE" and t == NT_PRSTATUS]


def copy_with_prstatus_pids(src, dst, pids):
    """Copy an ELF core file, setting the n-th NT_PRSTATUS pr_pid to pids[n]."""
    shutil.copyfile(src, dst)
    off, size = note_segment(dst)
    with open(dst, "r+b") as f:
        f.seek(off)
        buf = bytearray(f.read(size))
        n = 0
        for name, t, d, _ in iter_notes(buf):
            if name == b"CORE" and t == NT_PRSTATUS:
                struct.pack_into("<i", buf, d + PRSTATUS_PID_OFFSET, pids[n])
                n += 1
        f.seek(off)
        f.write(buf)


# --- drgn ----------------------------------------------------------------------------------


def drgn_knows_new_orc():
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", drgn.__version__)
    return m is not None and tuple(int(x) for x in m.groups()) >= (0, 0, 23)


def vmlinux_for_drgn(vmlinux, workdir, notes):
    """vmlinux, or a copy with ORC hidden when drgn cannot parse this kernel's ORC format
    (Linux 6.4 changed it and added the .orc_header section)."""
    sections = subprocess.run(["readelf", "-SW", vmlinux], capture_output=True, text=True,
                              check=True).stdout
    if ".orc_header" not in sections or drgn_knows_new_orc():
        return vmlinux, None
    copy = os.path.join(workdir, ".vmlinux-orc-hidden")
    subprocess.run(["objcopy"] + [arg for name in (".orc_header", ".orc_unwind_ip", ".orc_unwind")
                                  for arg in ("--rename-section", f"{name}={name}.hidden")]
                   + [vmlinux, copy], check=True)
    notes.append(f"drgn {drgn.__version__} cannot read this kernel's ORC format (Linux >= 6.4): "
                 "stacks were unwound with DWARF CFI (.debug_frame), ORC sections hidden")
    return copy, copy


def open_program(path, vmlinux):
    prog = drgn.Program()
    prog.set_core_dump(path)
    try:
        prog.load_debug_info([vmlinux])
    except drgn.MissingDebugInfoError:
        pass  # module debug info (qemu_fw_cfg) is not needed
    return prog


def cpu_curr(prog, cpu):
    return per_cpu(prog["runqueues"], cpu).curr


def is_kernel_address(addr):
    return addr >= 1 << 63


def stack_of(prog, task):
    """drgn's frames of a task's kernel stack, innermost first, and the user-mode registers.

    Unwinding stops at the first user-space pc: drgn would continue into user memory with
    kernel-only knowledge and produce garbage frames. The frame that interrupted user mode
    carries the user registers (as drgn unwinds them). Unwinding also stops at a pc that is
    in no function and no symbol: past the bottom of a stack, the frame-pointer fallback
    reads whatever memory follows (in a full dump; in a filtered one it faults instead).
    """
    frames, user_regs, error = [], None, None
    try:
        trace = prog.stack_trace(task)
        for frame in trace:
            if not is_kernel_address(frame.pc):
                user_regs = registers_of(frame)
                break
            try:
                symbol = frame.symbol().name
            except LookupError:
                symbol = None
            if frame.name is None and symbol is None:
                break
            frames.append({"function": frame.name, "symbol": symbol, "pc": hx(frame.pc),
                           "inline": frame.is_inline})
    except (drgn.FaultError, ValueError, LookupError) as e:
        error = str(e)
    names = [f["function"] or f["symbol"] for f in frames]
    return names, frames, user_regs, error


def registers_of(frame):
    return {name.replace(".", "_"): hx(value) for name, value in frame.registers().items()}


X86_PT_REGS = {"r15": "r15", "r14": "r14", "r13": "r13", "r12": "r12", "bp": "rbp",
               "bx": "rbx", "r11": "r11", "r10": "r10", "r9": "r9", "r8": "r8", "ax": "rax",
               "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi", "orig_ax": "orig_rax",
               "ip": "rip", "cs": "cs", "flags": "rflags", "sp": "rsp", "ss": "ss"}


def user_pt_regs(prog, task):
    """The user-mode registers saved at kernel entry: the struct pt_regs at the top of the
    task's kernel stack (task_pt_regs), read by drgn. THREAD_SIZE is the size of the initial
    task's stack, which the linker script places between __start_init_task and
    __end_init_task (renamed __start_init_stack / __end_init_stack in 6.12)."""
    try:
        thread_size = prog.symbol("__end_init_task").address - \
            prog.symbol("__start_init_task").address
    except LookupError:
        thread_size = prog.symbol("__end_init_stack").address - \
            prog.symbol("__start_init_stack").address
    pt_regs_type = prog.type("struct pt_regs")
    addr = task.stack.value_() + thread_size - pt_regs_type.size
    regs = Object(prog, pt_regs_type, address=addr)
    if prog.platform.arch.name == "X86_64":
        return {name: hx(regs.member_(field).value_()) for field, name in X86_PT_REGS.items()}
    out = {f"x{i}": hx(regs.regs[i].value_()) for i in range(31)}
    out.update(sp=hx(regs.sp.value_()), pc=hx(regs.pc.value_()),
               pstate=hx(regs.pstate.value_()))
    return out


def walk_maple_tree(prog, tree):
    """All entries of a maple tree (e.g. mm->mm_mt, whose entries are VMAs), unordered."""
    entries = []

    def is_node(entry):
        return entry & 3 == 2 and entry > 4096

    def walk(enode):
        node = Object(prog, "struct maple_node", address=enode & ~0xFF)
        node_type = (enode >> 3) & 0xF  # maple_dense, maple_leaf_64, maple_range_64, maple_arange_64
        if node_type == 0:
            slots, leaf = node.slot, True
        elif node_type in (1, 2):
            slots, leaf = node.mr64.slot, node_type == 1
        elif node_type == 3:
            slots, leaf = node.ma64.slot, False
        else:
            fail(f"unknown maple node type {node_type}")
        for slot in slots:
            value = slot.value_()
            if leaf:
                if is_kernel_address(value):
                    entries.append(value)
            elif is_node(value):
                walk(value)

    root = tree.ma_root.value_()
    if is_node(root):
        walk(root)
    elif is_kernel_address(root):
        entries.append(root)
    return entries


def vmas_of(prog, mm):
    vmas = []
    for addr in set(walk_maple_tree(prog, mm.mm_mt)):
        vma = Object(prog, "struct vm_area_struct", address=addr)
        if vma.vm_mm.value_() != mm.value_():
            continue  # a stale slot
        name = None
        if vma.vm_file:
            name = vma.vm_file.f_path.dentry.d_name.name.string_().decode(errors="replace")
        vmas.append({"start": vma.vm_start.value_(), "end": vma.vm_end.value_(),
                     "flags": vma.vm_flags.value_(), "file": name})
    vmas.sort(key=lambda v: v["start"])
    return vmas


# --- inputs ------------------------------------------------------------------------------


def read_system_map(path):
    symbols = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                symbols.setdefault(parts[2], int(parts[0], 16))
    return symbols


def read_console(path):
    pids = {}
    with open(path, "rb") as f:
        text = f.read().decode(errors="replace")
    for m in re.finditer(r"^FIXTURE pid (\w+) (\d+)\s*$", text, re.M):
        pids[m.group(1)] = int(m.group(2))
    missing = set(GUEST_PROCESSES) - set(pids)
    if missing:
        fail(f"{path}: no FIXTURE pid line for {sorted(missing)}")
    return pids


def vmcoreinfo_text(path):
    dump = kdumpfile.kdumpfile(path)
    raw = bytes(dump.attr["linux.vmcoreinfo.raw"]).decode()
    return raw


def parse_vmcoreinfo(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def command_version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def package_version(name):
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


# --- main ----------------------------------------------------------------------------------


def task_record(prog, task, running_on):
    names, frames, _, error = stack_of(prog, task)
    is_kthread = bool(task.flags.value_() & PF_KTHREAD)
    record = {
        "pid": task.pid.value_(),
        "tgid": task.tgid.value_(),
        "ppid": task.real_parent.pid.value_(),
        "comm": task.comm.string_().decode(errors="replace"),
        "state": task_state_to_char(task),
        "task": hx(task.value_()),
        "on_cpu": running_on.get(task.value_()),
        "is_kernel_thread": is_kthread,
        "stack": names,
        "frames": frames,
    }
    if not is_kthread and task.mm:
        record["user_registers"] = user_pt_regs(prog, task)
    if error:
        record["stack_error"] = error
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boot-dir", required=True)
    ap.add_argument("--vmlinux", required=True)
    ap.add_argument("--system-map", required=True)
    ap.add_argument("--makedumpfile-version", help="for the tools record")
    ap.add_argument("--check", nargs="*", default=[], help="other dumps of the same boot")
    ap.add_argument("--coverage", nargs="*", default=[],
                    help="dumps whose task_struct coverage to record (see task_coverage)")
    ap.add_argument("--complete", nargs="*", default=[],
                    help=f"of those, the dumps that must hold every task_struct whole (exit "
                         f"status {EXIT_UNLUCKY} otherwise: boot again)")
    ap.add_argument("--quick", action="store_true",
                    help="only check what the CPUs were doing; write nothing (exit status "
                         f"{EXIT_UNLUCKY}: boot again)")
    args = ap.parse_args()

    boot = args.boot_dir
    elf = os.path.join(boot, "dump.elf")
    notes = ["drgn read a copy of dump.elf whose NT_PRSTATUS pr_pid fields were set to the pid "
             "of each CPU's current task (QEMU writes vCPU index + 1)"]
    vmlinux, vmlinux_copy = vmlinux_for_drgn(args.vmlinux, boot, notes)
    try:
        expected = collect(args, boot, elf, vmlinux, notes)
    finally:
        if vmlinux_copy:
            os.unlink(vmlinux_copy)
    if args.quick:
        print("    drgn: the CPUs' stacks show the crash as planned")
        return

    out = os.path.join(boot, "expected.json")
    with open(out + ".part", "w") as f:
        json.dump(expected, f, indent=2)
        f.write("\n")
    os.rename(out + ".part", out)


def collect(args, boot, elf, vmlinux, notes):
    console = read_console(os.path.join(boot, "console.log"))
    system_map = read_system_map(args.system_map)
    vmcoreinfo = vmcoreinfo_text(elf)
    info = parse_vmcoreinfo(vmcoreinfo)

    # Pass 1: which task runs on each CPU (needs no registers).
    prog = open_program(elf, vmlinux)
    cpus = list(for_each_present_cpu(prog))
    curr_pids = [cpu_curr(prog, cpu).pid.value_() for cpu in cpus]
    qemu_pids = prstatus_pids(elf)
    if len(qemu_pids) != len(cpus):
        fail(f"{len(qemu_pids)} NT_PRSTATUS notes for {len(cpus)} present CPUs")
    del prog

    view = os.path.join(boot, ".drgn-view.elf")
    copy_with_prstatus_pids(elf, view, curr_pids)
    try:
        prog = open_program(view, vmlinux)
        if args.quick:
            records = [cpu_record(prog, cpu, qemu_pids) for cpu in cpus]
            verify_cpus(console, records, prog["panic_cpu"].counter.value_())
            return None
        expected = build(prog, args, console, system_map, vmcoreinfo, info, cpus, qemu_pids)
    finally:
        os.unlink(view)
    expected["notes"] = notes

    for other in args.check:
        check_other_dump(other, vmlinux, expected)
    expected["coverage"] = {os.path.basename(path): task_coverage(path, vmlinux, expected)
                            for path in args.coverage}
    for path in args.complete:
        record = expected["coverage"][os.path.basename(path)]
        if record["partial"] or record["unreadable"]:
            # makedumpfile 1.7.2 misfiles the odd slab page of these kernels as page cache or
            # free; which ones depends on the boot. The tests rely on complete dumps.
            fail(f"{path} lacks task_structs (in part: {record['partial']}, whole: "
                 f"{record['unreadable']})", EXIT_UNLUCKY)
    return expected


def build(prog, args, console, system_map, vmcoreinfo, info, cpus, qemu_pids):
    arch = {"X86_64": "x86_64", "AARCH64": "aarch64"}[prog.platform.arch.name]
    text = prog.symbol("_text").address
    kaslr_offset = text - system_map["_text"]
    if "KERNELOFFSET" in info and int(info["KERNELOFFSET"], 16) != kaslr_offset:
        fail(f"KERNELOFFSET {info['KERNELOFFSET']} != drgn's _text - System.map _text "
             f"{kaslr_offset:#x}")

    running_on = {cpu_curr(prog, cpu).value_(): cpu for cpu in cpus}
    tasks = [task_record(prog, t, running_on) for t in for_each_task(prog)]
    seen = {t["task"] for t in tasks}
    for cpu in cpus:  # idle tasks (pid 0) are not in the pid hash
        idle = idle_task(prog, cpu)
        if hx(idle.value_()) not in seen:
            tasks.append(task_record(prog, idle, running_on))
    tasks.sort(key=lambda t: (t["pid"], t["comm"]))  # idle tasks: swapper/0, swapper/1, ...
    by_pid = {t["pid"]: t for t in tasks if t["pid"]}

    cpu_records = [cpu_record(prog, cpu, qemu_pids) for cpu in cpus]

    crashed_cpu = prog["panic_cpu"].counter.value_()
    verify_story(console, by_pid, cpu_records, crashed_cpu)

    symbols = {}
    for name in ("_text", "_stext", "linux_banner", "init_task", "init_top_pgt",
                 "swapper_pg_dir"):
        if name in system_map:
            symbols[name] = hx(system_map[name])

    expected = {
        "arch": arch,
        "release": prog["init_uts_ns"].name.release.string_().decode(),
        "banner": prog["linux_banner"].string_().decode(),
        "build_id": info.get("BUILD-ID"),
        "kaslr_offset": hx(kaslr_offset),
        "system_map": symbols,
    }
    if arch == "x86_64":
        for name in ("page_offset_base", "vmalloc_base", "vmemmap_base"):
            expected[name] = hx(prog[name].value_())
        try:
            expected["pgtable_l5_enabled"] = bool(prog["__pgtable_l5_enabled"].value_())
        except KeyError:
            expected["pgtable_l5_enabled"] = False
    else:
        # arm64: VMCOREINFO numbers here mix decimal and 0x-prefixed hex.
        va_bits = int(info["NUMBER(VA_BITS)"], 0)
        expected["va_bits"] = va_bits
        expected["page_offset"] = hx(-(1 << va_bits) & (1 << 64) - 1)
        expected["kimage_voffset"] = hx(prog["kimage_voffset"].value_())
        # memstart_addr (PHYS_OFFSET) is an s64 and is negative when KASLR randomizes the
        # linear map; as hex it is given in two's complement, like VMCOREINFO does.
        expected["memstart_addr"] = hx(prog["memstart_addr"].value_() & (1 << 64) - 1)
        expected["vmalloc_start"] = hx(int(info["NUMBER(VMALLOC_START)"], 0))
        expected["vmemmap_start"] = hx(int(info["NUMBER(VMEMMAP_START)"], 0))
    expected.update({
        "crashed_cpu": crashed_cpu,
        "cpus": cpu_records,
        "tasks": tasks,
        "console": console,
        "process": process_record(prog, console["sleeper"]),
        "vmcoreinfo": vmcoreinfo,
        "tools": {
            "drgn": drgn.__version__,
            "libkdumpfile": package_version("python3-libkdumpfile"),
            "qemu": read_first_line(os.path.join(args.boot_dir, "qemu-version.txt")),
            "makedumpfile": args.makedumpfile_version or command_version(["makedumpfile", "-v"]),
        },
    })
    return expected


def cpu_record(prog, cpu, qemu_pids):
    """What runs on a CPU: its current task and drgn's unwinding of QEMU's registers."""
    task = cpu_curr(prog, cpu)
    if task_cpu(task) != cpu:
        fail(f"runqueue {cpu}'s current task says it is on CPU {task_cpu(task)}")
    trace = prog.stack_trace(task)
    names, frames, _, error = stack_of(prog, task)
    record = {
        "cpu": cpu,
        "pid": task.pid.value_(),
        "comm": task.comm.string_().decode(errors="replace"),
        "task": hx(task.value_()),
        "prstatus_pid": qemu_pids[cpu],
        "stack": names,
        "frames": frames,
        "registers": registers_of(trace[0]),
    }
    if not task.flags.value_() & PF_KTHREAD and task.mm:
        record["user_registers"] = user_pt_regs(prog, task)
    if error:
        record["stack_error"] = error
    return record


def read_first_line(path):
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return None


def process_record(prog, pid):
    task = find_task(prog, pid)
    mm = task.mm
    # drgn 0.0.22 cannot read user memory of arm64 6.12 (built for 52-bit VAs, running with
    # 48 on cortex-a57: "address is not mapped"); the record then says so instead of argv.
    argv_error = None
    try:
        argv = cmdline(task)
    except drgn.FaultError as e:
        argv, argv_error = None, f"drgn: {e}"
    auxv = []
    for i in range(0, len(mm.saved_auxv), 2):
        key, value = mm.saved_auxv[i].value_(), mm.saved_auxv[i + 1].value_()
        auxv.append([key, hx(value)])
        if key == 0:  # AT_NULL ends the vector
            break
    vmas = vmas_of(prog, mm)
    exe = [v for v in vmas if v["flags"] & VM_EXEC]
    _, _, unwound_regs, _ = stack_of(prog, task)
    user_regs = user_pt_regs(prog, task)
    if unwound_regs:  # x86_64: drgn unwinds into user mode; it must agree with pt_regs
        for name, value in user_regs.items():
            # drgn 0.0.22 gives rbp = 0 in the user frame, while pt_regs has the real value.
            if name in unwound_regs and unwound_regs[name] != value and name != "rbp":
                fail(f"pid {pid}: pt_regs {name}={value} but drgn unwound {unwound_regs[name]}")
    return {
        "pid": pid,
        "comm": task.comm.string_().decode(),
        "mm": hx(mm.value_()),
        "pgd": hx(mm.pgd.value_()),
        "arg_start": hx(mm.arg_start.value_()),
        "arg_end": hx(mm.arg_end.value_()),
        "argv": [a.decode(errors="replace") for a in argv] if argv is not None else None,
        "argv0": argv[0].decode(errors="replace") if argv is not None else None,
        **({"argv_error": argv_error} if argv_error else {}),
        "start_code": hx(mm.start_code.value_()),
        "start_stack": hx(mm.start_stack.value_()),
        # Bytes of mm->saved_auxv up to and including the AT_NULL pair (what a debugger's
        # qXfer:auxv:read would return); saved_auxv lists the [type, value] pairs.
        "saved_auxv_len": len(auxv) * 2 * prog.type("unsigned long").size,
        "saved_auxv": auxv,
        "exe_start": hx(exe[0]["start"]) if exe else None,
        "vmas": [{"start": hx(v["start"]), "end": hx(v["end"]), "flags": hx(v["flags"]),
                  "file": v["file"]} for v in vmas],
        # From struct pt_regs at the top of the kernel stack (see user_pt_regs).
        "user_registers": user_regs,
    }


def verify_story(console, by_pid, cpu_records, crashed_cpu):
    """Fail loudly unless the dump shows what the guest was made to do."""
    for role, (comm, function) in GUEST_PROCESSES.items():
        task = by_pid.get(console[role])
        if task is None:
            fail(f"{role} pid {console[role]} is not in the dump's task list")
        if task["comm"] != comm:
            fail(f"{role} pid {console[role]} has comm {task['comm']!r}, expected {comm!r}")
        if function and role != "crasher" and function not in task["stack"]:
            fail(f"{role} stack lacks {function}: {task['stack']}")
    verify_cpus(console, cpu_records, crashed_cpu)


def verify_cpus(console, cpu_records, crashed_cpu):
    if crashed_cpu != 1:
        fail(f"panic_cpu is {crashed_cpu}, expected 1")
    crash = cpu_records[crashed_cpu]
    if crash["pid"] != console["crasher"]:
        fail(f"CPU {crashed_cpu} runs pid {crash['pid']}, not the crasher {console['crasher']}")
    for function in ("sysrq_handle_crash", "panic"):
        if function not in crash["stack"]:
            fail(f"crashed CPU's stack lacks {function}: {crash['stack']}", EXIT_UNLUCKY)
    if cpu_records[0]["pid"] != console["spinner"]:
        fail(f"CPU 0 runs pid {cpu_records[0]['pid']}, not the spinner {console['spinner']}",
             EXIT_UNLUCKY)


def check_other_dump(path, vmlinux, expected):
    """Stacks of sleeping tasks read from another dump of the same boot must be the same.

    Tasks whose pid equals one of the dump's NT_PRSTATUS pids are skipped: in dumps made from
    QEMU's output those pids are vCPU + 1, and drgn would unwind such a task (pid 1 = init,
    pid 2 = kthreadd) from that CPU's registers.
    """
    dump = kdumpfile.kdumpfile(path)
    note_pids = {dump.attr[f"cpu.{n}.pid"] for n in range(dump.attr["cpu.number"])}
    del dump
    prog = open_program(path, vmlinux)
    compared = 0
    for t in expected["tasks"]:
        if t["on_cpu"] is not None or t["pid"] in note_pids:
            continue
        task = Object(prog, "struct task_struct *", int(t["task"], 16))
        names, _, _, error = stack_of(prog, task)
        if names != t["stack"]:
            fail(f"{path}: pid {t['pid']} stack {names} (error {error}) != {t['stack']}")
        compared += 1
    print(f"    drgn: {os.path.basename(path)}: {compared} sleeping task stacks match dump.elf")


def task_coverage(path, vmlinux, expected):
    """Which task_structs of dump.elf's task list another dump holds, read by drgn (through
    libkdumpfile) from that dump: "partial" and "unreadable" list the task_structs it holds only
    in part or not at all (makedumpfile filters may drop slab pages). When either is non-empty,
    "reachable" lists the tasks a reader can still find by following list links from the idle
    tasks through task_structs the dump holds whole: tasks (both ways), children and sibling,
    thread_node. Links are resolved against dump.elf's task addresses, so no guess is involved.
    """
    prog = open_program(path, vmlinux)
    task_type = prog.type("struct task_struct")
    size = drgn.sizeof(task_type)
    by_address = {int(t["task"], 16): t for t in expected["tasks"]}

    def readable(address, length):
        try:
            prog.read(address, length)
            return True
        except drgn.FaultError:
            return False

    whole, partial, unreadable = set(), [], []
    for address in by_address:
        if readable(address, size):
            whole.add(address)
        elif readable(address, 1):
            partial.append(address)
        else:
            unreadable.append(address)
    record = {"task_struct_size": size, "partial": sorted(hx(a) for a in partial),
              "unreadable": sorted(hx(a) for a in unreadable)}
    if not partial and not unreadable:
        return record

    def offset(member):
        return drgn.offsetof(task_type, member)

    links = [(offset(field), offset(member)) for field, member in
             (("tasks", "tasks"), ("children", "sibling"), ("sibling", "sibling"),
              ("thread_node", "thread_node"))]
    reached = {a for a, t in by_address.items() if t["pid"] == 0 and a in whole}
    queue = list(reached)
    while queue:
        address = queue.pop()
        for field, member in links:
            for half in (0, 8):  # next, prev
                target = prog.read_u64(address + field + half) - member
                if target in whole and target not in reached:
                    reached.add(target)
                    queue.append(target)
    record["reachable"] = sorted(hx(a) for a in reached)
    print(f"    drgn: {os.path.basename(path)}: {len(partial)} task_structs in part, "
          f"{len(unreadable)} missing, {len(reached)} of {len(by_address)} tasks reachable")
    return record


if __name__ == "__main__":
    main()
