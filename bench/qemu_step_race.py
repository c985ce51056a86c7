#!/usr/bin/env python3
"""Count single steps that QEMU's gdbstub reports without having run them.

Straight on QEMU's stub, no kdump-gdbserver in between, this does what gdb does to step off a
breakpoint: put a breakpoint on SYMBOL, continue to it, read the vCPU's registers, take the
breakpoint out, step that vCPU alone (the others stay stopped), and read its registers again. A
step whose registers all come back unchanged did not run. QEMU 7.2's TCG does that now and then
(see LiveTarget's #stepAgain in lib/live_target.ts and BENCHMARKS.md, section 8).

    python3 bench/qemu_step_race.py PORT VMLINUX KERNEL_OFFSET [SYMBOL] [STEPS]

PORT is QEMU's `-gdb tcp:127.0.0.1:PORT`, KERNEL_OFFSET the guest's KASLR offset in hex (the
server's banner prints it), SYMBOL defaults to do_nanosleep and STEPS to 500. x86_64 guests only.
The guest is left running (`D;1`).
"""

import socket
import subprocess
import sys
import time


def symbol_address(vmlinux, name):
    out = subprocess.run(["nm", vmlinux], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == name:
            return int(fields[0], 16)
    raise SystemExit(f"{vmlinux}: no symbol {name}")


class Stub:
    """QEMU's gdbstub: one packet out, one reply back, acknowledged (QEMU has no no-ack mode)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""
        # QEMU stops a running guest when a debugger connects and may say so first: drop it.
        time.sleep(0.2)
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        self.sock.setblocking(True)

    def request(self, packet):
        checksum = sum(packet.encode()) & 0xFF
        self.sock.sendall(f"${packet}#{checksum:02x}".encode())
        while True:
            start = self.pending.find(b"$")
            end = self.pending.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.pending) >= end + 3:
                body = self.pending[start + 1:end]
                self.pending = self.pending[end + 3:]
                self.sock.sendall(b"+")
                return expand_runs(body).decode("latin1")
            data = self.sock.recv(65536)
            if not data:
                raise SystemExit("QEMU closed the gdbstub connection")
            self.pending += data


def expand_runs(body):
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i:i + 1] == b"*":
            out += out[-1:] * (body[i + 1] - 29)
            i += 2
        else:
            out.append(body[i])
            i += 1
    return bytes(out)


def stop_thread(reply):
    for field in reply[3:].split(";"):
        if field.startswith("thread:"):
            return field[len("thread:"):]
    return None


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    port, vmlinux, offset = int(sys.argv[1]), sys.argv[2], int(sys.argv[3], 16)
    name = sys.argv[4] if len(sys.argv) > 4 else "do_nanosleep"
    wanted = int(sys.argv[5]) if len(sys.argv) > 5 else 500
    address = symbol_address(vmlinux, name) + offset
    stub = Stub(port)
    stub.request("qSupported:multiprocess+;xmlRegisters=i386")
    stub.request("?")
    steps = unrun = 0
    started = time.time()
    while steps < wanted:
        stub.request(f"Z0,{address:x},1")
        thread = stop_thread(stub.request("vCont;c"))
        if thread is None:
            raise SystemExit("unexpected reply to vCont;c")
        stub.request(f"Hg{thread}")
        before = stub.request("g")
        stub.request(f"z0,{address:x},1")
        rip = int.from_bytes(bytes.fromhex(before[256:272]), "little")
        if rip != address:
            continue  # stopped for another reason: not a step off the breakpoint
        reply = stub.request(f"vCont;s:{thread}")
        stub.request(f"Hg{stop_thread(reply) or thread}")
        after = stub.request("g")
        steps += 1
        if after == before:
            unrun += 1
            print(f"step {steps}: {reply} with every register unchanged", flush=True)
    stub.request("D;1")
    print(f"{steps} steps off {name} straight on QEMU's gdbstub, {unrun} reported without "
          f"having run, {time.time() - started:.0f} s")


main()
