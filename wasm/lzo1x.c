/*
 * LZO1X decompressor for kdump pages, built as a freestanding wasm32 module
 * (see build.sh). Written from the description of the LZO1X instruction
 * stream; every read of the input and every write of the output is checked
 * against the buffer ends, so damaged input can only produce an error code,
 * never an access outside [src, src+src_len) or [dst, dst+dst_cap), and every
 * loop consumes input or produces output, so no input can make it spin.
 *
 * Stream summary (LZO1X, as written by lzo1x_1_compress and lzo1x_999):
 *   first byte 18..255     copy (byte - 17) literals
 *   0000LLLL  state 0      copy 3 + L literals (L = 0: 18 + extended length)
 *   0000DDSS  state 1..3   2-byte match, distance 1 + D + (next byte << 2)
 *   0000DDSS  state 4      3-byte match, distance 2049 + D + (next byte << 2)
 *   0001HLLL  + LE16       2 + L bytes at distance 16384 + (H << 14) + (LE16 >> 2);
 *                          distance 16384 exactly marks the end of the stream
 *   001LLLLL  + LE16       2 + L bytes at distance 1 + (LE16 >> 2)
 *   01LDDDSS  + byte       3 + L bytes at distance 1 + D + (byte << 3)
 *   1LLDDDSS  + byte       5 + L bytes at distance 1 + D + (byte << 3)
 * A zero length field is extended: each following zero byte adds 255, the
 * first non-zero byte is added as is. After a match, SS (the low two bits of
 * the instruction, or of the LE16 operand) literals follow, and "state" is
 * that count; after a literal run of 4 or more, state is 4.
 */

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

/* Result codes; a non-negative result is the number of bytes produced. */
#define LZO_E_INPUT_OVERRUN (-1)      /* the stream ends inside an instruction */
#define LZO_E_OUTPUT_OVERRUN (-2)     /* it decodes to more than dst_cap bytes */
#define LZO_E_LOOKBEHIND_OVERRUN (-3) /* a match reaches before the output start */
#define LZO_E_INPUT_NOT_CONSUMED (-4) /* bytes follow the end-of-stream marker */

static inline u64 load64(const u8 *p) {
  u64 v;
  __builtin_memcpy(&v, p, 8);
  return v;
}

static inline void store64(u8 *p, u64 v) { __builtin_memcpy(p, &v, 8); }

/*
 * Reads the extension of a zero length field: returns base + 255 per zero
 * byte + the first non-zero byte, or 0 when the input ends first. Once the
 * length exceeds `limit` (the output space left) it stops growing, so it
 * cannot overflow; such a length still fails the output check afterwards,
 * unless it belongs to the end-of-stream marker, whose length is ignored
 * (as liblzo2 ignores it).
 */
static inline u32 extended_length(const u8 **ipp, const u8 *ie, u32 base, u32 limit) {
  const u8 *ip = *ipp;
  u32 len = base;
  for (;;) {
    if (ip >= ie) return 0;
    u8 b = *ip++;
    if (b != 0) {
      len += b;
      break;
    }
    if (len <= limit) len += 255;
  }
  *ipp = ip;
  return len;
}

__attribute__((export_name("lzo1x_decompress"))) int
lzo1x_decompress(const u8 *src, u32 src_len, u8 *dst, u32 dst_cap) {
  const u8 *ip = src;
  const u8 *const ie = src + src_len;
  u8 *op = dst;
  u8 *const oe = dst + dst_cap;
  u32 state = 0; /* literals copied by the previous instruction, 4 = "4 or more" */
  u32 t;

  if (ip >= ie) return LZO_E_INPUT_OVERRUN;
  if (*ip > 17) {
    /* The first byte may be a plain literal count: there is nothing to match yet. */
    t = (u32)*ip++ - 17;
    goto copy_literals;
  }

  for (;;) {
    u32 len, dist;
    if (ip >= ie) return LZO_E_INPUT_OVERRUN;
    t = *ip++;

    if (t < 16) {
      if (state == 0) {
        /* Literal run of 4 or more bytes. */
        if (t == 0) {
          t = extended_length(&ip, ie, 15, (u32)(oe - op));
          if (t == 0) return LZO_E_INPUT_OVERRUN;
        }
        t += 3;
        goto copy_literals;
      }
      if (ip >= ie) return LZO_E_INPUT_OVERRUN;
      dist = 1 + (t >> 2) + ((u32)*ip++ << 2);
      if (state == 4) {
        dist += 2048;
        len = 3;
      } else {
        len = 2;
      }
      /* The literal count is the low bits of the instruction byte. */
    } else if (t < 64) {
      u32 v;
      if (t < 32) {
        len = t & 7;
        if (len == 0) {
          len = extended_length(&ip, ie, 7, (u32)(oe - op));
          if (len == 0) return LZO_E_INPUT_OVERRUN;
        }
      } else {
        len = t & 31;
        if (len == 0) {
          len = extended_length(&ip, ie, 31, (u32)(oe - op));
          if (len == 0) return LZO_E_INPUT_OVERRUN;
        }
      }
      len += 2;
      if (ie - ip < 2) return LZO_E_INPUT_OVERRUN;
      v = (u32)ip[0] | ((u32)ip[1] << 8);
      ip += 2;
      if (t < 32) {
        dist = ((t & 8) << 11) + (v >> 2);
        if (dist == 0) {
          /* End of stream: it must be the last thing in the input. */
          if (ip != ie) return LZO_E_INPUT_NOT_CONSUMED;
          return (int)(op - dst);
        }
        dist += 16384;
      } else {
        dist = (v >> 2) + 1;
      }
      t = v; /* the literal count is the low bits of the LE16 operand */
    } else {
      if (ip >= ie) return LZO_E_INPUT_OVERRUN;
      dist = 1 + ((t >> 2) & 7) + ((u32)*ip++ << 3);
      len = (t >> 5) + 1; /* 01L.....: 3 + L; 1LL.....: 5 + LL */
    }

    /* Copy the match. */
    if (dist > (u32)(op - dst)) return LZO_E_LOOKBEHIND_OVERRUN;
    if (len > (u32)(oe - op)) return LZO_E_OUTPUT_OVERRUN;
    {
      const u8 *m = op - dist;
      if (dist >= 8 && (u32)(oe - op) >= len + 8) {
        /* Source and destination 8-byte chunks never overlap; the final
         * chunk may spill up to 7 bytes past the match, inside dst. */
        u8 *end = op + len;
        do {
          store64(op, load64(m));
          op += 8;
          m += 8;
        } while (op < end);
        op = end;
      } else {
        /* Short distance: bytes written are re-read (run-length repeats). */
        do {
          *op++ = *m++;
        } while (--len);
      }
    }

    t &= 3;
    if (t == 0) {
      state = 0;
      continue;
    }
    /* 1..3 literals follow the match; then copy_literals sets state = t. */

  copy_literals:
    if (t > (u32)(ie - ip)) return LZO_E_INPUT_OVERRUN;
    if (t > (u32)(oe - op)) return LZO_E_OUTPUT_OVERRUN;
    if (t <= 16 && (u32)(ie - ip) >= 16 && (u32)(oe - op) >= 16) {
      store64(op, load64(ip));
      store64(op + 8, load64(ip + 8));
    } else {
      __builtin_memcpy(op, ip, t);
    }
    op += t;
    ip += t;
    state = t < 4 ? t : 4;
  }
}
