// nvcuda::wmma for host compilation under cuemu: fragments, load/store/fill/mma with the warp-wide
// semantics of the real API. load/store/mma are warp collectives: every lane must call them with
// the same pointer and leading dimension, the pointer 256-bit aligned and the leading dimension a
// multiple of 16 bytes (as the CUDA programming guide requires), or cuemu stops with an error.
// Which fragment element holds which tile entry is unspecified by CUDA; here lane l's element e is
// entry (e * 32 + l) of the row-major tile, so code that assumes any mapping fails its checks.
// mma_sync multiplies exactly (half, bf16 and tf32 products fit a float) and adds in double, one
// rounding to float per output; tf32 inputs must already be tf32 values (__float_to_tf32), as on
// the device, where the low 13 mantissa bits are ignored.
#pragma once

#include <type_traits>

#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include "cuemu/core.h"
#include "cuemu/half.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
namespace precision {
struct tf32 {};
}  // namespace precision
enum layout_t { mem_row_major, mem_col_major };

namespace detail {
template <class Use, int M, int N, int K>
struct Dims;
template <int M, int N, int K>
struct Dims<matrix_a, M, N, K> {
  static constexpr int rows = M, cols = K;
};
template <int M, int N, int K>
struct Dims<matrix_b, M, N, K> {
  static constexpr int rows = K, cols = N;
};
template <int M, int N, int K>
struct Dims<accumulator, M, N, K> {
  static constexpr int rows = M, cols = N;
};
template <class T>
struct Storage {
  using type = T;
};
template <>
struct Storage<precision::tf32> {
  using type = float;
};
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
class fragment {
  static_assert((M == 16 && N == 16 && K == 16 && (std::is_same<T, __half>::value ||
                                                   std::is_same<T, __nv_bfloat16>::value || std::is_same<T, float>::value)) ||
                    (M == 16 && N == 16 && K == 8 && (std::is_same<T, precision::tf32>::value ||
                                                      std::is_same<T, float>::value)),
                "cuemu emulates the 16x16x16 (half, bf16) and 16x16x8 (tf32) WMMA shapes");
  static_assert(std::is_same<Use, accumulator>::value == std::is_same<Layout, void>::value,
                "matrix_a/matrix_b fragments take a layout, accumulators do not");

 public:
  using use = Use;
  using layout = Layout;
  using element_type = typename detail::Storage<T>::type;
  static constexpr int rows = detail::Dims<Use, M, N, K>::rows, cols = detail::Dims<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  element_type x[num_elements];

  // Tile entry of this lane's element e.
  static constexpr int row_of(int lane, int e) { return (e * 32 + lane) / cols; }
  static constexpr int col_of(int lane, int e) { return (e * 32 + lane) % cols; }
};

inline float __float_to_tf32(float f) {
  // cvt.rna.tf32.f32: round to 10 mantissa bits, ties away from zero; NaN and infinity pass.
  uint32_t u = ::cuemu::float_bits(f);
  if ((u & 0x7f800000u) == 0x7f800000u) return f;
  u = (u + 0x1000u) & ~0x1fffu;
  return ::cuemu::bits_float(u);
}

namespace detail {
inline void check_matrix_pointer(const char* op, const void* p, unsigned ldm, size_t element_bytes) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) ::cuemu::fail("%s: pointer %p is not 256-bit aligned", op, p);
  if ((ldm * element_bytes) % 16 != 0) {
    ::cuemu::fail("%s: ldm %u is not a multiple of 16 bytes (%zu-byte elements)", op, ldm, element_bytes);
  }
}
template <class Lane>
void check_uniform(const char* op, Lane** lanes, int n) {
  if (n != 32) ::cuemu::fail("%s: a partial warp (%d lanes) cannot run WMMA", op, n);
  for (int l = 1; l < n; ++l) {
    if (lanes[l]->ptr != lanes[0]->ptr || lanes[l]->ldm != lanes[0]->ldm) {
      ::cuemu::fail("%s: lane %d passed (%p, ldm %u) but lane 0 (%p, ldm %u); the arguments must be warp-uniform", op, l,
                    static_cast<const void*>(lanes[l]->ptr), lanes[l]->ldm, static_cast<const void*>(lanes[0]->ptr),
                    lanes[0]->ldm);
    }
  }
}
}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, typename fragment<Use, M, N, K, T, Layout>::element_type v) {
  for (int e = 0; e < f.num_elements; ++e) f.x[e] = v;
}

template <class Use, int M, int N, int K, class T, class Layout, class P>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const P* p, unsigned ldm) {
  using Frag = fragment<Use, M, N, K, T, Layout>;
  static_assert(!std::is_same<Use, accumulator>::value, "accumulator loads take a layout_t");
  static_assert(std::is_same<P, typename Frag::element_type>::value, "pointer type does not match the fragment");
  struct Lane {
    Frag* frag;
    const P* ptr;
    unsigned ldm;
  } mine{&f, p, ldm};
  detail::check_matrix_pointer("load_matrix_sync", p, ldm, sizeof(P));
  constexpr bool row_major_layout = std::is_same<Layout, row_major>::value;
  ::cuemu::warp_collective("load_matrix_sync", mine, [](Lane** lanes, int n) {
    detail::check_uniform("load_matrix_sync", lanes, n);
    for (int l = 0; l < n; ++l) {
      for (int e = 0; e < Frag::num_elements; ++e) {
        const int r = Frag::row_of(l, e), c = Frag::col_of(l, e);
        lanes[l]->frag->x[e] = row_major_layout ? lanes[0]->ptr[size_t(r) * lanes[0]->ldm + c]
                                                : lanes[0]->ptr[size_t(c) * lanes[0]->ldm + r];
      }
    }
  });
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  using Frag = fragment<accumulator, M, N, K, float>;
  struct Lane {
    const Frag* frag;
    float* ptr;
    unsigned ldm;
    layout_t layout;
  } mine{&f, p, ldm, layout};
  detail::check_matrix_pointer("store_matrix_sync", p, ldm, sizeof(float));
  ::cuemu::warp_collective("store_matrix_sync", mine, [](Lane** lanes, int n) {
    detail::check_uniform("store_matrix_sync", lanes, n);
    for (int l = 0; l < n; ++l) {
      if (lanes[l]->layout != lanes[0]->layout) ::cuemu::fail("store_matrix_sync: layout differs between lanes");
      for (int e = 0; e < Frag::num_elements; ++e) {
        const int r = Frag::row_of(l, e), c = Frag::col_of(l, e);
        const size_t at = lanes[0]->layout == mem_row_major ? size_t(r) * lanes[0]->ldm + c : size_t(c) * lanes[0]->ldm + r;
        lanes[0]->ptr[at] = lanes[l]->frag->x[e];
      }
    }
  });
}

template <int M, int N, int K, class TA, class LA, class TB, class LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  static_assert(std::is_same<TA, TB>::value, "matrix_a and matrix_b must have the same input type");
  using FragA = fragment<matrix_a, M, N, K, TA, LA>;
  using FragB = fragment<matrix_b, M, N, K, TB, LB>;
  using FragC = fragment<accumulator, M, N, K, float>;
  constexpr bool tf32 = std::is_same<TA, precision::tf32>::value;
  struct Lane {
    FragC* d;
    const FragA* a;
    const FragB* b;
    const FragC* c;
  } mine{&d, &a, &b, &c};
  ::cuemu::warp_collective("mma_sync", mine, [](Lane** lanes, int n) {
    if (n != 32) ::cuemu::fail("mma_sync: a partial warp (%d lanes) cannot run WMMA", n);
    float A[M][K], B[K][N], C[M][N];
    for (int l = 0; l < n; ++l) {
      for (int e = 0; e < FragA::num_elements; ++e) {
        const float v = detail::to_float(lanes[l]->a->x[e]);
        if (tf32 && (::cuemu::float_bits(v) & 0x1fffu) != 0 && std::isfinite(v)) {
          ::cuemu::fail("mma_sync: matrix_a element %g is not a tf32 value (round it with __float_to_tf32)", double(v));
        }
        A[FragA::row_of(l, e)][FragA::col_of(l, e)] = v;
      }
      for (int e = 0; e < FragB::num_elements; ++e) {
        const float v = detail::to_float(lanes[l]->b->x[e]);
        if (tf32 && (::cuemu::float_bits(v) & 0x1fffu) != 0 && std::isfinite(v)) {
          ::cuemu::fail("mma_sync: matrix_b element %g is not a tf32 value (round it with __float_to_tf32)", double(v));
        }
        B[FragB::row_of(l, e)][FragB::col_of(l, e)] = v;
      }
      for (int e = 0; e < FragC::num_elements; ++e) C[FragC::row_of(l, e)][FragC::col_of(l, e)] = lanes[l]->c->x[e];
    }
    // d may be c: every input is read above before any output is written.
    for (int l = 0; l < n; ++l) {
      for (int e = 0; e < FragC::num_elements; ++e) {
        const int r = FragC::row_of(l, e), col = FragC::col_of(l, e);
        double sum = C[r][col];
        for (int k = 0; k < K; ++k) sum += double(A[r][k]) * double(B[k][col]);
        lanes[l]->d->x[e] = float(sum);
      }
    }
  });
}

}  // namespace wmma
}  // namespace nvcuda
