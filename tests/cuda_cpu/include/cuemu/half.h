// IEEE binary16 and bfloat16 as the device stores them, with round-to-nearest-even conversions
// (subnormals, overflow to infinity and NaN included). No implicit conversions or operators: the
// project builds with __CUDA_NO_HALF_CONVERSIONS__ and friends, so kernels may not rely on them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace cuemu {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t x = float_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return uint16_t(sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to infinity
  if (ax < 0x38800000u) {                                   // below 2^-14: a multiple of 2^-24
    const float scaled = bits_float(ax) * 16777216.0f;      // exact (a power-of-2 scale)
    return uint16_t(sign | uint32_t(std::nearbyint(scaled)));  // round half to even
  }
  const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
  return uint16_t(sign | ((rounded >> 13) - (112u << 10)));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet NaN
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline float bf16_bits_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

}  // namespace cuemu
