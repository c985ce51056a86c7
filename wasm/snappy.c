/*
 * Snappy (raw block format) decompressor for kdump pages, built as a
 * freestanding wasm32 module (see build.sh). Written from the format
 * description; like lzo1x.c, every read of the input and every write of the
 * output is checked against the buffer ends, and every step of the loop
 * consumes input, so damaged input can only produce an error code.
 *
 * Block format:
 *   preamble   uncompressed length, little-endian base-128 varint (<= 5 bytes)
 *   elements   tag byte; its low two bits give the kind:
 *     00 literal  length - 1 = tag >> 2 when below 60; 60..63: the length - 1
 *                 follows in 1..4 little-endian bytes; then the literal bytes
 *     01 copy     length 4 + ((tag >> 2) & 7), offset ((tag >> 5) << 8) | byte
 *     10 copy     length 1 + (tag >> 2), offset little-endian 16 bits
 *     11 copy     length 1 + (tag >> 2), offset little-endian 32 bits
 *   A copy repeats `length` bytes from `offset` bytes back in the output
 *   (overlapping when the offset is shorter than the length); an offset of 0
 *   or beyond the output produced so far is damage.
 */

typedef unsigned char u8;
typedef unsigned int u32;

/* Result codes; a non-negative result is the number of bytes produced. */
#define SNAPPY_E_INPUT_OVERRUN (-1)  /* the block ends inside an element */
#define SNAPPY_E_OUTPUT_OVERRUN (-2) /* it decodes to more than dst_cap bytes */
#define SNAPPY_E_BAD_OFFSET (-3)     /* a copy reaches before the output start */
#define SNAPPY_E_BAD_PREAMBLE (-4)   /* damaged preamble */
#define SNAPPY_E_LENGTH (-5)         /* output length differs from the preamble */

__attribute__((export_name("snappy_decompress"))) int
snappy_decompress(const u8 *src, u32 src_len, u8 *dst, u32 dst_cap) {
  const u8 *ip = src;
  const u8 *const ip_end = src + src_len;
  u8 *op = dst;
  u8 *const op_end = dst + dst_cap;

  /* Preamble: the uncompressed length. */
  u32 expected = 0;
  for (u32 shift = 0;; shift += 7) {
    if (ip >= ip_end || shift > 28) return SNAPPY_E_BAD_PREAMBLE;
    u32 b = *ip++;
    if (shift == 28 && b > 0x0f) return SNAPPY_E_BAD_PREAMBLE;
    expected |= (b & 0x7f) << shift;
    if (b < 0x80) break;
  }
  if (expected > dst_cap) return SNAPPY_E_OUTPUT_OVERRUN;

  while (ip < ip_end) {
    u32 tag = *ip++;
    u32 kind = tag & 3;
    if (kind == 0) {
      u32 len = tag >> 2;
      if (len >= 60) {
        u32 extra = len - 59; /* 1..4 bytes of length follow */
        if ((u32)(ip_end - ip) < extra) return SNAPPY_E_INPUT_OVERRUN;
        len = 0;
        for (u32 i = 0; i < extra; i++) len |= (u32)ip[i] << (8 * i);
        ip += extra;
        if (len == 0xffffffffu) return SNAPPY_E_OUTPUT_OVERRUN;
      }
      len += 1;
      if ((u32)(ip_end - ip) < len) return SNAPPY_E_INPUT_OVERRUN;
      if ((u32)(op_end - op) < len) return SNAPPY_E_OUTPUT_OVERRUN;
      __builtin_memcpy(op, ip, len);
      op += len;
      ip += len;
      continue;
    }
    u32 len, offset;
    if (kind == 1) {
      if (ip >= ip_end) return SNAPPY_E_INPUT_OVERRUN;
      len = 4 + ((tag >> 2) & 7);
      offset = ((tag >> 5) << 8) | *ip++;
    } else if (kind == 2) {
      if (ip_end - ip < 2) return SNAPPY_E_INPUT_OVERRUN;
      len = 1 + (tag >> 2);
      offset = (u32)ip[0] | (u32)ip[1] << 8;
      ip += 2;
    } else {
      if (ip_end - ip < 4) return SNAPPY_E_INPUT_OVERRUN;
      len = 1 + (tag >> 2);
      offset = (u32)ip[0] | (u32)ip[1] << 8 | (u32)ip[2] << 16 | (u32)ip[3] << 24;
      ip += 4;
    }
    if (offset == 0 || offset > (u32)(op - dst)) return SNAPPY_E_BAD_OFFSET;
    if ((u32)(op_end - op) < len) return SNAPPY_E_OUTPUT_OVERRUN;
    const u8 *from = op - offset;
    if (offset >= len) {
      __builtin_memcpy(op, from, len);
      op += len;
    } else {
      for (u32 i = 0; i < len; i++) *op++ = from[i]; /* overlapping: a repeating pattern */
    }
  }
  if ((u32)(op - dst) != expected) return SNAPPY_E_LENGTH;
  return (int)(op - dst);
}
