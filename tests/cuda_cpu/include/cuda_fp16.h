// __half for host compilation under cuemu (storage and the conversion intrinsics csrc/ uses).
#pragma once

#include "cuemu/half.h"

struct __half {
  unsigned short bits;
};

inline __half __float2half_rn(float f) { return __half{::cuemu::float_to_half_bits(f)}; }
inline float __half2float(__half h) { return ::cuemu::half_bits_to_float(h.bits); }
