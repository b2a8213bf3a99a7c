// Random valid cases for every launcher family, drawn from a seed: convolutions (forward, input
// grad, weight grad; dense, grouped, depthwise and depthwise-multiplier; any kernel, stride,
// padding, dilation and bias, in NCHW, channels_last, strided and CNHW layouts), the CL
// composition, bias fold and CK fold, chain units (CL and CK pairs, rectangular kernels, strides,
// dilations and asymmetric padding), and CL and CK work lists of several units. Each case runs
// on one kernel path (f64, f32 FMA, TF32, f16, bf16: the paths of its family take turns) through
// the per-case checks of the fixed groups (cases.h): same references, tolerances and sentinels.
//
// Case i draws its shape and data from (seed, i) alone, so `random --seed S --only i` replays it;
// every case prints its spec before it runs (a sanitizer abort names the case above its report)
// and every failed check names the seed, the case and its spec.
#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "cases.h"
#include "harness.h"

namespace harness {
namespace {

using expandnets::CkShape;
using expandnets::ClShape;

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t case_seed(uint64_t seed, int64_t index, uint64_t stream) {
  return mix(mix(mix(seed) ^ uint64_t(index)) ^ stream);
}

class Draw {
 public:
  explicit Draw(uint64_t seed) : engine_(seed) {}
  int64_t between(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(engine_); }
  bool chance(double p) { return std::uniform_real_distribution<double>(0, 1)(engine_) < p; }
  // A channel-like extent: mostly small, sometimes past one 32-wide tile.
  int64_t width(int64_t small, double wide_chance, int64_t wide_lo, int64_t wide_hi) {
    return chance(wide_chance) ? between(wide_lo, wide_hi) : between(1, small);
  }

 private:
  std::mt19937_64 engine_;
};

enum class Family { conv, chain, cl, cl_bias, ck, cl_worklist, ck_worklist, count };
const char* family_name(Family f) {
  switch (f) {
    case Family::conv: return "conv";
    case Family::chain: return "chain";
    case Family::cl: return "cl";
    case Family::cl_bias: return "cl_bias";
    case Family::ck: return "ck";
    case Family::cl_worklist: return "cl_worklist";
    case Family::ck_worklist: return "ck_worklist";
    case Family::count: break;
  }
  return "?";
}

// Which family case i belongs to: a fixed cycle of 20 (8 conv, 5 chain, 1 each of the one-shot
// compositions, 2 of each work list), so any count of 20 or more covers every family.
constexpr Family kCycle[] = {
    Family::conv, Family::chain,       Family::conv, Family::cl,      Family::conv,  Family::chain, Family::cl_worklist,
    Family::conv, Family::ck,          Family::chain, Family::conv,   Family::ck_worklist, Family::conv, Family::chain,
    Family::cl_bias, Family::conv,     Family::cl_worklist, Family::chain, Family::conv, Family::ck_worklist,
};
constexpr int64_t kCycleLength = sizeof(kCycle) / sizeof(kCycle[0]);

std::vector<Path> paths_of(Family f) {
  switch (f) {
    case Family::conv: return {Path::f64, Path::f32, Path::tf32, Path::f16, Path::bf16};
    case Family::chain: return {Path::f64, Path::f32, Path::f16, Path::bf16};
    default: return {Path::f64, Path::f32};
  }
}

// The path of case `index`: the cases of one family take the family's paths in turn (from a
// seed-dependent start), so every path gets its share whatever the count.
Path path_of(uint64_t seed, int64_t index) {
  const Family f = kCycle[index % kCycleLength];
  int64_t per_cycle = 0, before = 0;
  for (int64_t p = 0; p < kCycleLength; ++p) {
    if (kCycle[p] != f) continue;
    ++per_cycle;
    if (p < index % kCycleLength) ++before;
  }
  const int64_t k = index / kCycleLength * per_cycle + before;
  const std::vector<Path> paths = paths_of(f);
  return paths[size_t((k + int64_t(seed % paths.size())) % int64_t(paths.size()))];
}

std::string str(int64_t v) { return std::to_string(v); }
std::string pair(int64_t a, int64_t b) { return str(a) + "x" + str(b); }

// --- convolutions -------------------------------------------------------------------------------
struct ConvSpec {
  ConvCase k;
  ConvLayout layout;
};

std::string describe(const ConvSpec& s) {
  const ConvCase& k = s.k;
  return "conv n=" + str(k.n) + " c=" + str(k.c) + " h=" + str(k.h) + " w=" + str(k.w) + " o=" + str(k.o) +
         " kernel=" + pair(k.kh, k.kw) + " stride=" + pair(k.sh, k.sw) + " padding=" + pair(k.ph, k.pw) +
         " dilation=" + pair(k.dh, k.dw) + " groups=" + str(k.groups) + " bias=" + str(k.bias) +
         " layout=" + conv_layout_name(s.layout);
}

// Draws until the shape is valid (an output of at least 1x1) and small enough to check quickly.
ConvSpec draw_conv(Draw& d) {
  for (;;) {
    ConvCase k{};
    k.n = d.between(1, 3);
    const int64_t mode = d.between(0, 19);
    if (mode < 7) {  // dense
      k.groups = 1;
      k.c = d.width(8, 0.2, 17, 70);
      k.o = d.width(8, 0.2, 33, 80);  // past 64: two column tiles of the forward GEMM
    } else if (mode < 11) {  // grouped
      k.groups = d.between(2, 4);
      k.c = k.groups * d.width(5, 0.1, 17, 40);
      k.o = k.groups * d.between(1, 6);
    } else if (mode < 18) {  // depthwise: the dedicated kernels
      k.groups = k.c = k.o = d.width(10, 0.15, 20, 40);
      if (k.groups == 1) k.groups = k.c = k.o = 2;
    } else {  // depthwise multiplier: one input channel per group, on the implicit GEMM
      k.groups = k.c = d.between(1, 6);
      k.o = k.c * d.between(2, 3);
    }
    k.kh = d.chance(0.1) ? 7 : d.between(1, 5);
    k.kw = d.chance(0.3) ? k.kh : d.between(1, 5);
    // Mostly small images; sometimes enough pixels to split the weight gradient's reduction.
    const bool big = d.chance(0.25);
    k.sh = big && d.chance(0.6) ? 1 : d.between(1, 3);
    k.sw = d.chance(0.5) ? k.sh : d.between(1, 3);
    k.dh = d.chance(0.65) ? 1 : d.between(2, 3);
    k.dw = d.chance(0.5) ? k.dh : (d.chance(0.6) ? 1 : d.between(2, 3));
    const int64_t eh = k.dh * (k.kh - 1) + 1, ew = k.dw * (k.kw - 1) + 1;
    k.ph = d.between(0, eh / 2 + 1);
    k.pw = d.between(0, ew / 2 + 1);
    k.h = big ? d.between(24, 48) : d.between(1, 12);
    k.w = big ? d.between(24, 48) : d.between(1, 12);
    if (k.h + 2 * k.ph < eh) k.h = eh - 2 * k.ph + d.between(0, 3);
    if (k.w + 2 * k.pw < ew) k.w = ew - 2 * k.pw + d.between(0, 3);
    k.bias = d.chance(0.7);
    const int64_t P = (k.h + 2 * k.ph - eh) / k.sh + 1, Q = (k.w + 2 * k.pw - ew) / k.sw + 1;
    const int64_t macs = k.n * P * Q * k.o * (k.c / k.groups) * k.kh * k.kw;
    const int64_t pixels = k.n * std::max(P * Q, k.h * k.w);
    if (macs > 600000 || pixels > 7000) continue;
    const ConvLayout layouts[] = {ConvLayout::nchw, ConvLayout::nhwc, ConvLayout::strided, ConvLayout::cnhw};
    return {k, layouts[d.between(0, 3)]};
  }
}

// --- chain units --------------------------------------------------------------------------------
struct ChainSpec {
  ChainCase k;
  ChainLayout layout;
};

std::string describe(const ChainSpec& s) {
  const ChainCase& k = s.k;
  return std::string("chain ") + (k.o > 0 ? "CL" : "CK pair") + " n=" + str(k.n) + " groups=" + str(k.groups) +
         " mg=" + str(k.mg) + " a=" + str(k.a) + " c=" + str(k.c) + " o=" + str(k.o) + " h=" + str(k.h) +
         " w=" + str(k.w) + " kernel1=" + pair(k.k1h, k.k1w) + " dilation1=" + pair(k.d1h, k.d1w) +
         " kernel=" + pair(k.kh, k.kw) + " stride=" + pair(k.sh, k.sw) + " dilation=" + pair(k.dh, k.dw) +
         " pads(l,r,t,b)=" + str(k.pad_left) + "," + str(k.pad_right) + "," + str(k.pad_top) + "," +
         str(k.pad_bottom) + " bias=" + str(k.bias) + " relu=" + str(k.relu) + " layout=" + chain_layout_name(s.layout);
}

// As the binding accepts them: a KxK first layer only with one group; the padded input at least
// the unit's receptive field.
ChainSpec draw_chain(Draw& d) {
  for (;;) {
    ChainCase k{};
    const bool cl = d.chance(0.55);
    k.n = d.between(1, 3);
    const int64_t mode = d.between(0, 9);  // CK pairs mostly with one group (a KxK first layer)
    k.groups = mode < (cl ? 5 : 8) ? 1 : d.between(2, 4);
    k.mg = mode == 9 ? 1 : d.width(6, 0.12, 30, 40);  // mode 9: a depthwise-like unit
    k.a = d.width(10, 0.15, 30, 40);
    k.c = mode == 9 && d.chance(0.5) ? 1 : d.width(10, 0.15, 30, 40);
    k.o = cl ? d.width(10, 0.15, 30, 40) : 0;
    const bool kxk1 = k.groups == 1 && (cl ? d.chance(0.2) : d.chance(0.9));
    k.k1h = kxk1 ? (d.chance(0.5) ? 3 : d.between(1, 2)) : 1;
    k.k1w = kxk1 ? (d.chance(0.5) ? k.k1h : d.between(1, 3)) : 1;
    k.d1h = kxk1 && d.chance(0.35) ? 2 : 1;
    k.d1w = kxk1 && d.chance(0.35) ? 2 : 1;
    k.kh = d.between(1, 4);
    k.kw = d.chance(0.6) ? k.kh : d.between(1, 4);
    k.sh = d.between(1, 3);
    k.sw = d.chance(0.6) ? k.sh : d.between(1, 3);
    k.dh = d.chance(0.7) ? 1 : 2;
    k.dw = d.chance(0.6) ? k.dh : d.between(1, 2);
    k.pad_left = d.between(0, 2), k.pad_right = d.between(0, 2);
    k.pad_top = d.between(0, 2), k.pad_bottom = d.between(0, 2);
    k.h = d.between(1, 11);
    k.w = d.between(1, 11);
    // The receptive field of one output pixel in the padded input.
    const int64_t rh = k.d1h * (k.k1h - 1) + k.dh * (k.kh - 1) + 1, rw = k.d1w * (k.k1w - 1) + k.dw * (k.kw - 1) + 1;
    if (k.h + k.pad_top + k.pad_bottom < rh) k.h = rh - k.pad_top - k.pad_bottom + d.between(0, 3);
    if (k.w + k.pad_left + k.pad_right < rw) k.w = rw - k.pad_left - k.pad_right + d.between(0, 3);
    k.bias = d.chance(0.7);
    k.relu = d.chance(0.7);
    const int64_t h1 = k.h + k.pad_top + k.pad_bottom - k.d1h * (k.k1h - 1);
    const int64_t w1 = k.w + k.pad_left + k.pad_right - k.d1w * (k.k1w - 1);
    const int64_t P = (h1 - k.dh * (k.kh - 1) - 1) / k.sh + 1, Q = (w1 - k.dw * (k.kw - 1) - 1) / k.sw + 1;
    const int64_t macs = k.n * k.groups *
                         (h1 * w1 * k.a * k.mg * k.k1h * k.k1w + P * Q * (k.c * k.a * k.kh * k.kw + k.o * k.c));
    if (macs > 400000) continue;
    const ChainLayout layouts[] = {ChainLayout::nchw, ChainLayout::nhwc, ChainLayout::strided};
    return {k, layouts[d.between(0, 2)]};
  }
}

// --- compositions and work lists ----------------------------------------------------------------
std::string describe(const ClShape& s) {
  return "(groups " + str(s.groups) + ", a " + str(s.a) + ", i " + str(s.i) + ", c " + str(s.c) + ", o " + str(s.o) +
         ", taps " + str(s.taps) + ")";
}
std::string describe(const CkShape& s) {
  return "(o " + str(s.o) + ", c " + str(s.c) + ", i " + str(s.i) + ", later " + pair(s.a, s.a2) + ", earlier " +
         pair(s.b, s.b2) + ")";
}

int64_t taps(Draw& d) {
  const int64_t common[] = {1, 1, 4, 9, 9};
  return d.chance(0.5) ? common[d.between(0, 4)] : d.between(1, 9);
}

// A CL unit: widths mostly below one 32-wide tile, sometimes past one or two.
ClShape draw_cl(Draw& d, int64_t budget) {
  for (;;) {
    ClShape s{};
    s.groups = d.chance(0.6) ? 1 : d.between(2, 3);
    s.a = d.width(12, 0.2, 30, 70);
    s.i = d.width(12, 0.2, 30, 70);
    s.c = d.width(12, 0.2, 30, 70);
    s.o = d.width(12, 0.2, 30, 70);
    s.taps = taps(d);
    if (s.groups * s.taps * s.o * s.c * s.a * s.i <= budget) return s;
  }
}

// A bias fold: c and o sometimes past one 256-wide vector.
ClShape draw_bias(Draw& d) {
  for (;;) {
    ClShape s{};
    s.groups = d.between(1, 4);
    s.a = d.width(12, 0.2, 30, 50);
    s.i = 0;  // not read
    s.c = d.width(12, 0.25, 30, 300);
    s.o = d.width(12, 0.25, 30, 300);
    s.taps = taps(d);
    if (s.groups * s.o * s.c * s.a * s.taps <= 800000) return s;
  }
}

CkShape draw_ck(Draw& d, int64_t budget) {
  for (;;) {
    CkShape s{};
    s.o = d.width(10, 0.2, 30, 40);
    s.c = d.width(10, 0.2, 30, 40);
    s.i = d.width(10, 0.2, 30, 40);
    // Kernel extents: mostly up to 3, sometimes 4 or 5 (a fold's cost grows with its output taps).
    const auto extent = [&d]() { return d.chance(0.8) ? d.between(1, 3) : d.between(4, 5); };
    s.a = extent();
    s.a2 = d.chance(0.6) ? s.a : extent();
    s.b = extent();
    s.b2 = d.chance(0.6) ? s.b : extent();
    if (s.o * s.c * s.i * s.a * s.a2 * s.b * s.b2 <= budget) return s;
  }
}

template <class S>
std::string describe_list(const std::vector<S>& shapes) {
  std::string out;
  for (const S& s : shapes) out += (out.empty() ? "" : ", ") + describe(s);
  return "[" + out + "]";
}

}  // namespace

void check_random(Ledger& ledger, uint64_t seed, int64_t count, int64_t only) {
  std::map<std::pair<Family, Path>, int64_t> done;
  std::map<Family, double> seconds;
  int64_t cases = 0;
  const int64_t first = only >= 0 ? only : 0, end = only >= 0 ? only + 1 : count;
  for (int64_t index = first; index < end; ++index) {
    Draw d(case_seed(seed, index, 1));
    const uint64_t data_seed = case_seed(seed, index, 2);
    const Family family = kCycle[index % kCycleLength];
    const Path path = path_of(seed, index);
    const std::string name = "case " + str(index);
    std::string spec;
    ConvSpec conv{};
    ChainSpec chain{};
    ClShape cl{};
    CkShape ck{};
    std::vector<ClShape> units;
    std::vector<CkShape> folds;
    bool biases = false;
    switch (family) {
      case Family::conv:
        conv = draw_conv(d);
        conv.k.name = name.c_str();
        spec = describe(conv);
        break;
      case Family::chain:
        chain = draw_chain(d);
        chain.k.name = name.c_str();
        spec = describe(chain);
        break;
      case Family::cl:
        cl = draw_cl(d, 1500000);
        spec = "cl compose " + describe(cl);
        break;
      case Family::cl_bias:
        cl = draw_bias(d);
        spec = "cl bias fold " + describe(cl);
        break;
      case Family::ck:
        ck = draw_ck(d, 1500000);
        spec = "ck fold " + describe(ck);
        break;
      case Family::cl_worklist:
        for (int64_t n = d.between(1, 6); n > 0; --n) units.push_back(draw_cl(d, 300000));
        biases = d.chance(0.6);
        spec = std::string("cl worklist biases=") + (biases ? "1 " : "0 ") + describe_list(units);
        break;
      case Family::ck_worklist:
        for (int64_t n = d.between(1, 5); n > 0; --n) folds.push_back(draw_ck(d, 200000));
        spec = "ck worklist " + describe_list(folds);
        break;
      case Family::count: break;
    }
    spec += std::string(" path=") + path_name(path);
    std::printf("random case %" PRId64 " (seed %" PRIu64 "): %s\n", index, seed, spec.c_str());
    std::fflush(stdout);
    ledger.set_context("[random seed " + std::to_string(seed) + " case " + str(index) + ", replay: driver random --seed " +
                       std::to_string(seed) + " --only " + str(index) + "; " + spec + "] ");
    const int failures = ledger.failures();
    const auto start = std::chrono::steady_clock::now();
    switch (family) {
      case Family::conv: conv_case(ledger, conv.k, conv.layout, path, data_seed); break;
      case Family::chain: chain_case(ledger, chain.k, chain.layout, path, data_seed); break;
      case Family::cl: cl_compose_case(ledger, cl, path, data_seed); break;
      case Family::cl_bias: cl_bias_fold_case(ledger, cl, path, data_seed); break;
      case Family::ck: ck_fold_case(ledger, ck, path, data_seed); break;
      case Family::cl_worklist: cl_worklist_case(ledger, units, biases, path, data_seed); break;
      case Family::ck_worklist: ck_worklist_case(ledger, folds, path, data_seed); break;
      case Family::count: break;
    }
    ledger.set_context("");
    seconds[family] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (ledger.failures() != failures) {
      std::printf("random case %" PRId64 " FAILED: replay with `python3 tests/cuda_cpu/build.py random --seed %" PRIu64
                  " --only %" PRId64 "` (EXPANDNETS_TEST_SEED=%" PRIu64 ")\n", index, seed, index, seed);
    }
    ++done[{family, path}];
    ++cases;
  }
  std::string table;
  for (const auto& [key, n] : done) {
    table += std::string(table.empty() ? "" : ", ") + family_name(key.first) + "/" + path_name(key.second) + " " + str(n);
  }
  std::printf("random: seed %" PRIu64 ", %" PRId64 " cases checked (%s)\n", seed, cases, table.c_str());
  std::string times;
  for (const auto& [family, s] : seconds) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%s %.1f s", times.empty() ? "" : ", ", family_name(family), s);
    times += buf;
  }
  std::printf("random: time per family: %s\n", times.c_str());
}

}  // namespace harness
