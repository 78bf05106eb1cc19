// The decode loop: one generation over a Session, one token at a time,
//   prefill (reusing the longest cached prefix) -> logits processors -> sampler -> accept,
// ending with a StopReason. Stop strings are text, so Python decides those (generation.py).
//
// State between calls: the logits of the last evaluated position, and the `pending` token — the
// last token handed out, not yet run through the model. So after a generation the session holds
// the prompt and every returned token but the last (which the next call's prompt usually repeats:
// the cached prefix is reused). A Generator is used by one thread at a time, except interrupt().
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "decode/logits_processors.h"
#include "decode/sampler.h"
#include "decode/speculative.h"
#include "model/session.h"

namespace gemma {

enum class StopReason {
  None,         // still running (or never started)
  Eos,          // an end id (EOS, <end_of_turn>) was sampled; it is not returned
  Length,       // max_new_tokens returned
  ContextEnd,   // the session is full: no room to run the last token
  Interrupted,  // interrupt() was called
};
const char* stop_reason_name(StopReason r);

class Generator {
 public:
  // Runs between layers and between tokens; may throw to abort (e.g. Ctrl-C in Python).
  using Check = std::function<void()>;

  Generator(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, uint64_t seed, KvDType kv_dtype);

  Session& session() { return session_; }
  const Session& session() const { return session_; }
  int vocab() const { return session_.model().config().vocab_size; }

  // --- one generation ---
  // Brings the session to hold exactly `prompt` (reusing the longest cached prefix that it can)
  // and arms a generation of at most max_new_tokens. Returns the number of prompt tokens run
  // through the model. `end_ids` end it (Eos); pass none to ignore EOS.
  int start(const int32_t* prompt, int n, const SamplingParams& params, int max_new_tokens,
            std::vector<int32_t> end_ids, uint64_t seed, const Check& check);
  // Appends up to k new tokens to `out`; returns how many. Fewer than k (maybe 0) means the
  // generation ended: stop_reason() says why.
  int next(int32_t* out, int k, const Check& check);
  StopReason stop_reason() const { return reason_; }
  // Speculative decoding (decode/speculative.h, speculative.cpp): `drafter` proposes up to
  // draft_len tokens, one forward of the model verifies them all, and the rejected ones are cut
  // from the cache. Appends at most `cap` tokens to `out` (at least one while the generation
  // runs) and returns how many: the same tokens next() would give at temperature 0, and at
  // temperature > 0 tokens with the same distribution (the rejection rule), ending the same way.
  int next_speculative(Drafter& drafter, int draft_len, int32_t* out, int cap, const Check& check);
  // This generation's drafted and accepted tokens and verifying forwards (reset by start()).
  struct SpecStats {
    int64_t drafted = 0, accepted = 0, rounds = 0;
  };
  const SpecStats& spec_stats() const { return spec_; }
  // Each start() begins generation number generation_id() + 1 (a count, from 1).
  uint64_t generation_id() const { return generation_; }
  // Thread-safe: generation `id` (running, or the next one to start) stops at its next check
  // (between layers or tokens) with StopReason::Interrupted; the cache stays consistent (a
  // half-run token is not committed). Naming the generation keeps a late call from stopping
  // a later generation on the same Generator.
  void interrupt(uint64_t id) { interrupt_.store(id, std::memory_order_relaxed); }
  // The allowed-token mask for the following steps (see TokenMask), until replaced or cleared.
  void set_mask(const uint32_t* words, size_t n_words) { mask_.set(words, n_words, vocab()); }
  void clear_mask() { mask_.clear(); }
  // Log-probabilities of each sampled token and of the `top` most likely ids (top < 0: off, the
  // default, costing nothing), from the distribution the sampler drew from before temperature:
  // the logits after the penalties and the mask, log-softmaxed. last_logprob() is the last
  // sampled token's (also of one that ended the generation).
  struct TokenLogprob {
    int32_t id = -1;
    float logprob = 0.f;
    std::vector<std::pair<int32_t, float>> top;  // best first; ties: the lower id first
  };
  void set_logprobs(int top) { lp_top_ = top; }
  // OpenAI's logit_bias: `bias[i]` added to the logit of `ids[i]` after the penalties and before
  // the mask, for the following steps, until replaced (n = 0 clears). Ids must be in the vocabulary.
  void set_logit_bias(const int32_t* ids, const float* bias, int n);
  const TokenLogprob& last_logprob() const { return lp_; }

  // --- batched decoding (decode/batch_decoder.h) ---
  // The token the next next() would run through the model before sampling (the last one it
  // returned), or -1: none, no generation running, or it has ended or is to be interrupted.
  int32_t pending_token() const;
  // The logits of that token, computed by a batched forward that has appended it to this
  // session: next() samples from them instead of running the model (the same bits either way).
  void take_pending_logits(const float* logits);
  // After a batched forward appended tokens to this session outside a generation
  // (BatchDecoder::eval): ends any generation and takes the last position's logits, as eval() does.
  void take_evaluated_logits(const float* logits);

  // --- low level (logits, tests, benchmarks) ---
  // Runs `tokens` at the end of the session (ending any generation). all_logits_out: nullptr,
  // or [n, vocab].
  void eval(const int32_t* tokens, int n, float* all_logits_out, const Check& check);
  const std::vector<float>& last_logits() const;  // of the last evaluated position; throws if none
  // Processes a copy of last_logits() (penalties over this generation, the mask) and samples.
  int32_t sample(const SamplingParams& p);
  int32_t step(int32_t token, const SamplingParams& p, const Check& check);  // eval(token), sample

  void reseed(uint64_t seed) { sampler_.reseed(seed); }
  void reset();
  void truncate(int n);
  // Takes a copy of o's cached tokens (their keys and values) and last logits; no generation runs.
  void copy_cache_from(const Generator& o);

 private:
  struct InterruptRequested {};  // thrown from a check to unwind a forward; caught in next()

  void forward(const int32_t* tokens, int n, float* all_logits_out, const Check& check);
  // Logits processors of `p` on a copy of `logits` into work_: the repetition penalty over the
  // first n_hist cached tokens, presence/frequency penalties, logit_bias, the mask.
  void process(const float* logits, int n_hist, const SamplingParams& p);
  // Speculation: decides the token at one position whose processed logits are in work_, given
  // the drafted token there (or -1: none) and the distribution it was drawn from (null: drawn
  // with certainty). Sets `accepted` when the result is the drafted token.
  int32_t verify_token(int32_t drafted, const Sampler::Dist* q, bool& accepted);
  void end_generation();  // back to no generation running (low-level calls, reset)
  void record_logprob(int32_t tok);
  Check with_interrupt(const Check& check);

  Session session_;
  Sampler sampler_;
  std::vector<float> last_, work_;  // [vocab]: last position's logits; the processed copy
  bool has_last_ = false;
  std::vector<uint8_t> seen_;  // repetition-penalty scratch
  TokenCounts counts_;
  TokenMask mask_;
  int lp_top_ = -1;
  std::vector<std::pair<int32_t, float>> bias_;
  TokenLogprob lp_;
  SpecStats spec_;
  std::vector<float> spec_logits_, spec_prev_;  // speculation's scratch (speculative.cpp)
  std::vector<int32_t> spec_ctx_, spec_rows_;
  Sampler::Dist spec_p_;
  Draft spec_draft_;
  std::vector<double> spec_dense_;

  // The running generation.
  bool active_ = false;
  SamplingParams params_;
  std::vector<int32_t> end_ids_;
  int max_new_ = 0, produced_ = 0;
  int32_t pending_ = -1;  // returned, not yet run through the model
  StopReason reason_ = StopReason::None;
  uint64_t generation_ = 0;            // written by the generating thread only
  std::atomic<uint64_t> interrupt_{0};  // the id of the generation to interrupt (0: none)
};

}  // namespace gemma
