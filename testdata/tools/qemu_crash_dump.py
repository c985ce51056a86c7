#!/usr/bin/python3
"""Boot a fixture guest under QEMU, wait for its kernel panic, and dump its memory over QMP.

Usage: qemu_crash_dump.py --out DIR [--timeout S] [--formats elf,kdump-zlib]
                          [--check COMMAND [--check-attempts N]] -- qemu-system-ARCH ARGS...

The QEMU command line comes from the caller; this tool adds the QMP socket and the serial
console file. Once the console shows the end of the panic message it stops the vCPUs (so that
every dump sees the same memory) and writes `dump.elf` (format elf, paging=false).

With --check, COMMAND (split like a shell would, no shell involved) then inspects dump.elf:
status 0 accepts it; status 3 means the vCPUs were stopped at an unlucky moment (e.g. while
the panicking CPU entered an interrupt), so the guest runs on for a fraction of a second and is
stopped and dumped again, up to N times; any other status is an error.

Then, if asked, `dump.qemu-kdump-zlib.flat` is written from the same stopped guest (format
kdump-zlib: QEMU 7.2 writes makedumpfile's flattened format), and QEMU quits. `console.log`
and `qemu-version.txt` stay in DIR. Standard library only.
"""

import argparse
import json
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time

PANIC_END = re.compile(rb"---\[ end Kernel panic")
GUEST_ERROR = re.compile(rb"FIXTURE error[^\r\n]*")


def log(msg):
    print(f"    [qemu] {msg}", flush=True)


class Qmp:
    """A minimal synchronous QMP client: one command at a time, events are skipped."""

    def __init__(self, path, deadline):
        self.deadline = deadline
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise TimeoutError("QMP socket never accepted a connection")
                time.sleep(0.1)
        self.buf = b""
        greeting = self._read_message()
        if "QMP" not in greeting:
            raise RuntimeError(f"unexpected QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def _read_message(self):
        while b"\n" not in self.buf:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("QMP reply timed out")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def command(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read_message()
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {name} failed: {reply['error']}")
            return reply.get("return")


def wait_for_panic(proc, console, deadline):
    """Poll the console file until the panic message is complete."""
    while True:
        data = b""
        if os.path.exists(console):
            with open(console, "rb") as f:
                data = f.read()
        err = GUEST_ERROR.search(data)
        if err:
            raise RuntimeError(f"guest reported: {err.group(0).decode(errors='replace')}")
        if PANIC_END.search(data):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with status {proc.returncode} before the panic")
        if time.monotonic() > deadline:
            raise TimeoutError("no kernel panic on the console before the timeout")
        time.sleep(0.5)


def dump(qmp, fmt, path):
    """dump-guest-memory of the stopped guest into path (replacing an earlier attempt)."""
    if os.path.exists(path):
        os.unlink(path)  # QEMU creates dumps read-only for their owner
    t0 = time.monotonic()
    qmp.command("dump-guest-memory", paging=False, protocol=f"file:{path}", format=fmt)
    log(f"{fmt}: {os.path.getsize(path)} bytes in {time.monotonic() - t0:.1f}s")


def accepted(check, attempt, attempts):
    """Run the --check command on the current dump: True to keep it, False to dump again."""
    status = subprocess.run(shlex.split(check), stdin=subprocess.DEVNULL).returncode
    if status == 0:
        return True
    if status != 3:
        raise RuntimeError(f"check command failed with status {status}")
    if attempt >= attempts:
        raise RuntimeError(f"check rejected {attempts} dumps")
    log(f"check rejected dump {attempt} (unlucky stop); resuming the guest briefly")
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for console.log and the dumps")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for the whole run")
    ap.add_argument("--formats", default="elf", help="comma-separated: elf, kdump-zlib")
    ap.add_argument("--check", help="command that accepts (0) or rejects (3) dump.elf")
    ap.add_argument("--check-attempts", type=int, default=10)
    ap.add_argument("qemu", nargs=argparse.REMAINDER, help="-- qemu-system-ARCH ARGS...")
    args = ap.parse_args()
    qemu = args.qemu[1:] if args.qemu[:1] == ["--"] else args.qemu
    if not qemu:
        ap.error("missing QEMU command line")

    out = os.path.abspath(args.out)
    console = os.path.join(out, "console.log")
    names = {"elf": "dump.elf", "kdump-zlib": "dump.qemu-kdump-zlib.flat"}
    formats = args.formats.split(",")
    if "elf" not in formats or any(fmt not in names for fmt in formats):
        ap.error(f"--formats must include elf and name only {', '.join(names)}")
    dumps = {fmt: os.path.join(out, names[fmt]) for fmt in formats}
    for path in [console] + list(dumps.values()):
        if os.path.exists(path):
            os.unlink(path)

    deadline = time.monotonic() + args.timeout
    # A short socket path: AF_UNIX paths are limited to 108 bytes, the output dir may be deep.
    sockdir = tempfile.mkdtemp(prefix="kdump-fixture-qmp-")
    qmp_path = os.path.join(sockdir, "qmp.sock")
    cmd = qemu + [
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-serial", f"file:{console}",
    ]
    log(" ".join(cmd))
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    try:
        wait_for_panic(proc, console, deadline)
        log(f"kernel panicked after {time.monotonic() - started:.1f}s; dumping")
        qmp = Qmp(qmp_path, deadline)
        version = qmp.command("query-version")
        qmp.command("stop")
        dump(qmp, "elf", dumps["elf"])
        attempt = 1
        while args.check and not accepted(args.check, attempt, args.check_attempts):
            qmp.command("cont")
            time.sleep(random.uniform(0.05, 0.5))
            qmp.command("stop")
            attempt += 1
            dump(qmp, "elf", dumps["elf"])
        for fmt, path in dumps.items():
            if fmt != "elf":
                dump(qmp, fmt, path)
        try:
            qmp.command("quit")
        except (RuntimeError, OSError):
            pass  # QEMU may close the socket before it answers
        proc.wait(timeout=max(1, deadline - time.monotonic()))
        q = version["qemu"]
        with open(os.path.join(out, "qemu-version.txt"), "w") as f:
            f.write(f"{q['major']}.{q['minor']}.{q['micro']} {version.get('package', '')}\n")
    except Exception as e:
        print(f"ERROR: {e}", file=sys.stderr)
        if os.path.exists(console):
            with open(console, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            print(f"--- last console output ({console}) ---\n{tail}", file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in os.listdir(sockdir):
            os.unlink(os.path.join(sockdir, name))
        os.rmdir(sockdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
