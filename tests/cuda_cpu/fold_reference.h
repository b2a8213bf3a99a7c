// The float64 loop reference of one CK fold and its gradients (K[o, i, v + u] = sum_c L[o, c, v]
// E[c, i, u]), shared by the one-fold check (check_compose.cpp) and the work-list check
// (check_ck_worklist.cpp).
#pragma once

#include <vector>

#include "expandnets/compose.h"
#include "harness.h"

namespace harness {

struct FoldRefs {
  std::vector<Ref> k, d_later, d_earlier;
};

// later (o, c, a, a2), earlier (c, i, b, b2), grad (o, i, a + b - 1, a2 + b2 - 1).
template <class T>
FoldRefs fold_reference(const expandnets::CkShape& s, const std::vector<T>& later, const std::vector<T>& earlier,
                        const std::vector<T>& grad) {
  const int64_t kh = s.a + s.b - 1, kw = s.a2 + s.b2 - 1;
  const auto d = [](const std::vector<T>& v, int64_t i) { return Scalar<T>::to_double(v[size_t(i)]); };
  FoldRefs r;
  r.k.resize(grad.size());
  r.d_later.resize(later.size());
  r.d_earlier.resize(earlier.size());
  for (int64_t o = 0; o < s.o; ++o)
    for (int64_t c = 0; c < s.c; ++c)
      for (int64_t i = 0; i < s.i; ++i)
        for (int64_t vy = 0; vy < s.a; ++vy)
          for (int64_t vx = 0; vx < s.a2; ++vx)
            for (int64_t uy = 0; uy < s.b; ++uy)
              for (int64_t ux = 0; ux < s.b2; ++ux) {
                const int64_t l = ((o * s.c + c) * s.a + vy) * s.a2 + vx, e = ((c * s.i + i) * s.b + uy) * s.b2 + ux;
                const int64_t k = ((o * s.i + i) * kh + vy + uy) * kw + vx + ux;
                r.k[size_t(k)].add(d(later, l) * d(earlier, e));
                r.d_later[size_t(l)].add(d(grad, k) * d(earlier, e));
                r.d_earlier[size_t(e)].add(d(later, l) * d(grad, k));
              }
  return r;
}

}  // namespace harness
