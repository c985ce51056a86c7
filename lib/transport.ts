/**
 * Byte channels for RSP sessions: a TCP server (concurrent clients, each an independent session)
 * and stdin/stdout (gdb's `target remote | COMMAND`). Each read is handed to the session, whose
 * replies go out in one write (looping over partial writes); input is not read again until the
 * replies are written, so a client that never reads cannot make the server buffer without bound.
 *
 * @module
 */

import { requestSendBuffer, SocketListener } from "./libc_socket.ts";
import { MAX_PACKET_SIZE, RspSession } from "./rsp_session.ts";
import { errorReply, framePacket } from "./rsp_wire.ts";
import { SocketChannel, StdinChannel } from "./polling_channel.ts";
import type { Target } from "./target.ts";
import { errorText } from "./file_source.ts";

/** Options of {@link serveTcp} and {@link serveStdio}. */
export interface ServeOptions {
  /** Address to listen on (TCP). Default `127.0.0.1`. */
  host?: string;
  /** Port to listen on (TCP); 0 picks a free one. Default 1234. */
  port?: number;
  /** Serve one client, then stop (TCP). */
  once?: boolean;
  /** Log every packet in and out (truncated) through `log`. */
  debug?: boolean;
  /** Writes one line of diagnostics. Default: stderr. */
  log?: (line: string) => void;
  /**
   * A listener bound beforehand (lib/listen.ts `bindTcp` or `bindPolling`); `host`/`port` then
   * only label it. A {@link SocketListener}'s connections wait for each next packet by polling
   * for {@link ServeOptions.spinMs} before they sleep.
   */
  listener?: Deno.TcpListener | SocketListener;
  /**
   * How long a connection polls for gdb's next packet before it sleeps (milliseconds): for TCP,
   * with a {@link SocketListener}; for {@link serveStdio}, when FFI is granted. Default 0.
   */
  spinMs?: number;
  /**
   * Most clients served at once over TCP (default {@link MAX_CLIENTS}); one more is told why
   * (see {@link tellRefused}) and closed, with a log line.
   */
  maxClients?: number;
}

/**
 * Clients served at once over TCP. Each session holds up to a few MiB (a packet being read, the
 * last reply kept for a retransmission, its write buffer), so connections are bounded like
 * every other request: a script that opens them in a loop cannot exhaust memory.
 */
export const MAX_CLIENTS = 16;

/** A running TCP server. */
export interface RspServer {
  /** Address it listens on. */
  readonly hostname: string;
  /** Port it listens on (the real one when 0 was asked). */
  readonly port: number;
  /** Resolves once the server has stopped listening and every session has ended. */
  readonly finished: Promise<void>;
  /** Number of sessions in progress. */
  readonly activeSessions: number;
  /** Stop listening, drop every connection, and wait for the sessions to end. */
  close(): Promise<void>;
}

/** The minimal duplex a session runs on (a `Deno.Conn` is one). */
export interface ByteChannel {
  /** Read into `buffer`; the number of bytes read, or null at end of input. */
  read(buffer: Uint8Array): Promise<number | null>;
  /** Write some of `data`; the number of bytes written. */
  write(data: Uint8Array): Promise<number>;
  /**
   * {@link read} for when no packet is expected soon (a live guest runs, gdb waits for its
   * stop): a channel that polls for the next packet before sleeping does not poll here.
   */
  readIdle?(buffer: Uint8Array): Promise<number | null>;
  /**
   * Give up the pending {@link readIdle}: it reads nothing more and resolves with 0, so that a
   * new {@link read} (which polls, then sleeps on this thread) gets gdb's next packet. For a stop
   * that came first: gdb answers it within a fraction of a millisecond, which a wait on the
   * thread pool would lengthen. False when that read has already read: its result must be used.
   */
  abandonIdleRead?(): boolean;
}

/** An accepted connection, as the TCP server's loop sees it. */
interface Connection extends ByteChannel {
  /** `address:port` of the client. */
  readonly peer: string;
  close(): void;
}

/** Hands out the connections of a listening socket. */
interface Acceptor {
  readonly port: number;
  /** The next connection; undefined once the listener is closed. */
  accept(): Promise<Connection | undefined>;
  close(): void;
}

/** Deno's own listener, its connections with Nagle off. */
function denoAcceptor(listener: Deno.TcpListener): Acceptor {
  return {
    port: listener.addr.port,
    async accept() {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (e instanceof Deno.errors.BadResource) return undefined;
        throw e;
      }
      conn.setNoDelay(true); // Nagle would hold back the end of split replies (~40 ms each)
      return {
        peer: `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`,
        read: (buffer) => conn.read(buffer),
        write: (data) => conn.write(data),
        close: () => conn.close(),
      };
    },
    close: () => listener.close(),
  };
}

/** Connections on blocking sockets that poll `spinMs` for each next packet. */
function socketAcceptor(listener: SocketListener, spinMs: number): Acceptor {
  return {
    port: listener.port,
    async accept() {
      const accepted = await listener.accept();
      if (!accepted) return undefined;
      accepted.socket.spinMs = spinMs;
      return new SocketChannel(accepted.socket, accepted.peer);
    },
    close: () => listener.close(),
  };
}

const READ_BUFFER_SIZE = 65536;
/** The pause after a failed accept before the next. */
const ACCEPT_RETRY_MS = 100;
/**
 * How long a new client may stay silent before the console shows its prompt. gdb sends its
 * first packet at once, so it never sees the prompt; a person with `nc` sees it right away.
 */
export const GREETING_DELAY_MS = 300;

/** Default log: one line on stderr. */
function stderrLog(line: string): void {
  console.error(line);
}

/** Whether a host name or address only accepts local connections. */
function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || host.startsWith("127.");
}

/** Errors that just mean the peer went away. */
function isDisconnect(e: unknown): boolean {
  return e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.ConnectionAborted || e instanceof Deno.errors.BadResource ||
    e instanceof Deno.errors.NotConnected || e instanceof Deno.errors.Interrupted;
}

async function writeAll(channel: ByteChannel, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.length) offset += await channel.write(data.subarray(offset));
}

/**
 * Run one session on a channel until the client leaves, detaches or the channel fails. Never
 * throws: a failing channel ends this session only.
 * @param label names the client in log lines
 */
export async function serveChannel(
  target: Target,
  channel: ByteChannel,
  options: ServeOptions & { label?: string } = {},
): Promise<void> {
  const log = options.log ?? stderrLog;
  const label = options.label ?? "client";
  if (target.run) {
    // A live target: stop the guest for this client, or say why it cannot be served.
    const refused = await target.run.attach();
    if (refused) {
      log(`[${label}] ${refused}`);
      await tellRefused(channel, refused);
      return;
    }
  }
  let session: RspSession;
  try {
    session = new RspSession(target, { debug: options.debug, log, label });
  } catch (e) {
    // The stop's first look at the guest failed (its gdbstub gone mid-attach, say): this client
    // is not served, the guest is let go as it was, and the next client may try again.
    log(`[${label}] cannot serve this client: ${errorText(e)}`);
    target.run?.release(false);
    return;
  }
  const buffer = new Uint8Array(READ_BUFFER_SIZE);
  let reading: Promise<number | null> | undefined;
  try {
    let first: Promise<number | null> | undefined = firstRead(channel, buffer, session);
    while (!session.closed) {
      const stop = session.pendingStop;
      reading ??= first ??
        (stop && channel.readIdle ? channel.readIdle(buffer) : channel.read(buffer));
      first = undefined;
      let n: number | null;
      if (stop) {
        // A live target runs: wait for gdb (its interrupt) and for the stop, whichever first.
        const r = await Promise.race([reading.then((n) => ({ n })), stop.then((e) => ({ e }))]);
        if ("e" in r) {
          if (channel.abandonIdleRead?.()) {
            reading.catch(() => {}); // nobody waits for it any more
            reading = undefined;
          }
          session.stopped(r.e);
          do {
            const out = session.produce();
            if (out.length > 0) await writeAll(channel, out);
          } while (!session.inputDrained);
          continue;
        }
        n = r.n;
      } else n = await reading;
      reading = undefined;
      if (n === null) break;
      if (n === 0) continue;
      session.receive(buffer.subarray(0, n));
      do {
        const out = session.produce();
        if (out.length > 0) await writeAll(channel, out);
      } while (!session.inputDrained);
    }
  } catch (e) {
    if (!isDisconnect(e)) log(`[${label}] session ended by error: ${e}`);
  } finally {
    session.end();
  }
}

/**
 * Tell a client that is not served why, in its own terms: gdb gets an `E.` reply to its first
 * packet (it shows "Remote failure reply: E.…" before "Remote connection closed"), a console user
 * a line of text. Waits at most {@link GREETING_DELAY_MS} for the client's first bytes; never
 * throws (the caller closes the channel).
 */
export async function tellRefused(channel: ByteChannel, reason: string): Promise<void> {
  const buffer = new Uint8Array(256);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const read = channel.read(buffer);
    read.catch(() => {}); // left pending when the client stays silent: the close ends it
    const n = await Promise.race([
      read,
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), GREETING_DELAY_MS)),
    ]);
    const rsp = n !== null && n > 0 && (buffer[0] === 0x2b || buffer[0] === 0x24); // '+' '$'
    await writeAll(
      channel,
      rsp
        ? new Uint8Array([0x2b, ...framePacket(errorReply(reason))])
        : new TextEncoder().encode(`kdump-gdbserver: ${reason}\n`),
    );
  } catch {
    // the client is gone already
  } finally {
    clearTimeout(timer);
  }
}

/** The first read, with the console's greeting written if the client stays silent a while. */
async function firstRead(
  channel: ByteChannel,
  buffer: Uint8Array,
  session: RspSession,
): Promise<number | null> {
  const read = channel.read(buffer);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const silent = new Promise<"silent">((resolve) => {
    timer = setTimeout(() => resolve("silent"), GREETING_DELAY_MS);
  });
  try {
    const first = await Promise.race([read, silent]);
    if (first !== "silent") return first;
  } finally {
    clearTimeout(timer);
  }
  const greeting = session.greeting();
  if (greeting.length > 0) await writeAll(channel, greeting);
  return await read;
}

/**
 * Serve a target over TCP. Each connection gets its own session; a failing one never affects the
 * others or the listener. A non-loopback address is allowed, with a warning: whoever reaches it
 * can read the target's memory.
 */
export function serveTcp(target: Target, options: ServeOptions = {}): Promise<RspServer> {
  try {
    return Promise.resolve(listenTcp(target, options));
  } catch (e) {
    return Promise.reject(e); // e.g. the port is in use
  }
}

function listenTcp(target: Target, options: ServeOptions): RspServer {
  const log = options.log ?? stderrLog;
  const hostname = options.host ?? "127.0.0.1";
  const given = options.listener ??
    Deno.listen({ hostname, port: options.port ?? 1234, transport: "tcp" });
  const listener = given instanceof SocketListener
    ? socketAcceptor(given, options.spinMs ?? 0)
    : denoAcceptor(given);
  const port = listener.port;
  if (!isLoopback(hostname)) {
    log(
      `warning: listening on ${hostname}:${port}, not a loopback address: anyone who can reach ` +
        `it can read the target's memory`,
    );
  }
  const maxClients = options.maxClients ?? MAX_CLIENTS;
  const conns = new Set<Connection>();
  const sessions = new Set<Promise<void>>();
  /** Connections over the cap, being told why before they are closed. */
  const refusing = new Map<Connection, Promise<void>>();
  let stopping = false;
  /** Whether a client has been taken (with --once, the only one). */
  let served = false;

  const stopListening = () => {
    try {
      listener.close();
    } catch {
      // already closed
    }
  };

  const runConnection = async (conn: Connection) => {
    const peer = conn.peer;
    conns.add(conn);
    try {
      log(`[${peer}] connected`);
      await serveChannel(target, conn, { ...options, log, label: peer });
    } finally {
      conns.delete(conn);
      closeQuietly(conn);
      log(`[${peer}] disconnected`);
    }
  };

  const acceptLoop = async () => {
    while (!stopping) {
      let conn: Connection | undefined;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (stopping) break;
        log(`accept failed: ${e}`);
        // Out of descriptors, say: the next try would fail the same way at once.
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      if (!conn) break;
      // --once: the port stays open while its one client is served, to tell others why not.
      const full = options.once ? served : sessions.size >= maxClients;
      if (full) {
        const reason = options.once
          ? "this server serves one client (--once), and it is connected"
          : `${maxClients} clients already connected, the most served at once`;
        log(`[${conn.peer}] refused: ${reason}`);
        const refused = conn;
        const closeRefused = () => {
          refusing.delete(refused);
          closeQuietly(refused);
        };
        // Telling takes up to GREETING_DELAY_MS: a flood of connections is closed untold
        // beyond a few, so refused ones cannot pile up (each holds a descriptor).
        if (refusing.size >= maxClients) closeRefused();
        else refusing.set(refused, tellRefused(refused, reason).finally(closeRefused));
        continue;
      }
      served = true;
      const peer = conn.peer;
      // serveChannel reports its own errors; the catch is the backstop that keeps the server up.
      const session = runConnection(conn).catch((e) => log(`[${peer}] session failed: ${e}`));
      sessions.add(session);
      session.finally(() => {
        sessions.delete(session);
        if (options.once) {
          stopping = true;
          stopListening();
        }
      });
    }
    while (sessions.size > 0 || refusing.size > 0) {
      await Promise.all([...sessions, ...refusing.values()]);
    }
  };
  const finished = acceptLoop();

  return {
    hostname,
    port,
    finished,
    get activeSessions() {
      return sessions.size;
    },
    async close() {
      stopping = true;
      stopListening();
      for (const conn of [...conns, ...refusing.keys()]) {
        closeQuietly(conn);
      }
      await finished;
    },
  };
}

/** Close a connection that may be closed already. */
function closeQuietly(conn: Connection): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Send buffer asked for on gdb's pipe: two of the largest replies (the kernel doubles it). */
const PIPE_SEND_BUFFER = 2 * MAX_PACKET_SIZE;

/**
 * Serve a target on stdin/stdout, for `target remote | COMMAND`. Resolves when stdin closes or
 * the client detaches. Diagnostics go to stderr (gdb shows them), never to stdout.
 */
export async function serveStdio(target: Target, options: ServeOptions = {}): Promise<void> {
  // gdb's pipe is a socket pair, whose send buffer (net.core.wmem_default, 208 KiB unless
  // changed) is smaller than a bulk read's largest reply (PacketSize): such a reply goes out in
  // pieces, each waiting for gdb to read the last, a wake-up of both processes every time. With
  // room for a whole reply the server writes it at once and prepares the next while gdb decodes
  // this one (BENCHMARKS.md, section 1). The kernel grants up to twice net.core.wmem_max: 416 KiB
  // unless changed, a whole binary reply of gdb 16. Needs FFI; without it, or off a Unix socket
  // (a TCP socket would lose the kernel's own sizing), nothing changes.
  requestSendBuffer(1, PIPE_SEND_BUFFER);
  // With spinMs, standard input is polled for gdb's next packet before each sleep (FFI).
  const channel: ByteChannel = (options.spinMs && StdinChannel.open(options.spinMs)) || {
    read: (buffer) => Deno.stdin.read(buffer),
    write: (data) => Deno.stdout.write(data),
  };
  await serveChannel(target, channel, { ...options, label: "stdio" });
}
