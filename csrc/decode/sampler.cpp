#include "decode/sampler.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace gemma {

void SamplingParams::validate() const {
  auto bad = [](const std::string& what) { throw std::invalid_argument(what); };
  if (!(temperature >= 0.f) || !std::isfinite(temperature))
    bad("temperature must be a finite number >= 0, got " + std::to_string(temperature));
  if (top_k < 0) bad("top_k must be >= 0 (0 disables it), got " + std::to_string(top_k));
  if (!(top_p > 0.f && top_p <= 1.f)) bad("top_p must be in (0, 1], got " + std::to_string(top_p));
  if (!(min_p >= 0.f && min_p < 1.f)) bad("min_p must be in [0, 1), got " + std::to_string(min_p));
  if (!(repetition_penalty > 0.f) || !std::isfinite(repetition_penalty))
    bad("repetition_penalty must be > 0, got " + std::to_string(repetition_penalty));
  if (!(presence_penalty >= -2.f && presence_penalty <= 2.f))
    bad("presence_penalty must be in [-2, 2], got " + std::to_string(presence_penalty));
  if (!(frequency_penalty >= -2.f && frequency_penalty <= 2.f))
    bad("frequency_penalty must be in [-2, 2], got " + std::to_string(frequency_penalty));
}

// The top-p and min-p cuts read the candidates best first, but only up to the cut, which for a
// real distribution is a few dozen of Gemma's 262144 tokens: sorting them all cost more than a
// small model's forward pass. So select a best-first prefix (nth_element, then sort it) and grow
// it until the cut lies inside. `better` is a total order (ties broken by id), so the prefix is
// exactly the first k of a full sort and the sampled token is the same.
template <typename Better>
void Sampler::sort_prefix_holding_cut(size_t n, double total, const SamplingParams& p, Better better) {
  if (n == 0) return;
  for (size_t k = std::min<size_t>(n, 64);; k = std::min(n, 8 * k)) {
    std::nth_element(cand_.begin(), cand_.begin() + long(k - 1), cand_.begin() + long(n), better);
    std::sort(cand_.begin(), cand_.begin() + long(k), better);
    if (k == n) return;
    bool holds;
    if (p.top_p < 1.f) {  // the cut's own running sum: does it reach top_p within k? (min-p cuts after it)
      double cum = 0.0;
      size_t i = 0;
      while (i < k && cum < double(p.top_p)) cum += cand_[i++].first / total;
      holds = cum >= double(p.top_p);
    } else {  // min-p alone: the prefix must reach a token below the floor
      holds = cand_[k - 1].first < p.min_p * cand_[0].first;
    }
    if (holds) return;
  }
}

static int32_t greedy(const float* logits, int vocab) {
  return int32_t(std::max_element(logits, logits + vocab) - logits);
}

int32_t Sampler::candidates(const float* logits, int vocab, const SamplingParams& p, size_t& n, double& total) {
  n = 0;
  total = 0.0;
  if (p.temperature == 0.f) return greedy(logits, vocab);

  // Candidates as (logit / T, id), best first, cut by top-k.
  const float inv_t = 1.f / p.temperature;
  // A temperature so small that 1/T, or the largest logit / T, overflows float is greedy: that
  // is the limit T -> 0, and computing it would give exp(inf - inf) = NaN weights.
  if (!std::isfinite(inv_t)) return greedy(logits, vocab);
  cand_.clear();
  for (int i = 0; i < vocab; ++i)  // a masked-out token (-inf) is no candidate at all
    if (logits[i] != -INFINITY) cand_.push_back({logits[i] * inv_t, i});
  auto better = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  n = cand_.size();
  if (p.top_k > 0 && size_t(p.top_k) < n) {
    std::nth_element(cand_.begin(), cand_.begin() + p.top_k, cand_.end(), better);
    n = size_t(p.top_k);
  }
  // Softmax over the candidates (unnormalised weights, then their sum).
  float mx = -INFINITY;
  for (size_t i = 0; i < n; ++i) mx = std::max(mx, cand_[i].first);
  if (mx == INFINITY) {
    n = 0;
    return greedy(logits, vocab);
  }
  for (size_t i = 0; i < n; ++i) {
    cand_[i].first = std::exp(cand_[i].first - mx);
    total += cand_[i].first;
  }
  if (p.top_p < 1.f || p.min_p > 0.f) {
    sort_prefix_holding_cut(n, total, p, better);
    if (p.top_p < 1.f) {  // keep the smallest prefix whose mass reaches top_p
      double cum = 0.0;
      size_t keep = 0;
      while (keep < n) {
        cum += cand_[keep].first / total;
        ++keep;
        if (cum >= double(p.top_p)) break;
      }
      n = keep;
    }
    if (p.min_p > 0.f) {  // keep tokens with prob >= min_p * max prob (the first is the max)
      const float floor = p.min_p * cand_[0].first;
      size_t keep = 1;
      while (keep < n && cand_[keep].first >= floor) ++keep;
      n = keep;
    }
    total = 0.0;
    for (size_t i = 0; i < n; ++i) total += cand_[i].first;
  }
  return -1;
}

int32_t Sampler::sample(const float* logits, int vocab, const SamplingParams& p) {
  size_t n;
  double total;
  const int32_t chosen = candidates(logits, vocab, p, n, total);
  if (chosen >= 0) return chosen;
  std::uniform_real_distribution<double> uni(0.0, total);
  double r = uni(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= cand_[i].first;
    if (r < 0) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

void Sampler::distribution(const float* logits, int vocab, const SamplingParams& p, Dist& out) {
  out.clear();
  size_t n;
  double total;
  const int32_t chosen = candidates(logits, vocab, p, n, total);
  if (chosen >= 0) {
    out.push_back({chosen, 1.0});
    return;
  }
  for (size_t i = 0; i < n; ++i)
    if (cand_[i].first > 0.f) out.push_back({cand_[i].second, double(cand_[i].first) / total});
}

double Sampler::uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

int32_t Sampler::draw(const Dist& w) {
  double total = 0.0;
  for (const auto& e : w) total += e.second;
  if (!(total > 0.0)) throw std::logic_error("Sampler::draw: no weight to draw from");
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (const auto& [id, x] : w) {
    r -= x;
    if (r < 0) return id;
  }
  return w.back().first;
}

}  // namespace gemma
