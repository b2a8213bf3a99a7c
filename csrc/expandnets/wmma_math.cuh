// The tensor-core math of the implicit GEMM: WMMA on bf16, fp16 or TF32 inputs, float accumulators.
#pragma once

#include <type_traits>

#include <mma.h>

#include "expandnets/implicit_gemm.cuh"

namespace expandnets {
namespace detail {

// WMMA fragment shapes per input type: 16x16x16 for the half types, 16x16x8 for TF32.
template <typename T>
struct WmmaInput;
template <>
struct WmmaInput<__half> {
  static constexpr int kK = 16;
  using type = __half;
};
template <>
struct WmmaInput<__nv_bfloat16> {
  static constexpr int kK = 16;
  using type = __nv_bfloat16;
};
template <>
struct WmmaInput<float> {
  static constexpr int kK = 8;
  using type = nvcuda::wmma::precision::tf32;
};

// 8 warps as 4 (rows) x 2 (columns); each warp owns a 16x32 strip: two 16x16 float accumulators.
template <typename T>
struct WmmaMath {
  using Acc = float;
  static constexpr int kK = WmmaInput<T>::kK;
  // 16-byte row padding: ldm stays a multiple of 8 (16-bit) or 4 (float) elements and every
  // fragment pointer 32-byte aligned, while rows shift banks.
  static constexpr int kPadAB = 16 / int(sizeof(T)), kPadC = 4;
  using Input = typename WmmaInput<T>::type;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, kK, Input, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, kK, Input, nvcuda::wmma::row_major>;
  using FragC = nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, kK, float>;

  FragC acc[2];

  __device__ void zero() {
    for (int j = 0; j < 2; ++j) nvcuda::wmma::fill_fragment(acc[j], 0.0f);
  }

  template <typename Frag>
  __device__ static void round_inputs(Frag& frag) {
    if constexpr (std::is_same<T, float>::value) {
      for (int e = 0; e < frag.num_elements; ++e) frag.x[e] = nvcuda::wmma::__float_to_tf32(frag.x[e]);
    }
  }

  template <int kLda, int kLdb>
  __device__ void step(const T* a, const T* b) {
    const int warp = threadIdx.x / 32, wm = warp % 4, wn = (warp / 4) * 2;
#pragma unroll
    for (int kk = 0; kk < kGemmK; kk += kK) {
      FragA fa;
      nvcuda::wmma::load_matrix_sync(fa, a + 16 * wm * kLda + kk, kLda);
      round_inputs(fa);
      for (int j = 0; j < 2; ++j) {
        FragB fb;
        nvcuda::wmma::load_matrix_sync(fb, b + kk * kLdb + 16 * (wn + j), kLdb);
        round_inputs(fb);
        nvcuda::wmma::mma_sync(acc[j], fa, fb, acc[j]);
      }
    }
  }

  template <int kLdc>
  __device__ void store(float* c_tile) const {
    const int warp = threadIdx.x / 32, wm = warp % 4, wn = (warp / 4) * 2;
    for (int j = 0; j < 2; ++j) {
      nvcuda::wmma::store_matrix_sync(c_tile + 16 * wm * kLdc + 16 * (wn + j), acc[j], kLdc,
                                      nvcuda::wmma::mem_row_major);
    }
  }
};

}  // namespace detail
}  // namespace expandnets
