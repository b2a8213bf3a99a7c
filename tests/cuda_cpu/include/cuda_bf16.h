// __nv_bfloat16 for host compilation under cuemu (storage and the conversion intrinsics csrc/ uses).
#pragma once

#include "cuemu/half.h"

struct __nv_bfloat16 {
  unsigned short bits;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{::cuemu::float_to_bf16_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) { return ::cuemu::bf16_bits_to_float(b.bits); }
