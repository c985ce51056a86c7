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
