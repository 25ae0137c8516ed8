// FarmHash Fingerprint64 (farmhashna::Hash64), written from the published algorithm.
//
// Fingerprint64 is the portable, forever-fixed member of the FarmHash family: TF's
// Fingerprint64 (behind tf.strings.to_hash_bucket_fast) and pyfarmhash.fingerprint64 are
// both it. tests/workloads/test_criteo_reader.py compares this against pyfarmhash for every
// length 0..100 (all four length paths) and a few longer strings; the Python twin is
// kernels/criteo_tsv.py::fingerprint64.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "farmhash.h: fetch64/fetch32 assume a little-endian host (FarmHash is defined on LE)"
#endif

namespace algoperf::farmhash {

inline constexpr uint64_t k0 = 0xc3a5c85c97cb3127ULL;
inline constexpr uint64_t k1 = 0xb492b66fbe98f273ULL;
inline constexpr uint64_t k2 = 0x9ae16a3b2f90404fULL;

inline uint64_t fetch64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline uint64_t fetch32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline uint64_t rotate(uint64_t v, int shift) {
  return shift == 0 ? v : ((v >> shift) | (v << (64 - shift)));
}
inline uint64_t shift_mix(uint64_t v) { return v ^ (v >> 47); }

inline uint64_t hash_len16(uint64_t u, uint64_t v, uint64_t mul) {
  uint64_t a = (u ^ v) * mul;
  a ^= (a >> 47);
  uint64_t b = (v ^ a) * mul;
  b ^= (b >> 47);
  return b * mul;
}

inline uint64_t hash_len0to16(const char* s, size_t len) {
  if (len >= 8) {
    const uint64_t mul = k2 + len * 2;
    const uint64_t a = fetch64(s) + k2;
    const uint64_t b = fetch64(s + len - 8);
    const uint64_t c = rotate(b, 37) * mul + a;
    const uint64_t d = (rotate(a, 25) + b) * mul;
    return hash_len16(c, d, mul);
  }
  if (len >= 4) {
    const uint64_t mul = k2 + len * 2;
    const uint64_t a = fetch32(s);
    return hash_len16(len + (a << 3), fetch32(s + len - 4), mul);
  }
  if (len > 0) {
    const uint8_t a = static_cast<uint8_t>(s[0]);
    const uint8_t b = static_cast<uint8_t>(s[len >> 1]);
    const uint8_t c = static_cast<uint8_t>(s[len - 1]);
    const uint32_t y = static_cast<uint32_t>(a) + (static_cast<uint32_t>(b) << 8);
    const uint32_t z = static_cast<uint32_t>(len) + (static_cast<uint32_t>(c) << 2);
    return shift_mix(y * k2 ^ z * k0) * k2;
  }
  return k2;
}

inline uint64_t hash_len17to32(const char* s, size_t len) {
  const uint64_t mul = k2 + len * 2;
  const uint64_t a = fetch64(s) * k1;
  const uint64_t b = fetch64(s + 8);
  const uint64_t c = fetch64(s + len - 8) * mul;
  const uint64_t d = fetch64(s + len - 16) * k2;
  return hash_len16(rotate(a + b, 43) + rotate(c, 30) + d, a + rotate(b + k2, 18) + c, mul);
}

inline uint64_t hash_len33to64(const char* s, size_t len) {
  const uint64_t mul = k2 + len * 2;
  const uint64_t a = fetch64(s) * k2;
  const uint64_t b = fetch64(s + 8);
  const uint64_t c = fetch64(s + len - 8) * mul;
  const uint64_t d = fetch64(s + len - 16) * k2;
  const uint64_t y = rotate(a + b, 43) + rotate(c, 30) + d;
  const uint64_t z = hash_len16(y, a + rotate(b + k2, 18) + c, mul);
  const uint64_t e = fetch64(s + 16) * mul;
  const uint64_t f = fetch64(s + 24);
  const uint64_t g = (y + fetch64(s + len - 32)) * mul;
  const uint64_t h = (z + fetch64(s + len - 24)) * mul;
  return hash_len16(rotate(e + f, 43) + rotate(g, 30) + h, e + rotate(f + a, 18) + g, mul);
}

// (a + z, b + c) mix of 32 bytes with two seeds.
inline std::pair<uint64_t, uint64_t> weak_hash32(const char* s, uint64_t a, uint64_t b) {
  const uint64_t w = fetch64(s), x = fetch64(s + 8), y = fetch64(s + 16), z = fetch64(s + 24);
  a += w;
  b = rotate(b + a + z, 21);
  const uint64_t c = a;
  a += x;
  a += y;
  b += rotate(a, 44);
  return {a + z, b + c};
}

#if defined(__GNUC__) || defined(__clang__)
#define ALGOPERF_FARMHASH_NOINLINE __attribute__((noinline))
#else
#define ALGOPERF_FARMHASH_NOINLINE
#endif

// Over 64 bytes: 64-byte blocks with 56 bytes of state, then the last 64 bytes again.
ALGOPERF_FARMHASH_NOINLINE inline uint64_t hash_len65plus(const char* s, size_t len) {
  constexpr uint64_t seed = 81;
  uint64_t x = seed;
  uint64_t y = seed * k1 + 113;
  uint64_t z = shift_mix(y * k2 + 113) * k2;
  std::pair<uint64_t, uint64_t> v{0, 0}, w{0, 0};
  x = x * k2 + fetch64(s);
  const char* end = s + ((len - 1) / 64) * 64;
  const char* last64 = end + ((len - 1) & 63) - 63;
  do {
    x = rotate(x + y + v.first + fetch64(s + 8), 37) * k1;
    y = rotate(y + v.second + fetch64(s + 48), 42) * k1;
    x ^= w.second;
    y += v.first + fetch64(s + 40);
    z = rotate(z + w.first, 33) * k1;
    v = weak_hash32(s, v.second * k1, x + w.first);
    w = weak_hash32(s + 32, z + w.second, y + fetch64(s + 16));
    std::swap(z, x);
    s += 64;
  } while (s != end);
  const uint64_t mul = k1 + ((z & 0xff) << 1);
  s = last64;
  w.first += ((len - 1) & 63);
  v.first += w.first;
  w.first += v.first;
  x = rotate(x + y + v.first + fetch64(s + 8), 37) * mul;
  y = rotate(y + v.second + fetch64(s + 48), 42) * mul;
  x ^= w.second * 9;
  y += v.first * 9 + fetch64(s + 40);
  z = rotate(z + w.first, 33) * mul;
  v = weak_hash32(s, v.second * mul, x + w.first);
  w = weak_hash32(s + 32, z + w.second, y + fetch64(s + 16));
  std::swap(z, x);
  return hash_len16(hash_len16(v.first, w.first, mul) + shift_mix(y) * k0 + z,
                    hash_len16(v.second, w.second, mul) + x, mul);
}

// Criteo keys are 9-10 bytes: the short paths inline into the caller's loop; the long
// loop stays out of line.
inline uint64_t fingerprint64(const char* s, size_t len) {
  if (len <= 16) return hash_len0to16(s, len);
  if (len <= 32) return hash_len17to32(s, len);
  return len <= 64 ? hash_len33to64(s, len) : hash_len65plus(s, len);
}

// fingerprint64 of `field` (n bytes) followed by the d bytes of `suffix` (little-endian),
// for 8 <= n and n + d <= 16, without building that key: its last 8 bytes are the field's
// last 8 - d bytes and then the suffix. The Criteo parser hashes value + str(column) this
// way; building the key in a stack buffer made the 8-byte load of its tail wait on the
// smaller stores that wrote it (no store-to-load forwarding across stores): ~15% of the
// parse time on 9-10 byte keys.
inline uint64_t fingerprint64_suffixed(const char* field, size_t n, uint64_t suffix, size_t d) {
  const size_t len = n + d;
  const uint64_t mul = k2 + len * 2;
  const uint64_t a = fetch64(field) + k2;
  const uint64_t b = (fetch64(field + n - 8) >> (8 * d)) | (suffix << (8 * (8 - d)));
  const uint64_t c = rotate(b, 37) * mul + a;
  const uint64_t e = (rotate(a, 25) + b) * mul;
  return hash_len16(c, e, mul);
}

}  // namespace algoperf::farmhash
