# Task and process helpers for gdb connected to a Linux kernel dump (kdump-gdbserver in kernel
# mode, or any target that serves kernel memory with the vmlinux loaded and relocated).
#
# Usage:  (gdb) source cli/gdb/kdump.py
#         (gdb) kdump-kernel-ps                       # UID PID PPID LWP COMM ADDRESS
#         (gdb) kdump-save-kernel-json FILE           # every task: for kdump-gdbserver -k FILE
#         (gdb) kdump-save-process-json FILE PID      # one process: for kdump-gdbserver -j FILE
#         (gdb) kdump-load-modules [DIR...]           # loaded modules' symbols from their .ko files
#
# Works from the vmlinux's debug information on Linux 6.1 to 6.12, x86_64 and aarch64:
# - threads: signal->thread_head / task->thread_node (thread_group is gone since 6.7);
# - mappings: the maple tree mm->mm_mt (since 6.1), else the mm->mmap / vm_next list;
# - sleeping tasks: x86_64 thread.sp and the struct inactive_task_frame it points to
#   (r15 r14 r13 r12 bx bp ret_addr); arm64 thread.cpu_context (x19..x28, fp, sp, pc);
# - tasks running on a CPU: that CPU's registers, from the gdb thread of the CPU;
# - user registers: struct pt_regs at the top of the kernel stack, whose size (THREAD_SIZE) is
#   the extent of init_stack in the image.
#
# The JSON files are the original kdump-gdbserver's, with optional extra keys it ignored:
# per thread "task" (task_struct address), "state" and "cpu" (the CPU it was running on); per
# process "pid", "comm", "exe" and "auxv" (pairs from mm->saved_auxv).

import atexit
import json
import os
import shutil
import struct
import tempfile

import gdb
import gdb.types

PF_KTHREAD = 0x00200000
VM_EXEC = 0x4
STATE_LETTERS = "RSDTtXZPI"
ULONG_MAX = (1 << 64) - 1

# Maple tree encoding (include/linux/maple_tree.h).
MAPLE_NODE_MASK = 0xFF
MAPLE_DENSE, MAPLE_LEAF_64, MAPLE_RANGE_64, MAPLE_ARANGE_64 = 0, 1, 2, 3

X86_64_PT_REGS = [
    ("r15", "r15"), ("r14", "r14"), ("r13", "r13"), ("r12", "r12"), ("bp", "rbp"),
    ("bx", "rbx"), ("r11", "r11"), ("r10", "r10"), ("r9", "r9"), ("r8", "r8"), ("ax", "rax"),
    ("cx", "rcx"), ("dx", "rdx"), ("si", "rsi"), ("di", "rdi"), ("orig_ax", "orig_rax"),
    ("ip", "rip"), ("cs", "cs"), ("flags", "eflags"), ("sp", "rsp"), ("ss", "ss"),
]
X86_64_SWITCH_FRAME = [
    ("r15", "r15"), ("r14", "r14"), ("r13", "r13"), ("r12", "r12"), ("bx", "rbx"), ("bp", "rbp"),
    ("ret_addr", "rip"),
]
X86_64_CPU_REGS = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
    "r13", "r14", "r15", "rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs", "fs_base",
    "gs_base", "orig_rax",
]
AARCH64_CPU_REGS = ["x%d" % i for i in range(31)] + ["sp", "pc", "cpsr"]


_types = {}
_offsets = {}


def _type(name):
    """gdb.lookup_type, cached: looking types up in a vmlinux's debug information is slow."""
    t = _types.get(name)
    if t is None:
        t = _types[name] = gdb.lookup_type(name)
    return t


def _find_field(t, name):
    """(byte offset, field) of a member, looking into anonymous structs and unions as C does."""
    for f in t.strip_typedefs().fields():
        if f.name == name:
            return f.bitpos // 8, f
        if not f.name and f.type.strip_typedefs().code in (gdb.TYPE_CODE_STRUCT,
                                                            gdb.TYPE_CODE_UNION):
            found = _find_field(f.type, name)
            if found is not None:
                return f.bitpos // 8 + found[0], found[1]
    return None


def _offset(struct, path):
    """Byte offset of a member path such as "thread.sp" (without parsing C: parsing an
    expression makes gdb expand the debug information of every unit naming the type)."""
    key = (struct, path)
    if key not in _offsets:
        t, total = _type(struct), 0
        for part in path.split("."):
            found = _find_field(t, part)
            if found is None:
                _offsets[key] = None
                break
            total += found[0]
            t = found[1].type
        else:
            _offsets[key] = total
    offset = _offsets[key]
    if offset is None:
        raise gdb.GdbError("kdump: %s has no member %s" % (struct, path))
    return offset


def _has(struct, path):
    try:
        _offset(struct, path)
        return True
    except (gdb.GdbError, gdb.error):  # gdb.error: no such type (it changes across releases)
        return False


def _ulong(value):
    return int(value.cast(_type("unsigned long"))) & ULONG_MAX


def _arch():
    name = gdb.selected_inferior().architecture().name()
    if "x86-64" in name or "x86_64" in name:
        return "x86_64"
    if "aarch64" in name:
        return "aarch64"
    raise gdb.GdbError("kdump: unsupported architecture %s (x86_64 and aarch64 only)" % name)


def _symbol_address(name):
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if sym is not None:
        return _ulong(sym.value().address)
    msym = gdb.lookup_minimal_symbol(name) if hasattr(gdb, "lookup_minimal_symbol") else None
    if msym is not None:
        return int(msym.value().address) & ULONG_MAX
    try:
        return _ulong(gdb.parse_and_eval("(unsigned long)&'%s'" % name))
    except gdb.error:
        return None


def _load(address, type_name):
    """A structure read in one go (one memory request instead of one per field). When the dump
    holds it only in part (a filtered dump may lack one page of a large task_struct), its fields
    are read one by one instead: those in the pages the dump has still read."""
    t = _type(type_name)
    try:
        data = gdb.selected_inferior().read_memory(address, t.sizeof)
        return gdb.Value(bytes(data), t)
    except (TypeError, AttributeError, gdb.MemoryError):  # gdb < 12 has no Value(buffer, type)
        return gdb.Value(address).cast(t.pointer()).dereference()


def _read_pointer(address):
    """The pointer-sized word at address, or None when the dump does not hold it."""
    try:
        return _ulong(gdb.Value(address).cast(_type("unsigned long").pointer()).dereference())
    except gdb.MemoryError:
        return None


def _container_of(pointer, struct, path):
    return (_ulong(pointer) - _offset(struct, path)) & ULONG_MAX


def _list(head_address, struct, path):
    """Addresses of the structures linked into the list_head at head_address. A link the dump
    does not hold (a structure filtered out) cuts the walk; it then goes round the other way,
    through the prev links, up to the gap."""
    offset = _offset(struct, path)
    seen = set()
    node = _read_pointer(head_address)
    while node is not None and node != head_address and node not in seen:
        seen.add(node)
        yield (node - offset) & ULONG_MAX
        node = _read_pointer(node)
    if node is not None:
        return
    node = _read_pointer(head_address + 8)
    while node is not None and node != head_address and node not in seen:
        seen.add(node)
        yield (node - offset) & ULONG_MAX
        node = _read_pointer(node + 8)


def _per_cpu(symbol, cpu):
    base = _symbol_address(symbol)
    if _arch() == "x86_64":
        # x86_64 links per-CPU variables as offsets from 0 (__per_cpu_start); a debugger that
        # relocated the whole vmlinux by the KASLR offset moved them too: undo that.
        base -= _symbol_address("__per_cpu_start") or 0
    offsets = _symbol_address("__per_cpu_offset")
    offset = _ulong(gdb.Value(offsets + 8 * cpu).cast(_type("unsigned long").pointer())
                    .dereference())
    return (base + offset) & ULONG_MAX


def _cpu_count():
    address = _symbol_address("nr_cpu_ids")
    try:
        n = int(gdb.Value(address).cast(_type("unsigned int").pointer()).dereference())
    except (gdb.error, TypeError):
        n = 1
    return max(1, min(n, 8192))


def _state_letter(task):
    field = "__state" if _has("struct task_struct", "__state") else "state"
    state = int(task[field]) & 0xFFFFFFFF
    report = (state | int(task["exit_state"])) & 0x7F
    if state & 0x402 == 0x402:  # TASK_IDLE
        report = 0x80
    if state & 0x1000:  # TASK_RTLOCK_WAIT
        report = 0x2
    return STATE_LETTERS[report.bit_length()] if report.bit_length() < 9 else "?"


class Task(object):
    """What the commands need of one task_struct."""

    def __init__(self, address):
        self.address = address
        t = _load(address, "struct task_struct")
        self.value = t
        self.pid = int(t["pid"])
        self.tgid = int(t["tgid"])
        self.comm = t["comm"].string(errors="replace").split("\0")[0]
        self.kernel_thread = (int(t["flags"]) & PF_KTHREAD) != 0
        self.state = _state_letter(t)
        self.mm = _ulong(t["mm"])
        self.signal = _ulong(t["signal"])
        self.running_on = None

    @property
    def ps_comm(self):
        return "[%s]" % self.comm if self.kernel_thread else self.comm

    def ppid(self):
        """The parent's tgid, or None when the dump does not hold the parent."""
        try:
            parent = self.value["real_parent"]
            return int(parent.dereference()["tgid"]) if _ulong(parent) else 0
        except gdb.MemoryError:
            return None

    def uid(self):
        """The real uid, or None when the dump does not hold the credentials."""
        try:
            cred = self.value["real_cred"]
            if not _ulong(cred):
                return 0
            uid = cred.dereference()["uid"]
            if uid.type.strip_typedefs().code == gdb.TYPE_CODE_STRUCT:
                return int(uid["val"])
            return int(uid)
        except gdb.MemoryError:
            return None


def _running_tasks():
    """{task address: cpu} from each CPU's runqueue, and each CPU's idle task."""
    running, idle = {}, []
    for cpu in range(_cpu_count()):
        try:
            rq = gdb.Value(_per_cpu("runqueues", cpu)).cast(_type("struct rq").pointer())
            running[_ulong(rq["curr"])] = cpu
            idle.append(_ulong(rq["idle"]))
        except gdb.error:
            break
    return running, idle


# task_struct addresses the last all_tasks() met but could not read (not in the dump).
missing_tasks = []


def all_tasks():
    """Every task: each CPU's idle task, then each process followed by its other threads.

    A task_struct the dump lacks (a filtered dump of a kernel newer than its makedumpfile) is
    listed in missing_tasks, and the lists are also followed the other way round and through
    every found task's children, siblings and threads, to reach the tasks beyond the gap."""
    running, idle = _running_tasks()
    init = _symbol_address("init_task")
    out, seen = [], set()
    del missing_tasks[:]

    def add(address):
        if address in seen or not address:
            return None
        seen.add(address)
        try:
            task = Task(address)
        except gdb.MemoryError:
            missing_tasks.append(address)
            return None
        task.running_on = running.get(address)
        out.append(task)
        return task

    for address in idle or [init]:
        add(address)
    thread_head = _has("struct signal_struct", "thread_head") and _has("struct task_struct",
                                                                        "thread_node")
    tasks_head = init + _offset("struct task_struct", "tasks")
    for leader in _list(tasks_head, "struct task_struct", "tasks"):
        task = add(leader)
        if task is None:
            continue
        if thread_head:
            head = task.signal + _offset("struct signal_struct", "thread_head")
            members = _list(head, "struct task_struct", "thread_node")
        else:
            head = leader + _offset("struct task_struct", "thread_group")
            members = _list(head, "struct task_struct", "thread_group")
        for thread in members:
            add(thread)
    if missing_tasks:
        _add_linked(out, add)
    return out


def _add_linked(out, add):
    """Follow both links of every list a found task is on (the process list, its children, its
    siblings, its threads), skipping list heads that are not in a task_struct."""
    struct = "struct task_struct"
    links = [(f, m) for f, m in (("tasks", "tasks"), ("children", "sibling"),
                                 ("sibling", "sibling"), ("thread_node", "thread_node"))
             if _has(struct, f) and _has(struct, m)]
    children = _offset(struct, "children")
    thread_head = (_offset("struct signal_struct", "thread_head")
                   if _has("struct signal_struct", "thread_head") else None)
    i = 0
    while i < len(out):
        task = out[i]
        i += 1
        heads = {task.address + children}
        parent = _read_pointer(task.address + _offset(struct, "real_parent"))
        if parent:
            heads.add(parent + children)
        if thread_head is not None and task.signal:
            heads.add(task.signal + thread_head)
        for field, member in links:
            for half in (0, 8):
                node = _read_pointer(task.address + _offset(struct, field) + half)
                if node and node not in heads:
                    add((node - _offset(struct, member)) & ULONG_MAX)


def _cpu_thread(cpu):
    """The gdb thread that stands for a CPU (kdump-gdbserver names them "CPU n…")."""
    threads = gdb.selected_inferior().threads()
    for th in threads:
        if th.name and (th.name == "CPU %d" % cpu or th.name.startswith("CPU %d:" % cpu) or
                        th.name.startswith("CPU %d " % cpu)):
            return th
    for th in threads:  # QEMU's gdbstub and kernel mode number CPUs from 1
        if th.ptid[1] == cpu + 1 or th.ptid[2] == cpu + 1:
            return th
    return None


def _cpu_registers(cpu, arch):
    th = _cpu_thread(cpu)
    if th is None:
        return None
    previous = gdb.selected_thread()
    regs = {}
    try:
        th.switch()
        frame = gdb.newest_frame()
        for name in X86_64_CPU_REGS if arch == "x86_64" else AARCH64_CPU_REGS:
            try:
                value = frame.read_register(name)
                if value.is_optimized_out:
                    continue
                regs[name] = int(value.cast(_type("unsigned long"))) & ULONG_MAX
            except (gdb.error, ValueError):
                continue
    finally:
        if previous is not None:
            previous.switch()
    return regs


def kernel_registers(task, arch):
    """Registers a task saved when it last switched out."""
    t = task.value
    regs = {}
    if arch == "x86_64":
        sp = _ulong(t["thread"]["sp"])
        frame_type = _type("struct inactive_task_frame")
        frame = _load(sp, "struct inactive_task_frame")
        for field, name in X86_64_SWITCH_FRAME:
            if gdb.types.has_field(frame_type, field):
                regs[name] = _ulong(frame[field])
        regs["rsp"] = sp + frame_type.sizeof
    else:
        ctx = t["thread"]["cpu_context"]
        for i in range(19, 29):
            regs["x%d" % i] = _ulong(ctx["x%d" % i])
        regs["x29"] = _ulong(ctx["fp"])
        regs["sp"] = _ulong(ctx["sp"])
        regs["pc"] = _ulong(ctx["pc"])
        regs["x30"] = regs["pc"]
    return regs


def thread_size():
    """THREAD_SIZE: the extent of init_stack, which the linker script sizes to it."""
    start = (_symbol_address("__start_init_stack") or _symbol_address("__start_init_task") or
             _symbol_address("init_stack"))
    for end_name in ("__end_init_stack", "__end_init_task"):
        end = _symbol_address(end_name)
        if start is not None and end is not None:
            size = end - start
            if 4096 <= size <= 1 << 20 and size & (size - 1) == 0:
                return size
    try:
        size = int(gdb.parse_and_eval("sizeof(init_stack)"))
        if size >= 4096:
            return size
    except gdb.error:
        pass
    return 16384


def _pt_regs_address(task, arch, size):
    pt_regs_size = _type("struct pt_regs").sizeof
    stack = _ulong(task.value["stack"])
    if arch != "x86_64":
        return stack + size - pt_regs_size
    # TOP_OF_KERNEL_STACK_PADDING: 16 with FRED (6.9+), else 0; the user frame has CPL 3.
    pads = [16, 0] if _symbol_address("asm_fred_entrypoint_user") is not None else [0, 16]
    for pad in pads:
        address = stack + size - pad - pt_regs_size
        try:
            regs = _load(address, "struct pt_regs")
            if int(regs["cs"]) & 3 == 3 and int(regs["ss"]) & 3 == 3:
                return address
        except gdb.error:
            continue
    return stack + size - pads[0] - pt_regs_size


def user_registers(task, arch, size):
    """User-mode registers: struct pt_regs at the top of the task's kernel stack."""
    regs = {}
    pt = _load(_pt_regs_address(task, arch, size), "struct pt_regs")
    if arch == "x86_64":
        for field, name in X86_64_PT_REGS:
            regs[name] = _ulong(pt[field])
        regs["eflags"] &= 0xFFFFFFFF
        thread = task.value["thread"]
        if task.running_on is None:
            regs["fs_base"] = _ulong(thread["fsbase"])
            regs["gs_base"] = _ulong(thread["gsbase"])
    else:
        gp = pt["regs"]
        for i in range(31):
            regs["x%d" % i] = _ulong(gp[i])
        regs["sp"] = _ulong(pt["sp"])
        regs["pc"] = _ulong(pt["pc"])
        regs["cpsr"] = _ulong(pt["pstate"]) & 0xFFFFFFFF
    return regs


def _maple_entries(mm):
    """Entries (VMA addresses) of the maple tree mm->mm_mt, in index order."""
    root = _ulong(mm["mm_mt"]["ma_root"])
    out = []

    def is_node(entry):
        return entry & 3 == 2 and entry > 4096

    if not root:
        return out
    if not is_node(root):
        return [] if root & 3 == 2 else [root]

    def visit(entry, maximum, depth):
        if depth > 64:
            return
        node_type = (entry >> 3) & 0xF
        address = entry & ~MAPLE_NODE_MASK
        if node_type == MAPLE_ARANGE_64:
            node, slots = _load(address, "struct maple_arange_64"), 10
            end = int(node["meta"]["end"])
        elif node_type in (MAPLE_LEAF_64, MAPLE_RANGE_64):
            node, slots = _load(address, "struct maple_range_64"), 16
            last = _ulong(node["pivot"][slots - 2])
            if last == 0:
                end = int(node["meta"]["end"])
            elif last == maximum:
                end = slots - 2
            else:
                end = slots - 1
        else:
            return
        for i in range(min(end, slots - 1) + 1):
            slot = _ulong(node["slot"][i])
            if not slot:
                continue
            if node_type == MAPLE_LEAF_64:
                if slot & 3 != 2:
                    out.append(slot)
            elif is_node(slot):
                visit(slot, _ulong(node["pivot"][i]) if i < slots - 1 else maximum, depth + 1)

    visit(root, ULONG_MAX, 0)
    return out


def vmas(mm_address):
    """(start, end, flags) of each mapping of an mm, by address."""
    mm = _load(mm_address, "struct mm_struct")
    if _has("struct mm_struct", "mm_mt"):
        addresses = _maple_entries(mm)
    else:
        addresses, vma = [], _ulong(mm["mmap"])
        while vma and len(addresses) < 1 << 20:
            addresses.append(vma)
            vma = _ulong(_load(vma, "struct vm_area_struct")["vm_next"])
    out, seen = [], set()
    for address in addresses:
        if address in seen:
            continue
        seen.add(address)
        vma = _load(address, "struct vm_area_struct")
        if _ulong(vma["vm_mm"]) != mm_address:
            continue
        out.append((_ulong(vma["vm_start"]), _ulong(vma["vm_end"]), _ulong(vma["vm_flags"])))
    return sorted(out)


def _saved_auxv(mm):
    words = mm["saved_auxv"]
    n = words.type.strip_typedefs().sizeof // words.type.strip_typedefs().target().sizeof
    pairs = []
    for i in range(0, n - 1, 2):
        pairs.append([_ulong(words[i]), _ulong(words[i + 1])])
        if pairs[-1][0] == 0:
            break
    return pairs


def _exe_name(mm):
    try:
        exe = mm["exe_file"]
        if not _ulong(exe):
            return None
        return exe.dereference()["f_path"]["dentry"].dereference()["d_name"]["name"].string()
    except gdb.error:
        return None


class KernelPs(gdb.Command):
    """List the dumped kernel's tasks: UID PID PPID LWP COMM ADDRESS.

Usage: kdump-kernel-ps
PID is the process (tgid), LWP the thread (the kernel's pid); kernel threads are in brackets.
A ">" marks tasks that were running on a CPU."""

    def __init__(self):
        super().__init__("kdump-kernel-ps", gdb.COMMAND_STATUS)

    def invoke(self, argument, from_tty):
        gdb.write("%-1s%5s %7s %7s %7s %-18s %s\n" % ("", "UID", "PID", "PPID", "LWP", "COMM",
                                                     "ADDRESS"))
        for task in all_tasks():
            mark = ">" if task.running_on is not None else " "
            gdb.write("%s%5s %7d %7s %7d %-18s 0x%x\n" % (mark, _or_unknown(task.uid()),
                                                         task.tgid, _or_unknown(task.ppid()),
                                                         task.pid, task.ps_comm, task.address))
        _report_missing()


def _or_unknown(value):
    return "?" if value is None else str(value)


def _report_missing():
    if missing_tasks:
        shown = ", ".join("0x%x" % a for a in missing_tasks[:8])
        gdb.write("%d task_struct%s not in the dump, so missing here: %s%s\n"
                  % (len(missing_tasks), "" if len(missing_tasks) == 1 else "s", shown,
                     ", ..." if len(missing_tasks) > 8 else ""))


def _thread_json(task, registers):
    entry = {"pid": task.tgid, "tid": task.pid, "comm": task.ps_comm, "registers": registers,
             "task": task.address, "state": task.state}
    if task.running_on is not None:
        entry["cpu"] = task.running_on
    return entry


class SaveKernelJson(gdb.Command):
    """Save every task's kernel registers for kdump-gdbserver -k FILE.

Usage: kdump-save-kernel-json FILE
Sleeping tasks get the registers their last context switch saved; tasks running on a CPU get
the CPU's registers (from the gdb thread of that CPU)."""

    def __init__(self):
        super().__init__("kdump-save-kernel-json", gdb.COMMAND_DATA, gdb.COMPLETE_FILENAME)

    def invoke(self, argument, from_tty):
        path = argument.strip()
        if not path:
            raise gdb.GdbError("usage: kdump-save-kernel-json FILE")
        arch = _arch()
        threads, failed = [], 0
        for task in all_tasks():
            regs = None
            if task.running_on is not None:
                regs = _cpu_registers(task.running_on, arch)
            if regs is None:
                try:
                    regs = kernel_registers(task, arch)
                except gdb.MemoryError:
                    regs, failed = {}, failed + 1
            threads.append(_thread_json(task, regs))
        with open(path, "w") as f:
            json.dump({"threads": threads}, f, indent=1)
            f.write("\n")
        gdb.write("%d tasks saved to %s%s\n" % (len(threads), path,
                                               " (%d without registers: stack not in the dump)"
                                               % failed if failed else ""))
        _report_missing()


class SaveProcessJson(gdb.Command):
    """Save one process's address space and user registers for kdump-gdbserver -j FILE.

Usage: kdump-save-process-json FILE PID"""

    def __init__(self):
        super().__init__("kdump-save-process-json", gdb.COMMAND_DATA, gdb.COMPLETE_FILENAME)

    def invoke(self, argument, from_tty):
        args = gdb.string_to_argv(argument)
        if len(args) != 2 or not args[1].isdigit():
            raise gdb.GdbError("usage: kdump-save-process-json FILE PID")
        path, pid = args[0], int(args[1])
        arch = _arch()
        tasks = all_tasks()
        found = [t for t in tasks if t.pid == pid and t.address not in _idle_addresses(tasks)]
        if not found:
            raise gdb.GdbError("kdump: no task with pid %d" % pid)
        tgid = found[0].tgid
        threads = [t for t in tasks if t.tgid == tgid and t.pid != 0]
        threads.sort(key=lambda t: t.pid != tgid)
        leader = threads[0]
        if leader.kernel_thread or not leader.mm:
            raise gdb.GdbError("kdump: %d (%s) is a kernel thread: it has no user address space"
                               % (pid, leader.comm))
        mm = _load(leader.mm, "struct mm_struct")
        size = thread_size()
        maps = vmas(leader.mm)
        load = next((start for start, _, flags in maps if flags & VM_EXEC), None)
        out = {
            "rootpgt": _ulong(mm["pgd"]),
            "loadaddr": load if load is not None else 0,
            "threads": [_thread_json(t, user_registers(t, arch, size)) for t in threads],
            "pid": tgid,
            "comm": leader.comm,
            "auxv": _saved_auxv(mm),
        }
        exe = _exe_name(mm)
        if exe:
            out["exe"] = exe
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        gdb.write("process %d (%s): %d thread%s, %d mappings, saved to %s\n"
                  % (tgid, leader.comm, len(threads), "" if len(threads) == 1 else "s",
                     len(maps), path))


def _idle_addresses(tasks):
    return set(t.address for t in tasks if t.pid == 0)


# --- loaded modules -----------------------------------------------------------------------------
#
# A module is a relocatable object: the kernel places each of its sections on its own, so gdb
# needs every section's address (add-symbol-file FILE TEXT -s SECTION ADDRESS ...), which the
# kernel keeps for sysfs (/sys/module/NAME/sections/): mod->sect_attrs, an array of
# struct module_sect_attr { struct bin_attribute battr; unsigned long address; } up to 6.13,
# of struct bin_attribute holding the address in .private since.

MODULE_SUFFIXES = (".ko", ".ko.debug")
COMPRESSED_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz")
MAX_MODULES = 10000
MAX_SECTIONS = 4096

_loaded_modules = {}  # module name -> (file, .text address) added by kdump-load-modules


PAGE = 4096  # reads stop at page ends: a page the dump left out must not hide the one before


def _read_prefix(address, length):
    """The bytes at address (at most length) up to the first that cannot be read."""
    inferior, out = gdb.selected_inferior(), b""
    while len(out) < length:
        at = address + len(out)
        try:
            out += bytes(inferior.read_memory(at, min(length - len(out), PAGE - at % PAGE)))
        except gdb.MemoryError:
            break
    return out


def _c_string(address, limit=256):
    """The NUL-terminated string at address (at most limit bytes), or None when unreadable."""
    data = _read_prefix(address, limit)
    if b"\0" not in data and len(data) < limit:
        return None
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


def _module_name(name):
    """Module names treat - and _ alike (the kernel stores _; files may use either)."""
    return name.replace("-", "_")


class LoadedModule(object):
    """A module on the kernel's list: name (None when unreadable), struct module address,
    {section: address} from sect_attrs, and whether its init sections were freed."""

    def __init__(self, name, address, sections, init_freed):
        self.name, self.address, self.sections, self.init_freed = (name, address, sections,
                                                                    init_freed)


def kernel_modules():
    """The loaded modules ([LoadedModule]), in the kernel's list order."""
    head = _symbol_address("modules")
    if head is None:
        raise gdb.GdbError("kdump: no symbol \"modules\": load the vmlinux first")
    out = []
    for address in _list(head, "struct module", "list"):
        if len(out) >= MAX_MODULES:
            break
        try:
            mod = _load(address, "struct module")
            name = mod["name"].string(errors="replace").split("\0")[0]
        except gdb.MemoryError:
            out.append(LoadedModule(None, address, {}, True))
            continue
        out.append(LoadedModule(name, address, _module_sections(mod), _init_freed(mod)))
    return out


def _init_freed(mod):
    """Whether the module's init sections were freed once its init ran: sect_attrs still
    holds their addresses, whose memory may belong to another module by now. The kernel clears
    init_layout.base (mem[MOD_INIT_TEXT].base since 6.4) when it frees them."""
    try:
        if _has("struct module", "init_layout"):
            return _ulong(mod["init_layout"]["base"]) == 0
        if _has("struct module", "mem"):
            return _ulong(mod["mem"][int(gdb.parse_and_eval("MOD_INIT_TEXT"))]["base"]) == 0
        return int(mod["state"]) == 0  # MODULE_STATE_LIVE
    except (gdb.error, gdb.MemoryError):
        return True


def _module_sections(mod):
    """{section name: address} from mod->sect_attrs; {} when the kernel kept none, or what
    could be read of it."""
    sections = {}
    try:
        attrs = _ulong(mod["sect_attrs"])
        if not attrs:
            return sections
        if _has("struct module_sect_attrs", "nsections") and \
                _has("struct module_sect_attr", "address"):
            # Up to 6.13: nsections entries of struct module_sect_attr.
            count = min(int(_load(attrs, "struct module_sect_attrs")["nsections"]),
                        MAX_SECTIONS)
            array = attrs + _offset("struct module_sect_attrs", "attrs")
            size = _type("struct module_sect_attr").sizeof
            entries = (array + i * size for i in range(count))
            name_at = _offset("struct module_sect_attr", "battr.attr.name")
            address_at = _offset("struct module_sect_attr", "address")
        else:
            # 6.14 on: struct bin_attribute entries with the address in .private, no count;
            # the group's NULL-terminated bin_attrs array points at each.
            entries = _null_terminated(_read_pointer(
                attrs + _offset("struct module_sect_attrs", "grp.bin_attrs")))
            name_at = _offset("struct bin_attribute", "attr.name")
            address_at = _offset("struct bin_attribute", "private")
        for entry in entries:
            name_pointer = _read_pointer(entry + name_at)
            address = _read_pointer(entry + address_at)
            name = _c_string(name_pointer) if name_pointer else None
            if name and address:
                sections[name] = address
    except (gdb.MemoryError, gdb.error, gdb.GdbError):
        pass  # the sections read so far
    return sections


def _null_terminated(array):
    """The pointers of a NULL-terminated array (at most MAX_SECTIONS; none if unreadable)."""
    for i in range(MAX_SECTIONS if array else 0):
        pointer = _read_pointer(array + 8 * i)
        if not pointer:
            return
        yield pointer


def _kernel_release():
    try:
        return gdb.parse_and_eval("init_uts_ns.name.release").string(errors="replace")
    except gdb.error:
        return None


def _module_files(directories):
    """({module name: path}, {module name: compressed path}) of the .ko files below the
    directories; the first directory that has a module wins."""
    found, compressed = {}, {}
    for top in directories:
        for root, dirs, files in os.walk(top):
            dirs.sort()
            for f in sorted(files):
                for suffix in MODULE_SUFFIXES:
                    if f.endswith(suffix):
                        found.setdefault(_module_name(f[:-len(suffix)]), os.path.join(root, f))
                for suffix in COMPRESSED_SUFFIXES:
                    if f.endswith(suffix):
                        compressed.setdefault(_module_name(f[:-len(suffix)]),
                                              os.path.join(root, f))
    return found, compressed


class _ElfSections(object):
    """The section headers of a 64-bit ELF file: (name, type, flags, address, offset, size,
    where the header is in the file) each, and the file's byte order; None when it is not one."""

    @staticmethod
    def read(path):
        try:
            with open(path, "rb") as f:
                header = f.read(64)
                if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2:
                    return None
                order = "<" if header[5] == 1 else ">"
                kind, = struct.unpack_from(order + "H", header, 0x10)
                shoff, = struct.unpack_from(order + "Q", header, 0x28)
                shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", header, 0x3a)
                if shentsize < 64 or not 0 < shnum <= 65535 or shstrndx >= shnum:
                    return None
                f.seek(shoff)
                table = f.read(shentsize * shnum)
                if len(table) < shentsize * shnum:
                    return None
                rows = [struct.unpack_from(order + "IIQQQQ", table, i * shentsize)
                        for i in range(shnum)]
                f.seek(rows[shstrndx][4])
                names = f.read(min(rows[shstrndx][5], 1 << 20))
        except (OSError, struct.error):
            return None
        out = _ElfSections()
        out.order, out.relocatable = order, kind == 1
        out.sections = [(names[r[0]:].split(b"\0", 1)[0].decode("latin-1"), r[1], r[2], r[3],
                         r[4], r[5], shoff + i * shentsize) for i, r in enumerate(rows)]
        return out


SHT_NOTE, SHF_ALLOC = 7, 0x2


def _file_build_id(path, elf):
    """The GNU build-id of an ELF file (its .note.gnu.build-id section; `elf` its sections)."""
    for name, kind, _, _, offset, size, _ in elf.sections:
        if kind == SHT_NOTE and name == ".note.gnu.build-id":
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return _note_build_id(f.read(min(size, 4096)), elf.order)
            except OSError:
                return None
    return None


_copies_dir = None
_copies = {}  # (real path, mtime) -> the copy made of it


def _file_for_gdb(path, elf):
    """The file to give add-symbol-file: path itself, or a copy with the link-time addresses of
    its sections set to zero. gdb places the sections of a relocatable file where it is told only
    when every section's address is zero; otherwise its debug information is read relative to
    .text alone and variables come out at the wrong addresses. Debian's x86_64 6.12 modules have
    .data at 0xa0, its arm64 6.1 ones __patchable_function_entries at 0x30. The copies live
    until gdb exits (gdb may reopen a file by its name)."""
    global _copies_dir
    key = (os.path.realpath(path), os.stat(path).st_mtime_ns)
    if key in _copies:
        return _copies[key]
    if not elf.relocatable:
        return path
    placed = [at for _, _, flags, address, _, _, at in elf.sections
              if flags & SHF_ALLOC and address != 0]
    if not placed:
        return path
    if _copies_dir is None:
        _copies_dir = tempfile.mkdtemp(prefix="kdump-modules-")
        atexit.register(shutil.rmtree, _copies_dir, True)
    copy = os.path.join(_copies_dir, str(len(os.listdir(_copies_dir))), os.path.basename(path))
    os.makedirs(os.path.dirname(copy))
    shutil.copyfile(path, copy)
    with open(copy, "r+b") as f:
        for at in placed:
            f.seek(at + 16)  # Elf64_Shdr.sh_addr
            f.write(struct.pack(elf.order + "Q", 0))
    _copies[key] = copy
    return copy


def _note_build_id(data, order="<"):
    """The descriptor of the NT_GNU_BUILD_ID note in a note section's bytes, or None."""
    at = 0
    while at + 12 <= len(data):
        namesz, descsz, kind = struct.unpack_from(order + "III", data, at)
        name_end = at + 12 + ((namesz + 3) & ~3)
        desc_end = name_end + ((descsz + 3) & ~3)
        if desc_end > len(data):
            return None
        if kind == 3 and data[at + 12:at + 12 + namesz].rstrip(b"\0") == b"GNU":
            return data[name_end:name_end + descsz]
        at = desc_end
    return None


def _memory_build_id(address, order):
    """The build-id of a loaded module, from its .note.gnu.build-id section in memory."""
    return _note_build_id(_read_prefix(address, 256), order)


# Where sections the kernel did not load are put for gdb: an address nothing real has (x86_64's
# non-canonical hole; between the halves of the address space on arm64).
PARKING = 0x8000000000000000


def _section_addresses(elf, module):
    """{section: address} for add-symbol-file. The kernel's addresses of the file's allocated
    sections; the others it lists (its copies of .symtab and .strtab) mean nothing to gdb.
    Sections it did not load (.modinfo, __versions: the loader clears their SHF_ALLOC) and
    .init ones it freed go to PARKING and up: gdb would put the first from address 0 up (and
    name NULL pointers after .modinfo's symbols), and leave the second over memory that may
    hold another module by now."""
    if elf is None:
        return dict(module.sections)
    out, park = {}, PARKING
    for name, _, flags, _, _, size, _ in elf.sections:
        if not flags & SHF_ALLOC or name in out:
            continue
        at = module.sections.get(name)
        if at is not None and not (module.init_freed and name.startswith(".init")):
            out[name] = at
        elif size > 0:
            out[name] = park
            park += (size + 0xfff) & ~0xfff
    return out


def _objfile_named(path):
    real = os.path.realpath(path)
    for objfile in gdb.objfiles():
        if objfile.filename and os.path.realpath(objfile.filename) == real:
            return objfile
    return None


class LoadModules(gdb.Command):
    """Load the symbols and debug information of the loaded kernel modules.

Usage: kdump-load-modules [DIR...]
Finds each loaded module's file (NAME.ko or NAME.ko.debug, - and _ alike) below the DIRs, by
default /usr/lib/debug/lib/modules/RELEASE and /lib/modules/RELEASE, and adds it with every
section at the address the kernel placed it (mod->sect_attrs), as add-symbol-file does. A file
whose build-id differs from the loaded module's is skipped. Run it again after modules were
loaded or unloaded (on a live guest): it replaces what it added before."""

    def __init__(self):
        super().__init__("kdump-load-modules", gdb.COMMAND_FILES, gdb.COMPLETE_FILENAME)

    def invoke(self, argument, from_tty):
        directories = [os.path.abspath(os.path.expanduser(d))
                       for d in gdb.string_to_argv(argument)]
        for d in directories:
            if not os.path.isdir(d):
                raise gdb.GdbError("kdump-load-modules: %s is not a directory" % d)
        if not directories:
            release = _kernel_release()
            if not release:
                raise gdb.GdbError("kdump-load-modules: cannot read init_uts_ns.name.release: "
                                   "name the directories of the .ko files")
            directories = [d for d in ("/usr/lib/debug/lib/modules/" + release,
                                       "/lib/modules/" + release) if os.path.isdir(d)]
            if not directories:
                raise gdb.GdbError("kdump-load-modules: neither /usr/lib/debug/lib/modules/%s "
                                   "nor /lib/modules/%s exists: name the directories of the "
                                   ".ko files" % (release, release))
        modules = kernel_modules()
        files, compressed = _module_files(directories)
        loaded = 0
        for module in modules:
            why = self._load(module, files, compressed)
            if why:
                gdb.write("%-20s 0x%x  not loaded: %s\n" % (module.name or "?", module.address,
                                                            why))
            else:
                loaded += 1
        # Modules unloaded since the last run (a live guest) leave no symbols behind.
        present = set(m.name for m in modules)
        for name in [n for n in _loaded_modules if n not in present]:
            self._replace(name)
            gdb.write("%-20s dropped: no longer loaded\n" % name)
        gdb.write("%d module%s loaded, %d not\n" % (loaded, "" if loaded == 1 else "s",
                                                    len(modules) - loaded))

    def _load(self, module, files, compressed):
        """Add one module's file; None, or why it was not."""
        name = module.name
        if name is None:
            return "its struct module is not in the dump"
        key = _module_name(name)
        path = files.get(key)
        if path is None:
            if key in compressed:
                return "only %s, compressed: gdb reads uncompressed files" % compressed[key]
            return "no %s.ko" % name
        text = module.sections.get(".text")
        if text is None:
            return "the kernel kept no section addresses (mod->sect_attrs)"
        elf = _ElfSections.read(path)
        if elf is None:
            return "%s is not a 64-bit ELF file" % path
        note = module.sections.get(".note.gnu.build-id")
        in_memory = _memory_build_id(note, elf.order) if note else None
        in_file = _file_build_id(path, elf)
        if in_memory and in_file and in_memory != in_file:
            return "%s is another build (build-id %s, the module's %s)" % (
                path, in_file.hex(), in_memory.hex())
        self._replace(name)
        try:
            given = os.path.abspath(_file_for_gdb(path, elf))
            command = "add-symbol-file %s 0x%x" % (_quote(given), text)
            for section, at in sorted(_section_addresses(elf, module).items()):
                if section != ".text":
                    command += " -s %s 0x%x" % (section, at)
            gdb.execute(command, False, True)
        except (gdb.error, OSError) as e:
            return "%s: %s" % (path, e)
        _loaded_modules[name] = (given, text)
        gdb.write("%-20s 0x%x  %s%s\n" % (name, text, path, "" if given == path else
                                          " (read from a copy: %s)" % given))
        return None

    @staticmethod
    def _replace(name):
        """Drop the symbols this command added before for the module."""
        earlier = _loaded_modules.pop(name, None)
        if earlier and _objfile_named(earlier[0]) is not None:
            gdb.execute("remove-symbol-file -a 0x%x" % earlier[1], False, True)


def _quote(path):
    """A file name as gdb's add-symbol-file parses it (it splits on blanks, keeps quotes)."""
    if not any(c in path for c in " \t'\"\\"):
        return path
    return "'" + path.replace("\\", "\\\\").replace("'", "\\'") + "'"


KernelPs()
SaveKernelJson()
SaveProcessJson()
LoadModules()
