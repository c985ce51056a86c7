/*
 * Differential fuzzer for lzo1x.c, built natively (see difffuzz.sh): damages
 * real compressed pages at random (cuts, byte flips, scattered noise, short
 * output buffers) and checks that our decoder and liblzo2's
 * lzo1x_decompress_safe agree on every input: both fail, or both produce the
 * same bytes. Built with AddressSanitizer and UBSan, it also catches any
 * out-of-bounds access or undefined behaviour in ours.
 *
 * usage: lzo1x_difffuzz VECTORS.bin ITERATIONS [SEED]
 * VECTORS.bin holds records of u32le compressed length, u32le page size,
 * bytes (the format of testdata/codecs/*.bin).
 */

#include <lzo/lzo1x.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* lzo1x.c compiled with -Dlzo1x_decompress=ours_lzo1x_decompress. */
int ours_lzo1x_decompress(const unsigned char *src, unsigned src_len, unsigned char *dst,
                          unsigned dst_cap);

static unsigned long long state = 88172645463325252ull;

static unsigned next(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return (unsigned)(state >> 32);
}

#define MAX_RECORDS 8192

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s VECTORS.bin ITERATIONS [SEED]\n", argv[0]);
    return 2;
  }
  long iterations = atol(argv[2]);
  if (argc > 3) state ^= strtoull(argv[3], NULL, 0);

  FILE *f = fopen(argv[1], "rb");
  if (!f) return perror(argv[1]), 2;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *file = malloc(size);
  if (fread(file, 1, size, f) != (size_t)size) return perror("read"), 2;
  fclose(f);

  static const unsigned char *rec[MAX_RECORDS];
  static unsigned rec_len[MAX_RECORDS], rec_page[MAX_RECORDS];
  int records = 0;
  for (long off = 0; off + 8 <= size && records < MAX_RECORDS;) {
    unsigned len, page;
    memcpy(&len, file + off, 4);
    memcpy(&page, file + off + 4, 4);
    if (off + 8 + (long)len > size) break;
    rec[records] = file + off + 8;
    rec_len[records] = len;
    rec_page[records] = page;
    records++;
    off += 8 + len;
  }
  if (records == 0 || lzo_init() != LZO_E_OK) return 2;

  long both_ok = 0, both_fail = 0, mismatches = 0;
  for (long it = 0; it < iterations; it++) {
    int k = next() % records;
    unsigned len = rec_len[k], cap = rec_page[k];
    /* Exact-size heap buffers, so the sanitizer sees any overrun. */
    unsigned char *in = malloc(len ? len : 1);
    memcpy(in, rec[k], len);
    switch (next() % 4) {
    case 0: /* cut */
      len = next() % (len + 1);
      break;
    case 1:
    case 2: /* a few flipped bytes */
      for (int j = 1 + next() % 4; j > 0 && len; j--) in[next() % len] ^= 1 + next() % 255;
      break;
    default: /* scattered noise */
      for (unsigned j = 0; j < len; j++)
        if (next() % 64 == 0) in[j] = next();
    }
    if (next() % 8 == 0) cap = 1 + next() % cap; /* output space too small */

    unsigned char *a = malloc(cap), *b = malloc(cap);
    int ra = ours_lzo1x_decompress(in, len, a, cap);
    lzo_uint blen = cap;
    int rb = lzo1x_decompress_safe(in, len, b, &blen, NULL);
    if (ra >= 0 && rb == LZO_E_OK && (lzo_uint)ra == blen && memcmp(a, b, blen) == 0) {
      both_ok++;
    } else if (ra < 0 && rb != LZO_E_OK) {
      both_fail++;
    } else {
      if (mismatches++ == 0) {
        FILE *o = fopen("lzo1x_mismatch.bin", "wb");
        fwrite(in, 1, len, o);
        fclose(o);
      }
      if (mismatches <= 10)
        fprintf(stderr, "mismatch: record %d, %u bytes, space %u: ours %d, liblzo2 %d (%lu bytes)\n",
                k, len, cap, ra, rb, (unsigned long)blen);
    }
    free(in);
    free(a);
    free(b);
  }
  printf("%ld cases: %ld decoded identically, %ld rejected by both, %ld mismatches\n", iterations,
         both_ok, both_fail, mismatches);
  return mismatches != 0;
}
