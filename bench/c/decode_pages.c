/*
 * Single-core native decode speed of the very pages a benchmark range holds:
 * loads the compressed pages of pfns [FIRST, FIRST+COUNT) from a compressed
 * kdump file into memory, then decodes them all again and again with the
 * system's zlib (uncompress), LZO (lzo1x_decompress_safe), snappy
 * (snappy_uncompress) or zstd (ZSTD_decompress) for at least half a second.
 * Pages stored raw are counted but not timed. No I/O, no cache, no
 * translation: the floor under any reader of the file.
 *
 *   decode_pages KDUMP FIRST_PFN COUNT
 *
 * Prints one JSON object: pages per codec, µs per compressed page, MB/s of
 * decoded output.
 */
#include <lzo/lzo1x.h>
#include <snappy-c.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
#include <zstd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void read_at(FILE *f, void *buf, size_t n, uint64_t off) {
  if (fseeko(f, (off_t)off, SEEK_SET) != 0 || fread(buf, 1, n, f) != n) {
    fprintf(stderr, "short read at %llu\n", (unsigned long long)off);
    exit(1);
  }
}

struct page {
  unsigned char *data;
  uint32_t size, flags;
};

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s KDUMP FIRST_PFN COUNT\n", argv[0]);
    return 2;
  }
  FILE *f = fopen(argv[1], "rb");
  if (!f) {
    perror(argv[1]);
    return 1;
  }
  uint64_t first = strtoull(argv[2], NULL, 0), count = strtoull(argv[3], NULL, 0);
  unsigned char h[464];
  read_at(f, h, sizeof h, 0);
  int32_t block_size, sub_hdr_size;
  uint32_t bitmap_blocks;
  memcpy(&block_size, h + 428, 4);
  memcpy(&sub_hdr_size, h + 432, 4);
  memcpy(&bitmap_blocks, h + 436, 4);
  uint64_t bitmap_off = (uint64_t)(1 + sub_hdr_size) * block_size;
  uint64_t half = (uint64_t)bitmap_blocks * block_size / 2;
  unsigned char *bitmap2 = malloc(half);
  read_at(f, bitmap2, half, bitmap_off + half);
  uint64_t desc_off = bitmap_off + 2 * half;

  struct page *pages = calloc(count, sizeof *pages);
  size_t n = 0;
  uint64_t rank = 0;
  for (uint64_t pfn = 0; pfn < first + count && pfn / 8 < half; pfn++) {
    int present = (bitmap2[pfn / 8] >> (pfn % 8)) & 1;
    if (!present) continue;
    if (pfn >= first) {
      unsigned char d[24];
      read_at(f, d, 24, desc_off + rank * 24);
      int64_t off;
      memcpy(&off, d, 8);
      memcpy(&pages[n].size, d + 8, 4);
      memcpy(&pages[n].flags, d + 12, 4);
      pages[n].data = malloc(pages[n].size);
      read_at(f, pages[n].data, pages[n].size, (uint64_t)off);
      n++;
    }
    rank++;
  }
  if (lzo_init() != LZO_E_OK) return 1;

  unsigned char *out = malloc(block_size);
  size_t by_codec[5] = {0}; /* raw, zlib, lzo, snappy, zstd */
  for (size_t i = 0; i < n; i++) {
    uint32_t fl = pages[i].flags;
    by_codec[fl == 1 ? 1 : fl == 2 ? 2 : fl == 4 ? 3 : fl == 0x20 ? 4 : 0]++;
  }
  double t0 = now(), t1;
  long passes = 0;
  size_t bad = 0;
  do {
    for (size_t i = 0; i < n; i++) {
      struct page *p = &pages[i];
      if (p->flags == 1) {
        uLongf len = block_size;
        if (uncompress(out, &len, p->data, p->size) != Z_OK || len != (uLongf)block_size) bad++;
      } else if (p->flags == 2) {
        lzo_uint len = block_size;
        if (lzo1x_decompress_safe(p->data, p->size, out, &len, NULL) != LZO_E_OK) bad++;
      } else if (p->flags == 4) {
        size_t len = block_size;
        if (snappy_uncompress((const char *)p->data, p->size, (char *)out, &len) != SNAPPY_OK ||
            len != (size_t)block_size)
          bad++;
      } else if (p->flags == 0x20) {
        if (ZSTD_decompress(out, block_size, p->data, p->size) != (size_t)block_size) bad++;
      }
    }
    passes++;
    t1 = now();
  } while (t1 - t0 < 0.5);
  size_t timed = n - by_codec[0];
  double per_page = (t1 - t0) / (passes * (double)(timed ? timed : 1));
  printf("{\"reader\":\"native decode\",\"pages\":%zu,\"raw\":%zu,\"zlib\":%zu,\"lzo\":%zu,"
         "\"snappy\":%zu,\"zstd\":%zu,\"passes\":%ld,\"us_per_page\":%.3f,\"MBps\":%.1f,\"errors\":%zu}\n",
         n, by_codec[0], by_codec[1], by_codec[2], by_codec[3], by_codec[4], passes, per_page * 1e6,
         block_size / per_page / 1e6, bad / passes);
  return 0;
}
