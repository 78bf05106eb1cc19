// A Session: one sequence's KV cache and scratch, and the forward pass over them in chunks
// (the pass itself, shared with batched decoding: model/forward.cpp).
#include "model/session.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "backend/make_backend.h"

namespace gemma {

static int prefill_chunk(int max_seq) { return std::min(256, max_seq); }

static Backend* checked(Backend* be, KvDType kv_dtype) {
  if (!be) throw std::invalid_argument("Session: no backend");
  be->check_kv_dtype(kv_dtype);
  return be;
}

static int checked_max_seq(const ModelConfig& c, int max_seq_len) {
  if (max_seq_len <= 0)
    throw std::invalid_argument("max_seq_len must be positive, got " + std::to_string(max_seq_len));
  if (max_seq_len > c.max_position)
    throw std::invalid_argument("max_seq_len " + std::to_string(max_seq_len) +
                                " exceeds the model's context length " + std::to_string(c.max_position));
  return max_seq_len;
}

Session::Session(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, KvDType kv_dtype)
    : Session(model, max_seq_len, make_backend(model, n_threads), kv_dtype) {}

Session::Session(std::shared_ptr<const Model> model, int max_seq_len, std::unique_ptr<Backend> backend,
                 KvDType kv_dtype)
    : model_(std::move(model)),
      max_seq_(checked_max_seq(model_->config(), max_seq_len)),
      backend_(std::move(backend)),
      chunk_(prefill_chunk(max_seq_)),
      kv_(model_->config(), max_seq_, model_->config().sliding_window + chunk_, kv_dtype,
          checked(backend_.get(), kv_dtype)->memory()),
      fwd_(model_->config()),
      ws_(model_->config(), chunk_, backend_->memory()) {}

bool Session::can_truncate(int n) const {
  if (n < 0 || n > n_past()) return false;
  const ModelConfig& c = model_->config();
  for (int l = 0; l < c.n_layers; ++l) {
    const int cap = kv_.capacity(l);
    const int oldest_kept = std::max(0, n_past() - cap);
    const int oldest_needed = std::max(0, n - c.sliding_window + 1);
    if (c.layer_sliding[size_t(l)] && oldest_needed < oldest_kept) return false;
  }
  return true;
}

void Session::truncate(int n) {
  if (!can_truncate(n))
    throw std::invalid_argument("cannot truncate the KV cache to " + std::to_string(n) + " tokens");
  tokens_.resize(size_t(n));
}

void Session::copy_cache_from(const Session& o) {
  if (o.model_ != model_ || o.max_seq_ != max_seq_ || o.kv_.dtype() != kv_.dtype())
    throw std::invalid_argument("copy_cache_from: the sessions differ in model, max_seq_len or KV type");
  if (&o == this) return;
  kv_.copy_prefix(o.kv_, o.n_past());
  tokens_ = o.tokens_;
}

void Session::forward(const int32_t* tokens, int n, float* logits_out, bool all_positions,
                      const std::function<void()>& check_interrupt) {
  const ModelConfig& c = model_->config();
  if (n <= 0) throw std::invalid_argument("forward: no tokens to process");
  if (n_past() + n > max_seq_)
    throw std::invalid_argument("sequence of " + std::to_string(n_past() + n) +
                                " tokens exceeds max_seq_len=" + std::to_string(max_seq_));
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(c.vocab_size) + ")");
  kv_.reserve(n_past() + n);
  const int start = n_past();
  for (int done = 0; done < n; done += chunk_) {
    const int m = std::min(chunk_, n - done);
    float* out = nullptr;
    if (logits_out && all_positions) out = logits_out + size_t(done) * size_t(c.vocab_size);
    if (logits_out && !all_positions && done + m == n) out = logits_out;
    forward_chunk(tokens + done, m, start + done, out, all_positions, check_interrupt);
    // Commit the chunk only once it is complete: an interrupt leaves a consistent cache.
    tokens_.insert(tokens_.end(), tokens + done, tokens + done + m);
  }
}

void Session::forward_chunk(const int32_t* tokens, int n, int pos0, float* logits_out, bool all_positions,
                            const std::function<void()>& check_interrupt) {
  SeqRows seq;
  seq.kv = &kv_;
  seq.pos0 = pos0;
  seq.n = n;
  const int last = n - 1;
  if (all_positions) {
    fwd_.run(*model_, *backend_, ws_, tokens, n, &seq, 1, nullptr, n, logits_out, check_interrupt);
  } else {
    fwd_.run(*model_, *backend_, ws_, tokens, n, &seq, 1, &last, 1, logits_out, check_interrupt);
  }
}

}  // namespace gemma
