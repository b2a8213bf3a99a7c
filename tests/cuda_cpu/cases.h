// The per-case checks of the check_*.cpp files, exposed for the groups that draw their cases
// (check_random.cpp): one call runs one launcher family on one shape, layout and kernel path
// against its float64 reference, with the same tolerance model and sentinels as the fixed groups.
#pragma once

#include <cstdint>
#include <vector>

#include "expandnets/compose.h"
#include "harness.h"

namespace harness {

// A kernel path: the scalar type, and for float whether TF32 tensor cores are allowed.
enum class Path { f64, f32, tf32, f16, bf16 };
inline const char* path_name(Path p) {
  switch (p) {
    case Path::f64: return "f64";
    case Path::f32: return "f32";
    case Path::tf32: return "tf32";
    case Path::f16: return "f16";
    case Path::bf16: return "bf16";
  }
  return "?";
}

// --- check_conv.cpp: forward, input grad, weight grad (+ bias grad) of one convolution ---------
struct ConvCase {
  const char* name;
  int64_t n, c, h, w, o, kh, kw, sh, sw, ph, pw, dh, dw, groups;
  bool bias;
};
// strided: a view with every other width element and padded rows, planes and images; cnhw: channel
// planes outermost; huge: images 2^31 + 7 elements apart (a sparse mapping, no sentinels).
enum class ConvLayout { nchw, nhwc, strided, cnhw, huge };
const char* conv_layout_name(ConvLayout l);
// Every path (f64, f32, tf32, f16, bf16).
void conv_case(Ledger& ledger, const ConvCase& k, ConvLayout layout, Path path, uint64_t seed);

// --- check_compose.cpp: one CL composition (forward, backward), bias fold, CK fold -------------
// Paths f64 and f32.
void cl_compose_case(Ledger& ledger, const expandnets::ClShape& s, Path path, uint64_t seed);
void cl_bias_fold_case(Ledger& ledger, const expandnets::ClShape& s, Path path, uint64_t seed);
void ck_fold_case(Ledger& ledger, const expandnets::CkShape& s, Path path, uint64_t seed);

// --- check_chain.cpp: one chain unit, forward and the recompute backward -----------------------
struct ChainCase {
  const char* name;
  int64_t n, groups, mg, a, c, o, h, w;  // o == 0: a CK pair (no layer 3)
  int64_t k1h, k1w, d1h, d1w;            // layer 1 (stride 1; 1x1: CL)
  int64_t kh, kw, sh, sw, dh, dw;        // layer 2
  int64_t pad_left, pad_right, pad_top, pad_bottom;
  bool bias, relu;
};
enum class ChainLayout { nchw, nhwc, strided };
const char* chain_layout_name(ChainLayout l);
// Paths f64, f32, f16, bf16 (the chain kernels have no TF32 path). A gradient whose reference is
// all zeros (windows that never reach the input, a ReLU off everywhere) must come out exactly zero.
void chain_case(Ledger& ledger, const ChainCase& k, ChainLayout layout, Path path, uint64_t seed);

// --- check_worklist.cpp / check_ck_worklist.cpp: several units in one work list -----------------
// Paths f64 and f32.
void cl_worklist_case(Ledger& ledger, const std::vector<expandnets::ClShape>& shapes, bool biases, Path path,
                      uint64_t seed);
void ck_worklist_case(Ledger& ledger, const std::vector<expandnets::CkShape>& shapes, Path path, uint64_t seed);

}  // namespace harness
