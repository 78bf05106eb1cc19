// Turning processed next-token logits into a token:
//   temperature -> top-k -> top-p -> min-p -> draw   (docs/sampling.md; penalties and the token
// mask run before, in logits_processors.h). temperature == 0 means greedy: the argmax, first index
// on ties. Tokens whose logit is -inf (masked out) are never drawn.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace gemma {

// Everything a request sets about choosing tokens: the processors' penalties and the sampler's
// settings. Python checks the same bounds first (python/gemma_cpp/params.py); validate() is the
// C++ side's own guard with the same rules.
struct SamplingParams {
  float temperature = 0.f;
  int top_k = 0;                   // 0: off
  float top_p = 1.f;               // 1: off
  float min_p = 0.f;               // 0: off
  float repetition_penalty = 1.f;  // 1: off; as in transformers (divide positive logits, multiply negative)
  float presence_penalty = 0.f;    // 0: off; OpenAI's, over the generated tokens
  float frequency_penalty = 0.f;   // 0: off; OpenAI's, over the generated tokens
  void validate() const;           // throws std::invalid_argument naming the parameter
};

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  void reseed(uint64_t seed) { rng_.seed(seed); }
  // Reads the processed logits; uses only the temperature, top_k, top_p and min_p of `p`.
  int32_t sample(const float* logits, int vocab, const SamplingParams& p);

  // The distribution sample() draws from, exactly (the same cuts, ties broken the same way), as
  // (id, probability) pairs with probability > 0, best first for the cut ones (greedy: the argmax
  // with probability 1). Speculative decoding's acceptance rule reads it (decode/speculative.h).
  using Dist = std::vector<std::pair<int32_t, double>>;
  void distribution(const float* logits, int vocab, const SamplingParams& p, Dist& out);
  // Uniform in [0, 1) from this sampler's generator.
  double uniform();
  // A draw from unnormalised weights (id, weight >= 0; their sum must be > 0).
  int32_t draw(const Dist& weights);

 private:
  // Leaves the kept candidates in cand_[0, n) as (unnormalised weight, id) and their sum in
  // `total`, or returns the token when the choice is greedy (then n = 0).
  int32_t candidates(const float* logits, int vocab, const SamplingParams& p, size_t& n, double& total);

  // Sorts the best-first prefix of cand_[0, n) that the top-p / min-p cuts read (sampler.cpp).
  template <typename Better>
  void sort_prefix_holding_cut(size_t n, double total, const SamplingParams& p, Better better);

  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace gemma
