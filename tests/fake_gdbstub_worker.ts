/**
 * A scripted stand-in for QEMU's gdbstub, run in a worker so that a blocking client in the test's
 * main thread can talk to it. Edge cases only (a real guest is in tests/live_gdb_test.ts): it
 * answers a few packets the way QEMU 7.2 does, and misbehaves on request.
 *
 * Posts `{ port }` once listening. Packets:
 * - `qC` → `QCp01.01`; `g` → a register block that counts the `g`s received; `?` → a stop;
 * - `vCont;s…`/`vCont;c…` → a stop reply after 5 ms (`c`: only after 0x03 arrives); `vCont;s:p01.02`
 *   and `vCont;c:p01.02` → a stop reply at once (a step, or a breakpoint just ahead, that QEMU
 *   answers while the client still waits for it);
 * - `mADDR,LEN` → LEN bytes, each the low byte of its address; addresses ≥ 0x10000 → `E14`;
 * - `qUnsolicited` → a stop reply first, then `OK`;
 * - `qStopLater` → `OK`, and 20 ms later a stop reply nobody asked for;
 * - `qNack` → `-` the first time (the client must send it again), then `OK`;
 * - `qBadSum` → `OK` with a wrong checksum (the client must ask again with `-`), then right;
 * - `qSilent` → nothing; `qClose` → the connection is closed;
 * - `Z0,ADDR,1`/`z0,ADDR,1` → `OK`, as QEMU's TCG does, except `E22` for ADDR `dead` and for a
 *   `z0` of a breakpoint not inserted;
 * - `qRcmd,HEX` of `info kvm` → the monitor's output (`O` and hex), then `OK`;
 * - `qLog` → hex of the JSON list of packets received so far, the count of `+` acks, and for each
 *   packet the number of the read (of the connection) it came in.
 */

/// <reference lib="deno.worker" />

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
self.postMessage({ port: (listener.addr as Deno.NetAddr).port });

function frame(text: string, badChecksum = false): Uint8Array {
  let sum = 0;
  for (let i = 0; i < text.length; i++) sum += text.charCodeAt(i);
  const cs = ((sum + (badChecksum ? 1 : 0)) & 0xff).toString(16).padStart(2, "0");
  return new TextEncoder().encode(`$${text}#${cs}`);
}

function hex(text: string): string {
  return [...new TextEncoder().encode(text)].map((b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

for await (const conn of listener) {
  // As QEMU does: its ack and reply go as two writes, which Nagle would hold 40 ms apart.
  conn.setNoDelay(true);
  const received: string[] = [];
  const reads: number[] = [];
  let readCount = 0;
  const breakpoints = new Set<string>();
  let acks = 0;
  let gCount = 0;
  let nacked = false;
  let badSumSent = false;
  let running: "no" | "step" | "continue" = "no";
  let buf = "";
  const send = (bytes: Uint8Array) => conn.write(bytes).catch(() => {});
  const reply = (text: string) => send(frame(text));
  const stopReply = "T05thread:p01.01;";
  const data = new Uint8Array(65536);
  try {
    for (;;) {
      const n = await conn.read(data);
      if (n === null) break;
      readCount++;
      buf += String.fromCharCode(...data.subarray(0, n));
      for (;;) {
        if (buf[0] === "+") {
          acks++;
          buf = buf.slice(1);
          continue;
        }
        if (buf[0] === "-") {
          buf = buf.slice(1);
          if (badSumSent) await reply("OK");
          continue;
        }
        if (buf[0] === "\x03") {
          buf = buf.slice(1);
          if (running !== "no") {
            running = "no";
            await reply("T02thread:p01.01;");
          }
          continue;
        }
        const end = buf.indexOf("#");
        if (buf[0] !== "$" || end < 0 || buf.length < end + 3) break;
        const text = buf.slice(1, end);
        buf = buf.slice(end + 3);
        received.push(text);
        reads.push(readCount);
        if (text === "qNack" && !nacked) {
          nacked = true;
          await send(new TextEncoder().encode("-"));
          continue;
        }
        await send(new TextEncoder().encode("+"));
        if (text === "qC") await reply("QCp01.01");
        else if (text === "g") await reply(`${(++gCount).toString(16).padStart(2, "0")}00ff00`);
        else if (text === "?") await reply(stopReply);
        else if (text === "vCont;s:p01.02" || text === "vCont;c:p01.02") await reply(stopReply);
        else if (text.startsWith("vCont;s")) {
          running = "step";
          setTimeout(() => {
            if (running === "step") {
              running = "no";
              reply(stopReply);
            }
          }, 5);
        } else if (text.startsWith("vCont;c")) running = "continue";
        else if (text.startsWith("m")) {
          const [a, l] = text.slice(1).split(",").map((x) => parseInt(x, 16));
          if (a >= 0x10000) await reply("E14");
          else {
            let out = "";
            for (let i = 0; i < l; i++) out += ((a + i) & 0xff).toString(16).padStart(2, "0");
            await reply(out);
          }
        } else if (text === "qUnsolicited") {
          await reply("T02thread:p01.02;");
          await reply("OK");
        } else if (text === "qStopLater") {
          // As QEMU does when its monitor pauses a guest it had resumed: a stop nobody asked for.
          await reply("OK");
          setTimeout(() => reply("T02thread:p01.01;"), 20);
        } else if (text === "qNack") await reply("OK");
        else if (text === "qBadSum") {
          badSumSent = true;
          await send(frame("OK", true));
        } else if (text === "qSilent") {
          // nothing
        } else if (text === "qClose") {
          conn.close();
          break;
        } else if (/^[Zz]0,/.test(text)) {
          const where = text.slice(3);
          if (where.startsWith("dead,") || (text[0] === "z" && !breakpoints.has(where))) {
            await reply("E22");
          } else {
            if (text[0] === "Z") breakpoints.add(where);
            else breakpoints.delete(where);
            await reply("OK");
          }
        } else if (text === `qRcmd,${hex("info kvm")}`) {
          await reply(`O${hex("kvm support: disabled\r\n")}`);
          await reply("OK");
        } else if (text === "qLog") await reply(hex(JSON.stringify({ received, acks, reads })));
        else await reply("");
      }
    }
  } catch {
    // the client went away
  }
  try {
    conn.close();
  } catch {
    // closed already
  }
}
