// The composition launchers (compose.h: CL/FC chain forward and backward, bias fold, CK fold
// forward and backward) in float32 and float64 against float64 references: sizes below, at and
// above the 32-wide tiles, several groups and taps, FC (one tap), and a bias fold with more than
// 256 channels and outputs (several blocks and inner-vector passes).
#include <string>

#include "cases.h"
#include "expandnets/compose.h"
#include "fold_reference.h"
#include "harness.h"

namespace harness {
namespace {

using expandnets::CkShape;
using expandnets::ClShape;

const ClShape kClCases[] = {
    // groups, a, i, c, o, taps
    {1, 3, 5, 4, 7, 9},
    {2, 33, 40, 35, 31, 1},
    {3, 8, 9, 10, 6, 4},
    {1, 32, 32, 32, 32, 2},
    {2, 5, 70, 3, 65, 3},
};
const ClShape kBiasCases[] = {
    {1, 3, 0, 300, 260, 2},
    {4, 7, 0, 5, 9, 9},
    {2, 40, 0, 33, 1, 1},
};
const CkShape kCkCases[] = {
    // o, c, i, a, a2, b, b2
    {5, 6, 7, 3, 3, 3, 3},
    {33, 34, 3, 1, 3, 2, 1},
    {2, 40, 33, 2, 2, 3, 3},
    {9, 1, 65, 1, 1, 1, 1},
};

std::string cl_name(const char* what, const ClShape& s) {
  return std::string(what) + " (groups " + std::to_string(s.groups) + ", a " + std::to_string(s.a) + ", i " +
         std::to_string(s.i) + ", c " + std::to_string(s.c) + ", o " + std::to_string(s.o) + ", taps " +
         std::to_string(s.taps) + ")";
}

template <class T>
void cl_case(Ledger& ledger, const ClShape& s, uint64_t seed) {
  const Tolerance tol = path_tolerance<T>(false);
  const std::string what = cl_name("cl", s) + " [" + tol.path + "] ";
  Random rng(seed);
  const auto G = s.groups, A = s.a, I = s.i, C = s.c, O = s.o, Tp = s.taps;
  std::vector<T> w1 = random_vector<T>(rng, size_t(G * A * I)), w2 = random_vector<T>(rng, size_t(G * C * A * Tp));
  std::vector<T> w3 = random_vector<T>(rng, size_t(G * O * C)), grad = random_vector<T>(rng, size_t(G * O * I * Tp));
  const auto d = [](const std::vector<T>& v, int64_t i) { return Scalar<T>::to_double(v[size_t(i)]); };
  const auto W1 = [&](int64_t g, int64_t a, int64_t i) { return d(w1, (g * A + a) * I + i); };
  const auto W2 = [&](int64_t g, int64_t c, int64_t a, int64_t t) { return d(w2, ((g * C + c) * A + a) * Tp + t); };
  const auto W3 = [&](int64_t g, int64_t o, int64_t c) { return d(w3, (g * O + o) * C + c); };
  const auto dW = [&](int64_t g, int64_t o, int64_t i, int64_t t) { return d(grad, ((g * O + o) * I + i) * Tp + t); };

  std::vector<Ref> w_ref(size_t(G * O * I * Tp)), dw1_ref(w1.size()), dw2_ref(w2.size()), dw3_ref(w3.size());
  for (int64_t g = 0; g < G; ++g)
    for (int64_t t = 0; t < Tp; ++t)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t a = 0; a < A; ++a)
            for (int64_t i = 0; i < I; ++i) {
              w_ref[size_t(((g * O + o) * I + i) * Tp + t)].add(W3(g, o, c) * W2(g, c, a, t) * W1(g, a, i));
              dw1_ref[size_t((g * A + a) * I + i)].add(W2(g, c, a, t) * W3(g, o, c) * dW(g, o, i, t));
              dw2_ref[size_t(((g * C + c) * A + a) * Tp + t)].add(W3(g, o, c) * dW(g, o, i, t) * W1(g, a, i));
              dw3_ref[size_t((g * O + o) * C + c)].add(dW(g, o, i, t) * W1(g, a, i) * W2(g, c, a, t));
            }
  // A chained product has two roundings per term (the intermediate and the final sum).
  Tolerance chain = tol;
  chain.acc_unit *= 2;

  std::vector<T> w = sentinel_vector<T>(w_ref.size());
  expect_status(ledger, what + "forward status",
                expandnets::cl_compose_forward<T>(w1.data(), w2.data(), w3.data(), w.data(), s, nullptr), cudaSuccess);
  compare(ledger, what + "forward W", chain, pointers(w), w_ref);

  std::vector<T> dw1 = sentinel_vector<T>(w1.size()), dw2 = sentinel_vector<T>(w2.size()), dw3 = sentinel_vector<T>(w3.size());
  expect_status(ledger, what + "backward status",
                expandnets::cl_compose_backward<T>(grad.data(), w1.data(), w2.data(), w3.data(), dw1.data(), dw2.data(),
                                                   dw3.data(), s, nullptr),
                cudaSuccess);
  compare(ledger, what + "backward dW1", chain, pointers(dw1), dw1_ref);
  compare(ledger, what + "backward dW2", chain, pointers(dw2), dw2_ref);
  compare(ledger, what + "backward dW3", chain, pointers(dw3), dw3_ref);
}

template <class T>
void bias_case(Ledger& ledger, const ClShape& s, uint64_t seed) {
  Tolerance tol = path_tolerance<T>(false);
  tol.acc_unit *= 3;  // tap sum, inner vector, outer sum
  const std::string what = cl_name("cl bias fold", s) + " [" + tol.path + "] ";
  Random rng(seed);
  const auto G = s.groups, A = s.a, C = s.c, O = s.o, Tp = s.taps;
  std::vector<T> w2 = random_vector<T>(rng, size_t(G * C * A * Tp)), w3 = random_vector<T>(rng, size_t(G * O * C));
  std::vector<T> b1 = random_vector<T>(rng, size_t(G * A)), b2 = random_vector<T>(rng, size_t(G * C));
  std::vector<T> b3 = random_vector<T>(rng, size_t(G * O));
  const auto d = [](const std::vector<T>& v, int64_t i) { return Scalar<T>::to_double(v[size_t(i)]); };
  std::vector<Ref> ref(size_t(G * O));
  for (int64_t g = 0; g < G; ++g)
    for (int64_t o = 0; o < O; ++o) {
      Ref& r = ref[size_t(g * O + o)];
      r.add(d(b3, g * O + o));
      for (int64_t c = 0; c < C; ++c) {
        const double w3v = d(w3, (g * O + o) * C + c);
        r.add(w3v * d(b2, g * C + c));
        for (int64_t a = 0; a < A; ++a)
          for (int64_t t = 0; t < Tp; ++t) r.add(w3v * d(w2, ((g * C + c) * A + a) * Tp + t) * d(b1, g * A + a));
      }
    }
  std::vector<T> bias = sentinel_vector<T>(ref.size());
  expect_status(ledger, what + "status",
                expandnets::cl_bias_fold<T>(w2.data(), w3.data(), b1.data(), b2.data(), b3.data(), bias.data(), s,
                                            nullptr),
                cudaSuccess);
  compare(ledger, what + "bias", tol, pointers(bias), ref);
}

template <class T>
void ck_case(Ledger& ledger, const CkShape& s, uint64_t seed) {
  const Tolerance tol = path_tolerance<T>(false);
  const std::string what = "ck (o " + std::to_string(s.o) + ", c " + std::to_string(s.c) + ", i " + std::to_string(s.i) +
                           ", later " + std::to_string(s.a) + "x" + std::to_string(s.a2) + ", earlier " +
                           std::to_string(s.b) + "x" + std::to_string(s.b2) + ") [" + tol.path + "] ";
  Random rng(seed);
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  std::vector<T> later = random_vector<T>(rng, size_t(s.o * s.c * s.a * s.a2));
  std::vector<T> earlier = random_vector<T>(rng, size_t(s.c * s.i * s.b * s.b2));
  std::vector<T> grad = random_vector<T>(rng, size_t(s.o * s.i * kh * kw));
  const FoldRefs ref = fold_reference(s, later, earlier, grad);
  std::vector<T> k = sentinel_vector<T>(grad.size());
  expect_status(ledger, what + "forward status",
                expandnets::ck_fold_forward<T>(later.data(), earlier.data(), k.data(), s, nullptr), cudaSuccess);
  compare(ledger, what + "forward K", tol, pointers(k), ref.k);
  std::vector<T> dl = sentinel_vector<T>(later.size()), de = sentinel_vector<T>(earlier.size());
  expect_status(ledger, what + "backward status",
                expandnets::ck_fold_backward<T>(grad.data(), later.data(), earlier.data(), dl.data(), de.data(), s,
                                                nullptr),
                cudaSuccess);
  compare(ledger, what + "backward d_later", tol, pointers(dl), ref.d_later);
  compare(ledger, what + "backward d_earlier", tol, pointers(de), ref.d_earlier);
}

template <class T>
void run_all(Ledger& ledger) {
  uint64_t seed = 77;
  for (const ClShape& s : kClCases) cl_case<T>(ledger, s, ++seed);
  for (const ClShape& s : kBiasCases) bias_case<T>(ledger, s, ++seed);
  for (const CkShape& s : kCkCases) ck_case<T>(ledger, s, ++seed);
}

// A path the composition kernels are not instantiated for: a failed check, not a silent skip.
void unsupported(Ledger& ledger, const char* what, Path path) {
  ledger.record(false, what, std::string("no ") + path_name(path) + " composition kernels (f64 and f32 only)");
}

}  // namespace

void cl_compose_case(Ledger& ledger, const ClShape& s, Path path, uint64_t seed) {
  if (path == Path::f64) return cl_case<double>(ledger, s, seed);
  if (path == Path::f32) return cl_case<float>(ledger, s, seed);
  unsupported(ledger, "cl", path);
}

void cl_bias_fold_case(Ledger& ledger, const ClShape& s, Path path, uint64_t seed) {
  if (path == Path::f64) return bias_case<double>(ledger, s, seed);
  if (path == Path::f32) return bias_case<float>(ledger, s, seed);
  unsupported(ledger, "cl bias fold", path);
}

void ck_fold_case(Ledger& ledger, const CkShape& s, Path path, uint64_t seed) {
  if (path == Path::f64) return ck_case<double>(ledger, s, seed);
  if (path == Path::f32) return ck_case<float>(ledger, s, seed);
  unsupported(ledger, "ck", path);
}

void check_compose(Ledger& ledger) {
  run_all<double>(ledger);
  run_all<float>(ledger);
  // Nothing to do for an empty shape; past the grid limits, an error and no kernel.
  const ClShape empty{0, 3, 3, 3, 3, 1};
  std::vector<float> none(1);
  expect_status(ledger, "cl forward with 0 groups",
                expandnets::cl_compose_forward<float>(none.data(), none.data(), none.data(), none.data(), empty, nullptr),
                cudaSuccess);
  const ClShape too_many{1, 1, 1, 1, 65536 * 32 + 1, 1};  // grid.y over 65535
  const uint64_t before = cuemu::stats().blocks_run;
  expect_status(ledger, "cl forward past grid.y",
                expandnets::cl_compose_forward<float>(none.data(), none.data(), none.data(), none.data(), too_many,
                                                      nullptr),
                cudaErrorInvalidConfiguration);
  ledger.record(cuemu::stats().blocks_run == before, "cl forward past grid.y runs no block", "rejected launch");
}

}  // namespace harness
