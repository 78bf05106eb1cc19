// Drafters and the verifying step of speculative decoding (speculative.h says what and why).
#include "decode/speculative.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "decode/generator.h"

namespace gemma {

NgramDrafter::NgramDrafter(int n_min, int n_max) : n_min_(n_min), n_max_(n_max) {
  if (n_min < 1 || n_max < n_min)
    throw std::invalid_argument("ngram sizes must satisfy 1 <= ngram_min <= ngram_max, got " + std::to_string(n_min) +
                                " and " + std::to_string(n_max));
}

void NgramDrafter::propose(const std::vector<int32_t>& ctx, int k, const SamplingParams&, Draft& out, const Check&) {
  out.ids.clear();
  out.q.clear();
  const int L = int(ctx.size());
  for (int n = std::min(n_max_, L - 1); n >= n_min_ && k > 0; --n) {
    const int32_t* suffix = ctx.data() + (L - n);
    for (int i = L - n - 1; i >= 0; --i) {  // the most recent earlier occurrence first
      if (!std::equal(suffix, suffix + n, ctx.data() + i)) continue;
      // Copy what followed it; past the context's end, what was just copied (a repeating
      // pattern continues), as repeated lookups would.
      const int from = i + n;
      for (int j = 0; j < k; ++j) {
        const int at = from + j;
        out.ids.push_back(at < L ? ctx[size_t(at)] : out.ids[size_t(at - L)]);
      }
      return;
    }
  }
}

ModelDrafter::ModelDrafter(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, KvDType kv_dtype,
                           uint64_t seed)
    : session_(std::move(model), max_seq_len, n_threads, kv_dtype), sampler_(seed) {}

void ModelDrafter::propose(const std::vector<int32_t>& ctx, int k, const SamplingParams& p, Draft& out,
                           const Check& check) {
  out.ids.clear();
  out.q.clear();
  const int L = int(ctx.size());
  // Afterwards the session holds the context and all drafts but the last.
  if (k <= 0 || L == 0 || L + k - 1 > session_.max_seq_len()) return;
  // Keep the longest cached prefix (leaving the last context token to run for its logits).
  const auto& cached = session_.tokens();
  const int limit = std::min(int(cached.size()), L - 1);
  int common = 0;
  while (common < limit && cached[size_t(common)] == ctx[size_t(common)]) ++common;
  if (common < int(cached.size())) {
    if (session_.can_truncate(common)) {
      session_.truncate(common);
    } else {
      session_.reset();
      common = 0;
    }
  }
  const int vocab = session_.model().config().vocab_size;
  logits_.resize(size_t(vocab));
  session_.forward(ctx.data() + common, L - common, logits_.data(), false, check);
  SamplingParams dp;  // the sampler's own settings; no penalties
  dp.temperature = p.temperature;
  dp.top_k = p.top_k;
  dp.top_p = p.top_p;
  dp.min_p = p.min_p;
  for (int j = 0; j < k; ++j) {
    if (j > 0) session_.forward(&out.ids.back(), 1, logits_.data(), false, check);
    if (dp.temperature == 0.f) {
      out.ids.push_back(sampler_.sample(logits_.data(), vocab, dp));  // the argmax
    } else {
      out.q.emplace_back();
      sampler_.distribution(logits_.data(), vocab, dp, out.q.back());
      out.ids.push_back(sampler_.draw(out.q.back()));
    }
  }
}

int32_t Generator::verify_token(int32_t d, const Sampler::Dist* q, bool& accepted) {
  accepted = false;
  if (d < 0 || params_.temperature == 0.f) {  // no draft here, or greedy: the token plain decoding picks
    const int32_t tok = sampler_.sample(work_.data(), vocab(), params_);
    accepted = tok == d;
    return tok;
  }
  sampler_.distribution(work_.data(), vocab(), params_, spec_p_);
  double pd = 0.0, qd = q ? 0.0 : 1.0;
  for (const auto& e : spec_p_)
    if (e.first == d) pd = e.second;
  if (q)
    for (const auto& e : *q)
      if (e.first == d) qd = e.second;
  if (!(qd > 0.0)) throw std::logic_error("speculation: a drafted token has probability 0 under its own draft");
  if (pd > 0.0 && sampler_.uniform() * qd < pd) {  // probability min(1, p(d) / q(d))
    accepted = true;
    return d;
  }
  // Rejected: draw from max(0, p - q), normalised. Only ids where p > 0 can remain.
  spec_dense_.resize(size_t(vocab()), 0.0);
  for (const auto& e : spec_p_) spec_dense_[size_t(e.first)] = e.second;
  if (q) {
    for (const auto& e : *q) spec_dense_[size_t(e.first)] -= e.second;
  } else {
    spec_dense_[size_t(d)] -= 1.0;
  }
  Sampler::Dist residual;
  residual.reserve(spec_p_.size());
  for (const auto& e : spec_p_)
    if (spec_dense_[size_t(e.first)] > 0.0) residual.push_back({e.first, spec_dense_[size_t(e.first)]});
  for (const auto& e : spec_p_) spec_dense_[size_t(e.first)] = 0.0;
  if (q)
    for (const auto& e : *q) spec_dense_[size_t(e.first)] = 0.0;
  spec_dense_[size_t(d)] = 0.0;
  // Nothing left means p <= q everywhere, i.e. p == q up to rounding: acceptance was certain but
  // for rounding, so p itself is the right distribution.
  return sampler_.draw(residual.empty() ? spec_p_ : residual);
}

int Generator::next_speculative(Drafter& drafter, int draft_len, int32_t* out, int cap, const Check& check) {
  if (!active_) throw std::runtime_error("next_speculative: start a generation first");
  if (draft_len < 0) throw std::invalid_argument("draft_len must be >= 0, got " + std::to_string(draft_len));
  if (lp_top_ >= 0) throw std::invalid_argument("logprobs cannot be combined with speculative decoding");
  if (reason_ != StopReason::None || cap <= 0) return 0;
  const Check between_tokens = with_interrupt(check), in_forward = with_interrupt({});
  const int V = vocab();
  const int n0 = session_.n_past();
  const bool has_pending = pending_ >= 0;
  const int first_hist = n0 + (has_pending ? 1 : 0);  // cached tokens when position 0 is chosen
  // Drafts beyond what may still be returned or what the context holds are never run.
  int k = std::min({draft_len, cap - 1, max_new_ - produced_ - 1, session_.max_seq_len() - first_hist});
  Draft& draft = spec_draft_;
  draft.ids.clear();
  draft.q.clear();
  try {
    between_tokens();
    if (k > 0) {
      spec_ctx_.assign(session_.tokens().begin(), session_.tokens().end());
      if (has_pending) spec_ctx_.push_back(pending_);
      drafter.propose(spec_ctx_, k, params_, draft, in_forward);
      if (!draft.q.empty() && draft.q.size() != draft.ids.size())
        throw std::logic_error("speculation: a drafter gave " + std::to_string(draft.q.size()) +
                               " distributions for " + std::to_string(draft.ids.size()) + " tokens");
      k = std::min(k, int(draft.ids.size()));
    } else {
      k = 0;
    }
    if (!has_pending) spec_prev_ = last_logits();  // position 0's logits: the prompt's last
    spec_rows_.clear();
    if (has_pending) spec_rows_.push_back(pending_);
    spec_rows_.insert(spec_rows_.end(), draft.ids.begin(), draft.ids.begin() + k);
    if (!spec_rows_.empty()) {
      spec_logits_.resize(spec_rows_.size() * size_t(V));
      forward(spec_rows_.data(), int(spec_rows_.size()), spec_logits_.data(), in_forward);
      pending_ = -1;
    }
  } catch (const InterruptRequested&) {
    // Nothing of this step stays (a verify longer than a prefill chunk may have committed one).
    if (session_.n_past() > n0) session_.truncate(n0);
    if (!has_pending && !spec_prev_.empty()) {
      last_ = spec_prev_;
      has_last_ = true;
    }
    reason_ = StopReason::Interrupted;
    return 0;
  }
  ++spec_.rounds;
  spec_.drafted += k;
  const float* row0 = has_pending ? spec_logits_.data() : spec_prev_.data();
  const size_t skip = has_pending ? 0 : 1;  // logits rows before draft j's row
  int got = 0;
  for (int j = 0;; ++j) {
    const float* row = j == 0 ? row0 : spec_logits_.data() + (size_t(j) - skip) * size_t(V);
    const int hist = first_hist + j;  // tokens up to and including this position's input
    process(row, hist, params_);
    bool accepted = false;
    const int32_t tok = verify_token(j < k ? draft.ids[size_t(j)] : -1,
                                     j < k && !draft.q.empty() ? &draft.q[size_t(j)] : nullptr, accepted);
    spec_.accepted += accepted;
    // Then as next() does for a token (j == k always ends: no draft there to accept).
    if (std::find(end_ids_.begin(), end_ids_.end(), tok) != end_ids_.end()) {
      reason_ = StopReason::Eos;
    } else {
      out[got++] = tok;
      counts_.add(tok);
      if (++produced_ == max_new_) {
        reason_ = StopReason::Length;
      } else if (hist >= session_.max_seq_len()) {
        reason_ = StopReason::ContextEnd;
      }
    }
    if (accepted && reason_ == StopReason::None) continue;
    // Keep the tokens through this position's input; the chosen token is pending, as after
    // next(). The rejected drafts are at most draft_len + 1 <= a prefill chunk positions, and
    // sliding rings hold window + chunk, so this cut is always possible (Session::can_truncate).
    if (session_.n_past() > hist) session_.truncate(hist);
    pending_ = reason_ == StopReason::Eos ? -1 : tok;
    last_.assign(row, row + V);
    has_last_ = true;
    return got;
  }
}

}  // namespace gemma
