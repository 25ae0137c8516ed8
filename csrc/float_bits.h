// Bit casts between fp32 and its IEEE-754 representation, shared by the CPU kernels'
// branch-free 16-bit <-> fp32 conversions. memcpy is the portable, UB-free type pun;
// compilers lower it to a register move.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <cstring>

namespace algoperf {

C10_ALWAYS_INLINE float float_from_bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

C10_ALWAYS_INLINE uint32_t bits_from_float(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

}  // namespace algoperf
