// NaN/Inf detection over float buffers: the Generator's check of every logits row it computes,
// and the per-layer debug check of the forward pass (GEMMA_CPP_CHECK_LAYERS=1, session.cpp).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace gemma {

// Index of the first NaN or +-Inf among n floats, or -1. Reads the bits: |x| has an all-ones
// exponent exactly when its bit pattern, as a non-negative int32, exceeds FLT_MAX's. An OR of
// int32 compares vectorises even on the SSE2 baseline (a float compare chain would not without
// -ffast-math), so checking a 256K-entry vocabulary costs microseconds.
inline int64_t first_non_finite(const float* x, int64_t n) {
  const int32_t* bits = reinterpret_cast<const int32_t*>(x);
  int32_t any = 0;
  for (int64_t i = 0; i < n; ++i) any |= int32_t((bits[i] & 0x7fffffff) > 0x7f7fffff);
  if (!any) return -1;
  for (int64_t i = 0; i < n; ++i)
    if ((bits[i] & 0x7fffffff) > 0x7f7fffff) return i;
  return -1;
}

// The debug mode that checks the residual stream after every block: GEMMA_CPP_CHECK_LAYERS set
// to anything but "" or "0" when a session is created.
inline bool check_layers_requested() {
  const char* v = std::getenv("GEMMA_CPP_CHECK_LAYERS");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

}  // namespace gemma
