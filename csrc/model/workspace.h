// The scratch of the forward pass: every activation buffer one chunk of tokens passes through,
// sized once for the longest chunk, so the token loop never allocates. Rows are token-major:
// token t of the chunk (t < n <= chunk) starts at t * (the row width below); widths from the
// ModelConfig: d = d_model, q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim,
// F = ffn_dim, hd = head_dim, V = vocab_size.
//
// The buffers live in the backend's memory (backend/memory.h: host for the CPU, device memory
// for CUDA). (Attention's per-thread score rows are the backend's own scratch: their layout
// follows its threads, and another backend has no use for them.)
#pragma once
#include "backend/memory.h"
#include "model/config.h"

namespace gemma {

struct Workspace {
  Workspace(const ModelConfig& c, int chunk, MemorySpace& mem = host_memory());

  int chunk;                    // tokens the buffers hold
  Array<float> x;         // [chunk][d]     the residual stream
  Array<float> xn;        // [chunk][d]     x normed (a block's input; the final norm's output)
  Array<float> qkv;       // [chunk][q_dim + 2 kv_dim]  q | k | v (q and k roped in place)
  Array<float> attn_out;  // [chunk][q_dim] attention's output, heads side by side
  Array<float> proj;      // [chunk][d]     a block's output before the residual add (post-normed in place)
  Array<float> ffn;       // [chunk][2 F]   gate | up
  Array<float> act;       // [chunk][F]     GeGLU(gate, up)
  Array<float> rope_cs;   // [chunk][2 hd]  cos[hd/2] sin[hd/2] of the global base, then of the local base
  // Outside host memory only: [logit_rows][V], where the final logits are computed, logit_rows
  // rows at a time, before they are copied to the caller's host buffer. On the host the logits
  // go straight to the caller's buffer and this stays empty.
  Array<float> logits;
  int logit_rows = 0;
};

}  // namespace gemma
