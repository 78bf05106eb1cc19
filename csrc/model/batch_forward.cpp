#include "model/batch_forward.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "backend/make_backend.h"

namespace gemma {

static int checked_max_tokens(int n) {
  if (n <= 0) throw std::invalid_argument("batch: max_tokens must be positive, got " + std::to_string(n));
  return n;
}

BatchForward::BatchForward(std::shared_ptr<const Model> model, int max_tokens, int n_threads)
    : model_(std::move(model)),
      backend_(make_backend(model_, n_threads)),
      fwd_(model_->config()),
      ws_(model_->config(), checked_max_tokens(max_tokens), backend_->memory()) {}

void BatchForward::forward(Session* const* sessions, const int32_t* tokens, const int* counts, int n,
                           float* logits_out, bool all_positions, const std::function<void()>& check) {
  if (n <= 0) throw std::invalid_argument("batch: no sequences to run");
  const ModelConfig& c = model_->config();
  seqs_.assign(size_t(n), SeqRows());
  logit_rows_.clear();
  int rows = 0;
  for (int i = 0; i < n; ++i) {
    Session* s = sessions[i];
    const std::string who = "batch: sequence " + std::to_string(i);
    if (!s) throw std::invalid_argument(who + " is null");
    if (s->model_ != model_) throw std::invalid_argument(who + " belongs to another model");
    for (int j = 0; j < i; ++j)
      if (sessions[j] == s) throw std::invalid_argument(who + " is the same session as sequence " + std::to_string(j));
    const int m = counts[i];
    if (m <= 0) throw std::invalid_argument(who + " has no tokens to run");
    // A sliding layer's ring holds window + chunk positions: a step may add up to a chunk.
    if (m > s->chunk_)
      throw std::invalid_argument(who + " has " + std::to_string(m) + " tokens, more than its session's chunk of " +
                                  std::to_string(s->chunk_));
    if (s->n_past() + m > s->max_seq_)
      throw std::invalid_argument(who + ": " + std::to_string(s->n_past() + m) + " tokens exceed max_seq_len=" +
                                  std::to_string(s->max_seq_));
    for (int t = 0; t < m; ++t) {
      const int32_t id = tokens[rows + t];
      if (id < 0 || id >= c.vocab_size)
        throw std::invalid_argument(who + ": token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                    std::to_string(c.vocab_size) + ")");
    }
    if (rows + m > ws_.chunk)
      throw std::invalid_argument("batch: more than max_tokens=" + std::to_string(ws_.chunk) + " tokens");
    seqs_[size_t(i)].kv = &s->kv_;
    seqs_[size_t(i)].pos0 = s->n_past();
    seqs_[size_t(i)].n = m;
    seqs_[size_t(i)].row0 = rows;
    rows += m;
    logit_rows_.push_back(rows - 1);
  }
  for (int i = 0; i < n; ++i) sessions[i]->kv_.reserve(sessions[i]->n_past() + counts[i]);
  if (all_positions) {
    fwd_.run(*model_, *backend_, ws_, tokens, rows, seqs_.data(), n, nullptr, rows, logits_out, check);
  } else {
    fwd_.run(*model_, *backend_, ws_, tokens, rows, seqs_.data(), n, logit_rows_.data(), n, logits_out, check);
  }
  // Commit only once the whole pass is complete: an interrupt leaves every cache consistent.
  for (int i = 0; i < n; ++i) {
    const int32_t* t = tokens + seqs_[size_t(i)].row0;
    sessions[i]->tokens_.insert(sessions[i]->tokens_.end(), t, t + counts[i]);
  }
}

}  // namespace gemma
