# Prints every thread's frames as gdb unwinds them, one line each, for tests that compare two
# gdb sessions frame by frame: "FRAME <thread> <pc hex> <virtual 0|1> <function or ?>", virtual
# for the frames gdb makes from debug information without a frame on the stack (inlined
# functions, and tail calls it infers from DWARF call-site data).
import gdb

for thread in sorted(gdb.selected_inferior().threads(), key=lambda t: t.num):
    thread.switch()
    frame = gdb.newest_frame()
    depth = 0
    while frame is not None and depth < 64:
        inline = 1 if frame.type() in (gdb.INLINE_FRAME, gdb.TAILCALL_FRAME) else 0
        print("FRAME %d %x %d %s" % (thread.num, frame.pc(), inline, frame.name() or "?"))
        try:
            frame = frame.older()
        except gdb.error:
            break
        depth += 1
