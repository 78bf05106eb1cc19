// One decode step for several generations at once: the pending token of each Generator (the one
// it returned last, not yet run through the model) goes through one batched forward pass
// (model/batch_forward.h: one weight pass for the whole batch, attention per sequence), then each
// Generator's own next() samples from its logits as it would have after running the token alone
// — the same processors, sampler and stop rules, the same bits (tests/test_batching.py).
//
// A step: decoder.forward_pending(gens) then g.next(1) for each. Prefill stays per Generator
// (start()); a generation joins the batch after its start() and leaves it when next() ends it.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "decode/generator.h"
#include "model/batch_forward.h"

namespace gemma {

class BatchDecoder {
 public:
  // max_batch: sequences per forward pass (more are run in groups of max_batch).
  BatchDecoder(std::shared_ptr<const Model> model, int max_batch, int n_threads);

  int max_batch() const { return fwd_.max_tokens(); }
  int vocab() const { return vocab_; }
  int n_threads() const { return fwd_.n_threads(); }
  void set_n_threads(int n) { fwd_.set_n_threads(n); }

  // Runs the pending token of every generator in gens[0..n) that has one (pending_token() >= 0;
  // the others are skipped, e.g. one that has ended) and hands each its logits. Returns how many
  // ran. `check` runs between layers and may throw: then none of that group commits its token
  // (each runs it itself at its next next()).
  int forward_pending(Generator* const* gens, int n, const Generator::Check& check);

  // Low level (tests, verifying several tokens per sequence): runs counts[i] tokens at the end of
  // gens[i]'s session (all in one pass; at most max_batch tokens in all), ending any generation
  // there as Generator::eval does. logits_out: nullptr, or the logits of each one's last token
  // ([n, vocab]), or with all_positions of every token ([sum counts, vocab]).
  void eval(Generator* const* gens, const int32_t* tokens, const int* counts, int n, float* logits_out,
            bool all_positions, const Generator::Check& check);

 private:
  BatchForward fwd_;
  int vocab_;
  std::vector<float> logits_;  // [max_batch, vocab]
  std::vector<Session*> sessions_;
  std::vector<Generator*> ready_;
  std::vector<int32_t> tokens_;
  std::vector<int> counts_;
};

}  // namespace gemma
