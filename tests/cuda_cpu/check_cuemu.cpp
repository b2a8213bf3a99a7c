// Checks of the execution layer itself: barriers, per-block shared memory, warp shuffles,
// atomics, WMMA against a direct product, the half/bf16/tf32 conversions (fp16 exhaustively
// against the compiler's _Float16); and scenarios that must stop the run with a report.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mma.h>
#include <string>

#include "harness.h"

namespace harness {
namespace {

// Per-block shared memory (what build.py turns a __shared__ declaration into).
template <class U>
U& shared(cuemu::SharedSlot& slot, size_t align = 0) {
  return slot.template get<U>(align);
}

void reverse_kernel(const int* in, int* out) {
  static cuemu::SharedSlot slot;
  auto& tile = shared<int[256]>(slot);
  const int t = int(threadIdx.x), base = int(blockIdx.x) * 256;
  tile[t] = in[base + t];
  __syncthreads();
  out[base + t] = tile[255 - t];
}

void warp_kernel(int* shfl, int* up, int* down, int* bfly, int* counts) {
  static cuemu::SharedSlot slot;
  auto& count = shared<int>(slot);
  const int t = int(threadIdx.x), lane = t % 32;
  if (t == 0) count = 0;
  __syncthreads();
  const int v = 1000 * (t / 32) + lane;
  const unsigned mask = t < 64 ? 0xffffffffu : 0xffffu;  // the third warp has 16 lanes
  shfl[t] = __shfl_sync(mask, v, (lane + 5) % 32);
  up[t] = __shfl_up_sync(mask, v, 3, 16);
  down[t] = __shfl_down_sync(mask, v, 2);
  bfly[t] = __shfl_xor_sync(mask, v, 9);
  __syncwarp(mask);
  atomicAdd(&count, lane + 1);
  __syncthreads();
  if (t == 0) counts[blockIdx.x] = count;
}

template <class In, class FragIn, int K>
void wmma_kernel(const In* a, const In* b, float* c) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, K, FragIn, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, K, FragIn, wmma::row_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, K, float> acc;
  wmma::fill_fragment(acc, 0.5f);
  wmma::load_matrix_sync(fa, a, K + 8);
  wmma::load_matrix_sync(fb, b, 16 + 8);
  if constexpr (std::is_same<In, float>::value) {
    for (int e = 0; e < fa.num_elements; ++e) fa.x[e] = wmma::__float_to_tf32(fa.x[e]);
    for (int e = 0; e < fb.num_elements; ++e) fb.x[e] = wmma::__float_to_tf32(fb.x[e]);
  }
  wmma::mma_sync(acc, fa, fb, acc);
  wmma::store_matrix_sync(c, acc, 16 + 4, wmma::mem_row_major);
}

void check_blocks_and_warps(Ledger& ledger) {
  std::vector<int> in(3 * 256), out(3 * 256, -1);
  for (size_t i = 0; i < in.size(); ++i) in[i] = int(i * 7 + 1);
  cuemu::launch(reverse_kernel, dim3(3), dim3(256), static_cast<const int*>(in.data()), out.data());
  bool ok = true;
  for (int b = 0; b < 3; ++b)
    for (int t = 0; t < 256; ++t) ok = ok && out[size_t(b * 256 + t)] == in[size_t(b * 256 + 255 - t)];
  ledger.record(ok, "cuemu __syncthreads and per-block __shared__", "3 blocks reverse 256 values each");

  const int threads = 80;  // two full warps and a partial one of 16 lanes
  std::vector<int> shfl(threads), up(threads), down(threads), bfly(threads), counts(2);
  cuemu::launch(warp_kernel, dim3(2), dim3(threads), shfl.data(), up.data(), down.data(), bfly.data(), counts.data());
  bool shfl_ok = true;
  for (int t = 0; t < 64; ++t) {  // the full warps
    const int w = t / 32, lane = t % 32, base = 1000 * w;
    shfl_ok = shfl_ok && shfl[size_t(t)] == base + (lane + 5) % 32;
    shfl_ok = shfl_ok && up[size_t(t)] == base + (lane % 16 >= 3 ? lane - 3 : lane);
    shfl_ok = shfl_ok && down[size_t(t)] == base + (lane + 2 < 32 ? lane + 2 : lane);
    shfl_ok = shfl_ok && bfly[size_t(t)] == base + (lane ^ 9);
  }
  for (int t = 64; t < threads; ++t) {  // 16 lanes: sources past the last lane give the caller's own value
    const int lane = t % 32, base = 2000;
    shfl_ok = shfl_ok && shfl[size_t(t)] == ((lane + 5) % 32 < 16 ? base + (lane + 5) % 32 : base + lane);
    shfl_ok = shfl_ok && down[size_t(t)] == base + (lane + 2 < 16 ? lane + 2 : lane);
  }
  ledger.record(shfl_ok, "cuemu warp shuffles (idx, up width 16, down, xor; a partial warp)", "80 threads");
  const int expected = 2 * (32 * 33 / 2) + 16 * 17 / 2;
  ledger.record(counts[0] == expected && counts[1] == expected, "cuemu atomicAdd on shared memory",
                std::to_string(counts[0]) + " and " + std::to_string(counts[1]) + ", expected " + std::to_string(expected));
}

template <class In, class FragIn, int K>
void check_wmma(Ledger& ledger, const char* name, double unit) {
  // Padded leading dimensions, 32-byte aligned buffers, as the real API requires.
  const int lda = K + 8, ldb = 16 + 8, ldc = 16 + 4;
  In* a = static_cast<In*>(std::aligned_alloc(32, sizeof(In) * 16 * lda));
  In* b = static_cast<In*>(std::aligned_alloc(32, 128 * ((sizeof(In) * K * ldb + 127) / 128)));
  float* c = static_cast<float*>(std::aligned_alloc(32, 128 * ((sizeof(float) * 16 * ldc + 127) / 128)));
  Random rng(5);
  for (int i = 0; i < 16 * lda; ++i) a[i] = rng.value<In>();
  for (int i = 0; i < K * ldb; ++i) b[i] = rng.value<In>();
  cuemu::launch(wmma_kernel<In, FragIn, K>, dim3(1), dim3(32), static_cast<const In*>(a), static_cast<const In*>(b), c);
  std::vector<const float*> got;
  std::vector<Ref> ref;
  for (int r = 0; r < 16; ++r)
    for (int col = 0; col < 16; ++col) {
      Ref x;
      x.add(0.5);
      for (int k = 0; k < K; ++k) {
        double av = Scalar<In>::to_double(a[r * lda + k]), bv = Scalar<In>::to_double(b[k * ldb + col]);
        if constexpr (std::is_same<In, float>::value) {
          av = nvcuda::wmma::__float_to_tf32(float(av));
          bv = nvcuda::wmma::__float_to_tf32(float(bv));
        }
        x.add(av * bv);
      }
      ref.push_back(x);
      got.push_back(&c[r * ldc + col]);
    }
  compare(ledger, std::string("cuemu wmma ") + name + " against a direct product", exact_tolerance(name, unit), got, ref);
  std::free(a);
  std::free(b);
  std::free(c);
}

void check_conversions(Ledger& ledger) {
  // fp16: every bit pattern back and forth, and every midpoint between neighbours (ties to even),
  // against the compiler's own _Float16 conversions.
  int bad = 0;
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = __half2float(__half{uint16_t(h)});
    _Float16 ref_h;
    std::memcpy(&ref_h, &h, 2);
    if (!(std::isnan(f) ? std::isnan(float(ref_h)) : cuemu::float_bits(f) == cuemu::float_bits(float(ref_h)))) ++bad;
    if (!std::isnan(f) && __float2half_rn(f).bits != h) ++bad;
    if ((h & 0x7fffu) < 0x7c00u) {
      const float next = __half2float(__half{uint16_t(h + 1)});
      const float mid = float((double(f) + double(next)) / 2);
      const _Float16 want = _Float16(mid);
      uint16_t want_bits;
      std::memcpy(&want_bits, &want, 2);
      if (std::isfinite(next) && __float2half_rn(mid).bits != want_bits) ++bad;
    }
  }
  Random rng(9);
  for (int i = 0; i < 200000; ++i) {
    const float f = float(std::ldexp(rng.uniform(), int(rng.uniform() * 40)));
    const _Float16 want = _Float16(f);
    uint16_t want_bits;
    std::memcpy(&want_bits, &want, 2);
    if (__float2half_rn(f).bits != want_bits) ++bad;
  }
  ledger.record(bad == 0, "cuemu fp16 conversions (all 65536 values, all midpoints, 2e5 random)", std::to_string(bad) + " wrong");

  // bf16: nearest of the two neighbours, ties to even, on random floats and exact midpoints.
  bad = 0;
  for (int i = 0; i < 200000; ++i) {
    const float f = i % 2 ? float(std::ldexp(rng.uniform(), int(rng.uniform() * 100)))
                          : cuemu::bits_float((cuemu::float_bits(float(rng.uniform())) & 0xffff0000u) | 0x8000u);
    const uint32_t lo_bits = cuemu::float_bits(f) & 0xffff0000u;
    const double lo = cuemu::bits_float(lo_bits), hi = cuemu::bits_float(lo_bits + 0x10000u);
    const double d_lo = std::fabs(double(f) - lo), d_hi = std::fabs(hi - double(f));
    const uint16_t want = uint16_t((d_lo < d_hi || (d_lo == d_hi && ((lo_bits >> 16) & 1u) == 0)) ? lo_bits >> 16
                                                                                                  : (lo_bits >> 16) + 1);
    if (__float2bfloat16_rn(f).bits != want) ++bad;
  }
  ledger.record(bad == 0, "cuemu bf16 conversion (2e5 random values and midpoints, ties to even)", std::to_string(bad) + " wrong");

  // tf32: 10 mantissa bits, ties away from zero (cvt.rna).
  using nvcuda::wmma::__float_to_tf32;
  const float one_half_ulp = 1.0f + std::ldexp(1.0f, -11), below = 1.0f + std::ldexp(1.0f, -12);
  const bool tf32_ok = __float_to_tf32(one_half_ulp) == 1.0f + std::ldexp(1.0f, -10) &&
                       __float_to_tf32(-one_half_ulp) == -(1.0f + std::ldexp(1.0f, -10)) &&
                       __float_to_tf32(below) == 1.0f && __float_to_tf32(3.0f) == 3.0f &&
                       std::isinf(__float_to_tf32(INFINITY)) && std::isnan(__float_to_tf32(NAN));
  ledger.record(tf32_ok, "cuemu __float_to_tf32 rounding (ties away from zero)", "");
}

// --- scenarios that must fail ---------------------------------------------------------------

void divergent_barrier_kernel() {
  if (threadIdx.x >= 128) return;
  __syncthreads();
}

void shared_overrun_kernel(float* out) {
  static cuemu::SharedSlot slot;
  auto& tile = shared<float[64]>(slot);
  float* row = tile;
  row[threadIdx.x] = 1.0f;  // 65 threads, 64 elements
  __syncthreads();
  out[threadIdx.x] = row[threadIdx.x];
}

void global_overrun_kernel(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x + 1]; }

void misaligned_wmma_kernel(const __half* a) {
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
  nvcuda::wmma::load_matrix_sync(fa, a + 1, 16);
}

void int32_offset_kernel(const float* base, int stride, float* out) {
  const int offset = int(blockIdx.x + 2) * stride;  // int32 offset math: overflows for stride 2^30
  out[0] = base[offset];
}

void missing_barrier_kernel(float* out) {
  static cuemu::SharedSlot slot;
  auto& tile = shared<float[256]>(slot);
  tile[threadIdx.x] = float(threadIdx.x);
  // no __syncthreads(): the neighbour may not have written yet
  out[threadIdx.x] = tile[(threadIdx.x + 1) % 256];
}

}  // namespace

void check_cuemu(Ledger& ledger) {
  check_blocks_and_warps(ledger);
  check_wmma<__half, __half, 16>(ledger, "f16 16x16x16", std::ldexp(1.0, -24));
  check_wmma<__nv_bfloat16, __nv_bfloat16, 16>(ledger, "bf16 16x16x16", std::ldexp(1.0, -24));
  check_wmma<float, nvcuda::wmma::precision::tf32, 8>(ledger, "tf32 16x16x8", std::ldexp(1.0, -24));
  check_conversions(ledger);
}

bool run_expected_failure(const char* name) {
  const std::string n = name;
  if (n == "divergent-barrier") {
    cuemu::launch(divergent_barrier_kernel, dim3(1), dim3(256));
  } else if (n == "shared-overrun") {
    std::vector<float> out(65);
    cuemu::launch(shared_overrun_kernel, dim3(1), dim3(65), out.data());
  } else if (n == "global-overrun") {
    std::vector<float> in(32), out(32);
    cuemu::launch(global_overrun_kernel, dim3(1), dim3(32), static_cast<const float*>(in.data()), out.data());
  } else if (n == "misaligned-wmma") {
    __half* a = static_cast<__half*>(std::aligned_alloc(32, 1024));
    cuemu::launch(misaligned_wmma_kernel, dim3(1), dim3(32), static_cast<const __half*>(a));
    std::free(a);
  } else if (n == "int32-offset") {
    std::vector<float> in(1), out(1);
    cuemu::launch(int32_offset_kernel, dim3(1), dim3(1), static_cast<const float*>(in.data()), 1 << 30, out.data());
  } else if (n == "missing-barrier") {
    std::vector<float> out(256);
    cuemu::launch(missing_barrier_kernel, dim3(1), dim3(256), out.data());
    for (int t = 0; t < 256; ++t) {
      if (out[size_t(t)] != float((t + 1) % 256)) {
        std::printf("FAIL missing-barrier: thread %d read %g, expected %d\n", t, double(out[size_t(t)]), (t + 1) % 256);
        std::exit(1);
      }
    }
  } else {
    return false;
  }
  std::printf("expected failure %s did not happen\n", name);
  return true;
}

}  // namespace harness
