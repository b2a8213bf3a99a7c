// The convolution launchers (conv.h: implicit GEMM forward/input grad/weight grad, depthwise, the
// split-reduction sum) on every dtype path against float64 references, on awkward shapes and
// activation layouts. Inputs outside the view (gaps of a strided layout) hold NaN, so a stray read
// shows; output gaps must keep their sentinel, so a stray write shows.
#include <sys/mman.h>

#include <cstdlib>
#include <string>

#include "cases.h"
#include "expandnets/conv.h"
#include "harness.h"

namespace harness {
namespace {

using expandnets::ConvShape;
using expandnets::Strides4;

// Odd sizes, stride 2, padding, dilation, groups, depthwise, batch 1, 1x1, a kernel larger than
// the stride (overlapping windows) and one smaller (pixels no window reads), more than one GEMM
// tile in every dimension, and pixel counts that split the weight gradient's reduction.
const ConvCase kCases[] = {
    {"3x3 pad1 odd", 2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},
    {"3x2 stride2 groups2 batch1", 1, 4, 8, 6, 6, 3, 2, 2, 2, 1, 0, 1, 1, 2, true},
    {"3x3 dilation (2,1) stride (1,2)", 2, 5, 9, 8, 7, 3, 3, 1, 2, 2, 1, 2, 1, 1, false},
    {"1x1 wide (3 k steps, 2 column tiles)", 1, 70, 3, 5, 66, 1, 1, 1, 1, 0, 0, 1, 1, 1, true},
    {"5x5 stride (2,1) groups3", 3, 6, 11, 10, 6, 5, 5, 2, 1, 2, 2, 1, 1, 3, true},
    {"1x1 stride2 (unread pixels)", 2, 3, 7, 6, 4, 1, 1, 2, 2, 0, 0, 1, 1, 1, true},
    {"3x3 33x33 (weight grad split in 3)", 3, 3, 33, 33, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},
    {"depthwise 3x3 pad1", 2, 6, 7, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6, true},
    {"depthwise 3x5 stride2 dilation (2,1)", 1, 5, 10, 9, 5, 3, 5, 2, 2, 1, 2, 2, 1, 5, false},
    {"depthwise 48x48 (weight grad split)", 1, 3, 48, 48, 3, 3, 3, 1, 1, 1, 1, 1, 1, 3, true},
};

using Layout = ConvLayout;
// Images 2^31 + 7 elements apart: every offset past the first image exceeds int32.
constexpr int64_t kHugeImageStride = (int64_t(1) << 31) + 7;
const char* layout_name(Layout l) { return conv_layout_name(l); }

// Element strides of an (n, c, h, w) activation in a layout; "strided" is a view with every
// other width element, padded rows, planes and images (like x[..., ::2] of a larger buffer).
Strides4 strides_for(Layout l, int64_t n, int64_t c, int64_t h, int64_t w) {
  switch (l) {
    case Layout::nchw: return {c * h * w, h * w, w, 1};
    case Layout::nhwc: return {h * w * c, 1, w * c, c};
    case Layout::cnhw: return {h * w, n * h * w, w, 1};
    case Layout::huge: return {kHugeImageStride, h * w, w, 1};
    case Layout::strided: {
      const int64_t sh = 2 * w + 1, sc = h * sh + 3;
      return {c * sc + 5, sc, sh, 2};
    }
  }
  return {};
}

// An activation of a given layout in an exact-size buffer (so AddressSanitizer sees overruns),
// gaps filled with the sentinel; the huge layout lives in a sparse mapping (only the pages of the
// view are ever touched) and has no sentinels.
template <class T>
struct Storage {
  T* ptr = nullptr;
  size_t size = 0;
  bool sparse = false;
  explicit Storage(size_t n, bool sparse_) : size(n), sparse(sparse_) {
    if (sparse) {
      void* p = mmap(nullptr, n * sizeof(T), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) std::abort();
      ptr = static_cast<T*>(p);
    } else {
      ptr = new T[n];
      for (size_t i = 0; i < n; ++i) ptr[i] = Scalar<T>::sentinel();
    }
  }
  ~Storage() {
    if (sparse) {
      munmap(ptr, size * sizeof(T));
    } else {
      delete[] ptr;
    }
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  T* data() { return ptr; }
  const T* data() const { return ptr; }
  T& operator[](size_t i) { return ptr[i]; }
  const T& operator[](size_t i) const { return ptr[i]; }
};

template <class T>
struct Activation {
  int64_t n, c, h, w;
  Strides4 s;
  Storage<T> data;
  Activation(int64_t n_, int64_t c_, int64_t h_, int64_t w_, Layout layout)
      : n(n_), c(c_), h(h_), w(w_), s(strides_for(layout, n_, c_, h_, w_)), data(span_of(), layout == Layout::huge) {}
  size_t span_of() const {
    return n * c * h * w == 0 ? 0 : size_t((n - 1) * s.n + (c - 1) * s.c + (h - 1) * s.h + (w - 1) * s.w + 1);
  }
  int64_t offset(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return in * s.n + ic * s.c + ih * s.h + iw * s.w;
  }
  T& at(int64_t in, int64_t ic, int64_t ih, int64_t iw) { return data[size_t(offset(in, ic, ih, iw))]; }
  double get(int64_t in, int64_t ic, int64_t ih, int64_t iw) const {
    return Scalar<T>::to_double(data[size_t(offset(in, ic, ih, iw))]);
  }
  void randomize(Random& rng) {
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < c; ++b)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) at(a, b, y, x) = rng.value<T>();
  }
  // Element pointers in NCHW order (the order of the references).
  std::vector<const T*> view() const {
    std::vector<const T*> p;
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < c; ++b)
        for (int64_t y = 0; y < h; ++y)
          for (int64_t x = 0; x < w; ++x) p.push_back(&data[size_t(offset(a, b, y, x))]);
    return p;
  }
  // True when every element outside the view still holds the sentinel.
  bool gaps_untouched() const {
    if (data.sparse) return true;
    std::vector<char> inside(data.size, 0);
    for (const T* p : view()) inside[size_t(p - data.data())] = 1;
    for (size_t i = 0; i < data.size; ++i) {
      if (!inside[i] && !same_bits(data[i], Scalar<T>::sentinel())) return false;
    }
    return true;
  }
};

ConvShape shape_of(const ConvCase& k) {
  ConvShape s;
  s.batch = k.n;
  s.channels = k.c;
  s.height = k.h;
  s.width = k.w;
  s.out_channels = k.o;
  s.kernel_h = k.kh;
  s.kernel_w = k.kw;
  s.stride_h = k.sh;
  s.stride_w = k.sw;
  s.pad_h = k.ph;
  s.pad_w = k.pw;
  s.dilation_h = k.dh;
  s.dilation_w = k.dw;
  s.groups = k.groups;
  s.out_height = (k.h + 2 * k.ph - k.dh * (k.kh - 1) - 1) / k.sh + 1;
  s.out_width = (k.w + 2 * k.pw - k.dw * (k.kw - 1) - 1) / k.sw + 1;
  return s;
}

template <class T>
void run_case(Ledger& ledger, const ConvCase& k, Layout layout, bool allow_tf32, uint64_t seed) {
  const ConvShape s = shape_of(k);
  const Tolerance tol = path_tolerance<T>(allow_tf32);
  const int64_t cg = s.channels / s.groups, og = s.out_channels / s.groups, P = s.out_height, Q = s.out_width;
  const std::string what = std::string(layout == Layout::huge ? "int64 conv " : "conv ") + k.name + " [" + tol.path + ", " + layout_name(layout) + "] ";
  Random rng(seed);
  Activation<T> x(s.batch, s.channels, s.height, s.width, layout), dy(s.batch, s.out_channels, P, Q, layout);
  x.randomize(rng);
  dy.randomize(rng);
  std::vector<T> weight = random_vector<T>(rng, size_t(s.out_channels * cg * s.kernel_h * s.kernel_w));
  std::vector<T> bias = random_vector<T>(rng, size_t(s.out_channels));
  const auto W = [&](int64_t o, int64_t c, int64_t i, int64_t j) {
    return Scalar<T>::to_double(weight[size_t(((o * cg + c) * s.kernel_h + i) * s.kernel_w + j)]);
  };

  // float64 references of all three passes in one sweep over (output pixel, filter tap).
  std::vector<Ref> y_ref(size_t(s.batch * s.out_channels * P * Q)), dx_ref(size_t(s.batch * s.channels * s.height * s.width));
  std::vector<Ref> dw_ref(weight.size()), db_ref(bias.size());
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t o = 0; o < s.out_channels; ++o)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          const int64_t g = o / og;
          const double g_out = dy.get(n, o, p, q);
          Ref& y = y_ref[size_t(((n * s.out_channels + o) * P + p) * Q + q)];
          db_ref[size_t(o)].add(g_out);
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t i = 0; i < s.kernel_h; ++i)
              for (int64_t j = 0; j < s.kernel_w; ++j) {
                const int64_t h = p * s.stride_h - s.pad_h + i * s.dilation_h, w = q * s.stride_w - s.pad_w + j * s.dilation_w;
                if (h < 0 || h >= s.height || w < 0 || w >= s.width) continue;
                const int64_t ci = g * cg + c;
                y.add(x.get(n, ci, h, w) * W(o, c, i, j));
                dx_ref[size_t(((n * s.channels + ci) * s.height + h) * s.width + w)].add(g_out * W(o, c, i, j));
                dw_ref[size_t(((o * cg + c) * s.kernel_h + i) * s.kernel_w + j)].add(g_out * x.get(n, ci, h, w));
              }
          if (k.bias) y.add(Scalar<T>::to_double(bias[size_t(o)]));
        }

  Activation<T> y(s.batch, s.out_channels, P, Q, layout);
  expect_status(ledger, what + "forward status",
                expandnets::conv2d_forward<T>(x.data.data(), x.s, weight.data(), k.bias ? bias.data() : nullptr,
                                              y.data.data(), y.s, s, allow_tf32, nullptr),
                cudaSuccess);
  compare(ledger, what + "forward y", tol, y.view(), y_ref);
  ledger.record(y.gaps_untouched(), what + "forward writes only y's elements", "sentinels outside the view");

  Activation<T> dx(s.batch, s.channels, s.height, s.width, layout);
  expect_status(ledger, what + "input grad status",
                expandnets::conv2d_input_grad<T>(dy.data.data(), dy.s, weight.data(), dx.data.data(), dx.s, s,
                                                 allow_tf32, nullptr),
                cudaSuccess);
  compare(ledger, what + "input grad dx", tol, dx.view(), dx_ref);
  ledger.record(dx.gaps_untouched(), what + "input grad writes only dx's elements", "sentinels outside the view");

  const size_t ws_bytes = expandnets::conv2d_weight_grad_workspace_bytes<T>(s);
  void* workspace = nullptr;
  if (posix_memalign(&workspace, 16, ws_bytes == 0 ? 16 : ws_bytes) != 0) std::abort();
  std::memset(workspace, 0xff, ws_bytes);  // NaN: the kernels must write every partial they read
  std::vector<T> dweight = sentinel_vector<T>(weight.size()), dbias = sentinel_vector<T>(bias.size());
  expect_status(ledger, what + "weight grad status",
                expandnets::conv2d_weight_grad<T>(x.data.data(), x.s, dy.data.data(), dy.s, dweight.data(),
                                                  k.bias ? dbias.data() : nullptr, workspace, s, allow_tf32, nullptr),
                cudaSuccess);
  std::free(workspace);
  compare(ledger, what + "weight grad dW", tol, pointers(dweight), dw_ref);
  if (k.bias) compare(ledger, what + "weight grad db", tol, pointers(dbias), db_ref);
}

template <class T>
void run_all(Ledger& ledger, bool allow_tf32) {
  const Layout layouts[] = {Layout::nchw, Layout::nhwc, Layout::strided, Layout::cnhw};
  int index = 0;
  for (const ConvCase& k : kCases) {
    // Every case in NCHW and in one other layout, the other layouts taking turns.
    const Layout other = layouts[1 + index % 3];
    run_case<T>(ledger, k, Layout::nchw, allow_tf32, 1000 + uint64_t(index));
    run_case<T>(ledger, k, other, allow_tf32, 2000 + uint64_t(index));
    ++index;
  }
}

// What the launchers promise besides the numbers: nothing to do for empty tensors, zero gradients
// for an empty batch, cudaErrorInvalidConfiguration (and no kernel) past the grid limits.
void check_launcher_contract(Ledger& ledger) {
  ConvShape s = shape_of(kCases[0]);
  s.batch = 0;
  std::vector<float> none(1), dweight(size_t(5 * 3 * 9), 1.0f), dbias(5, 1.0f);
  const Strides4 st{1, 1, 1, 1};
  expect_status(ledger, "conv empty batch forward", expandnets::conv2d_forward<float>(none.data(), st, none.data(), nullptr,
                                                                                    none.data(), st, s, false, nullptr),
                cudaSuccess);
  std::vector<float> ws(1);
  expect_status(ledger, "conv empty batch weight grad",
                expandnets::conv2d_weight_grad<float>(none.data(), st, none.data(), st, dweight.data(), dbias.data(),
                                                      ws.data(), s, false, nullptr),
                cudaSuccess);
  bool zero = true;
  for (float v : dweight) zero = zero && v == 0.0f;
  for (float v : dbias) zero = zero && v == 0.0f;
  ledger.record(zero, "conv empty batch weight grad is zero", "dW and db memset to 0");

  // 65536 groups of one channel each (not depthwise: two output channels per group) exceed grid.z.
  ConvShape big = shape_of(kCases[0]);
  big.channels = 65536;
  big.out_channels = 2 * 65536;
  big.groups = 65536;
  big.batch = 1;
  const uint64_t before = cuemu::stats().blocks_run;
  expect_status(ledger, "conv 65536 groups forward",
                expandnets::conv2d_forward<float>(none.data(), st, none.data(), nullptr, none.data(), st, big, false,
                                                  nullptr),
                cudaErrorInvalidConfiguration);
  ledger.record(cuemu::stats().blocks_run == before, "conv 65536 groups runs no block", "rejected launch");
}

}  // namespace

const char* conv_layout_name(ConvLayout l) {
  switch (l) {
    case ConvLayout::nchw: return "nchw";
    case ConvLayout::nhwc: return "channels_last";
    case ConvLayout::strided: return "strided view";
    case ConvLayout::cnhw: return "cnhw";
    case ConvLayout::huge: return "images 2^31+7 elements apart";
  }
  return "?";
}

void conv_case(Ledger& ledger, const ConvCase& k, ConvLayout layout, Path path, uint64_t seed) {
  switch (path) {
    case Path::f64: return run_case<double>(ledger, k, layout, false, seed);
    case Path::f32: return run_case<float>(ledger, k, layout, false, seed);
    case Path::tf32: return run_case<float>(ledger, k, layout, true, seed);
    case Path::f16: return run_case<__half>(ledger, k, layout, false, seed);
    case Path::bf16: return run_case<__nv_bfloat16>(ledger, k, layout, false, seed);
  }
}

// Activations whose images lie 2^31 + 7 elements apart: x, y, dy and dx offsets of the second
// image exceed int32, in the implicit GEMM (FMA and WMMA maths) and in the depthwise kernels.
void check_conv_int64(Ledger& ledger) {
  for (const ConvCase& k : kCases) {
    const std::string name = k.name;
    if (name != "3x3 pad1 odd" && name != "depthwise 3x3 pad1") continue;
    run_case<float>(ledger, k, Layout::huge, false, 31);
    run_case<__nv_bfloat16>(ledger, k, Layout::huge, false, 32);
  }
}

void check_conv(Ledger& ledger) {
  run_all<double>(ledger, false);
  run_all<float>(ledger, false);
  run_all<float>(ledger, true);
  run_all<__half>(ledger, false);
  run_all<__nv_bfloat16>(ledger, false);
  check_launcher_contract(ledger);
}

}  // namespace harness
