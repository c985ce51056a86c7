/**
 * Worker thread that owns the TCP connection to QEMU's gdbstub, so the main thread can talk to
 * it synchronously (the dump stack reads memory synchronously): the main thread posts a request
 * and blocks in `Atomics.wait` on a SharedArrayBuffer; this worker does the asynchronous socket
 * work, writes the answer into the buffer and wakes it. Stop replies that arrive while the guest
 * runs, and the loss of the connection, are posted back as messages instead.
 *
 * See lib/qemu_stub.ts for the request kinds and the buffer layout.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import {
  ANSWER_BYTES,
  PREFETCH_BYTES,
  PREFETCH_FAILED,
  PREFETCH_PENDING,
  PREFETCH_READY,
} from "./qemu_stub_layout.ts";
import {
  framePacket,
  hexBytes,
  isStopReply,
  latin1,
  PipelinedRead,
  StubDecoder,
  unescapeBinary,
} from "./rsp_client.ts";
import { MAX_M, READ_PIPELINE } from "./qemu_stub.ts";

let ctrl: Int32Array;
let data: Uint8Array;
let prefetchData: Uint8Array;
let conn: Deno.TcpConn | undefined;
let lost: string | undefined;
let running = false;
let lastFrame: Uint8Array | undefined;
const queue: string[] = [];
let waiter: (() => void) | undefined;
const encoder = new TextEncoder();

/** Answer the blocked main thread: status 0 ok, 1 error; payload bytes. */
function answer(status: number, payload: Uint8Array): void {
  const n = Math.min(payload.length, data.length);
  data.set(payload.subarray(0, n));
  Atomics.store(ctrl, 1, status);
  Atomics.store(ctrl, 2, n);
  Atomics.store(ctrl, 0, 1);
  Atomics.notify(ctrl, 0);
}

function answerText(status: number, text: string): void {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  answer(status, bytes);
}

/**
 * Acknowledgements owed to QEMU, sent in front of our next packet: QEMU's system-mode stub never
 * waits for them, and writing each on its own costs a write (and a wake-up) per reply before the
 * reply reaches the main thread.
 */
let acksOwed = 0;

async function send(bytes: Uint8Array): Promise<void> {
  if (acksOwed > 0) {
    const joined = new Uint8Array(acksOwed + bytes.length);
    joined.fill(0x2b, 0, acksOwed); // '+'
    joined.set(bytes, acksOwed);
    acksOwed = 0;
    bytes = joined;
  }
  let off = 0;
  while (off < bytes.length) off += await conn!.write(bytes.subarray(off));
}

async function sendPacket(text: string): Promise<void> {
  lastFrame = framePacket(text);
  await send(lastFrame);
}

/** The next packet from QEMU that is not an asynchronous stop; throws when the link is lost. */
async function nextReply(acceptStop: boolean): Promise<string> {
  for (;;) {
    while (queue.length === 0) {
      if (lost !== undefined) throw new Error(lost);
      await new Promise<void>((r) => waiter = r);
    }
    const p = queue.shift()!;
    if (!acceptStop && isStopReply(p)) {
      // A stop we did not ask for (QEMU stopped the guest on connect, or someone paused it):
      // the main thread hears of it, but it is not the answer to this request.
      self.postMessage({ ev: "stop", text: p, unsolicited: true });
      continue;
    }
    return p;
  }
}

async function readLoop(): Promise<void> {
  const decoder = new StubDecoder();
  const buf = new Uint8Array(65536);
  try {
    for (;;) {
      const n = await conn!.read(buf);
      if (n === null) break;
      for (const e of decoder.push(buf.subarray(0, n))) {
        if (e.kind === "nack") {
          if (lastFrame) await send(lastFrame);
        } else if (e.kind === "packet") {
          if (!e.checksumOk) {
            await send(encoder.encode("-"));
            continue;
          }
          acksOwed++;
          const text = latin1(e.payload);
          if (running && isStopReply(text)) {
            running = false;
            // Before the main thread hears of the stop: its `g` then waits for this one.
            Atomics.store(ctrl, 3, PREFETCH_PENDING);
            self.postMessage({ ev: "stop", text });
            prefetchRegisters();
          } else {
            queue.push(text);
          }
        }
      }
      waiter?.();
    }
    lost = "QEMU closed the gdbstub connection";
  } catch (e) {
    lost = `the gdbstub connection failed: ${e instanceof Error ? e.message : e}`;
  }
  waiter?.();
  if (!lostPosted) self.postMessage({ ev: "lost", reason: lost });
}

/** Whether the main thread has heard of the loss already (a failed resume). */
let lostPosted = false;

/** `m` requests of at most 0x800 bytes until `length` bytes or the first error. */
async function readMemory(address: bigint, length: number): Promise<Uint8Array> {
  const read = new PipelinedRead(address, length, MAX_M, READ_PIPELINE);
  for (let frames = read.nextBatch(); frames; frames = read.nextBatch()) {
    lastFrame = undefined; // a resend of several packets is not possible: they are replayed whole
    await send(frames);
    while (read.pending > 0) read.take(await nextReply(false));
  }
  return read.bytes;
}

/**
 * The stopped CPU's `g`, asked for as soon as its stop reply arrives: gdb reads the registers of
 * the thread that stopped first at every stop, and QEMU makes that CPU the target of `g`
 * (gdb_set_stop_cpu). The round trip then overlaps the stop's way to gdb and back. Read after the
 * stop, so never stale; taken by the first request of the stop if that is `g`, else dropped.
 */
let prefetched: Promise<string> | undefined;

function prefetchRegisters(): void {
  const ready = chain.then(async () => {
    await sendPacket("g");
    return await nextReply(false);
  });
  // The reply also goes straight into the shared buffer's prefetch area, where the main thread
  // takes it without a request (no round trip through this thread): see lib/qemu_stub.ts.
  ready.then((reply) => {
    const n = Math.min(reply.length, prefetchData.length);
    for (let i = 0; i < n; i++) prefetchData[i] = reply.charCodeAt(i) & 0xff;
    Atomics.store(ctrl, 4, n);
    Atomics.store(ctrl, 3, PREFETCH_READY);
    Atomics.notify(ctrl, 3);
  }, () => {
    Atomics.store(ctrl, 3, PREFETCH_FAILED);
    Atomics.notify(ctrl, 3);
  });
  prefetched = ready;
  chain = ready.then(() => {}, () => {});
}

/** The prefetched `g` reply when `req` is that `g` request; anything else drops it first. */
async function takePrefetched(req: Request): Promise<string | undefined> {
  const p = prefetched;
  if (!p) return undefined;
  prefetched = undefined;
  const reply = await p.catch(() => undefined);
  return req.op === "packet" && req.text === "g" ? reply : undefined;
}

interface Request {
  op: "connect" | "packet" | "monitor" | "read" | "resume" | "interrupt" | "close";
  sab?: SharedArrayBuffer;
  host?: string;
  port?: number;
  text?: string;
  address?: string;
  length?: number;
}

async function handle(req: Request): Promise<void> {
  const early = await takePrefetched(req);
  if (early !== undefined) return answer(0, unescapeIfBinary("g", early));
  switch (req.op) {
    case "connect": {
      ctrl = new Int32Array(req.sab!, 0, 8);
      data = new Uint8Array(req.sab!, 32, ANSWER_BYTES);
      prefetchData = new Uint8Array(req.sab!, 32 + ANSWER_BYTES, PREFETCH_BYTES);
      try {
        conn = await Deno.connect({ hostname: req.host!, port: req.port! });
        conn.setNoDelay(true);
      } catch (e) {
        return answerText(1, e instanceof Error ? e.message : String(e));
      }
      readLoop();
      return answerText(0, "");
    }
    case "packet": {
      await sendPacket(req.text!);
      const reply = await nextReply(req.text!.startsWith("?"));
      return answer(0, unescapeIfBinary(req.text!, reply));
    }
    case "monitor": {
      // qRcmd: `O` + hex output packets, then OK (or an error).
      await sendPacket(req.text!);
      let out = "";
      for (;;) {
        const reply = await nextReply(false);
        if (reply.startsWith("O") && reply !== "OK") {
          out += latin1(hexBytes(reply.slice(1)) ?? new Uint8Array());
          continue;
        }
        return answerText(reply === "OK" ? 0 : 1, reply === "OK" ? out : reply);
      }
    }
    case "read":
      return answer(0, await readMemory(BigInt("0x" + req.address!), req.length!));
    case "resume":
      // The reply comes when the guest stops again: posted as a "stop" event. The main thread
      // does not wait for this one (no answer: it would be taken for the next request's); a
      // failed send is the loss of the link.
      running = true;
      try {
        await sendPacket(req.text!);
      } catch (e) {
        lost ??= `the gdbstub connection failed: ${e instanceof Error ? e.message : e}`;
        lostPosted = true;
        self.postMessage({ ev: "lost", reason: lost });
      }
      return;
    case "interrupt":
      await send(new Uint8Array([3]));
      return answerText(0, "");
    case "close":
      if (req.text) {
        await sendPacket(req.text);
        await Promise.race([nextReply(false).catch(() => ""), sleep(1000)]);
      }
      lost ??= "closed";
      try {
        conn?.close();
      } catch {
        // already closed
      }
      return answerText(0, "");
  }
}

function sleep(ms: number): Promise<string> {
  return new Promise((r) => setTimeout(() => r(""), ms));
}

/** qXfer replies carry binary-escaped data; everything else is plain text. */
function unescapeIfBinary(request: string, reply: string): Uint8Array {
  const bytes = new Uint8Array(reply.length);
  for (let i = 0; i < reply.length; i++) bytes[i] = reply.charCodeAt(i);
  return request.startsWith("qXfer") ? unescapeBinary(bytes) : bytes;
}

let chain = Promise.resolve();
self.onmessage = (e: MessageEvent<Request>) => {
  // One request at a time, in order (the main thread blocks on each anyway).
  chain = chain.then(() => handle(e.data)).catch((err) => {
    answerText(1, err instanceof Error ? err.message : String(err));
  });
};
