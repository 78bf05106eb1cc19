// Speculative decoding: a cheap drafter proposes the next k tokens, one forward of the target
// model over [pending token, d1 .. dk] gives the logits of all k + 1 positions (the determinism
// rule makes each row equal to what a one-token decode step would compute), and
// Generator::next_speculative (speculative.cpp) keeps the drafted tokens the target agrees with,
// adds the target's own token at the first disagreement (or after the last draft), and cuts the
// rest from the KV cache (Session::truncate; sliding-window rings hold window + chunk positions,
// more than any draft, so the cut is always possible).
//
// Acceptance, per position, with the target's processed distribution p (penalties, logit_bias,
// mask, temperature, top-k, top-p, min-p: exactly what next() would draw from there) and the
// distribution q the drafted token d was drawn from:
//   temperature 0:  accept d when it is p's argmax; otherwise the argmax is the token.
//   temperature > 0: accept d with probability min(1, p(d) / q(d)); otherwise draw from
//                    max(0, p - q) normalised (Leviathan et al. 2023, Chen et al. 2023), so each
//                    token has exactly p's distribution. A deterministic drafter (n-gram lookup)
//                    has q = a point mass on d: accept with probability p(d), else draw from p
//                    without d.
// Every setting is a function of the tokens before a position, so p at each verified position is
// the one plain decoding would use; the draft's q may be anything the drafted token came from.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "decode/sampler.h"
#include "model/session.h"

namespace gemma {

// Proposed tokens and, per token, the distribution it was drawn from (q empty: drawn with
// certainty, a point mass).
struct Draft {
  std::vector<int32_t> ids;
  std::vector<Sampler::Dist> q;
};

class Drafter {
 public:
  using Check = std::function<void()>;
  virtual ~Drafter() = default;
  // Up to k tokens to follow `context` (every token so far: prompt and generated) into `out`
  // (cleared first); none is fine (the step then decodes one token as usual). `p`: the
  // request's sampling settings (a drafter that samples reads its temperature and cuts).
  virtual void propose(const std::vector<int32_t>& context, int k, const SamplingParams& p, Draft& out,
                       const Check& check) = 0;
};

// Prompt lookup: the most recent earlier occurrence of the context's last n tokens (n from
// n_max down to n_min) and the up to k tokens that followed it there.
class NgramDrafter : public Drafter {
 public:
  NgramDrafter(int n_min, int n_max);
  void propose(const std::vector<int32_t>& context, int k, const SamplingParams& p, Draft& out,
               const Check& check) override;

 private:
  int n_min_, n_max_;
};

// A smaller model with the same vocabulary, run token by token in its own Session (its cache
// follows the context: the common prefix is kept, the rest cut back and run again). Greedy at
// temperature 0; otherwise it samples with the request's temperature, top-k, top-p and min-p
// (no penalties: the acceptance rule corrects for any difference) and records q.
class ModelDrafter : public Drafter {
 public:
  ModelDrafter(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, KvDType kv_dtype, uint64_t seed);
  void propose(const std::vector<int32_t>& context, int k, const SamplingParams& p, Draft& out,
               const Check& check) override;
  void reseed(uint64_t seed) { sampler_.reseed(seed); }
  Session& session() { return session_; }

 private:
  Session session_;
  Sampler sampler_;
  std::vector<float> logits_;
};

}  // namespace gemma
