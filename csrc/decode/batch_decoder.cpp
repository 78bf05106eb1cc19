#include "decode/batch_decoder.h"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>

namespace gemma {

static int checked_batch(int b) {
  if (b <= 0) throw std::invalid_argument("max_batch must be positive, got " + std::to_string(b));
  return b;
}

BatchDecoder::BatchDecoder(std::shared_ptr<const Model> model, int max_batch, int n_threads)
    : fwd_(model, checked_batch(max_batch), n_threads), vocab_(model->config().vocab_size) {
  logits_.resize(size_t(max_batch) * size_t(vocab_));
}

int BatchDecoder::forward_pending(Generator* const* gens, int n, const Generator::Check& check) {
  ready_.clear();
  for (int i = 0; i < n; ++i) {
    if (!gens[i]) throw std::invalid_argument("batch: generator " + std::to_string(i) + " is null");
    if (gens[i]->pending_token() >= 0) ready_.push_back(gens[i]);
  }
  const int B = max_batch();
  for (size_t g0 = 0; g0 < ready_.size(); g0 += size_t(B)) {
    const size_t m = std::min(ready_.size() - g0, size_t(B));
    sessions_.clear();
    tokens_.clear();
    counts_.assign(m, 1);
    for (size_t i = 0; i < m; ++i) {
      sessions_.push_back(&ready_[g0 + i]->session());
      tokens_.push_back(ready_[g0 + i]->pending_token());
    }
    fwd_.forward(sessions_.data(), tokens_.data(), counts_.data(), int(m), logits_.data(), false, check);
    // Every generator takes its logits before an error (non-finite logits) is reported.
    std::exception_ptr err;
    for (size_t i = 0; i < m; ++i) {
      try {
        ready_[g0 + i]->take_pending_logits(logits_.data() + i * size_t(vocab_));
      } catch (...) {
        if (!err) err = std::current_exception();
      }
    }
    if (err) std::rethrow_exception(err);
  }
  return int(ready_.size());
}

void BatchDecoder::eval(Generator* const* gens, const int32_t* tokens, const int* counts, int n, float* logits_out,
                        bool all_positions, const Generator::Check& check) {
  sessions_.clear();
  for (int i = 0; i < n; ++i) {
    if (!gens[i]) throw std::invalid_argument("batch: generator " + std::to_string(i) + " is null");
    sessions_.push_back(&gens[i]->session());
  }
  std::vector<float> own;
  float* out = logits_out;
  if (!out) {  // the generators take their last logits in any case
    own.resize(size_t(n) * size_t(vocab_));
    out = own.data();
    all_positions = false;
  }
  fwd_.forward(sessions_.data(), tokens, counts, n, out, all_positions, check);
  int row = 0;
  for (int i = 0; i < n; ++i) {
    row += counts[i];
    gens[i]->take_evaluated_logits(out + size_t(all_positions ? row - 1 : i) * size_t(vocab_));
  }
}

}  // namespace gemma
