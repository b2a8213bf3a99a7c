// The exact math of the implicit GEMM: plain FMA in the accumulator type (float or double).
#pragma once

#include <type_traits>

#include "expandnets/implicit_gemm.cuh"

namespace expandnets {
namespace detail {

// Each of the 256 threads owns a 4x4 patch: rows ty + 16 r, columns tx + 16 c.
template <typename T>
struct FmaMath {
  using Acc = acc_t<T>;
  static_assert(std::is_same<T, Acc>::value, "the FMA path multiplies in its accumulator type");
  static constexpr int kPadAB = 1, kPadC = 1;  // odd leading dimensions keep columns in distinct banks

  Acc acc[4][4];

  __device__ void zero() {
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 4; ++c) acc[r][c] = Acc(0);
    }
  }

  template <int kLda, int kLdb>
  __device__ void step(const T* a, const T* b) {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
#pragma unroll 4
    for (int k = 0; k < kGemmK; ++k) {
      Acc av[4], bv[4];
      for (int r = 0; r < 4; ++r) av[r] = a[(ty + 16 * r) * kLda + k];
      for (int c = 0; c < 4; ++c) bv[c] = b[k * kLdb + tx + 16 * c];
      for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) acc[r][c] = fma(av[r], bv[c], acc[r][c]);
      }
    }
  }

  template <int kLdc>
  __device__ void store(Acc* c_tile) const {
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 4; ++c) c_tile[(ty + 16 * r) * kLdc + tx + 16 * c] = acc[r][c];
    }
  }
};

}  // namespace detail
}  // namespace expandnets
