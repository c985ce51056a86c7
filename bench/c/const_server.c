/*
 * gdb's own ceiling for bulk reads: a minimal RSP server that answers every
 * `m` at once with a constant byte pattern (no run-length encoding, no memory
 * behind it), so the time gdb takes to `dump binary memory` through it is the
 * time gdb itself needs to ask, receive and hex-decode the data.
 *
 *   const_server --port N     TCP on 127.0.0.1 (0: any free port), one client,
 *                             TCP_NODELAY; prints "listening on 127.0.0.1:PORT"
 *   const_server --stdio      stdin/stdout, for gdb's `target remote | ...`
 *
 * It advertises the same PacketSize as kdump-gdbserver (0x20000, so gdb asks
 * 64 KiB per `m`) and offers no-ack mode, as kdump-gdbserver does.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PACKET_SIZE 0x20000
#define MAX_READ (PACKET_SIZE / 2)

static int in_fd = 0, out_fd = 1;
static int no_ack = 0;
static unsigned char inbuf[1 << 16];
static size_t in_len = 0, in_pos = 0;
static char payload[PACKET_SIZE + 1];
/* "$" + hex of MAX_READ bytes + "#xx" */
static char reply[2 * MAX_READ + 8];
/* Hex of the pattern, and its running checksum, precomputed once. */
static char pattern_hex[2 * MAX_READ];
static unsigned pattern_sum[2 * MAX_READ + 1];

static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(out_fd, p, n);
    if (w <= 0) exit(0);
    p += w;
    n -= (size_t)w;
  }
}

/* Next input byte, or -1 at end of input. */
static int next_byte(void) {
  if (in_pos == in_len) {
    ssize_t n = read(in_fd, inbuf, sizeof inbuf);
    if (n <= 0) return -1;
    in_len = (size_t)n;
    in_pos = 0;
  }
  return inbuf[in_pos++];
}

static void send_packet(const char *body, size_t n) {
  static const char hexd[] = "0123456789abcdef";
  unsigned sum = 0;
  reply[0] = '$';
  memcpy(reply + 1, body, n);
  for (size_t i = 0; i < n; i++) sum += (unsigned char)body[i];
  reply[n + 1] = '#';
  reply[n + 2] = hexd[(sum >> 4) & 15];
  reply[n + 3] = hexd[sum & 15];
  write_all(reply, n + 4);
}

static void send_text(const char *s) { send_packet(s, strlen(s)); }

/* `m ADDR,LEN`: LEN bytes of the pattern, hex, built from the precomputed tables. */
static void send_memory(const char *args) {
  const char *comma = strchr(args, ',');
  if (!comma) {
    send_text("E01");
    return;
  }
  size_t len = strtoul(comma + 1, NULL, 16);
  if (len > MAX_READ) len = MAX_READ;
  static const char hexd[] = "0123456789abcdef";
  size_t n = 2 * len;
  unsigned sum = pattern_sum[n];
  reply[0] = '$';
  memcpy(reply + 1, pattern_hex, n);
  reply[n + 1] = '#';
  reply[n + 2] = hexd[(sum >> 4) & 15];
  reply[n + 3] = hexd[sum & 15];
  write_all(reply, n + 4);
}

static void handle(const char *p) {
  if (strncmp(p, "qSupported", 10) == 0) {
    char text[64];
    snprintf(text, sizeof text, "PacketSize=%x;QStartNoAckMode+", PACKET_SIZE);
    send_text(text);
  } else if (strcmp(p, "QStartNoAckMode") == 0) {
    send_text("OK");
    no_ack = 1;
  } else if (p[0] == 'm') {
    send_memory(p + 1);
  } else if (strcmp(p, "?") == 0) {
    send_text("S05");
  } else if (strcmp(p, "g") == 0) {
    /* x86_64 without a target description: 17 eight-byte and 7 four-byte registers. */
    static char regs[2 * 164 + 1];
    memset(regs, '0', 2 * 164);
    send_packet(regs, 2 * 164);
  } else if (p[0] == 'H') {
    send_text("OK");
  } else if (strcmp(p, "qAttached") == 0) {
    send_text("1");
  } else if (strcmp(p, "qfThreadInfo") == 0) {
    send_text("m1");
  } else if (strcmp(p, "qsThreadInfo") == 0) {
    send_text("l");
  } else if (strcmp(p, "qC") == 0) {
    send_text("QC1");
  } else if (p[0] == 'D' || p[0] == 'k' || strncmp(p, "vKill", 5) == 0) {
    send_text("OK");
    exit(0);
  } else {
    send_text("");
  }
}

static void serve(void) {
  for (;;) {
    int c;
    do {
      c = next_byte();
      if (c < 0) return;
    } while (c != '$'); /* acks and anything else between packets */
    size_t n = 0;
    while ((c = next_byte()) >= 0 && c != '#') {
      if (n < PACKET_SIZE) payload[n++] = (char)c;
    }
    if (c < 0 || next_byte() < 0 || next_byte() < 0) return; /* checksum: trusted */
    payload[n] = 0;
    if (!no_ack) write_all("+", 1);
    handle(payload);
  }
}

int main(int argc, char **argv) {
  for (size_t i = 0; i < MAX_READ; i++) {
    static const char hexd[] = "0123456789abcdef";
    unsigned char b = (unsigned char)(i * 7 + 1); /* no runs for RLE to find */
    pattern_hex[2 * i] = hexd[b >> 4];
    pattern_hex[2 * i + 1] = hexd[b & 15];
  }
  pattern_sum[0] = 0;
  for (size_t i = 0; i < 2 * MAX_READ; i++) {
    pattern_sum[i + 1] = pattern_sum[i] + (unsigned char)pattern_hex[i];
  }
  if (argc >= 2 && strcmp(argv[1], "--stdio") == 0) {
    serve();
    return 0;
  }
  if (argc < 3 || strcmp(argv[1], "--port") != 0) {
    fprintf(stderr, "usage: %s --port N | --stdio\n", argv[0]);
    return 2;
  }
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)atoi(argv[2]));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1) != 0) {
    perror("bind/listen");
    return 1;
  }
  socklen_t alen = sizeof a;
  getsockname(ls, (struct sockaddr *)&a, &alen);
  fprintf(stderr, "listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
  fflush(stderr);
  int s = accept(ls, NULL, NULL);
  if (s < 0) return 1;
  close(ls);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  in_fd = out_fd = s;
  serve();
  return 0;
}
