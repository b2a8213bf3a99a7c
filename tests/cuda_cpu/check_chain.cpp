// The chain launchers (chain.h: the whole CL unit / CK pair forward, the recompute backward) on
// every dtype against a float64 reference of the unfused chain (pad once at the unit's input, then
// valid sub-layers, ReLU between them or none), outputs and every gradient, on awkward shapes and
// activation layouts. Output buffers start as NaN sentinels (an element never written fails) and
// the gaps of a strided layout must keep theirs (a stray write fails).
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "cases.h"
#include "expandnets/chain.h"
#include "harness.h"

namespace harness {
namespace {

using expandnets::ChainShape;
using expandnets::Strides4;

// A square case (cases.h's ChainCase holds every parameter on its own).
struct SquareCase {
  const char* name;
  int64_t n, groups, mg, a, c, o, h, w;  // o == 0: a CK pair (no layer 3)
  int64_t k1, k, s, d;                   // layer-1 kernel (1: CL), layer-2 kernel, stride, dilation
  int64_t pad_left, pad_right, pad_top, pad_bottom;
  bool bias, relu;
};

// Odd sizes, stride 2, dilation, asymmetric padding, groups, depthwise, batch 1, widths over one
// 32-channel tile in every layer, a layer-1 reduction of 12 tiles, no bias, the identity (linear).
const SquareCase kCases[] = {
    {"CL 3x3 pad1 odd relu", 2, 1, 3, 6, 8, 4, 5, 6, 1, 3, 1, 1, 1, 1, 1, 1, true, true},
    {"CL groups2 stride2 asym-pad batch1 relu", 1, 2, 2, 4, 4, 2, 7, 6, 1, 3, 2, 1, 1, 0, 2, 1, true, true},
    {"CL wide (2 tiles per layer) dilation2 linear", 2, 1, 4, 40, 36, 35, 5, 5, 1, 3, 1, 2, 2, 2, 2, 2, true, false},
    {"CL depthwise r3 stride2 relu", 2, 4, 1, 3, 3, 1, 7, 7, 1, 3, 2, 1, 1, 1, 1, 1, true, true},
    {"CK pair dilation2 no-bias relu", 1, 1, 3, 6, 2, 0, 6, 7, 3, 3, 1, 2, 3, 3, 3, 3, false, true},
    {"CK pair stride2 relu", 2, 1, 2, 4, 3, 0, 7, 8, 3, 3, 2, 1, 2, 2, 2, 2, true, true},
    {"CK pair wide (12 reduction tiles) linear", 1, 1, 40, 50, 33, 0, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1, true, false},
};

using Layout = ChainLayout;
const char* layout_name(Layout l) { return chain_layout_name(l); }

// Layer 1 dilated like layer 2 when it is a KxK convolution.
ChainCase general(const SquareCase& k) {
  const int64_t d1 = k.k1 > 1 ? k.d : 1;
  return ChainCase{k.name, k.n, k.groups, k.mg, k.a, k.c, k.o, k.h, k.w, k.k1, k.k1, d1, d1, k.k, k.k, k.s, k.s,
                   k.d, k.d, k.pad_left, k.pad_right, k.pad_top, k.pad_bottom, k.bias, k.relu};
}

Strides4 strides_for(Layout l, int64_t c, int64_t h, int64_t w) {
  switch (l) {
    case Layout::nchw: return {c * h * w, h * w, w, 1};
    case Layout::nhwc: return {h * w * c, 1, w * c, c};
    case Layout::strided: {
      const int64_t sh = 2 * w + 1, sc = h * sh + 3;
      return {c * sc + 5, sc, sh, 2};
    }
  }
  return {};
}

// An (n, c, h, w) activation in an exact-size buffer, gaps holding the sentinel.
template <class T>
struct Act {
  int64_t n, c, h, w;
  Strides4 s;
  std::vector<T> data;
  Act(int64_t n_, int64_t c_, int64_t h_, int64_t w_, Layout l) : n(n_), c(c_), h(h_), w(w_), s(strides_for(l, c_, h_, w_)) {
    data.assign(size_t((n - 1) * s.n + (c - 1) * s.c + (h - 1) * s.h + (w - 1) * s.w + 1), Scalar<T>::sentinel());
  }
  size_t at(int64_t a, int64_t b, int64_t y, int64_t x) const { return size_t(a * s.n + b * s.c + y * s.h + x * s.w); }
  double get(int64_t a, int64_t b, int64_t y, int64_t x) const { return Scalar<T>::to_double(data[at(a, b, y, x)]); }
  void randomize(Random& rng) {
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < c; ++b)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) data[at(a, b, y, x)] = rng.value<T>();
  }
  std::vector<double> values() const {
    std::vector<double> v;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < c; ++b)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) v.push_back(get(a, b, y, x));
    return v;
  }
  bool gaps_untouched() const {
    std::vector<char> inside(data.size(), 0);
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < c; ++b)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) inside[at(a, b, y, x)] = 1;
    for (size_t i = 0; i < data.size(); ++i) {
      if (!inside[i] && !same_bits(data[i], Scalar<T>::sentinel())) return false;
    }
    return true;
  }
};

template <class T>
std::vector<double> as_double(const std::vector<T>& v) {
  std::vector<double> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Scalar<T>::to_double(v[i]);
  return out;
}

// ||got - ref|| / ||ref|| per dtype: float64/float32 sums in their precision, the 16-bit types
// rounded once at the output.
template <class T>
double rel_tolerance();
template <>
double rel_tolerance<double>() { return 1e-12; }
template <>
double rel_tolerance<float>() { return 2e-5; }
template <>
double rel_tolerance<__half>() { return 2e-3; }
template <>
double rel_tolerance<__nv_bfloat16>() { return 1e-2; }

// A reference of zeros only proves nothing under a relative norm, so it fails the check, unless
// `zero_reference_ok` (drawn cases: outputs whose windows never reach the input, a ReLU off
// everywhere): then every element must be exactly zero.
template <class T>
void compare_rel(Ledger& ledger, bool zero_reference_ok, const std::string& what, const std::vector<double>& got,
                 const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  bool finite = got.size() == ref.size();
  for (size_t i = 0; finite && i < ref.size(); ++i) {
    finite = std::isfinite(got[i]);
    diff += (got[i] - ref[i]) * (got[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  const double rel = std::sqrt(diff) / (std::sqrt(norm) + 1e-300);
  char detail[200];
  std::snprintf(detail, sizeof detail, "%zu elements, relative error %.3g (tolerance %.1g)%s%s", ref.size(), rel,
                rel_tolerance<T>(), finite ? "" : ", NOT FINITE (unwritten or NaN)",
                norm > 0 ? "" : zero_reference_ok ? ", reference all zero (exact zeros expected)" : ", reference all zero");
  ledger.record(finite && (norm > 0 ? rel <= rel_tolerance<T>() : zero_reference_ok && diff == 0), what, detail);
}

template <class T>
void run_case(Ledger& ledger, const ChainCase& k, Layout layout, uint64_t seed, bool zero_reference_ok) {
  const int64_t G = k.groups, MG = k.mg, A = k.a, C = k.c, O = k.o;
  const int64_t K1H = k.k1h, K1W = k.k1w, KH = k.kh, KW = k.kw, T1 = K1H * K1W, TAPS = KH * KW;
  const int64_t H1 = k.h + k.pad_top + k.pad_bottom - k.d1h * (K1H - 1);
  const int64_t W1 = k.w + k.pad_left + k.pad_right - k.d1w * (K1W - 1);
  const int64_t P = (H1 - k.dh * (KH - 1) - 1) / k.sh + 1, Q = (W1 - k.dw * (KW - 1) - 1) / k.sw + 1;
  const int64_t out_c = G * (O > 0 ? O : C);
  ChainShape s{};
  s.batch = k.n, s.groups = G, s.mg = MG, s.a = A, s.c = C, s.o = O, s.height = k.h, s.width = k.w;
  s.h1 = H1, s.w1 = W1, s.out_h = P, s.out_w = Q, s.pad_top = k.pad_top, s.pad_left = k.pad_left;
  s.k1h = K1H, s.k1w = K1W, s.d1h = k.d1h, s.d1w = k.d1w, s.kh = KH, s.kw = KW, s.sh = k.sh, s.sw = k.sw;
  s.dh = k.dh, s.dw = k.dw;
  s.has_bias = k.bias, s.relu = k.relu;
  const std::string what = std::string("chain ") + k.name + " [" + Scalar<T>::name + ", " + layout_name(layout) + "] ";

  Random rng(seed);
  Act<T> x(k.n, G * MG, k.h, k.w, layout), dy(k.n, out_c, P, Q, layout);
  x.randomize(rng);
  dy.randomize(rng);
  std::vector<T> w1 = random_vector<T>(rng, size_t(G * A * MG * T1)), b1 = random_vector<T>(rng, size_t(G * A));
  std::vector<T> w2 = random_vector<T>(rng, size_t(G * C * A * TAPS)), b2 = random_vector<T>(rng, size_t(G * C));
  std::vector<T> w3 = random_vector<T>(rng, size_t(G * O * C)), b3 = random_vector<T>(rng, size_t(G * O));
  const std::vector<double> W1d = as_double(w1), B1 = as_double(b1), W2d = as_double(w2), B2 = as_double(b2);
  const std::vector<double> W3d = as_double(w3), B3 = as_double(b3);
  const auto act = [&](double z) { return k.relu && z < 0 ? 0.0 : z; };
  const auto act_grad = [&](double d, double z) { return k.relu && !(z > 0) ? 0.0 : d; };

  // float64 reference of the unfused chain, forward and backward.
  const size_t n1 = size_t(k.n * G * A * H1 * W1), n2 = size_t(k.n * G * C * P * Q);
  std::vector<double> z1(n1), z2(n2);
  const auto i1 = [&](int64_t n, int64_t ch, int64_t i, int64_t j) { return size_t(((n * G * A + ch) * H1 + i) * W1 + j); };
  const auto i2 = [&](int64_t n, int64_t ch, int64_t p, int64_t q) { return size_t(((n * G * C + ch) * P + p) * Q + q); };
  const auto x_at = [&](int64_t n, int64_t ch, int64_t i, int64_t j, int64_t t1, double* hit) {
    const int64_t h = i + (t1 / K1W) * k.d1h - k.pad_top, w = j + (t1 % K1W) * k.d1w - k.pad_left;
    *hit = (h >= 0 && h < k.h && w >= 0 && w < k.w) ? 1.0 : 0.0;
    return *hit != 0 ? x.get(n, ch, h, w) : 0.0;
  };
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t ca = 0; ca < G * A; ++ca)
      for (int64_t i = 0; i < H1; ++i)
        for (int64_t j = 0; j < W1; ++j) {
          const int64_t g = ca / A;
          double v = k.bias ? B1[size_t(ca)] : 0;
          for (int64_t m = 0; m < MG; ++m)
            for (int64_t t1 = 0; t1 < T1; ++t1) {
              double hit;
              v += W1d[size_t((ca * MG + m) * T1 + t1)] * x_at(n, g * MG + m, i, j, t1, &hit);
            }
          z1[i1(n, ca, i, j)] = v;
        }
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t cc = 0; cc < G * C; ++cc)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t g = cc / C;
          double v = k.bias ? B2[size_t(cc)] : 0;
          for (int64_t a = 0; a < A; ++a)
            for (int64_t t = 0; t < TAPS; ++t)
              v += W2d[size_t((cc * A + a) * TAPS + t)] *
                   act(z1[i1(n, g * A + a, p * k.sh + (t / KW) * k.dh, q * k.sw + (t % KW) * k.dw)]);
          z2[i2(n, cc, p, q)] = v;
        }
  std::vector<double> y_ref, dz2(n2, 0.0), dw3(w3.size(), 0.0), db3(b3.size(), 0.0), db2(b2.size(), 0.0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t oc = 0; oc < out_c; ++oc)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const double g_out = dy.get(n, oc, p, q);
          if (O == 0) {
            y_ref.push_back(z2[i2(n, oc, p, q)]);
            dz2[i2(n, oc, p, q)] = g_out;
            continue;
          }
          const int64_t g = oc / O;
          double v = k.bias ? B3[size_t(oc)] : 0;
          db3[size_t(oc)] += g_out;
          for (int64_t c = 0; c < C; ++c) {
            const double z = z2[i2(n, g * C + c, p, q)];
            v += W3d[size_t(oc * C + c)] * act(z);
            dw3[size_t(oc * C + c)] += g_out * act(z);
            dz2[i2(n, g * C + c, p, q)] += W3d[size_t(oc * C + c)] * g_out;  // dh2 for now
          }
          y_ref.push_back(v);
        }
  if (O > 0) {
    for (size_t e = 0; e < n2; ++e) dz2[e] = act_grad(dz2[e], z2[e]);
  }
  std::vector<double> dw2(w2.size(), 0.0), dh1(n1, 0.0), dw1(w1.size(), 0.0), db1(b1.size(), 0.0);
  std::vector<double> dx_ref(size_t(k.n * G * MG * k.h * k.w), 0.0);
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t cc = 0; cc < G * C; ++cc)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t g = cc / C;
          const double d = dz2[i2(n, cc, p, q)];
          db2[size_t(cc)] += d;
          for (int64_t a = 0; a < A; ++a)
            for (int64_t t = 0; t < TAPS; ++t) {
              const size_t at1 = i1(n, g * A + a, p * k.sh + (t / KW) * k.dh, q * k.sw + (t % KW) * k.dw);
              dw2[size_t((cc * A + a) * TAPS + t)] += d * act(z1[at1]);
              dh1[at1] += W2d[size_t((cc * A + a) * TAPS + t)] * d;
            }
        }
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t ca = 0; ca < G * A; ++ca)
      for (int64_t i = 0; i < H1; ++i)
        for (int64_t j = 0; j < W1; ++j) {
          const int64_t g = ca / A;
          const double d = act_grad(dh1[i1(n, ca, i, j)], z1[i1(n, ca, i, j)]);
          db1[size_t(ca)] += d;
          for (int64_t m = 0; m < MG; ++m)
            for (int64_t t1 = 0; t1 < T1; ++t1) {
              double hit;
              const double xv = x_at(n, g * MG + m, i, j, t1, &hit);
              dw1[size_t((ca * MG + m) * T1 + t1)] += d * xv;
              if (hit != 0) {
                const int64_t h = i + (t1 / K1W) * k.d1h - k.pad_top, w = j + (t1 % K1W) * k.d1w - k.pad_left;
                dx_ref[size_t(((n * G * MG + g * MG + m) * k.h + h) * k.w + w)] += W1d[size_t((ca * MG + m) * T1 + t1)] * d;
              }
            }
        }

  // The kernels.
  const T* no_bias = nullptr;
  Act<T> y(k.n, out_c, P, Q, layout), dx(k.n, G * MG, k.h, k.w, layout);
  expect_status(ledger, what + "forward status",
                expandnets::chain_forward<T>(x.data.data(), x.s, w1.data(), k.bias ? b1.data() : no_bias, w2.data(),
                                             k.bias ? b2.data() : no_bias, O > 0 ? w3.data() : no_bias,
                                             k.bias && O > 0 ? b3.data() : no_bias, y.data.data(), y.s, s, nullptr),
                cudaSuccess);
  compare_rel<T>(ledger, zero_reference_ok, what + "y", y.values(), y_ref);
  ledger.record(y.gaps_untouched(), what + "y gaps", "elements outside the view keep their sentinel");

  std::vector<T> g_w1 = sentinel_vector<T>(w1.size()), g_b1 = sentinel_vector<T>(b1.size());
  std::vector<T> g_w2 = sentinel_vector<T>(w2.size()), g_b2 = sentinel_vector<T>(b2.size());
  std::vector<T> g_w3 = sentinel_vector<T>(w3.size()), g_b3 = sentinel_vector<T>(b3.size());
  const size_t bytes = expandnets::chain_backward_workspace_bytes<T>(s);
  void* workspace = std::aligned_alloc(16, (bytes + 15) / 16 * 16 + 16);
  expect_status(ledger, what + "backward status",
                expandnets::chain_backward<T>(dy.data.data(), dy.s, x.data.data(), x.s, w1.data(),
                                              k.bias ? b1.data() : no_bias, w2.data(), k.bias ? b2.data() : no_bias,
                                              O > 0 ? w3.data() : no_bias, dx.data.data(), dx.s, g_w1.data(),
                                              k.bias ? g_b1.data() : nullptr, g_w2.data(), k.bias ? g_b2.data() : nullptr,
                                              O > 0 ? g_w3.data() : nullptr, k.bias && O > 0 ? g_b3.data() : nullptr,
                                              workspace, s, nullptr),
                cudaSuccess);
  std::free(workspace);
  compare_rel<T>(ledger, zero_reference_ok, what + "dx", dx.values(), dx_ref);
  ledger.record(dx.gaps_untouched(), what + "dx gaps", "elements outside the view keep their sentinel");
  compare_rel<T>(ledger, zero_reference_ok, what + "dw1", as_double(g_w1), dw1);
  compare_rel<T>(ledger, zero_reference_ok, what + "dw2", as_double(g_w2), dw2);
  if (O > 0) compare_rel<T>(ledger, zero_reference_ok, what + "dw3", as_double(g_w3), dw3);
  if (k.bias) {
    compare_rel<T>(ledger, zero_reference_ok, what + "db1", as_double(g_b1), db1);
    compare_rel<T>(ledger, zero_reference_ok, what + "db2", as_double(g_b2), db2);
    if (O > 0) compare_rel<T>(ledger, zero_reference_ok, what + "db3", as_double(g_b3), db3);
  }
}

template <class T>
void run_all(Ledger& ledger, uint64_t seed) {
  const Layout layouts[] = {Layout::nchw, Layout::nhwc, Layout::strided};
  int index = 0;
  for (const SquareCase& k : kCases) {
    run_case<T>(ledger, general(k), layouts[index % 3], seed + uint64_t(index), false);
    ++index;
  }
}

}  // namespace

const char* chain_layout_name(ChainLayout l) {
  return l == ChainLayout::nchw ? "nchw" : l == ChainLayout::nhwc ? "channels_last" : "strided view";
}

void chain_case(Ledger& ledger, const ChainCase& k, ChainLayout layout, Path path, uint64_t seed) {
  switch (path) {
    case Path::f64: return run_case<double>(ledger, k, layout, seed, true);
    case Path::f32: return run_case<float>(ledger, k, layout, seed, true);
    case Path::f16: return run_case<__half>(ledger, k, layout, seed, true);
    case Path::bf16: return run_case<__nv_bfloat16>(ledger, k, layout, seed, true);
    case Path::tf32: break;
  }
  ledger.record(false, std::string("chain ") + k.name, "no tf32 chain kernels (f64, f32, f16, bf16)");
}

void check_chain(Ledger& ledger) {
  run_all<double>(ledger, 1000);
  run_all<float>(ledger, 2000);
  run_all<__half>(ledger, 3000);
  run_all<__nv_bfloat16>(ledger, 4000);
}

}  // namespace harness
