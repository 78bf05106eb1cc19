// Logits processors: in-place edits of the next-token logits before the sampler, in this order
// (docs/sampling.md):
//   repetition penalty -> presence and frequency penalties -> logit_bias (Generator) -> allowed-token mask.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace gemma {

// transformers' RepetitionPenaltyLogitsProcessor: each distinct id of `history` (prompt and
// generated tokens) has its logit divided by `penalty` if positive, multiplied if negative.
// `seen` is scratch (resized to vocab). penalty == 1 does nothing.
void apply_repetition_penalty(float* logits, int vocab, float penalty, const int32_t* history, int n,
                              std::vector<uint8_t>& seen);

// How often each id was generated so far in this generation (the prompt does not count, as in
// OpenAI's API), kept incrementally so a step touches only the distinct generated ids.
class TokenCounts {
 public:
  void reset(int vocab);
  void add(int32_t id);
  // OpenAI's presence and frequency penalties:
  //   logit[id] -= presence * (count[id] > 0) + frequency * count[id]
  void apply_penalties(float* logits, float presence, float frequency) const;

 private:
  std::vector<int32_t> count_;     // [vocab]
  std::vector<int32_t> distinct_;  // ids with count > 0, in first-seen order
};

// Which tokens may come next: a bitmask over the vocabulary (bit i of 32-bit word i / 32 set:
// id i allowed), set by the caller (e.g. a grammar) and kept until replaced or cleared. Tokens
// not allowed get logit -inf, so neither greedy nor sampling can pick them.
class TokenMask {
 public:
  // Throws std::invalid_argument when the mask is too short or allows no id below `vocab`.
  void set(const uint32_t* words, size_t n_words, int vocab);
  void clear() { words_.clear(); }
  bool active() const { return !words_.empty(); }
  void apply(float* logits, int vocab) const;

 private:
  std::vector<uint32_t> words_;
};

}  // namespace gemma
