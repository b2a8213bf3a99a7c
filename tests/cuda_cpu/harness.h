// What the check files share: scalar traits of the kernel dtypes, random data, the float64
// tolerance model, exact-size buffers with sentinels, and the pass/fail ledger.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace harness {

template <class T>
struct Scalar;
template <>
struct Scalar<double> {
  static constexpr const char* name = "f64";
  static double to_double(double v) { return v; }
  static double from_double(double v) { return v; }
  static double sentinel() { return bits<double>(0x7ff4a5a5a5a5a5a5ull); }
  template <class U>
  static U bits(uint64_t b) {
    U v;
    std::memcpy(&v, &b, sizeof v);
    return v;
  }
};
template <>
struct Scalar<float> {
  static constexpr const char* name = "f32";
  static double to_double(float v) { return v; }
  static float from_double(double v) { return float(v); }
  static float sentinel() { return Scalar<double>::bits<float>(0x7fa5a5a5u); }
};
template <>
struct Scalar<__half> {
  static constexpr const char* name = "f16";
  static double to_double(__half v) { return __half2float(v); }
  static __half from_double(double v) { return __float2half_rn(float(v)); }
  static __half sentinel() { return __half{0x7e5a}; }
};
template <>
struct Scalar<__nv_bfloat16> {
  static constexpr const char* name = "bf16";
  static double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __nv_bfloat16 from_double(double v) { return __float2bfloat16_rn(float(v)); }
  static __nv_bfloat16 sentinel() { return __nv_bfloat16{0x7fa5}; }
};

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// The error model of one kernel path: |out - ref| <= (acc_unit * (terms + 2) + input_rel) * sum|terms|
// + out_rel * |ref| + out_abs, the classic bound of a recursive sum of exact products (terms =
// summands), plus the rounding of the inputs (TF32) and of the output (16-bit types: relative for
// normal results, absolute, half the smallest subnormal, where the result is subnormal).
struct Tolerance {
  const char* path;
  double acc_unit, input_rel, out_rel;
  double out_abs = 0;
};
inline Tolerance exact_tolerance(const char* path, double unit) { return {path, unit, 0, 0}; }

// A reference value: the float64 sum, the sum of the magnitudes of its terms and their number.
struct Ref {
  double value = 0, magnitude = 0;
  int64_t terms = 0;
  void add(double term) {
    value += term;
    magnitude += std::fabs(term);
    ++terms;
  }
};

class Ledger {
 public:
  explicit Ledger(bool verbose) : verbose_(verbose) {}
  void record(bool ok, const std::string& what, const std::string& detail) {
    ++checks_;
    if (!ok) ++failures_;
    if (!ok || verbose_) std::printf("%s %s%s: %s\n", ok ? "ok  " : "FAIL", context_.c_str(), what.c_str(), detail.c_str());
    if (!ok) std::fflush(stdout);
  }
  int checks() const { return checks_; }
  int failures() const { return failures_; }
  // Printed before `what` on every line (the random group: its seed, the case and how to replay it).
  void set_context(const std::string& context) { context_ = context; }

 private:
  bool verbose_;
  int checks_ = 0, failures_ = 0;
  std::string context_;
};

// Compares got[i] (through to_double) with refs[i] under tol; one ledger entry for the tensor.
template <class T>
void compare(Ledger& ledger, const std::string& what, const Tolerance& tol, const std::vector<const T*>& got,
             const std::vector<Ref>& refs) {
  double worst = 0, worst_err = 0;
  size_t worst_at = 0, bad = 0;
  for (size_t i = 0; i < refs.size(); ++i) {
    const double v = Scalar<T>::to_double(*got[i]);
    const Ref& r = refs[i];
    const double bound = (tol.acc_unit * double(r.terms + 2) + tol.input_rel) * r.magnitude +
                         tol.out_rel * std::fabs(r.value) + tol.out_abs + 1e-300;
    const double err = std::fabs(v - r.value);
    const double ratio = std::isfinite(v) ? err / bound : INFINITY;
    if (!(ratio <= 1)) ++bad;
    if (!(ratio <= worst)) {
      worst = ratio;
      worst_err = err;
      worst_at = i;
    }
  }
  char detail[256];
  if (refs.empty()) {
    std::snprintf(detail, sizeof detail, "no elements");
  } else {
    std::snprintf(detail, sizeof detail, "%zu elements, %s, %zu out of bound, worst err/bound %.3g (err %.3g, got %.9g, "
                  "ref %.9g at %zu)", refs.size(), tol.path, bad, worst, worst_err,
                  Scalar<T>::to_double(*got[worst_at]), refs[worst_at].value, worst_at);
  }
  ledger.record(!refs.empty() && bad == 0, what, detail);
}

class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}
  double uniform() { return std::uniform_real_distribution<double>(-1.0, 1.0)(engine_); }
  template <class T>
  T value() {
    return Scalar<T>::from_double(uniform());
  }

 private:
  std::mt19937_64 engine_;
};

// Fills v with random T values (the reference reads them back through to_double).
template <class T>
std::vector<T> random_vector(Random& rng, size_t n) {
  std::vector<T> v(n);
  for (auto& x : v) x = rng.value<T>();
  return v;
}

// A result buffer: every element starts as a NaN sentinel, so one the kernel never writes fails.
template <class T>
std::vector<T> sentinel_vector(size_t n) {
  return std::vector<T>(n, Scalar<T>::sentinel());
}

template <class T>
std::vector<const T*> pointers(const std::vector<T>& v) {
  std::vector<const T*> p(v.size());
  for (size_t i = 0; i < v.size(); ++i) p[i] = &v[i];
  return p;
}

// The slice [at, at + n) of a flat result buffer, for compare().
template <class T>
std::vector<const T*> slice(const std::vector<T>& flat, int64_t at, size_t n) {
  std::vector<const T*> p(n);
  for (size_t k = 0; k < n; ++k) p[k] = &flat[size_t(at) + k];
  return p;
}

inline void expect_status(Ledger& ledger, const std::string& what, cudaError_t got, cudaError_t want) {
  ledger.record(got == want, what,
                std::string("launcher returned ") + cudaGetErrorString(got) + ", expected " + cudaGetErrorString(want));
}

// The tolerance of each kernel path (products exact in every path; sums in float or double).
template <class T>
Tolerance path_tolerance(bool allow_tf32);
template <>
inline Tolerance path_tolerance<double>(bool) {
  return exact_tolerance("f64 FMA", std::ldexp(1.0, -53));
}
template <>
inline Tolerance path_tolerance<float>(bool allow_tf32) {
  // TF32 inputs carry 2^-11 relative rounding each; tensor-core sums may lose one more bit.
  return allow_tf32 ? Tolerance{"f32 TF32 WMMA", std::ldexp(1.0, -23), std::ldexp(1.0, -10), 0}
                    : exact_tolerance("f32 FMA", std::ldexp(1.0, -24));
}
template <>
inline Tolerance path_tolerance<__half>(bool) {
  return {"f16 WMMA", std::ldexp(1.0, -23), 0, std::ldexp(1.0, -11), std::ldexp(1.0, -25)};
}
template <>
inline Tolerance path_tolerance<__nv_bfloat16>(bool) {
  return {"bf16 WMMA", std::ldexp(1.0, -23), 0, std::ldexp(1.0, -8), std::ldexp(1.0, -134)};
}

void check_cuemu(Ledger& ledger);
void check_compose(Ledger& ledger);
void check_conv(Ledger& ledger);
void check_chain(Ledger& ledger);
void check_worklist(Ledger& ledger);
void check_ck_worklist(Ledger& ledger);
void check_int64(Ledger& ledger);
// `count` cases drawn from `seed` (tests/cuda_cpu/check_random.cpp); only case `only` if >= 0.
void check_random(Ledger& ledger, uint64_t seed, int64_t count, int64_t only);
// Self-tests that must stop the program with a report (the harness can fail); returns false if
// `name` is unknown.
bool run_expected_failure(const char* name);

}  // namespace harness
