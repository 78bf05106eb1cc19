#include "decode/generator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/finite.h"

namespace gemma {

namespace {
// Non-finite logits mean non-finite weights or scales (or an overflow in the forward pass):
// greedy would return token 0 forever and sampling the last id. Say so instead.
void check_finite_logits(const float* logits, int64_t rows, int vocab, int64_t first_pos, bool layers_checked) {
  const int64_t bad = first_non_finite(logits, rows * int64_t(vocab));
  if (bad < 0) return;
  const float v = logits[bad];
  throw std::runtime_error(
      "the model computed non-finite logits (" + std::string(std::isnan(v) ? "NaN" : "Inf") + " for token id " +
      std::to_string(bad % vocab) + " at position " + std::to_string(first_pos + bad / vocab) +
      "): the model file's weights or scales hold NaN/Inf or overflow float32; re-convert it from a good checkpoint" +
      std::string(layers_checked
                      ? " (every layer's output was finite: the final norm or the embedding holds them)"
                      : " (GEMMA_CPP_CHECK_LAYERS=1 names the first layer that produced them)"));
}
}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::None: return "none";
    case StopReason::Eos: return "eos";
    case StopReason::Length: return "length";
    case StopReason::ContextEnd: return "context";
    case StopReason::Interrupted: return "interrupted";
  }
  return "?";
}

Generator::Generator(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, uint64_t seed,
                     KvDType kv_dtype)
    : session_(std::move(model), max_seq_len, n_threads, kv_dtype), sampler_(seed) {}

Generator::Check Generator::with_interrupt(const Check& check) {
  return [this, check] {
    if (interrupt_.load(std::memory_order_relaxed) == generation_) throw InterruptRequested{};
    if (check) check();
  };
}

void Generator::eval(const int32_t* tokens, int n, float* all_logits_out, const Check& check) {
  end_generation();
  forward(tokens, n, all_logits_out, check);
}

void Generator::end_generation() {
  active_ = false;
  pending_ = -1;
  reason_ = StopReason::None;
  counts_.reset(vocab());
}

void Generator::forward(const int32_t* tokens, int n, float* all_logits_out, const Check& check) {
  if (n <= 0) throw std::invalid_argument("eval: empty token list");
  last_.resize(size_t(vocab()));
  has_last_ = false;  // until the forward has completed
  const int64_t first_pos = session_.n_past();
  if (all_logits_out) {
    session_.forward(tokens, n, all_logits_out, true, check);
    check_finite_logits(all_logits_out, n, vocab(), first_pos, session_.checks_layers());
    std::memcpy(last_.data(), all_logits_out + size_t(n - 1) * size_t(vocab()), last_.size() * sizeof(float));
  } else {
    session_.forward(tokens, n, last_.data(), false, check);
    check_finite_logits(last_.data(), 1, vocab(), first_pos + n - 1, session_.checks_layers());
  }
  has_last_ = true;
}

const std::vector<float>& Generator::last_logits() const {
  if (!has_last_) throw std::runtime_error("no logits yet; eval a prompt first");
  return last_;
}

int32_t Generator::sample(const SamplingParams& p) {
  p.validate();
  process(last_logits().data(), session_.n_past(), p);
  const int32_t tok = sampler_.sample(work_.data(), vocab(), p);  // (reads work_, leaves it as is)
  if (lp_top_ >= 0) record_logprob(tok);
  return tok;
}

void Generator::process(const float* logits, int n_hist, const SamplingParams& p) {
  work_.assign(logits, logits + vocab());
  apply_repetition_penalty(work_.data(), vocab(), p.repetition_penalty, session_.tokens().data(), n_hist, seen_);
  counts_.apply_penalties(work_.data(), p.presence_penalty, p.frequency_penalty);
  for (const auto& [id, b] : bias_) work_[size_t(id)] += b;
  if (mask_.active()) mask_.apply(work_.data(), vocab());
}

void Generator::set_logit_bias(const int32_t* ids, const float* bias, int n) {
  std::vector<std::pair<int32_t, float>> b;
  for (int i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab())
      throw std::invalid_argument("logit_bias: token id " + std::to_string(ids[i]) + " is outside the vocabulary");
    if (!std::isfinite(bias[i])) throw std::invalid_argument("logit_bias: values must be finite");
    b.push_back({ids[i], bias[i]});
  }
  bias_ = std::move(b);
}

void Generator::record_logprob(int32_t tok) {
  const float* x = work_.data();
  const int n = vocab();
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(x[i]) - double(mx));  // exp(-inf) = 0
  const double lse = double(mx) + std::log(sum);
  lp_.id = tok;
  lp_.logprob = float(double(x[tok]) - lse);
  // The `top` best ids in one pass: a small sorted list, best first (ties: lower id first).
  auto& top = lp_.top;
  top.clear();
  const size_t k = size_t(lp_top_);
  for (int i = 0; k > 0 && i < n; ++i) {
    if (x[i] == -INFINITY || (top.size() == k && !(x[i] > top.back().second))) continue;
    auto pos = std::upper_bound(top.begin(), top.end(), x[i],
                                [](float v, const std::pair<int32_t, float>& e) { return v > e.second; });
    top.insert(pos, {i, x[i]});
    if (top.size() > k) top.pop_back();
  }
  for (auto& e : top) e.second = float(double(e.second) - lse);
}

int32_t Generator::step(int32_t token, const SamplingParams& p, const Check& check) {
  eval(&token, 1, nullptr, check);
  return sample(p);
}

int Generator::start(const int32_t* prompt, int n, const SamplingParams& params, int max_new_tokens,
                     std::vector<int32_t> end_ids, uint64_t seed, const Check& check) {
  params.validate();
  if (n <= 0) throw std::invalid_argument("generate: empty prompt (give at least one token id)");
  if (max_new_tokens < 0) throw std::invalid_argument("max_new_tokens must be >= 0");
  ++generation_;
  // The longest cached prefix, leaving at least the last prompt token to run (its logits are
  // the first token's); fall back to a fresh start where the cache cannot be cut back there.
  const auto& cached = session_.tokens();
  const int limit = std::min(int(cached.size()), n - 1);
  int common = 0;
  while (common < limit && cached[size_t(common)] == prompt[common]) ++common;
  if (common > 0 && session_.can_truncate(common)) {
    session_.truncate(common);
  } else {
    session_.reset();
    common = 0;
  }
  end_generation();
  active_ = true;
  params_ = params;
  end_ids_ = std::move(end_ids);
  max_new_ = max_new_tokens;
  produced_ = 0;
  spec_ = SpecStats{};
  sampler_.reseed(seed);
  try {
    forward(prompt + common, n - common, nullptr, with_interrupt(check));
  } catch (const InterruptRequested&) {  // the whole chunks already run stay in the cache
    reason_ = StopReason::Interrupted;
    return n - common;
  } catch (...) {
    active_ = false;
    throw;
  }
  if (max_new_tokens == 0) reason_ = StopReason::Length;
  return n - common;
}

int Generator::next(int32_t* out, int k, const Check& check) {
  if (!active_) throw std::runtime_error("next: start a generation first");
  // The caller's check (Ctrl-C) runs between tokens; inside a token's forward, only interrupt()
  // is looked at: a decode step is short, and the caller's check may need the GIL.
  const Check between_tokens = with_interrupt(check), in_forward = with_interrupt({});
  int got = 0;
  while (got < k && reason_ == StopReason::None) {
    int32_t tok;
    try {
      between_tokens();
      if (pending_ >= 0) {
        forward(&pending_, 1, nullptr, in_forward);
        pending_ = -1;  // only once it is in the cache: an interrupted forward commits nothing
      }
      tok = sample(params_);
    } catch (const InterruptRequested&) {
      reason_ = StopReason::Interrupted;
      break;
    }
    if (std::find(end_ids_.begin(), end_ids_.end(), tok) != end_ids_.end()) {
      reason_ = StopReason::Eos;
      break;
    }
    out[got++] = tok;
    counts_.add(tok);
    pending_ = tok;
    if (++produced_ == max_new_) {
      reason_ = StopReason::Length;
    } else if (session_.n_past() >= session_.max_seq_len()) {
      reason_ = StopReason::ContextEnd;
    }
  }
  return got;
}

int32_t Generator::pending_token() const {
  if (!active_ || reason_ != StopReason::None || interrupt_.load(std::memory_order_relaxed) == generation_) return -1;
  return pending_;
}

void Generator::take_pending_logits(const float* logits) {
  if (pending_token() < 0) throw std::logic_error("take_pending_logits: no pending token");
  const auto& hist = session_.tokens();
  if (hist.empty() || hist.back() != pending_)
    throw std::logic_error("take_pending_logits: the pending token is not the session's last");
  check_finite_logits(logits, 1, vocab(), session_.n_past() - 1, session_.checks_layers());
  last_.assign(logits, logits + vocab());
  has_last_ = true;
  pending_ = -1;
}

void Generator::take_evaluated_logits(const float* logits) {
  end_generation();
  check_finite_logits(logits, 1, vocab(), session_.n_past() - 1, session_.checks_layers());
  last_.assign(logits, logits + vocab());
  has_last_ = true;
}

void Generator::reset() {
  session_.reset();
  end_generation();
  has_last_ = false;
}

void Generator::copy_cache_from(const Generator& o) {
  session_.copy_cache_from(o.session_);
  end_generation();
  last_ = o.last_;
  has_last_ = o.has_last_;
}

void Generator::truncate(int n) {
  session_.truncate(n);
  end_generation();
  has_last_ = false;
}

}  // namespace gemma
