// One conversation's state: the KV cache and the scratch buffers of the forward pass.
// A Session is used by one thread at a time; the Model it reads is shared and immutable.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend/cpu/thread_pool.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace gemma {

class Session {
 public:
  // max_seq_len: positions this session may hold (<= the model's max_position).
  Session(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, KvDType kv_dtype = KvDType::F32);

  const Model& model() const { return *model_; }
  int max_seq_len() const { return max_seq_; }
  int n_past() const { return int(tokens_.size()); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int n_threads() const { return pool_->size(); }
  const KVCache& kv_cache() const { return kv_; }
  void set_n_threads(int n);

  void reset() { tokens_.clear(); }
  // Whether the cache can be cut back to its first n tokens (sliding-window ring buffers
  // may already have overwritten keys that position n would need).
  bool can_truncate(int n) const;
  void truncate(int n);  // throws if !can_truncate(n)
  // Takes a copy of `o`'s tokens and their cached keys and values (o: a session of the same model,
  // max_seq_len and KV type), so that evaluating more tokens here gives o's logits bit for bit.
  void copy_cache_from(const Session& o);

  // Appends `tokens` at positions n_past.. and runs them through the model in chunks.
  // logits_out: nullptr (none), or [n, vocab] for every position when all_positions, or
  // [vocab] for the last token only. `check_interrupt` runs between layers and may throw;
  // the cache then stays as it was before the call.
  void forward(const int32_t* tokens, int n, float* logits_out, bool all_positions,
               const std::function<void()>& check_interrupt = {});

 private:
  // The forward pass of one chunk of n tokens at positions pos0.., as named steps. Buffers
  // (per token t of the chunk): x_ [n][d] the residual stream; xn_ [n][d] its normed copy;
  // qkv_ [n][q_dim + 2 kv_dim]; attn_out_ [n][q_dim]; proj_ [n][d] a block's output before the
  // residual add; ffn_ [n][2 ffn] gate | up; act_ [n][ffn] GeGLU; rope_cs_ [n][2 head_dim]
  // cos | sin for the global then the local base; scores_ per thread, attention's rows.
  void forward_chunk(const int32_t* tokens, int n, int pos0, float* logits_out, bool all_positions,
                     const std::function<void()>& check_interrupt);
  void embed(const int32_t* tokens, int n);
  void rope_angles(int n, int pos0);
  void attention_block(int layer, int n, int pos0);
  void attention(int layer, int n, int pos0);  // attn_out_ from qkv_ and the KV cache
  void mlp_block(int layer, int n);
  void add_residual(int n, const float* post_norm);
  void final_logits(int n, bool all_positions, float* logits_out);
  void reserve_scores(int n_positions);

  std::shared_ptr<const Model> model_;
  int max_seq_;
  std::unique_ptr<ThreadPool> pool_;  // this session's compute threads (the caller is one of them)
  int chunk_;  // tokens per prefill chunk
  std::vector<int32_t> tokens_;

  // Keys and values; sliding layers hold a ring of window + chunk positions.
  KVCache kv_;

  // Rope tables: inverse frequencies for global and local (sliding) layers.
  std::vector<float> inv_freq_global_, inv_freq_local_;

  // Scratch, sized once for a full chunk: no allocation in the token loop.
  std::vector<float> x_, xn_, qkv_, attn_out_, proj_, ffn_, act_, scores_, rope_cs_;
  int scores_stride_ = 0;  // floats per thread in scores_ (grown by reserve_scores)
};

}  // namespace gemma
