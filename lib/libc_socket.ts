/**
 * Blocking TCP sockets on the C library, through Deno's FFI. Deno's own sockets are
 * asynchronous only; the live target's stack reads guest memory synchronously (the page cache,
 * page-table walks and the kernel view are shared with the dump path), so without this every
 * packet to QEMU's gdbstub would cross a worker thread (lib/qemu_stub_threaded.ts). A blocking
 * `send`/`recv` on the main thread costs a system call each and no thread hop.
 *
 * A socket may also wait for its next bytes by polling without sleeping for a short while
 * ({@link BlockingSocket.spinMs}): on a virtual machine, waking a sleeping process costs tens of
 * microseconds, and a live single step is a chain of such round trips (gdb, us, QEMU). The
 * listening side ({@link SocketListener}) serves gdb on such sockets.
 *
 * Needs `--allow-ffi` (granted by `-A`) and Linux's C library; {@link BlockingSocket.available}
 * tells whether both are there. IPv4 only: QEMU's gdbstub is reached on loopback.
 *
 * @module
 */

import { EINTR, errnoOf, lazyLibc, pollSleeping, pollWithoutSleeping } from "./libc.ts";

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const SO_REUSEADDR = 2;
const SHUT_RDWR = 2;
const POLLOUT = 4;
const EADDRINUSE = 98;
const EADDRNOTAVAIL = 99;
const EACCES = 13;
const ECONNABORTED = 103;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const SOL_SOCKET = 1;
const SO_SNDTIMEO = 21;
const SO_SNDBUF = 7;
const SO_DOMAIN = 39;
const AF_UNIX = 1;
const POLLIN = 1;
const POLLRDHUP = 0x2000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const EAGAIN = 11;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  sched_yield: { parameters: [], result: "i32" },
  // The same poll, run on Deno's blocking thread pool: waiting for a running guest to stop
  // must not block the event loop (gdb's ^C has to get through).
  pollAsync: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
const load: () => Libc | undefined = lazyLibc(SYMBOLS);

function errno(c: Libc): number {
  return errnoOf(c.__errno_location);
}

function errorMessage(c: Libc, code: number): string {
  const p = c.strerror(code);
  return p ? Deno.UnsafePointerView.getCString(p) : `error ${code}`;
}

/** IPv4 address bytes of a numeric address or `localhost`; undefined for anything else. */
export function ipv4Bytes(host: string): Uint8Array | undefined {
  if (host === "localhost") return Uint8Array.of(127, 0, 0, 1);
  const m = host.match(/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  return parts.every((n) => n <= 255) ? Uint8Array.from(parts) : undefined;
}

/** Raised for a failed system call: the message is the C library's text. */
export class SocketError extends Error {}

/** A connected, blocking TCP socket. */
export class BlockingSocket {
  /**
   * How long a wait for incoming bytes polls without sleeping before it sleeps (milliseconds;
   * 0, the default, sleeps at once). Each such wait costs up to this much CPU.
   */
  spinMs = 0;
  #c: Libc;
  #fd: number;
  #pollfd = new Uint8Array(8);
  #pollfdView = new DataView(this.#pollfd.buffer);

  /** @internal an accepted or connected descriptor; use {@link BlockingSocket.connect}. */
  constructor(c: Libc, fd: number) {
    this.#c = c;
    this.#fd = fd;
    this.#pollfdView.setInt32(0, fd, true);
    this.#pollfdView.setInt16(4, POLLIN, true);
  }

  /** Whether blocking sockets can be had here (Linux, FFI permitted) for `host`. */
  static available(host: string): boolean {
    return ipv4Bytes(host) !== undefined && load() !== undefined;
  }

  /**
   * Connect to `host:port` within `timeoutMs`.
   * @throws SocketError with the C library's reason (e.g. "Connection refused")
   */
  static connect(host: string, port: number, timeoutMs: number): BlockingSocket {
    const c = load();
    const ip = ipv4Bytes(host);
    if (!c || !ip) throw new SocketError("blocking sockets are not available here");
    const fd = c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SocketError(errorMessage(c, errno(c)));
    const sock = new BlockingSocket(c, fd);
    // Linux applies the send timeout to connect(): a host that never answers costs timeoutMs.
    sock.#setTimeval(SO_SNDTIMEO, timeoutMs);
    const addr = sockaddrIn(ip, port);
    let r: number;
    do r = c.connect(fd, addr, addr.length); while (r < 0 && errno(c) === EINTR);
    if (r < 0) {
      const code = errno(c);
      c.close(fd);
      throw new SocketError(code === EAGAIN ? "connection timed out" : errorMessage(c, code));
    }
    sock.#setTimeval(SO_SNDTIMEO, 0);
    setIntOption(c, fd, IPPROTO_TCP, TCP_NODELAY, 1);
    return sock;
  }

  #setTimeval(option: number, ms: number): void {
    const tv = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
    this.#c.setsockopt(this.#fd, SOL_SOCKET, option, new Uint8Array(tv.buffer), 16);
  }

  /**
   * Send all of `bytes`.
   * @throws SocketError when the connection is gone
   */
  send(bytes: Uint8Array): void {
    let off = 0;
    while (off < bytes.length) {
      const part = off === 0 ? bytes : bytes.subarray(off);
      const n = Number(this.#c.send(this.#fd, part, BigInt(part.length), MSG_NOSIGNAL));
      if (n < 0) {
        const code = errno(this.#c);
        if (code === EINTR) continue;
        throw new SocketError(errorMessage(this.#c, code));
      }
      off += n;
    }
  }

  /**
   * Receive into `buf`, waiting at most `timeoutMs` (0: do not wait). Returns the byte count,
   * 0 when the peer closed the connection, or -1 when nothing came in time.
   * @throws SocketError when the connection failed
   */
  recv(buf: Uint8Array, timeoutMs: number): number {
    for (;;) {
      const flags = timeoutMs === 0 ? MSG_DONTWAIT : 0;
      if (timeoutMs > 0 && !this.#pollSync(timeoutMs)) return -1;
      const n = Number(this.#c.recv(this.#fd, buf, BigInt(buf.length), flags));
      if (n >= 0) return n;
      const code = errno(this.#c);
      if (code === EINTR) continue;
      if (code === EAGAIN) return -1;
      throw new SocketError(errorMessage(this.#c, code));
    }
  }

  /**
   * Send what the socket takes of `bytes` now, without waiting: the byte count, 0 when its
   * buffer is full (see {@link writable}).
   * @throws SocketError when the connection is gone
   */
  trySend(bytes: Uint8Array): number {
    for (;;) {
      const n = Number(
        this.#c.send(this.#fd, bytes, BigInt(bytes.length), MSG_NOSIGNAL | MSG_DONTWAIT),
      );
      if (n >= 0) return n;
      const code = errno(this.#c);
      if (code === EINTR) continue;
      if (code === EAGAIN) return 0;
      throw new SocketError(errorMessage(this.#c, code));
    }
  }

  /**
   * Poll, without sleeping, for at most {@link spinMs}: whether bytes (or the end of the
   * connection) arrived meanwhile.
   */
  spinUntilReadable(): boolean {
    if (this.spinMs <= 0 || this.#fd < 0) return false;
    return pollWithoutSleeping(this.#c, this.#pollfd, this.spinMs);
  }

  /**
   * Sleep in `poll` on this thread for at most `timeoutMs`: whether bytes (or the end of the
   * connection) arrived meanwhile. The event loop waits meanwhile.
   */
  sleepUntilReadable(timeoutMs: number): boolean {
    if (this.#fd < 0) return true;
    return pollSleeping(this.#c, this.#pollfd, timeoutMs);
  }

  #pollSync(timeoutMs: number): boolean {
    if (timeoutMs > this.spinMs && this.spinUntilReadable()) return true;
    return pollSleeping(this.#c, this.#pollfd, timeoutMs);
  }

  /**
   * Resolve with whether data (or the end of the connection) arrived within `timeoutMs`,
   * without blocking the event loop.
   */
  readable(timeoutMs: number): Promise<boolean> {
    return this.#pollAsync(POLLIN, timeoutMs);
  }

  /**
   * Resolve with whether the socket can take more bytes within `timeoutMs`, without blocking the
   * event loop.
   */
  writable(timeoutMs: number): Promise<boolean> {
    return this.#pollAsync(POLLOUT, timeoutMs);
  }

  /**
   * Resolve with whether the peer closed the connection (or it failed) within `timeoutMs`, not
   * woken by data: a watch for the loss of an idle link that costs nothing per packet.
   */
  closedByPeer(timeoutMs: number): Promise<boolean> {
    return this.#pollAsync(POLLRDHUP, timeoutMs);
  }

  async #pollAsync(events: number, timeoutMs: number): Promise<boolean> {
    if (this.#fd < 0) return true;
    const pollfd = new Uint8Array(8);
    const view = new DataView(pollfd.buffer);
    view.setInt32(0, this.#fd, true);
    view.setInt16(4, events, true);
    return await this.#c.pollAsync(pollfd, 1n, timeoutMs) > 0;
  }

  /**
   * Close the socket (idempotent). It is shut down first, which wakes a `poll` of it waiting on
   * the thread pool (closing alone does not).
   */
  close(): void {
    if (this.#fd < 0) return;
    this.#c.shutdown(this.#fd, SHUT_RDWR);
    this.#c.close(this.#fd);
    this.#fd = -1;
  }
}

/** A `struct sockaddr_in` for `ip:port`. */
function sockaddrIn(ip: Uint8Array, port: number): Uint8Array {
  const addr = new Uint8Array(16);
  const view = new DataView(addr.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  addr.set(ip, 4);
  return addr;
}

function setIntOption(c: Libc, fd: number, level: number, option: number, value: number): boolean {
  const v = new Uint8Array(4);
  new DataView(v.buffer).setInt32(0, value, true);
  return c.setsockopt(fd, level, option, v, 4) === 0;
}

/**
 * Ask for a send buffer of `bytes` on the Unix socket `fd` (an inherited one, such as gdb's pipe
 * on standard output); the kernel caps it at `net.core.wmem_max`. False without FFI, or when
 * `fd` is not a Unix socket: a TCP socket's buffer is left to the kernel, which grows it as the
 * connection needs (setting it would stop that).
 */
export function requestSendBuffer(fd: number, bytes: number): boolean {
  const c = load();
  if (!c) return false;
  const domain = new Int32Array(1);
  const size = new Uint32Array([4]);
  const ok = c.getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, size) === 0;
  return ok && domain[0] === AF_UNIX && setIntOption(c, fd, SOL_SOCKET, SO_SNDBUF, bytes);
}

/** A listening TCP socket (IPv4) whose connections are {@link BlockingSocket}s. */
export class SocketListener {
  /** The port listened on (the real one when 0 was asked). */
  readonly port: number;
  #c: Libc;
  #fd: number;
  #closed = false;

  private constructor(c: Libc, fd: number, port: number) {
    this.#c = c;
    this.#fd = fd;
    this.port = port;
  }

  /**
   * Listen on `host:port` (a numeric IPv4 address or `localhost`).
   * @throws ListenSocketError with the reason ("in use", "permission denied", …)
   */
  static listen(host: string, port: number): SocketListener {
    const c = load();
    const ip = ipv4Bytes(host);
    if (!c || !ip) throw new ListenSocketError("blocking sockets are not available here");
    const fd = c.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) throw new ListenSocketError(errorMessage(c, errno(c)));
    // As Deno's own listener: a port left in TIME_WAIT by the last server can be taken again.
    setIntOption(c, fd, SOL_SOCKET, SO_REUSEADDR, 1);
    const addr = sockaddrIn(ip, port);
    if (c.bind(fd, addr, addr.length) < 0 || c.listen(fd, 16) < 0) {
      const code = errno(c);
      c.close(fd);
      throw new ListenSocketError(
        code === EADDRINUSE
          ? "in use"
          : code === EACCES
          ? "permission denied"
          : code === EADDRNOTAVAIL
          ? "no such address"
          : errorMessage(c, code),
      );
    }
    const len = Uint32Array.of(16);
    c.getsockname(fd, addr, new Uint8Array(len.buffer));
    return new SocketListener(c, fd, new DataView(addr.buffer).getUint16(2, false));
  }

  /** Whether listening sockets of this kind can be had here (Linux, FFI permitted) for `host`. */
  static available(host: string): boolean {
    return ipv4Bytes(host) !== undefined && load() !== undefined;
  }

  /**
   * The next connection, with its peer as `address:port`, or undefined once closed. Waits on
   * the thread pool, so the event loop stays free.
   */
  async accept(): Promise<{ socket: BlockingSocket; peer: string } | undefined> {
    const pollfd = new Uint8Array(8);
    const view = new DataView(pollfd.buffer);
    view.setInt32(0, this.#fd, true);
    view.setInt16(4, POLLIN, true);
    const addr = new Uint8Array(16);
    const len = new Uint32Array(1);
    while (!this.#closed) {
      len[0] = 16;
      const fd = this.#c.accept4(this.#fd, addr, new Uint8Array(len.buffer), SOCK_CLOEXEC);
      if (fd >= 0) {
        setIntOption(this.#c, fd, IPPROTO_TCP, TCP_NODELAY, 1);
        const a = new DataView(addr.buffer);
        const peer = `${addr[4]}.${addr[5]}.${addr[6]}.${addr[7]}:${a.getUint16(2, false)}`;
        return { socket: new BlockingSocket(this.#c, fd), peer };
      }
      const code = errno(this.#c);
      // A client that gave up before it was accepted: wait for the next.
      if (code !== EAGAIN && code !== EINTR && code !== ECONNABORTED) {
        if (this.#closed) break;
        throw new ListenSocketError(errorMessage(this.#c, code));
      }
      await this.#c.pollAsync(pollfd, 1n, 1000);
    }
    return undefined;
  }

  /** Stop listening (idempotent); a pending {@link accept} resolves with undefined. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#c.shutdown(this.#fd, SHUT_RDWR);
    this.#c.close(this.#fd);
  }
}

/** A listening socket that could not be made; the message is the reason alone. */
export class ListenSocketError extends Error {}
