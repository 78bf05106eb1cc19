#include "model/workspace.h"

#include <algorithm>

namespace gemma {

Workspace::Workspace(const ModelConfig& c, int chunk_tokens, MemorySpace& mem)
    : chunk(chunk_tokens),
      x(mem, size_t(chunk) * size_t(c.d_model)),
      xn(mem, size_t(chunk) * size_t(c.d_model)),
      qkv(mem, size_t(chunk) * size_t(c.q_dim() + 2 * c.kv_dim())),
      attn_out(mem, size_t(chunk) * size_t(c.q_dim())),
      proj(mem, size_t(chunk) * size_t(c.d_model)),
      ffn(mem, size_t(chunk) * 2 * size_t(c.ffn_dim)),
      act(mem, size_t(chunk) * size_t(c.ffn_dim)),
      rope_cs(mem, size_t(chunk) * 2 * size_t(c.head_dim)),
      logits(mem) {
  if (!mem.is_host()) {
    // 32 rows bound the buffer (32 MiB for a 256k vocabulary) whatever the chunk.
    logit_rows = std::min(chunk, 32);
    logits.resize(size_t(logit_rows) * size_t(c.vocab_size));
  }
}

}  // namespace gemma
