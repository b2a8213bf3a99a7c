// The CK work list (ck_worklist.h: the folds of many CK units at one level per launch, forward
// and backward) in float32 and float64 against float64 loop references per fold: later kernels
// with fewer and with more taps than the earlier ones (3x3 with 5x5, 7x7 with 3x3), non-square
// taps, odd channel counts, extents past one 32-wide tile; the launch count is fixed (1 forward,
// 2 backward) whatever the number of folds; every result element is written (sentinel buffers).
#include <string>
#include <vector>

#include "cases.h"
#include "expandnets/ck_worklist.h"
#include "fold_reference.h"
#include "harness.h"

namespace harness {
namespace {

using expandnets::CkShape;
using expandnets::CkWorkPair;
using expandnets::CkWorkTotals;

const std::vector<CkShape> kPairs = {
    // o, c, i, a, a2, b, b2
    {5, 3, 7, 3, 3, 5, 5},     // later taps < earlier taps
    {3, 7, 5, 7, 7, 3, 3},     // later taps > earlier taps
    {33, 9, 34, 3, 3, 3, 3},   // two tiles of o and of i
    {6, 35, 3, 3, 1, 1, 3},    // non-square taps, c past a tile
    {1, 1, 1, 1, 1, 1, 1},
};

std::string pair_name(const CkShape& s) {
  return "(o " + std::to_string(s.o) + ", c " + std::to_string(s.c) + ", i " + std::to_string(s.i) + ", later " +
         std::to_string(s.a) + "x" + std::to_string(s.a2) + ", earlier " + std::to_string(s.b) + "x" +
         std::to_string(s.b2) + ")";
}

template <class T>
struct PairData {
  std::vector<T> later, earlier, grad;
};

template <class T>
void worklist_case(Ledger& ledger, const std::vector<CkShape>& shapes, uint64_t seed) {
  const Tolerance tol = path_tolerance<T>(false);
  const std::string what = "ck_worklist " + std::to_string(shapes.size()) + " folds [" + tol.path + "] ";
  Random rng(seed);
  std::vector<PairData<T>> data(shapes.size());
  std::vector<CkWorkPair<T>> table(shapes.size());
  for (size_t n = 0; n < shapes.size(); ++n) {
    const CkShape& s = shapes[n];
    PairData<T>& p = data[n];
    p.later = random_vector<T>(rng, size_t(s.o * s.c * s.a * s.a2));
    p.earlier = random_vector<T>(rng, size_t(s.c * s.i * s.b * s.b2));
    p.grad = random_vector<T>(rng, size_t(s.o * s.i * (s.a + s.b - 1) * (s.a2 + s.b2 - 1)));
    table[n] = CkWorkPair<T>{p.later.data(), p.earlier.data(), p.grad.data(), s, 0, 0, 0, {}};
  }
  const CkWorkTotals total = expandnets::ck_worklist_plan(table.data(), int64_t(table.size()));
  const int64_t n_pairs = int64_t(table.size());

  std::vector<T> k = sentinel_vector<T>(size_t(total.k));
  uint64_t launches = cuemu::stats().launches;
  expect_status(ledger, what + "forward status",
                expandnets::ck_worklist_forward<T>(table.data(), n_pairs, total, k.data(), nullptr), cudaSuccess);
  ledger.record(cuemu::stats().launches - launches == 1u, what + "forward launches",
                std::to_string(cuemu::stats().launches - launches) + " launches");

  std::vector<T> dl = sentinel_vector<T>(size_t(total.later)), de = sentinel_vector<T>(size_t(total.earlier));
  launches = cuemu::stats().launches;
  expect_status(ledger, what + "backward status",
                expandnets::ck_worklist_backward<T>(table.data(), n_pairs, total, dl.data(), de.data(), nullptr),
                cudaSuccess);
  ledger.record(cuemu::stats().launches - launches == 2u, what + "backward launches",
                std::to_string(cuemu::stats().launches - launches) + " launches");

  for (size_t n = 0; n < shapes.size(); ++n) {
    const CkWorkPair<T>& p = table[n];
    const FoldRefs r = fold_reference(p.shape, data[n].later, data[n].earlier, data[n].grad);
    const std::string fold = what + "fold " + std::to_string(n) + " " + pair_name(p.shape) + " ";
    compare(ledger, fold + "K", tol, slice(k, p.k_at, r.k.size()), r.k);
    compare(ledger, fold + "d_later", tol, slice(dl, p.later_at, r.d_later.size()), r.d_later);
    compare(ledger, fold + "d_earlier", tol, slice(de, p.earlier_at, r.d_earlier.size()), r.d_earlier);
  }
}

// The plan: slices back to back in fold order, item ranges that tile every kind exactly.
void plan_checks(Ledger& ledger) {
  std::vector<CkWorkPair<float>> table(kPairs.size());
  for (size_t n = 0; n < kPairs.size(); ++n) table[n].shape = kPairs[n];
  const CkWorkTotals total = expandnets::ck_worklist_plan(table.data(), int64_t(table.size()));
  bool ok = true;
  int64_t k = 0, later = 0, earlier = 0, items[expandnets::kCkWorkKinds] = {};
  for (const auto& p : table) {
    const CkShape& s = p.shape;
    ok = ok && p.k_at == k && p.later_at == later && p.earlier_at == earlier;
    k += s.o * s.i * (s.a + s.b - 1) * (s.a2 + s.b2 - 1);
    later += s.o * s.c * s.a * s.a2;
    earlier += s.c * s.i * s.b * s.b2;
    for (int kind = 0; kind < expandnets::kCkWorkKinds; ++kind) {
      ok = ok && p.item_begin[kind] == items[kind];
      items[kind] += expandnets::ck_work_items(s, kind);
    }
  }
  ok = ok && total.k == k && total.later == later && total.earlier == earlier;
  for (int kind = 0; kind < expandnets::kCkWorkKinds; ++kind) ok = ok && total.items[kind] == items[kind];
  // (33, 9, 34, 3x3, 3x3): 5x5 taps x 2 tiles of o x 2 tiles of i; d later 3x3 x 2 x 1.
  ok = ok && expandnets::ck_work_items(kPairs[2], expandnets::kCkWorkForward) == 100 &&
       expandnets::ck_work_items(kPairs[2], expandnets::kCkWorkLater) == 18 &&
       expandnets::ck_work_items(kPairs[3], expandnets::kCkWorkEarlier) == 6;
  ledger.record(ok, "ck_worklist plan", "offsets and item ranges back to back");
}

}  // namespace

void ck_worklist_case(Ledger& ledger, const std::vector<CkShape>& shapes, Path path, uint64_t seed) {
  if (path == Path::f64) return worklist_case<double>(ledger, shapes, seed);
  if (path == Path::f32) return worklist_case<float>(ledger, shapes, seed);
  ledger.record(false, "ck_worklist", std::string("no ") + path_name(path) + " work-list kernels (f64 and f32 only)");
}

void check_ck_worklist(Ledger& ledger) {
  plan_checks(ledger);
  uint64_t seed = 311;
  worklist_case<double>(ledger, kPairs, ++seed);
  worklist_case<float>(ledger, kPairs, ++seed);
  const std::vector<CkShape> reversed(kPairs.rbegin(), kPairs.rend());
  worklist_case<double>(ledger, reversed, ++seed);
  worklist_case<double>(ledger, {kPairs[0]}, ++seed);

  // No folds: nothing to do. Past the grid limit: an error and no kernel.
  CkWorkTotals none{};
  std::vector<float> buf(1);
  expect_status(ledger, "ck_worklist forward with 0 folds",
                expandnets::ck_worklist_forward<float>(nullptr, 0, none, buf.data(), nullptr), cudaSuccess);
  std::vector<CkWorkPair<float>> table(1);
  table[0].shape = kPairs[4];
  CkWorkTotals huge = expandnets::ck_worklist_plan(table.data(), 1);
  huge.items[expandnets::kCkWorkForward] = int64_t(1) << 31;
  const uint64_t before = cuemu::stats().blocks_run;
  expect_status(ledger, "ck_worklist forward past grid.x",
                expandnets::ck_worklist_forward<float>(table.data(), 1, huge, buf.data(), nullptr),
                cudaErrorInvalidConfiguration);
  huge.items[expandnets::kCkWorkForward] = 1;
  huge.items[expandnets::kCkWorkEarlier] = int64_t(1) << 31;
  expect_status(ledger, "ck_worklist backward past grid.x",
                expandnets::ck_worklist_backward<float>(table.data(), 1, huge, buf.data(), buf.data(), nullptr),
                cudaErrorInvalidConfiguration);
  ledger.record(cuemu::stats().blocks_run == before, "ck_worklist past grid.x runs no block", "rejected launches");
}

}  // namespace harness
