/**
 * Binding the TCP port before anything slow happens, with one line for the user when it fails.
 * The server opens the dump (seconds for a large or flattened one) only after the port is
 * known to be free, so a port in use costs nothing and says what to do.
 *
 * @module
 */

import { ListenSocketError, SocketListener } from "./libc_socket.ts";

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
  try {
    return Deno.listen({ hostname: host, port, transport: "tcp" });
  } catch (e) {
    const reason = e instanceof Deno.errors.AddrInUse
      ? "in use"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : e instanceof Deno.errors.AddrNotAvailable
      ? "no such address"
      : (e instanceof Error ? e.message : String(e)).split("\n")[0];
    throw listenError(host, port, reason);
  }
}

/**
 * {@link bindTcp} on a blocking socket whose connections poll for each next packet before they
 * sleep (lib/polling_channel.ts), where one can be had (Linux, FFI permitted, an IPv4 address);
 * Deno's own listener elsewhere.
 * @throws ListenError as {@link bindTcp}
 */
export function bindPolling(host: string, port: number): Deno.TcpListener | SocketListener {
  if (!SocketListener.available(host)) return bindTcp(host, port);
  try {
    return SocketListener.listen(host, port);
  } catch (e) {
    throw listenError(host, port, e instanceof ListenSocketError ? e.message : String(e));
  }
}

/** The one line for a failed listen: the address, the reason, and the way out. */
function listenError(host: string, port: number, reason: string): ListenError {
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`;
  switch (reason) {
    case "in use":
      return new ListenError(
        `cannot listen on ${where}: the port is in use (another kdump-gdbserver or gdbserver?); ` +
          `choose another with --port N, or --port 0 for a free one`,
      );
    case "permission denied":
      return new ListenError(
        `cannot listen on ${where}: permission denied (ports below 1024 need privileges); ` +
          `choose a port above 1023 with --port N`,
      );
    case "no such address":
      return new ListenError(
        `cannot listen on ${where}: no such local address; give one of this machine's ` +
          `addresses with --host (default 127.0.0.1)`,
      );
    default:
      return new ListenError(`cannot listen on ${where}: ${reason}`);
  }
}
