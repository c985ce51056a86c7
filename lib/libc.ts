/**
 * The C library through Deno's FFI, for the few calls Deno has no synchronous form of (a
 * blocking socket, `pread`). Linux only, and only when `--allow-ffi` is granted (`-A` grants
 * it): otherwise callers get undefined and keep to Deno's own APIs.
 *
 * @module
 */

/** Open Linux's C library with `symbols`; undefined without FFI permission or on failure. */
export function openLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): Deno.DynamicLibrary<S>["symbols"] | undefined {
  try {
    return Deno.build.os === "linux" &&
        Deno.permissions.querySync({ name: "ffi" }).state === "granted"
      ? Deno.dlopen("libc.so.6", symbols).symbols
      : undefined;
  } catch {
    return undefined;
  }
}

/** Linux's `EINTR`: a system call interrupted by a signal, to be made again. */
export const EINTR = 4;

/** The calling thread's `errno`, read through `__errno_location`. */
export function errnoOf(errnoLocation: () => Deno.PointerValue): number {
  const p = errnoLocation();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** {@link openLibc} on first call, the same symbols (or undefined) on every later one. */
export function lazyLibc<S extends Deno.ForeignLibraryInterface>(
  symbols: S,
): () => Deno.DynamicLibrary<S>["symbols"] | undefined {
  let lib: Deno.DynamicLibrary<S>["symbols"] | null | undefined;
  return () => {
    if (lib === undefined) lib = openLibc(symbols) ?? null;
    return lib ?? undefined;
  };
}

/**
 * Poll `pollfd` (one `struct pollfd`) without sleeping for at most `ms`: whether it became ready.
 * Each turn gives the core away first (`sched_yield`), so a process waiting for it (gdb or QEMU
 * on a loaded machine) runs before we poll again.
 */
export function pollWithoutSleeping(
  c: {
    poll(fds: Uint8Array, count: bigint, timeoutMs: number): number;
    sched_yield(): number;
  },
  pollfd: Uint8Array,
  ms: number,
): boolean {
  const end = performance.now() + ms;
  do {
    if (c.poll(pollfd, 1n, 0) !== 0) return true;
    c.sched_yield();
  } while (performance.now() < end);
  return false;
}

/**
 * Sleep in `poll` on `pollfd` (one `struct pollfd`) for at most `ms`: whether it became ready (an
 * error counts as ready: the read that follows reports it). Interrupted polls are resumed with the
 * time left.
 */
export function pollSleeping(
  c: {
    poll(fds: Uint8Array, count: bigint, timeoutMs: number): number;
    __errno_location(): Deno.PointerValue;
  },
  pollfd: Uint8Array,
  ms: number,
): boolean {
  const end = performance.now() + ms;
  for (;;) {
    const left = Math.max(0, Math.ceil(end - performance.now()));
    const r = c.poll(pollfd, 1n, left);
    if (r > 0) return true;
    if (r === 0) return false;
    if (errnoOf(c.__errno_location) !== EINTR) return true;
  }
}
