// One conversation's state and its forward pass: the weights it reads (a Model, shared and
// immutable), its KVCache, its Workspace (scratch) and the Backend that runs every op.
// A Session is used by one thread at a time.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "model/workspace.h"

namespace gemma {

class Session {
 public:
  // max_seq_len: positions this session may hold (<= the model's max_position).
  // The backend of the model's device (backend/make_backend.h): on the CPU, n_threads threads
  // (kernels of the active ISA).
  Session(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, KvDType kv_dtype = KvDType::F32);
  Session(std::shared_ptr<const Model> model, int max_seq_len, std::unique_ptr<Backend> backend,
          KvDType kv_dtype = KvDType::F32);

  const Model& model() const { return *model_; }
  int max_seq_len() const { return max_seq_; }
  int n_past() const { return int(tokens_.size()); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int n_threads() const { return backend_->n_threads(); }
  const KVCache& kv_cache() const { return kv_; }
  Backend& backend() { return *backend_; }
  void set_n_threads(int n) { backend_->set_n_threads(n); }
  bool checks_layers() const { return fwd_.checks_layers(); }  // GEMMA_CPP_CHECK_LAYERS was set at creation

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
  friend class BatchForward;  // runs this session's next tokens in a batch (model/batch_forward.h)

  // The forward pass (model/forward.h) of one chunk of n tokens at positions pos0...
  void forward_chunk(const int32_t* tokens, int n, int pos0, float* logits_out, bool all_positions,
                     const std::function<void()>& check_interrupt);

  std::shared_ptr<const Model> model_;
  int max_seq_;
  std::unique_ptr<Backend> backend_;
  int chunk_;  // tokens per prefill chunk
  std::vector<int32_t> tokens_;

  // Keys and values; sliding layers hold a ring of window + chunk positions.
  KVCache kv_;

  ForwardPass fwd_;  // the forward pass (its rope tables)

  Workspace ws_;  // sized once for a full chunk: no allocation in the token loop
};

}  // namespace gemma
