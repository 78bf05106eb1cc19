#include "model/workspace.h"

namespace gemma {

Workspace::Workspace(const ModelConfig& c, int chunk_tokens) : chunk(chunk_tokens) {
  const size_t C = size_t(chunk);
  x.resize(C * size_t(c.d_model));
  xn.resize(C * size_t(c.d_model));
  qkv.resize(C * size_t(c.q_dim() + 2 * c.kv_dim()));
  attn_out.resize(C * size_t(c.q_dim()));
  proj.resize(C * size_t(c.d_model));
  ffn.resize(C * 2 * size_t(c.ffn_dim));
  act.resize(C * size_t(c.ffn_dim));
  rope_cs.resize(C * 2 * size_t(c.head_dim));
}

}  // namespace gemma
