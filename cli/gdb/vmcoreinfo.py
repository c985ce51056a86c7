# `info vmcoreinfo [TEXT]` for gdb connected to kdump-gdbserver.
#
# Usage:  (gdb) source cli/gdb/vmcoreinfo.py
#         (gdb) info vmcoreinfo              # the whole note
#         (gdb) info vmcoreinfo OSRELEASE    # only lines containing OSRELEASE
#
# The note comes from the server through the `qlinux.vmcoreinfo` query (reply: `Qlinux.vmcoreinfo`
# then the note in the protocol's escaped-binary encoding); `qXfer:vmcoreinfo:read` is tried when
# the query is not understood. gdb 12+ sends packets with RemoteTargetConnection.send_packet;
# older gdb goes through `maint packet`.

import re

import gdb

QUERY = "qlinux.vmcoreinfo"
REPLY_PREFIX = b"Qlinux.vmcoreinfo"
XFER_CHUNK = 0xF00


def unescape_binary(data):
    """Undo the RSP binary escape: `}` followed by the byte xor 0x20."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0x7D and i + 1 < len(data):
            out.append(data[i + 1] ^ 0x20)
            i += 2
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def _decode_maint_packet_output(text):
    """The reply bytes from `maint packet` output, which shows them C-escaped in quotes."""
    match = re.search(r'received: "(.*)"\s*$', text, re.S)
    if match is None:
        raise gdb.GdbError("unexpected `maint packet` output: %r" % text[:200])
    body = match.group(1)
    out = bytearray()
    i = 0
    simple = {"n": 10, "t": 9, "r": 13, "\\": 92, '"': 34, "'": 39, "a": 7, "b": 8, "f": 12,
              "v": 11, "e": 27}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            n = body[i + 1]
            if n == "x":
                m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
                out.append(int(m.group(0), 16))
                i += 2 + len(m.group(0))
                continue
            if n in "01234567":
                m = re.match(r"[0-7]{1,3}", body[i + 1:])
                out.append(int(m.group(0), 8) & 0xFF)
                i += 1 + len(m.group(0))
                continue
            out.append(simple.get(n, ord(n)))
            i += 2
            continue
        out.extend(c.encode("latin-1", "replace"))
        i += 1
    return bytes(out)


def send_packet(packet):
    """Send one packet to the remote target; the reply payload (run-length expanded) as bytes."""
    inferior = gdb.selected_inferior()
    connection = getattr(inferior, "connection", None)
    if connection is not None and hasattr(connection, "send_packet"):
        reply = connection.send_packet(packet)
        return reply.encode("latin-1") if isinstance(reply, str) else bytes(reply)
    if connection is not None and not isinstance(connection, getattr(gdb, "RemoteTargetConnection", object)):
        raise gdb.GdbError("info vmcoreinfo needs a remote target (target remote ...)")
    return _decode_maint_packet_output(gdb.execute("maint packet " + packet, to_string=True))


def read_vmcoreinfo():
    """The VMCOREINFO note text of the remote target, as bytes."""
    reply = send_packet(QUERY)
    if reply.startswith(REPLY_PREFIX):
        return unescape_binary(reply[len(REPLY_PREFIX):])
    if reply.startswith(b"Q"):  # the kgdb proposal answers `Q` followed by the data
        return unescape_binary(reply[1:])
    data = b""
    while True:
        chunk = send_packet("qXfer:vmcoreinfo:read::%x,%x" % (len(data), XFER_CHUNK))
        if chunk[:1] not in (b"m", b"l"):
            if data:
                break
            raise gdb.GdbError("the remote target does not provide VMCOREINFO")
        data += unescape_binary(chunk[1:])
        if chunk[:1] == b"l":
            break
    return data


class InfoVmcoreinfo(gdb.Command):
    """Print the VMCOREINFO note of the remote kernel dump.

Usage: info vmcoreinfo [TEXT]
With TEXT, print only the lines that contain it (e.g. OSRELEASE, KERNELOFFSET)."""

    def __init__(self):
        super().__init__("info vmcoreinfo", gdb.COMMAND_STATUS)

    def invoke(self, argument, from_tty):
        text = read_vmcoreinfo().rstrip(b"\0").decode("utf-8", "replace")
        needle = argument.strip()
        for line in text.splitlines():
            if needle in line:
                gdb.write(line + "\n")


InfoVmcoreinfo()
