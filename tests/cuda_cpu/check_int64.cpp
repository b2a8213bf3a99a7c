// 64-bit offsets: kernels run on tensors of more than 2^31 elements that touch little memory
// (sparse mappings: only the pages a checked block reads or writes are ever materialized), and
// only the blocks that own the highest offsets run (cuemu's block filter; csrc blocks are
// independent). With an int32 offset anywhere on those paths the kernel reads or writes 8+ GiB
// away from the right place: a fault, or a value that differs from the float64 reference.
#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "expandnets/chain.h"
#include "expandnets/compose.h"
#include "expandnets/conv.h"
#include "expandnets/partial_sums.cuh"
#include "harness.h"

namespace harness {

void check_conv_int64(Ledger& ledger);

namespace {

using expandnets::CkShape;
using expandnets::ClShape;

// A zero-filled sparse array of n floats.
class Sparse {
 public:
  explicit Sparse(size_t n) : n_(n) {
    void* p = mmap(nullptr, n * sizeof(float), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) std::abort();
    p_ = static_cast<float*>(p);
  }
  ~Sparse() { munmap(p_, n_ * sizeof(float)); }
  Sparse(const Sparse&) = delete;
  Sparse& operator=(const Sparse&) = delete;
  float* data() { return p_; }
  float& operator[](int64_t i) { return p_[i]; }

 private:
  size_t n_;
  float* p_;
};

constexpr int64_t kInt32Max = 2147483647;

// Runs only the blocks of the last group (grid.x = groups or groups * taps).
void last_groups_only(int64_t groups) {
  cuemu::set_block_filter([groups](const uint3& b, const dim3& g) {
    return int64_t(b.x) >= int64_t(g.x) - int64_t(g.x) / groups;
  });
}

void last_tiles_only() {
  cuemu::set_block_filter([](const uint3& b, const dim3& g) { return b.y + 1 == g.y && b.z + 1 == g.z; });
}

// CL: W (groups, o, i, taps) of 65537 * 64 * 64 * 9 > 2^31 elements; the last group's W and dW
// start 2.4e9 elements in. a = c = 1 keeps the weights small; the chain still runs.
void cl_int64(Ledger& ledger) {
  const ClShape s{65537, 1, 64, 1, 64, 9};
  const int64_t per_group = s.o * s.i * s.taps, g = s.groups - 1;
  ledger.record(g * per_group > kInt32Max, "int64 cl: the last group starts past 2^31", std::to_string(g * per_group));
  const Tolerance tol = path_tolerance<float>(false);
  Random rng(64);
  std::vector<float> w1 = random_vector<float>(rng, size_t(s.groups * s.a * s.i));
  std::vector<float> w2 = random_vector<float>(rng, size_t(s.groups * s.c * s.a * s.taps));
  std::vector<float> w3 = random_vector<float>(rng, size_t(s.groups * s.o * s.c));
  Sparse w(size_t(s.groups * per_group)), grad(size_t(s.groups * per_group));
  for (int64_t e = 0; e < per_group; ++e) grad[g * per_group + e] = float(rng.uniform());
  const float* W1 = w1.data() + g * s.i;
  const float* W2 = w2.data() + g * s.taps;
  const float* W3 = w3.data() + g * s.o;

  last_groups_only(s.groups);
  expect_status(ledger, "int64 cl forward status",
                expandnets::cl_compose_forward<float>(w1.data(), w2.data(), w3.data(), w.data(), s, nullptr), cudaSuccess);
  std::vector<float> dw1 = sentinel_vector<float>(w1.size()), dw2 = sentinel_vector<float>(w2.size());
  std::vector<float> dw3 = sentinel_vector<float>(w3.size());
  expect_status(ledger, "int64 cl backward status",
                expandnets::cl_compose_backward<float>(grad.data(), w1.data(), w2.data(), w3.data(), dw1.data(),
                                                       dw2.data(), dw3.data(), s, nullptr),
                cudaSuccess);
  cuemu::set_block_filter(nullptr);

  std::vector<const float*> got_w, got_dw1, got_dw2, got_dw3;
  std::vector<Ref> ref_w, ref_dw1(size_t(s.i)), ref_dw2(size_t(s.taps)), ref_dw3(size_t(s.o));
  for (int64_t o = 0; o < s.o; ++o)
    for (int64_t i = 0; i < s.i; ++i)
      for (int64_t t = 0; t < s.taps; ++t) {
        const int64_t at = (o * s.i + i) * s.taps + t;
        Ref r;
        r.add(double(W3[o]) * W2[t] * W1[i]);
        ref_w.push_back(r);
        got_w.push_back(&w[g * per_group + at]);
        const double dW = grad[g * per_group + at];
        ref_dw1[size_t(i)].add(double(W2[t]) * W3[o] * dW);
        ref_dw2[size_t(t)].add(double(W3[o]) * dW * W1[i]);
        ref_dw3[size_t(o)].add(dW * W1[i] * W2[t]);
      }
  for (int64_t i = 0; i < s.i; ++i) got_dw1.push_back(&dw1[size_t(g * s.i + i)]);
  for (int64_t t = 0; t < s.taps; ++t) got_dw2.push_back(&dw2[size_t(g * s.taps + t)]);
  for (int64_t o = 0; o < s.o; ++o) got_dw3.push_back(&dw3[size_t(g * s.o + o)]);
  Tolerance chain = tol;
  chain.acc_unit *= 2;
  compare(ledger, "int64 cl forward W of the last group", chain, got_w, ref_w);
  compare(ledger, "int64 cl backward dW1 of the last group", chain, got_dw1, ref_dw1);
  compare(ledger, "int64 cl backward dW2 of the last group", chain, got_dw2, ref_dw2);
  compare(ledger, "int64 cl backward dW3 of the last group", chain, got_dw3, ref_dw3);
}

// CK: K (o, i, 1, 1) with o = i = 46400 (o * i > 2^31); the last 32x32 tile of K starts past 2^31.
void ck_int64(Ledger& ledger) {
  const CkShape s{46400, 1, 46400, 1, 1, 1, 1};
  const int64_t o0 = (s.o - 1) / 32 * 32, i0 = (s.i - 1) / 32 * 32;
  ledger.record(o0 * s.i + i0 > kInt32Max, "int64 ck: the last tile starts past 2^31", std::to_string(o0 * s.i + i0));
  const Tolerance tol = path_tolerance<float>(false);
  Random rng(65);
  std::vector<float> later = random_vector<float>(rng, size_t(s.o)), earlier = random_vector<float>(rng, size_t(s.i));
  Sparse k(size_t(s.o * s.i)), grad(size_t(s.o * s.i));
  // The last tile's rows (for d_later) and columns (for d_earlier) of the gradient.
  for (int64_t o = o0; o < s.o; ++o)
    for (int64_t i = 0; i < s.i; ++i) grad[o * s.i + i] = float(rng.uniform());
  for (int64_t o = 0; o < o0; ++o)
    for (int64_t i = i0; i < s.i; ++i) grad[o * s.i + i] = float(rng.uniform());
  std::vector<float> dl = sentinel_vector<float>(later.size()), de = sentinel_vector<float>(earlier.size());
  last_tiles_only();
  expect_status(ledger, "int64 ck forward status",
                expandnets::ck_fold_forward<float>(later.data(), earlier.data(), k.data(), s, nullptr), cudaSuccess);
  expect_status(ledger, "int64 ck backward status",
                expandnets::ck_fold_backward<float>(grad.data(), later.data(), earlier.data(), dl.data(), de.data(), s,
                                                    nullptr),
                cudaSuccess);
  cuemu::set_block_filter(nullptr);
  std::vector<const float*> got_k, got_dl, got_de;
  std::vector<Ref> ref_k, ref_dl, ref_de;
  for (int64_t o = o0; o < s.o; ++o) {
    Ref dl_ref;
    for (int64_t i = 0; i < s.i; ++i) dl_ref.add(double(grad[o * s.i + i]) * earlier[size_t(i)]);
    ref_dl.push_back(dl_ref);
    got_dl.push_back(&dl[size_t(o)]);
    for (int64_t i = i0; i < s.i; ++i) {
      Ref r;
      r.add(double(later[size_t(o)]) * earlier[size_t(i)]);
      ref_k.push_back(r);
      got_k.push_back(&k[o * s.i + i]);
    }
  }
  for (int64_t i = i0; i < s.i; ++i) {
    Ref r;
    for (int64_t o = 0; o < s.o; ++o) r.add(double(later[size_t(o)]) * grad[o * s.i + i]);
    ref_de.push_back(r);
    got_de.push_back(&de[size_t(i)]);
  }
  compare(ledger, "int64 ck forward K of the last tile", tol, got_k, ref_k);
  compare(ledger, "int64 ck backward d_later of the last tile", tol, got_dl, ref_dl);
  compare(ledger, "int64 ck backward d_earlier of the last tile", tol, got_de, ref_de);
}

// Bias fold: W2 (groups, c, a, taps) of 65536 * 1 * 4096 * 16 = 2^32 elements.
void bias_int64(Ledger& ledger) {
  const ClShape s{65536, 4096, 0, 1, 1, 16};
  const int64_t per_group = s.c * s.a * s.taps, g = s.groups - 1;
  ledger.record(g * per_group > kInt32Max, "int64 bias fold: the last group's W2 starts past 2^31",
                std::to_string(g * per_group));
  Tolerance tol = path_tolerance<float>(false);
  tol.acc_unit *= 3;
  Random rng(66);
  Sparse w2(size_t(s.groups * per_group)), b1(size_t(s.groups * s.a));
  for (int64_t e = 0; e < per_group; ++e) w2[g * per_group + e] = float(rng.uniform());
  for (int64_t a = 0; a < s.a; ++a) b1[g * s.a + a] = float(rng.uniform());
  std::vector<float> w3 = random_vector<float>(rng, size_t(s.groups)), b2 = random_vector<float>(rng, size_t(s.groups));
  std::vector<float> b3 = random_vector<float>(rng, size_t(s.groups)), bias = sentinel_vector<float>(size_t(s.groups));
  last_groups_only(s.groups);
  expect_status(ledger, "int64 bias fold status",
                expandnets::cl_bias_fold<float>(w2.data(), w3.data(), b1.data(), b2.data(), b3.data(), bias.data(), s,
                                                nullptr),
                cudaSuccess);
  cuemu::set_block_filter(nullptr);
  Ref r;
  r.add(b3[size_t(g)]);
  r.add(double(w3[size_t(g)]) * b2[size_t(g)]);
  for (int64_t a = 0; a < s.a; ++a)
    for (int64_t t = 0; t < s.taps; ++t) r.add(double(w3[size_t(g)]) * w2[g * per_group + a * s.taps + t] * b1[g * s.a + a]);
  compare<float>(ledger, "int64 bias fold of the last group", tol, {&bias[size_t(g)]}, {r});
}

// The split-reduction sum with partial[split, e] past 2^31: 3 splits of 2^30 elements.
void sum_partials_int64(Ledger& ledger) {
  const int64_t splits = 3, length = int64_t(1) << 30;
  Sparse partial{size_t(splits * length)}, out{size_t(length)};
  Random rng(67);
  const unsigned blocks = 1u << 20;  // what elementwise_blocks() gives for this length
  const int64_t stride = int64_t(blocks) * expandnets::detail::kElementwiseThreads;
  std::vector<int64_t> elements;  // those of the last block
  for (int64_t e = int64_t(blocks - 1) * expandnets::detail::kElementwiseThreads; e < length; e += stride) {
    for (int t = 0; t < expandnets::detail::kElementwiseThreads; ++t) elements.push_back(e + t);
  }
  for (int64_t e : elements)
    for (int64_t split = 0; split < splits; ++split) partial[split * length + e] = float(rng.uniform());
  cuemu::set_block_filter([blocks](const uint3& b, const dim3&) { return b.x == blocks - 1; });
  cuemu::launch(expandnets::detail::sum_partials_kernel<float>, dim3(blocks),
                dim3(expandnets::detail::kElementwiseThreads), static_cast<const float*>(partial.data()), splits, length,
                out.data());
  cuemu::set_block_filter(nullptr);
  std::vector<const float*> got;
  std::vector<Ref> ref;
  for (int64_t e : elements) {
    Ref r;
    for (int64_t split = 0; split < splits; ++split) r.add(partial[split * length + e]);
    ref.push_back(r);
    got.push_back(&out[e]);
  }
  compare(ledger, "int64 sum_partials of the last block (reads past 2^31)", path_tolerance<float>(false), got, ref);
}

// The weight gradient's split-K partials and their sum past 2^31: a 65536 x (4096 * 3 * 3) weight
// (2.4e9 elements) from one output pixel; only the last 64 x 64 tile of the GEMM runs, and the
// sum blocks that cover it.
void weight_grad_int64(Ledger& ledger) {
  expandnets::ConvShape s{};
  s.batch = 1;
  s.channels = 4096;
  s.height = s.width = 3;
  s.out_channels = 65536;
  s.out_height = s.out_width = 1;
  s.kernel_h = s.kernel_w = 3;
  s.stride_h = s.stride_w = s.dilation_h = s.dilation_w = 1;
  s.groups = 1;
  const int64_t cols = s.channels * 9, numel = s.out_channels * cols;
  const int64_t o0 = s.out_channels - 64, j0 = cols - 64;
  ledger.record(o0 * cols + j0 > kInt32Max, "int64 weight grad: the last tile of dW starts past 2^31",
                std::to_string(o0 * cols + j0));
  Random rng(68);
  std::vector<float> x = random_vector<float>(rng, size_t(s.channels * 9)), dy = random_vector<float>(rng, size_t(s.out_channels));
  const size_t ws_bytes = expandnets::conv2d_weight_grad_workspace_bytes<float>(s);
  ledger.record(ws_bytes == sizeof(float) * size_t(numel + s.out_channels), "int64 weight grad: one split",
                std::to_string(ws_bytes) + " workspace bytes");
  Sparse workspace{ws_bytes / sizeof(float)}, dweight{size_t(numel)};
  // The sum's blocks of 256 threads stride over 2^28 elements: the blocks that own the last tile.
  std::vector<char> sum_block(size_t(1) << 20, 0);
  for (int64_t o = o0; o < s.out_channels; ++o)
    for (int64_t j = j0; j < cols; ++j) sum_block[size_t((o * cols + j) % (int64_t(1) << 28) / 256)] = 1;
  cuemu::set_block_filter([&](const uint3& b, const dim3& g) {
    if (g.x == (1u << 20) && g.y == 1) return sum_block[b.x] != 0;  // sum_partials
    return b.x + 1 == g.x && b.y + 1 == g.y;                          // the GEMM's last tile
  });
  const expandnets::Strides4 sx{s.channels * 9, 9, 3, 1}, sdy{s.out_channels, 1, 1, 1};
  expect_status(ledger, "int64 weight grad status",
                expandnets::conv2d_weight_grad<float>(x.data(), sx, dy.data(), sdy, dweight.data(), nullptr,
                                                      workspace.data(), s, false, nullptr),
                cudaSuccess);
  cuemu::set_block_filter(nullptr);
  std::vector<const float*> got;
  std::vector<Ref> ref;
  for (int64_t o = o0; o < s.out_channels; ++o)
    for (int64_t j = j0; j < cols; ++j) {
      Ref r;
      r.add(double(dy[size_t(o)]) * x[size_t(j)]);  // x is (1, c, 3, 3): j = c * 9 + tap
      ref.push_back(r);
      got.push_back(&dweight[o * cols + j]);
    }
  compare(ledger, "int64 weight grad dW of the last tile (partials and their sum past 2^31)",
          path_tolerance<float>(false), got, ref);
}

// The chain kernels on images 2^31 + 7 elements apart, against the same computation on compact
// NCHW tensors (which the chain group checks against float64): every output and gradient must be
// bit-identical, since strides change addresses, not the order of any sum.
struct ChainResult {
  std::vector<float> y, dx, dw1, db1, dw2, db2, dw3, db3;
};

ChainResult run_chain(const expandnets::ChainShape& s, const std::vector<float>& x, const std::vector<float>& dy,
                      const std::vector<float>& w1, const std::vector<float>& b1, const std::vector<float>& w2,
                      const std::vector<float>& b2, const std::vector<float>& w3, const std::vector<float>& b3,
                      bool huge) {
  const int64_t in_c = s.groups * s.mg, out_c = s.groups * (s.o > 0 ? s.o : s.c);
  const auto strides = [&](int64_t c, int64_t h, int64_t w) {
    return expandnets::Strides4{huge ? (int64_t(1) << 31) + 7 : c * h * w, h * w, w, 1};
  };
  const expandnets::Strides4 sx = strides(in_c, s.height, s.width), sy = strides(out_c, s.out_h, s.out_w);
  const size_t x_span = size_t((s.batch - 1) * sx.n + in_c * s.height * s.width);
  const size_t y_span = size_t((s.batch - 1) * sy.n + out_c * s.out_h * s.out_w);
  Sparse xs{x_span}, dys{y_span}, ys{y_span}, dxs{x_span};
  const int64_t x_image = in_c * s.height * s.width, y_image = out_c * s.out_h * s.out_w;
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t e = 0; e < x_image; ++e) xs[n * sx.n + e] = x[size_t(n * x_image + e)];
    for (int64_t e = 0; e < y_image; ++e) dys[n * sy.n + e] = dy[size_t(n * y_image + e)];
  }
  ChainResult r;
  r.dw1.assign(w1.size(), Scalar<float>::sentinel());
  r.db1.assign(b1.size(), Scalar<float>::sentinel());
  r.dw2.assign(w2.size(), Scalar<float>::sentinel());
  r.db2.assign(b2.size(), Scalar<float>::sentinel());
  r.dw3.assign(w3.size(), Scalar<float>::sentinel());
  r.db3.assign(b3.size(), Scalar<float>::sentinel());
  const bool l3 = s.o > 0;
  if (expandnets::chain_forward<float>(xs.data(), sx, w1.data(), b1.data(), w2.data(), b2.data(), l3 ? w3.data() : nullptr,
                                       l3 ? b3.data() : nullptr, ys.data(), sy, s, nullptr) != cudaSuccess) {
    return {};
  }
  const size_t bytes = expandnets::chain_backward_workspace_bytes<float>(s);
  void* workspace = std::aligned_alloc(16, (bytes + 15) / 16 * 16 + 16);
  const cudaError_t err = expandnets::chain_backward<float>(
      dys.data(), sy, xs.data(), sx, w1.data(), b1.data(), w2.data(), b2.data(), l3 ? w3.data() : nullptr, dxs.data(),
      sx, r.dw1.data(), r.db1.data(), r.dw2.data(), r.db2.data(), l3 ? r.dw3.data() : nullptr,
      l3 ? r.db3.data() : nullptr, workspace, s, nullptr);
  std::free(workspace);
  if (err != cudaSuccess) return {};
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t e = 0; e < y_image; ++e) r.y.push_back(ys[n * sy.n + e]);
    for (int64_t e = 0; e < x_image; ++e) r.dx.push_back(dxs[n * sx.n + e]);
  }
  return r;
}

void chain_int64_case(Ledger& ledger, const char* name, const expandnets::ChainShape& s, uint64_t seed) {
  Random rng(seed);
  const int64_t in_c = s.groups * s.mg, out_c = s.groups * (s.o > 0 ? s.o : s.c);
  const std::vector<float> x = random_vector<float>(rng, size_t(s.batch * in_c * s.height * s.width));
  const std::vector<float> dy = random_vector<float>(rng, size_t(s.batch * out_c * s.out_h * s.out_w));
  const std::vector<float> w1 = random_vector<float>(rng, size_t(s.groups * s.a * s.mg * s.k1h * s.k1w));
  const std::vector<float> b1 = random_vector<float>(rng, size_t(s.groups * s.a));
  const std::vector<float> w2 = random_vector<float>(rng, size_t(s.groups * s.c * s.a * s.kh * s.kw));
  const std::vector<float> b2 = random_vector<float>(rng, size_t(s.groups * s.c));
  const std::vector<float> w3 = random_vector<float>(rng, size_t(s.groups * s.o * s.c));
  const std::vector<float> b3 = random_vector<float>(rng, size_t(s.groups * s.o));
  const ChainResult compact = run_chain(s, x, dy, w1, b1, w2, b2, w3, b3, false);
  const ChainResult huge = run_chain(s, x, dy, w1, b1, w2, b2, w3, b3, true);
  const auto same = [&](const char* what, const std::vector<float>& a, const std::vector<float>& b) {
    bool ok = !a.empty() && a.size() == b.size();
    size_t bad = 0;
    for (size_t i = 0; ok && i < a.size(); ++i) bad += !same_bits(a[i], b[i]) || std::isnan(a[i]);
    ledger.record(ok && bad == 0, std::string("int64 chain ") + name + " " + what + " (images 2^31+7 apart) equals compact",
                  std::to_string(a.size()) + " elements, " + std::to_string(bad) + " differ or NaN");
  };
  same("y", compact.y, huge.y);
  same("dx", compact.dx, huge.dx);
  same("dW1", compact.dw1, huge.dw1);
  same("db1", compact.db1, huge.db1);
  same("dW2", compact.dw2, huge.dw2);
  same("db2", compact.db2, huge.db2);
  if (s.o > 0) same("dW3", compact.dw3, huge.dw3);
  if (s.o > 0) same("db3", compact.db3, huge.db3);
}

void chain_int64(Ledger& ledger) {
  expandnets::ChainShape cl{};  // CL unit: 1x1 -> 3x3 pad 1 -> 1x1, ReLU, batch 2
  cl.batch = 2, cl.groups = 1, cl.mg = 3, cl.a = 6, cl.c = 8, cl.o = 4, cl.height = 5, cl.width = 6;
  cl.h1 = 7, cl.w1 = 8, cl.out_h = 5, cl.out_w = 6, cl.pad_top = cl.pad_left = 1;
  cl.k1h = cl.k1w = 1, cl.d1h = cl.d1w = 1, cl.kh = cl.kw = 3, cl.sh = cl.sw = 1, cl.dh = cl.dw = 1;
  cl.has_bias = true, cl.relu = true;
  chain_int64_case(ledger, "CL", cl, 70);
  expandnets::ChainShape ck{};  // CK pair: 3x3 pad 2 -> 3x3 stride 2, ReLU, batch 2
  ck.batch = 2, ck.groups = 1, ck.mg = 2, ck.a = 4, ck.c = 3, ck.o = 0, ck.height = 7, ck.width = 8;
  ck.h1 = 9, ck.w1 = 10, ck.out_h = 4, ck.out_w = 4, ck.pad_top = ck.pad_left = 2;
  ck.k1h = ck.k1w = 3, ck.d1h = ck.d1w = 1, ck.kh = ck.kw = 3, ck.sh = ck.sw = 2, ck.dh = ck.dw = 1;
  ck.has_bias = true, ck.relu = true;
  chain_int64_case(ledger, "CK", ck, 71);
}

}  // namespace

void check_int64(Ledger& ledger) {
  check_conv_int64(ledger);
  cl_int64(ledger);
  ck_int64(ledger);
  bias_int64(ledger);
  sum_partials_int64(ledger);
  weight_grad_int64(ledger);
  chain_int64(ledger);
}

}  // namespace harness
