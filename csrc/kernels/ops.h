// Elementwise and per-row operations of the Gemma forward pass, in float32.
#pragma once
#include <cstdint>

namespace gemma::ops {

// out = x * rsqrt(mean(x^2) + eps) * one_plus_w   (Gemma's RMSNorm; one_plus_w = 1 + w)
void rms_norm(const float* x, const float* one_plus_w, int64_t n, float eps, float* out);

// GeGLU: out[i] = act(gate[i]) * up[i], act = GELU (tanh approximation or exact erf form).
void geglu(const float* gate, const float* up, int64_t n, bool tanh_approx, float* out);

// Rotary embedding, rotate-half layout: pairs (x[i], x[i + d/2]) rotated by angle pos * inv_freq[i].
void rope_rotate_half(float* x, int64_t head_dim, const float* cos, const float* sin);

// In place: x = cap * tanh(x / cap).
void soft_cap(float* x, int64_t n, float cap);

// In place softmax over n values.
void softmax(float* x, int64_t n);

}  // namespace gemma::ops
