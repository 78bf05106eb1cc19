#include "decode/logits_processors.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace gemma {

void apply_repetition_penalty(float* logits, int vocab, float penalty, const int32_t* history, int n,
                              std::vector<uint8_t>& seen) {
  if (penalty == 1.f || n <= 0) return;
  seen.assign(size_t(vocab), 0);
  for (int i = 0; i < n; ++i) {
    const int32_t id = history[i];
    if (id < 0 || id >= vocab || seen[size_t(id)]) continue;
    seen[size_t(id)] = 1;
    float& l = logits[id];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

void TokenCounts::reset(int vocab) {
  // Clearing only the ids in use keeps a new generation O(generated), not O(vocab).
  if (count_.size() != size_t(vocab)) {
    count_.assign(size_t(vocab), 0);
  } else {
    for (int32_t id : distinct_) count_[size_t(id)] = 0;
  }
  distinct_.clear();
}

void TokenCounts::add(int32_t id) {
  if (count_[size_t(id)]++ == 0) distinct_.push_back(id);
}

void TokenCounts::apply_penalties(float* logits, float presence, float frequency) const {
  if (presence == 0.f && frequency == 0.f) return;
  for (int32_t id : distinct_) logits[id] -= presence + frequency * float(count_[size_t(id)]);
}

void TokenMask::set(const uint32_t* words, size_t n_words, int vocab) {
  const size_t need = (size_t(vocab) + 31) / 32;
  if (n_words < need)
    throw std::invalid_argument("token mask has " + std::to_string(n_words) + " 32-bit words, the vocabulary of " +
                                std::to_string(vocab) + " needs " + std::to_string(need));
  bool any = false;
  for (int i = 0; i < vocab && !any; i += 32) {
    uint32_t w = words[size_t(i / 32)];
    if (vocab - i < 32) w &= (uint32_t(1) << (vocab - i)) - 1;  // bits past the vocabulary
    any = w != 0;
  }
  if (!any) throw std::invalid_argument("token mask allows no token: at least one id must be allowed");
  words_.assign(words, words + need);
}

void TokenMask::apply(float* logits, int vocab) const {
  for (int i = 0; i < vocab; ++i)
    if (!((words_[size_t(i / 32)] >> (i % 32)) & 1u)) logits[i] = -INFINITY;
}

}  // namespace gemma
