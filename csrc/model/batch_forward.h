// Batched decoding: the next tokens of several Sessions (each its own KV cache and position,
// of any length) in one forward pass whose matmuls take all of them at once, so the weights are
// read once for the whole batch instead of once per sequence — decode on a CPU is bound by
// memory bandwidth, so B sequences cost little more than one. Attention runs per sequence
// against its own cache (model/forward.h). Each sequence's logits are bit for bit those of
// Session::forward on it alone (tests/test_batching.py): the determinism rule of DESIGN.md.
//
// A BatchForward owns the Backend (its own thread pool) and the Workspace of the batched pass;
// the sessions keep theirs for their own prefill. Used by one thread at a time, like a Session.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "model/forward.h"
#include "model/session.h"
#include "model/workspace.h"

namespace gemma {

class BatchForward {
 public:
  // max_tokens: the most tokens one call runs (all sequences together). The backend of the
  // model's device (on the CPU, n_threads threads).
  BatchForward(std::shared_ptr<const Model> model, int max_tokens, int n_threads);

  int max_tokens() const { return ws_.chunk; }
  int n_threads() const { return backend_->n_threads(); }
  void set_n_threads(int n) { backend_->set_n_threads(n); }

  // Appends counts[i] tokens to sessions[i] (sessions of this model, all different; their tokens
  // laid end to end in `tokens`) and runs them in one pass. logits_out: nullptr, or [n, vocab]
  // with the logits of each session's last new token (all_positions false), or [sum counts,
  // vocab] for every new token. Checks every session before running any: a bad argument
  // throws std::invalid_argument naming it, and changes nothing. `check` runs between layers
  // and may throw; then no session commits its tokens (their caches stay as they were).
  void forward(Session* const* sessions, const int32_t* tokens, const int* counts, int n, float* logits_out,
               bool all_positions, const std::function<void()>& check = {});

 private:
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Backend> backend_;
  ForwardPass fwd_;
  Workspace ws_;
  std::vector<SeqRows> seqs_;
  std::vector<int> logit_rows_;
};

}  // namespace gemma
