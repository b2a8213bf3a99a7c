// The work-list composition (worklist.h: many CL/FC units of different shapes per launch, forward
// and backward, with and without biases) in float32 and float64 against float64 loop references
// per unit: units smaller than, equal to and larger than the 32-wide tiles, grouped, with several
// taps, FC-shaped (one group, one tap) and one with more than 256 channels and outputs (several
// bias-vector blocks); the launch count is fixed (2 forward, 5 backward with biases; 1 and 3
// without) whatever the number of units; every result element is written (sentinel buffers).
#include <string>
#include <vector>

#include "cases.h"
#include "expandnets/worklist.h"
#include "harness.h"

namespace harness {
namespace {

using expandnets::ClShape;
using expandnets::ClWorkTotals;
using expandnets::ClWorkUnit;

const std::vector<ClShape> kUnits = {
    // groups, a, i, c, o, taps
    {1, 3, 5, 4, 7, 9},
    {2, 33, 40, 35, 31, 1},
    {1, 40, 3, 20, 17, 1},  // FC-shaped
    {3, 8, 9, 10, 6, 4},
    {1, 5, 2, 300, 260, 2},
};

std::string shape_name(const ClShape& s) {
  return "(g " + std::to_string(s.groups) + ", a " + std::to_string(s.a) + ", i " + std::to_string(s.i) + ", c " +
         std::to_string(s.c) + ", o " + std::to_string(s.o) + ", taps " + std::to_string(s.taps) + ")";
}

// One unit's inputs and the gradients it receives, in compose.h's layouts.
template <class T>
struct UnitData {
  std::vector<T> w1, w2, w3, b1, b2, b3;
};

// The float64 references of one unit: W, bias and every input's gradient (weights and biases).
struct UnitRefs {
  std::vector<Ref> w, bias, dw1, dw2, dw3, db1, db2;
};

template <class T>
UnitRefs reference(const ClShape& s, const UnitData<T>& u, const std::vector<T>& grad_w, int64_t w_at,
                   const std::vector<T>& grad_b, int64_t b_at, bool biases) {
  const auto G = s.groups, A = s.a, I = s.i, C = s.c, O = s.o, Tp = s.taps;
  const auto d = [](const std::vector<T>& v, int64_t i) { return Scalar<T>::to_double(v[size_t(i)]); };
  const auto W1 = [&](int64_t g, int64_t a, int64_t i) { return d(u.w1, (g * A + a) * I + i); };
  const auto W2 = [&](int64_t g, int64_t c, int64_t a, int64_t t) { return d(u.w2, ((g * C + c) * A + a) * Tp + t); };
  const auto W3 = [&](int64_t g, int64_t o, int64_t c) { return d(u.w3, (g * O + o) * C + c); };
  const auto dW = [&](int64_t g, int64_t o, int64_t i, int64_t t) {
    return d(grad_w, w_at + ((g * O + o) * I + i) * Tp + t);
  };
  const auto gb = [&](int64_t g, int64_t o) { return d(grad_b, b_at + g * O + o); };
  UnitRefs r;
  r.w.resize(size_t(G * O * I * Tp));
  r.dw1.resize(u.w1.size());
  r.dw2.resize(u.w2.size());
  r.dw3.resize(u.w3.size());
  for (int64_t g = 0; g < G; ++g)
    for (int64_t t = 0; t < Tp; ++t)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t a = 0; a < A; ++a)
            for (int64_t i = 0; i < I; ++i) {
              r.w[size_t(((g * O + o) * I + i) * Tp + t)].add(W3(g, o, c) * W2(g, c, a, t) * W1(g, a, i));
              r.dw1[size_t((g * A + a) * I + i)].add(W2(g, c, a, t) * W3(g, o, c) * dW(g, o, i, t));
              r.dw2[size_t(((g * C + c) * A + a) * Tp + t)].add(W3(g, o, c) * dW(g, o, i, t) * W1(g, a, i));
              r.dw3[size_t((g * O + o) * C + c)].add(dW(g, o, i, t) * W1(g, a, i) * W2(g, c, a, t));
            }
  if (!biases) return r;
  // bias = W3 (b2 + sum_t W2_t b1) + b3, and its terms in every gradient.
  const auto B1 = [&](int64_t g, int64_t a) { return d(u.b1, g * A + a); };
  r.bias.resize(size_t(G * O));
  r.db1.resize(size_t(G * A));
  r.db2.resize(size_t(G * C));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t o = 0; o < O; ++o) {
      r.bias[size_t(g * O + o)].add(d(u.b3, g * O + o));
      for (int64_t c = 0; c < C; ++c) {
        r.bias[size_t(g * O + o)].add(W3(g, o, c) * d(u.b2, g * C + c));
        r.db2[size_t(g * C + c)].add(W3(g, o, c) * gb(g, o));
        r.dw3[size_t((g * O + o) * C + c)].add(gb(g, o) * d(u.b2, g * C + c));
        for (int64_t a = 0; a < A; ++a)
          for (int64_t t = 0; t < Tp; ++t) {
            r.bias[size_t(g * O + o)].add(W3(g, o, c) * W2(g, c, a, t) * B1(g, a));
            r.db1[size_t(g * A + a)].add(W2(g, c, a, t) * W3(g, o, c) * gb(g, o));
            r.dw3[size_t((g * O + o) * C + c)].add(gb(g, o) * W2(g, c, a, t) * B1(g, a));
            r.dw2[size_t(((g * C + c) * A + a) * Tp + t)].add(W3(g, o, c) * gb(g, o) * B1(g, a));
          }
      }
    }
  return r;
}

template <class T>
void worklist_case(Ledger& ledger, const std::vector<ClShape>& shapes, bool biases, uint64_t seed) {
  Tolerance tol = path_tolerance<T>(false);
  tol.acc_unit *= 3;  // chained products (two roundings per term) and the bias terms added at the end
  const std::string what = std::string("worklist ") + std::to_string(shapes.size()) + " units " +
                           (biases ? "with" : "without") + " biases [" + tol.path + "] ";
  Random rng(seed);
  std::vector<UnitData<T>> data(shapes.size());
  std::vector<ClWorkUnit<T>> table(shapes.size());
  for (size_t k = 0; k < shapes.size(); ++k) {
    const ClShape& s = shapes[k];
    UnitData<T>& u = data[k];
    u.w1 = random_vector<T>(rng, size_t(s.groups * s.a * s.i));
    u.w2 = random_vector<T>(rng, size_t(s.groups * s.c * s.a * s.taps));
    u.w3 = random_vector<T>(rng, size_t(s.groups * s.o * s.c));
    if (biases) {
      u.b1 = random_vector<T>(rng, size_t(s.groups * s.a));
      u.b2 = random_vector<T>(rng, size_t(s.groups * s.c));
      u.b3 = random_vector<T>(rng, size_t(s.groups * s.o));
    }
    const auto ptr = [biases](const std::vector<T>& v) { return biases ? v.data() : nullptr; };
    table[k] = ClWorkUnit<T>{u.w1.data(), u.w2.data(), u.w3.data(), ptr(u.b1), ptr(u.b2), ptr(u.b3), s, 0, 0, 0, 0, 0,
                             0, 0, {}};
  }
  const ClWorkTotals total = expandnets::cl_worklist_plan(table.data(), int64_t(table.size()));
  std::vector<T> grad_w = random_vector<T>(rng, size_t(total.w)), grad_b = random_vector<T>(rng, size_t(total.bias));

  std::vector<T> w = sentinel_vector<T>(size_t(total.w)), bias = sentinel_vector<T>(size_t(biases ? total.bias : 0));
  const int64_t n = int64_t(table.size());
  uint64_t launches = cuemu::stats().launches;
  expect_status(ledger, what + "forward status",
                expandnets::cl_worklist_forward<T>(table.data(), n, total, w.data(), biases ? bias.data() : nullptr,
                                                   nullptr),
                cudaSuccess);
  ledger.record(cuemu::stats().launches - launches == (biases ? 2u : 1u), what + "forward launches",
                std::to_string(cuemu::stats().launches - launches) + " launches");

  std::vector<T> dw1 = sentinel_vector<T>(size_t(total.w1)), dw2 = sentinel_vector<T>(size_t(total.w2));
  std::vector<T> dw3 = sentinel_vector<T>(size_t(total.w3)), db1 = sentinel_vector<T>(size_t(biases ? total.a : 0));
  std::vector<T> db2 = sentinel_vector<T>(size_t(biases ? total.c : 0)), inner = sentinel_vector<T>(db2.size());
  launches = cuemu::stats().launches;
  expect_status(ledger, what + "backward status",
                expandnets::cl_worklist_backward<T>(table.data(), n, total, grad_w.data(),
                                                    biases ? grad_b.data() : nullptr, dw1.data(), dw2.data(),
                                                    dw3.data(), biases ? db1.data() : nullptr,
                                                    biases ? db2.data() : nullptr, biases ? inner.data() : nullptr,
                                                    nullptr),
                cudaSuccess);
  ledger.record(cuemu::stats().launches - launches == (biases ? 5u : 3u), what + "backward launches",
                std::to_string(cuemu::stats().launches - launches) + " launches");

  for (size_t k = 0; k < shapes.size(); ++k) {
    const ClWorkUnit<T>& u = table[k];
    const UnitRefs r = reference(u.shape, data[k], grad_w, u.w_at, grad_b, u.bias_at, biases);
    const std::string unit = what + "unit " + std::to_string(k) + " " + shape_name(u.shape) + " ";
    compare(ledger, unit + "W", tol, slice(w, u.w_at, r.w.size()), r.w);
    compare(ledger, unit + "dW1", tol, slice(dw1, u.w1_at, r.dw1.size()), r.dw1);
    compare(ledger, unit + "dW2", tol, slice(dw2, u.w2_at, r.dw2.size()), r.dw2);
    compare(ledger, unit + "dW3", tol, slice(dw3, u.w3_at, r.dw3.size()), r.dw3);
    if (!biases) continue;
    compare(ledger, unit + "bias", tol, slice(bias, u.bias_at, r.bias.size()), r.bias);
    compare(ledger, unit + "db1", tol, slice(db1, u.a_at, r.db1.size()), r.db1);
    compare(ledger, unit + "db2", tol, slice(db2, u.c_at, r.db2.size()), r.db2);
  }
}

// The plan: slices back to back in unit order, item ranges that tile every kind exactly.
void plan_checks(Ledger& ledger) {
  std::vector<ClWorkUnit<float>> table(kUnits.size());
  for (size_t k = 0; k < kUnits.size(); ++k) table[k].shape = kUnits[k];
  const ClWorkTotals total = expandnets::cl_worklist_plan(table.data(), int64_t(table.size()));
  bool ok = true;
  int64_t w = 0, items = 0;
  for (const auto& u : table) {
    ok = ok && u.w_at == w && u.item_begin[expandnets::kClWorkForward] == items;
    w += u.shape.groups * u.shape.o * u.shape.i * u.shape.taps;
    items += expandnets::cl_work_items(u.shape, expandnets::kClWorkForward);
  }
  ok = ok && total.w == w && total.items[expandnets::kClWorkForward] == items;
  // (2, 33, 40, 35, 31, 1): 2 groups x 1 tap x 1 tile of o x 2 tiles of i.
  ok = ok && expandnets::cl_work_items(kUnits[1], expandnets::kClWorkForward) == 4 &&
       expandnets::cl_work_items(kUnits[4], expandnets::kClWorkBiasVectors) == 2;
  ledger.record(ok, "worklist plan", "offsets and item ranges back to back");
}

}  // namespace

void cl_worklist_case(Ledger& ledger, const std::vector<ClShape>& shapes, bool biases, Path path, uint64_t seed) {
  if (path == Path::f64) return worklist_case<double>(ledger, shapes, biases, seed);
  if (path == Path::f32) return worklist_case<float>(ledger, shapes, biases, seed);
  ledger.record(false, "worklist", std::string("no ") + path_name(path) + " work-list kernels (f64 and f32 only)");
}

void check_worklist(Ledger& ledger) {
  plan_checks(ledger);
  uint64_t seed = 177;
  const std::vector<ClShape> without(kUnits.rbegin() + 1, kUnits.rend());  // other order, no 300-channel unit
  for (const bool biases : {true, false}) {
    worklist_case<double>(ledger, biases ? kUnits : without, biases, ++seed);
    worklist_case<float>(ledger, biases ? kUnits : without, biases, ++seed);
  }
  const std::vector<ClShape> one = {kUnits[3]};
  worklist_case<double>(ledger, one, true, ++seed);

  // No units: nothing to do. Past the grid limit: an error and no kernel.
  ClWorkTotals none{};
  std::vector<float> buf(1);
  expect_status(ledger, "worklist forward with 0 units",
                expandnets::cl_worklist_forward<float>(nullptr, 0, none, buf.data(), buf.data(), nullptr), cudaSuccess);
  std::vector<ClWorkUnit<float>> table(1);
  table[0].shape = kUnits[0];
  ClWorkTotals huge = expandnets::cl_worklist_plan(table.data(), 1);
  huge.items[expandnets::kClWorkBias] = int64_t(1) << 31;
  const uint64_t before = cuemu::stats().blocks_run;
  expect_status(ledger, "worklist forward past grid.x",
                expandnets::cl_worklist_forward<float>(table.data(), 1, huge, buf.data(), buf.data(), nullptr),
                cudaErrorInvalidConfiguration);
  huge.items[expandnets::kClWorkBias] = 0;
  huge.items[expandnets::kClWorkDb1] = int64_t(1) << 31;
  expect_status(ledger, "worklist backward past grid.x",
                expandnets::cl_worklist_backward<float>(table.data(), 1, huge, buf.data(), nullptr, buf.data(),
                                                        buf.data(), buf.data(), nullptr, nullptr, nullptr, nullptr),
                cudaErrorInvalidConfiguration);
  ledger.record(cuemu::stats().blocks_run == before, "worklist past grid.x runs no block", "rejected launches");
}

}  // namespace harness
