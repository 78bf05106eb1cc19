// Turning next-token logits into a token. Order (documented in docs/sampling.md):
//   repetition penalty -> temperature -> top-k -> top-p -> min-p -> draw.
// temperature == 0 means greedy: argmax after the repetition penalty (first index on ties).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace gemma {

struct SamplingParams {
  float temperature = 0.f;
  int top_k = 0;              // 0: off
  float top_p = 1.f;          // 1: off
  float min_p = 0.f;          // 0: off
  float repetition_penalty = 1.f;  // 1: off; as in transformers (divide positive logits, multiply negative)
  void validate() const;      // throws std::invalid_argument naming the parameter
};

class Sampler {
 public:
  explicit Sampler(uint64_t seed) : rng_(seed) {}
  void reseed(uint64_t seed) { rng_.seed(seed); }
  // `logits` is modified in place (penalty, temperature). `history` feeds the repetition penalty.
  int32_t sample(float* logits, int vocab, const SamplingParams& p, const int32_t* history,
                 int n_history);

 private:
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<uint8_t> seen_;
};

}  // namespace gemma
