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

  // Appends `tokens` at positions n_past.. and runs them through the model in chunks.
  // logits_out: nullptr (none), or [n, vocab] for every position when all_positions, or
  // [vocab] for the last token only. `check_interrupt` runs between layers and may throw;
  // the cache then stays as it was before the call.
  void forward(const int32_t* tokens, int n, float* logits_out, bool all_positions,
               const std::function<void()>& check_interrupt = {});

 private:
  void forward_chunk(const int32_t* tokens, int n, int pos0, float* logits_out, bool all_positions,
                     const std::function<void()>& check_interrupt);
  void attention(int layer, int n, int pos0);
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
