/**
 * Binding the TCP port before anything slow happens, with one line for the user when it fails.
 * The server opens the dump (seconds for a large or flattened one) only after the port is
 * known to be free, so a port in use costs nothing and says what to do.
 *
 * @module
 */

/** A TCP port that cannot be listened on; the message is one line saying what to do. */
export class ListenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ListenError";
  }
}

/**
 * Listen on `host:port`, or throw a {@link ListenError} naming the address and port and the way
 * out (another port, `--port 0`, the process holding it).
 */
export function bindTcp(host: string, port: number): Deno.TcpListener {
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  try {
    return Deno.listen({ hostname: host, port, transport: "tcp" });
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) {
      throw new ListenError(
        `cannot listen on ${where}: the port is in use (another kdump-gdbserver or gdbserver?); ` +
          `choose another with --port N, or --port 0 for a free one`,
      );
    }
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new ListenError(
        `cannot listen on ${where}: permission denied (ports below 1024 need privileges); ` +
          `choose a port above 1023 with --port N`,
      );
    }
    if (e instanceof Deno.errors.AddrNotAvailable) {
      throw new ListenError(
        `cannot listen on ${where}: no such local address; give one of this machine's ` +
          `addresses with --host (default 127.0.0.1)`,
      );
    }
    const text = e instanceof Error ? e.message : String(e);
    throw new ListenError(`cannot listen on ${where}: ${text.split("\n")[0]}`);
  }
}
