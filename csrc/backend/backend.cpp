#include "backend/backend.h"

#include "model/weights.h"

namespace gemma {

void Backend::matmul(const SlicedWeight& W, const float* X, int64_t T, float* Y, int64_t ldy) {
  int64_t r0 = 0;
  for (const WeightView& s : W.slices) {
    matmul(s, X, T, Y + r0, ldy);
    r0 += s.rows;
  }
}

}  // namespace gemma
