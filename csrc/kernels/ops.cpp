#include "kernels/ops.h"

#include <cmath>

namespace gemma::ops {

void rms_norm(const float* x, const float* one_plus_w, int64_t n, float eps, float* out) {
  // Sum of squares in double: the mean is then exact to float precision whatever n is,
  // which keeps us within rounding of torch's pairwise float32 reduction. Eight partial sums
  // (element i into sum i mod 8, combined in a fixed tree) so the adds do not wait on each
  // other: one chain of n dependent double adds cost 4% of a 270M prefill.
  constexpr int kSums = 8;
  double part[kSums] = {};
  int64_t i0 = 0;
  for (; i0 + kSums <= n; i0 += kSums)
    for (int j = 0; j < kSums; ++j) part[j] += double(x[i0 + j]) * double(x[i0 + j]);
  for (int j = 0; i0 + j < n; ++j) part[j] += double(x[i0 + j]) * double(x[i0 + j]);
  const double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  const float mean = float(ss / double(n));
  const float inv = 1.0f / std::sqrt(mean + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * inv) * one_plus_w[i];
}

void geglu(const float* gate, const float* up, int64_t n, bool tanh_approx, float* out) {
  if (tanh_approx) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      const float act = 0.5f * g * (1.0f + std::tanh(k * (g + 0.044715f * g * g * g)));
      out[i] = act * up[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float g = gate[i];
      out[i] = 0.5f * g * (1.0f + std::erf(g * 0.7071067811865476f)) * up[i];
    }
  }
}

void rope_rotate_half(float* x, int64_t head_dim, const float* cos, const float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    // transformers: x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]
    x[i] = a * cos[i] - b * sin[i];
    x[i + half] = b * cos[i] + a * sin[i];
  }
}

void soft_cap(float* x, int64_t n, float cap) {
  const float inv = 1.0f / cap;
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv);
}

void softmax(float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  const float inv = 1.0f / s;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace gemma::ops
