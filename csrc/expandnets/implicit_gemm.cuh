// One implicit-GEMM kernel for the three passes of a convolution. A pass is a *problem*: it says
// how many GEMM rows and columns there are, which slice of the reduction a block covers, how to
// gather an A element (row, k) and a B element (k, column) straight from the activations and the
// weight (nothing is unfolded into memory), and where a result goes. See conv_problems.cuh.
//
// A block computes a 64x64 tile of C over its k range: each thread keeps one A row and one B column
// for the whole loop (their index math is done once), gathers 8 elements of each per 32-wide k step
// into shared memory, and the math policy multiplies them (fma_math.cuh, wmma_math.cuh: a class
// with an Acc type, zero(), step<lda, ldb>(a_tile, b_tile) and store<ldc>(c_tile)). The epilogue
// goes through a shared-memory C tile so that consecutive threads write consecutive rows (pixels).
#pragma once

#include <type_traits>

#include "expandnets/numeric.cuh"

namespace expandnets {
namespace detail {

constexpr int kGemmM = 64, kGemmN = 64, kGemmK = 32;
constexpr int kGemmThreads = 256;

template <class Problem, class Math>
__global__ void __launch_bounds__(kGemmThreads) implicit_gemm_kernel(const Problem prob) {
  using T = typename Problem::Scalar;
  using Acc = typename Math::Acc;
  static_assert(std::is_same<Acc, typename Problem::Acc>::value, "problem and math disagree on the accumulator");
  constexpr int kLda = kGemmK + Math::kPadAB, kLdb = kGemmN + Math::kPadAB, kLdc = kGemmN + Math::kPadC;
  constexpr size_t kOperandBytes = sizeof(T) * (kGemmM * kLda + kGemmK * kLdb);
  constexpr size_t kResultBytes = sizeof(Acc) * kGemmM * kLdc;
  // The C tile reuses the operand tiles' memory once the k loop is done.
  __shared__ __align__(128) unsigned char smem[kOperandBytes > kResultBytes ? kOperandBytes : kResultBytes];
  T* a_tile = reinterpret_cast<T*>(smem);
  T* b_tile = a_tile + kGemmM * kLda;
  Acc* c_tile = reinterpret_cast<Acc*>(smem);

  const int64_t z = blockIdx.z;
  const int64_t m0 = int64_t(blockIdx.x) * kGemmM, n0 = int64_t(blockIdx.y) * kGemmN;
  const int64_t rows = prob.rows(), cols = prob.cols();
  const int lane = threadIdx.x % kGemmM, k_lane = threadIdx.x / kGemmM;
  const bool row_ok = m0 + lane < rows, col_ok = n0 + lane < cols;
  const typename Problem::Row row = prob.row(row_ok ? m0 + lane : 0, z);
  const typename Problem::Col col = prob.col(col_ok ? n0 + lane : 0, z);
  const int64_t k_begin = prob.k_begin(z), k_end = prob.k_end(z);
  // Row sums of A (the bias gradient of the weight-gradient pass), taken once per row: by the
  // blocks of the first column tile, from the A tiles already in shared memory.
  const bool row_sums = prob.wants_row_sums() && blockIdx.y == 0;
  Acc row_sum = Acc(0);

  Math math;
  math.zero();
  for (int64_t k0 = k_begin; k0 < k_end; k0 += kGemmK) {
#pragma unroll
    for (int j = 0; j < kGemmK / 4; ++j) {
      const int kk = k_lane + 4 * j;
      const int64_t k = k0 + kk;
      a_tile[lane * kLda + kk] = row_ok && k < k_end ? prob.a(row, k) : zero<T>();
      b_tile[kk * kLdb + lane] = col_ok && k < k_end ? prob.b(k, col) : zero<T>();
    }
    __syncthreads();
    if (row_sums && threadIdx.x < kGemmM) {
      Acc tile_sum = Acc(0);  // per tile first: rounding grows with chunk / 32, not chunk
      for (int kk = 0; kk < kGemmK; ++kk) tile_sum += to_acc(a_tile[threadIdx.x * kLda + kk]);
      row_sum += tile_sum;
    }
    math.template step<kLda, kLdb>(a_tile, b_tile);
    __syncthreads();
  }

  math.template store<kLdc>(c_tile);
  __syncthreads();
  for (int e = threadIdx.x; e < kGemmM * kGemmN; e += kGemmThreads) {
    const int r = e % kGemmM, c = e / kGemmM;
    if (m0 + r < rows && n0 + c < cols) prob.store(m0 + r, n0 + c, c_tile[r * kLdc + c], z);
  }
  if (row_sums && threadIdx.x < kGemmM && m0 + threadIdx.x < rows) prob.store_row_sum(m0 + threadIdx.x, row_sum, z);
}

}  // namespace detail
}  // namespace expandnets
