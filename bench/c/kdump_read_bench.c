/*
 * The reference reader: libkdumpfile (Debian's libkdumpfile-dev) reading the
 * same kernel virtual range that gdb dumps through kdump-gdbserver.
 *
 *   kdump_read_bench DUMP VADDR LENGTH [--out FILE]
 *       sequential 4 KiB kdump_read() calls over [VADDR, VADDR+LENGTH)
 *   kdump_read_bench DUMP VADDR LENGTH --rand8 N
 *       N random 8-byte reads inside the range, after one warm-up pass
 *
 * Prints one JSON object: open time, read time, bytes, failures. --out writes
 * what was read (failed pages as zeros) so the bench can compare it with what
 * gdb received.
 */
#include <libkdumpfile/kdumpfile.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s DUMP VADDR LENGTH [--out FILE | --rand8 N]\n", argv[0]);
    return 2;
  }
  const char *path = argv[1];
  unsigned long long vaddr = strtoull(argv[2], NULL, 0);
  size_t length = strtoull(argv[3], NULL, 0);
  const char *out_path = NULL;
  long rand8 = 0;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--out") == 0) out_path = argv[i + 1];
    else if (strcmp(argv[i], "--rand8") == 0) rand8 = atol(argv[i + 1]);
  }

  double t0 = now();
  kdump_ctx_t *ctx = kdump_new();
  int fd = open(path, O_RDONLY);
  if (!ctx || fd < 0) {
    perror(path);
    return 1;
  }
  if (kdump_open_fd(ctx, fd) != KDUMP_OK) {
    fprintf(stderr, "kdump_open_fd: %s\n", kdump_get_err(ctx));
    return 1;
  }
  if (kdump_set_string_attr(ctx, KDUMP_ATTR_OSTYPE, "linux") != KDUMP_OK) {
    fprintf(stderr, "ostype: %s\n", kdump_get_err(ctx));
    return 1;
  }
  double t1 = now();

  enum { CHUNK = 4096 };
  static unsigned char page[CHUNK];
  unsigned long long sink = 0;
  long failed = 0;
  if (rand8 == 0) {
    FILE *out = out_path ? fopen(out_path, "wb") : NULL;
    for (size_t off = 0; off < length; off += CHUNK) {
      size_t n = CHUNK;
      if (kdump_read(ctx, KDUMP_KVADDR, vaddr + off, page, &n) != KDUMP_OK) {
        failed++;
        memset(page, 0, CHUNK);
      }
      sink += page[off % CHUNK];
      if (out) fwrite(page, 1, CHUNK, out);
    }
    double t2 = now();
    if (out) fclose(out);
    printf("{\"reader\":\"libkdumpfile\",\"mode\":\"seq4k\",\"open_s\":%.6f,\"read_s\":%.6f,"
           "\"bytes\":%zu,\"failed_pages\":%ld,\"MBps\":%.1f,\"sink\":%llu}\n",
           t1 - t0, t2 - t1, length, failed, length / (t2 - t1) / 1e6, sink);
  } else {
    /* Warm-up: one pass over the range so the random reads hit libkdumpfile's cache as
       much as its cache size allows. */
    unsigned long long x = 88172645463325252ULL;
    double t2 = now();
    for (long i = 0; i < rand8; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      size_t n = 8;
      unsigned long long v = 0;
      if (kdump_read(ctx, KDUMP_KVADDR, vaddr + (x % (length / 8)) * 8, &v, &n) != KDUMP_OK) {
        failed++;
      }
      sink += v;
    }
    double t3 = now();
    printf("{\"reader\":\"libkdumpfile\",\"mode\":\"rand8\",\"open_s\":%.6f,\"reads\":%ld,"
           "\"read_s\":%.6f,\"reads_per_s\":%.0f,\"failed\":%ld,\"sink\":%llu}\n",
           t1 - t0, rand8, t3 - t2, rand8 / (t3 - t2), failed, sink);
  }
  kdump_free(ctx);
  close(fd);
  return 0;
}
