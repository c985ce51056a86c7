/**
 * The shared buffer between {@link QemuStub} (main thread) and its worker
 * (lib/qemu_stub_worker.ts): Int32 [0] answer ready flag, [1] status (0 ok, 1 error), [2] answer
 * length, [3] prefetch state, [4] prefetch length; the answer's bytes from offset 32, then the
 * prefetched `g` reply of the last stop.
 *
 * @module
 */

/** Bytes the answer area holds (the largest answer: a memory read of a few pages, qRcmd text). */
export const ANSWER_BYTES = 4 * 1024 * 1024;
/** Bytes of the prefetch area (a `g` reply: about 1.2 KB on x86_64, 1.6 KB on arm64). */
export const PREFETCH_BYTES = 64 * 1024;
/** Total size of the shared buffer. */
export const SHARED_BYTES = 32 + ANSWER_BYTES + PREFETCH_BYTES;
/** Prefetch states (Int32 [3]): asked for, in the buffer, or failed. */
export const PREFETCH_PENDING = 1;
export const PREFETCH_READY = 2;
export const PREFETCH_FAILED = 3;
