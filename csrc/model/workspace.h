// The scratch of the forward pass: every activation buffer one chunk of tokens passes through,
// sized once for the longest chunk, so the token loop never allocates. Rows are token-major:
// token t of the chunk (t < n <= chunk) starts at t * (the row width below); widths from the
// ModelConfig: d = d_model, q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim,
// F = ffn_dim, hd = head_dim.
//
// (Attention's per-thread score rows are the backend's own scratch: their layout follows its
// threads, and another backend has no use for them.)
#pragma once
#include <vector>

#include "model/config.h"

namespace gemma {

struct Workspace {
  Workspace(const ModelConfig& c, int chunk);

  int chunk;                    // tokens the buffers hold
  std::vector<float> x;         // [chunk][d]     the residual stream
  std::vector<float> xn;        // [chunk][d]     x normed (a block's input; the final norm's output)
  std::vector<float> qkv;       // [chunk][q_dim + 2 kv_dim]  q | k | v (q and k roped in place)
  std::vector<float> attn_out;  // [chunk][q_dim] attention's output, heads side by side
  std::vector<float> proj;      // [chunk][d]     a block's output before the residual add (post-normed in place)
  std::vector<float> ffn;       // [chunk][2 F]   gate | up
  std::vector<float> act;       // [chunk][F]     GeGLU(gate, up)
  std::vector<float> rope_cs;   // [chunk][2 hd]  cos[hd/2] sin[hd/2] of the global base, then of the local base
};

}  // namespace gemma
