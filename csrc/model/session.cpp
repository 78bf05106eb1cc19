// The Gemma forward pass (Gemma 1, 2 and 3), exactly as transformers computes it in float32:
//
//   x = embed[token] * sqrt(d)
//   per layer:  h = x + PostNorm_a( Attn( Norm_a(x) ) )        (PostNorm only with sandwich norms)
//               x = h + PostNorm_f( Down( gelu(Gate(Norm_f(h))) * Up(Norm_f(h)) ) )
//   logits = SoftCap( Norm(x) . embed^T )
//
// Attn: q, k, v = qkv(h); [q, k = QKNorm(q), QKNorm(k)]; rope(q), rope(k) (rotate-half);
// scores = SoftCap(q.k * query_scale) over causal (and, on sliding layers, windowed) keys;
// softmax; weighted sum of v; o-projection. KV heads are shared by n_heads / n_kv_heads queries.
#include "model/session.h"

#include <atomic>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/ops.h"
#include "kernels/vec.h"

namespace gemma {

static std::vector<float> rope_inv_freq(int head_dim, float theta, float linear_scale) {
  // transformers: 1 / (base ** (arange(0, dim, 2) / dim)) in float32, divided by the factor.
  std::vector<float> f(size_t(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    const float expo = float(2 * i) / float(head_dim);
    f[size_t(i)] = float(1.0 / std::pow(double(theta), double(expo)));
    if (linear_scale != 1.f) f[size_t(i)] = f[size_t(i)] / linear_scale;
  }
  return f;
}

static int prefill_chunk(int max_seq) { return std::min(256, max_seq); }

static int checked_max_seq(const ModelConfig& c, int max_seq_len) {
  if (max_seq_len <= 0)
    throw std::invalid_argument("max_seq_len must be positive, got " + std::to_string(max_seq_len));
  if (max_seq_len > c.max_position)
    throw std::invalid_argument("max_seq_len " + std::to_string(max_seq_len) +
                                " exceeds the model's context length " + std::to_string(c.max_position));
  return max_seq_len;
}

Session::Session(std::shared_ptr<const Model> model, int max_seq_len, int n_threads, KvDType kv_dtype)
    : model_(std::move(model)),
      max_seq_(checked_max_seq(model_->config(), max_seq_len)),
      pool_(new ThreadPool(std::max(1, n_threads))),
      chunk_(prefill_chunk(max_seq_)),
      kv_(model_->config(), max_seq_, model_->config().sliding_window + chunk_, kv_dtype) {
  const ModelConfig& c = model_->config();
  inv_freq_global_ = rope_inv_freq(c.head_dim, c.rope_theta_global, c.rope_scale_global);
  inv_freq_local_ = rope_inv_freq(c.head_dim, c.rope_theta_local, 1.f);

  const size_t C = size_t(chunk_);
  x_.resize(C * size_t(c.d_model));
  xn_.resize(C * size_t(c.d_model));
  qkv_.resize(C * size_t(c.q_dim() + 2 * c.kv_dim()));
  attn_out_.resize(C * size_t(c.q_dim()));
  proj_.resize(C * size_t(c.d_model));
  ffn_.resize(C * 2 * size_t(c.ffn_dim));
  act_.resize(C * size_t(c.ffn_dim));
  rope_cs_.resize(C * 2 * size_t(c.head_dim));  // per token: cos[half], sin[half] for global, local
}

void Session::set_n_threads(int n) {
  // The new pool is complete before the old one goes (a failure leaves the session as it was);
  // attention's per-thread score rows are re-laid out for it at the next forward.
  std::unique_ptr<ThreadPool> pool(new ThreadPool(std::max(1, n)));
  pool_.swap(pool);
  scores_stride_ = 0;
}

void Session::reserve_scores(int n_positions) {
  // Per thread, one row of attention scores for each query head of a KV group, as long as the
  // longest key run so far: memory follows the context actually used, not max_seq_len.
  const int group = model_->config().n_heads / model_->config().n_kv_heads;
  const int have = scores_stride_ / group;
  if (n_positions <= have) return;
  const int len = std::min(max_seq_, std::max({n_positions, have + have / 2, 256}));
  scores_stride_ = len * group;
  scores_.assign(size_t(pool_->size()) * size_t(scores_stride_), 0.f);
}

bool Session::can_truncate(int n) const {
  if (n < 0 || n > n_past()) return false;
  const ModelConfig& c = model_->config();
  for (int l = 0; l < c.n_layers; ++l) {
    const int cap = kv_.capacity(l);
    const int oldest_kept = std::max(0, n_past() - cap);
    const int oldest_needed = std::max(0, n - c.sliding_window + 1);
    if (c.layer_sliding[size_t(l)] && oldest_needed < oldest_kept) return false;
  }
  return true;
}

void Session::truncate(int n) {
  if (!can_truncate(n))
    throw std::invalid_argument("cannot truncate the KV cache to " + std::to_string(n) + " tokens");
  tokens_.resize(size_t(n));
}

void Session::copy_cache_from(const Session& o) {
  if (o.model_ != model_ || o.max_seq_ != max_seq_ || o.kv_.dtype() != kv_.dtype())
    throw std::invalid_argument("copy_cache_from: the sessions differ in model, max_seq_len or KV type");
  if (&o == this) return;
  kv_.copy_prefix(o.kv_, o.n_past());
  tokens_ = o.tokens_;
}

void Session::forward(const int32_t* tokens, int n, float* logits_out, bool all_positions,
                      const std::function<void()>& check_interrupt) {
  const ModelConfig& c = model_->config();
  if (n <= 0) throw std::invalid_argument("forward: no tokens to process");
  if (n_past() + n > max_seq_)
    throw std::invalid_argument("sequence of " + std::to_string(n_past() + n) +
                                " tokens exceeds max_seq_len=" + std::to_string(max_seq_));
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      throw std::invalid_argument("token id " + std::to_string(tokens[i]) + " at index " +
                                  std::to_string(i) + " is outside the vocabulary [0, " +
                                  std::to_string(c.vocab_size) + ")");
  kv_.reserve(n_past() + n);
  reserve_scores(n_past() + n);
  const int start = n_past();
  for (int done = 0; done < n; done += chunk_) {
    const int m = std::min(chunk_, n - done);
    float* out = nullptr;
    if (logits_out && all_positions) out = logits_out + size_t(done) * size_t(c.vocab_size);
    if (logits_out && !all_positions && done + m == n) out = logits_out;
    forward_chunk(tokens + done, m, start + done, out, all_positions, check_interrupt);
    // Commit the chunk only once it is complete: an interrupt leaves a consistent cache.
    tokens_.insert(tokens_.end(), tokens + done, tokens + done + m);
  }
}

void Session::forward_chunk(const int32_t* tokens, int n, int pos0, float* logits_out,
                            bool all_positions, const std::function<void()>& check_interrupt) {
  embed(tokens, n);
  rope_angles(n, pos0);
  for (int l = 0; l < model_->config().n_layers; ++l) {
    if (check_interrupt) check_interrupt();
    attention_block(l, n, pos0);
    mlp_block(l, n);
  }
  if (logits_out) final_logits(n, all_positions, logits_out);
}

// x[t] = embed[token t] * float32(sqrt(d)).
void Session::embed(const int32_t* tokens, int n) {
  const ModelConfig& c = model_->config();
  const int d = c.d_model;
  for (int t = 0; t < n; ++t) {
    float* x = &x_[size_t(t) * d];
    dequantize_row(model_->embed(), tokens[t], x);
    for (int i = 0; i < d; ++i) x[i] *= c.embed_scale;
  }
}

// Rope cos/sin per token for the global and local bases: angle = float(pos) * inv_freq (float32).
void Session::rope_angles(int n, int pos0) {
  const int hd = model_->config().head_dim, half = hd / 2;
  for (int t = 0; t < n; ++t) {
    float* cs = &rope_cs_[size_t(t) * 2 * hd];
    const float p = float(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float ag = p * inv_freq_global_[size_t(i)];
      const float al = p * inv_freq_local_[size_t(i)];
      cs[i] = std::cos(ag);
      cs[half + i] = std::sin(ag);
      cs[hd + i] = std::cos(al);
      cs[hd + half + i] = std::sin(al);
    }
  }
}

// x += PostNorm_a(o( Attn( QKNorm+RoPE( qkv( Norm_a(x) ) ) ) ))
void Session::attention_block(int l, int n, int pos0) {
  const ModelConfig& c = model_->config();
  const LayerWeights& L = model_->layer(l);
  const int d = c.d_model, hd = c.head_dim, half = hd / 2, kv_dim = c.kv_dim();
  const int qkv_dim = c.q_dim() + 2 * kv_dim;
  const bool sliding = c.layer_sliding[size_t(l)] != 0;

  for (int t = 0; t < n; ++t)
    ops::rms_norm(&x_[size_t(t) * d], L.attn_norm.data(), d, c.rms_eps, &xn_[size_t(t) * d]);
  matmul(L.qkv, xn_.data(), n, qkv_.data(), qkv_dim, *pool_);
  for (int t = 0; t < n; ++t) {
    float* q = &qkv_[size_t(t) * qkv_dim];
    float* k = q + c.q_dim();
    const float* v = k + kv_dim;
    const float* cs = &rope_cs_[size_t(t) * 2 * hd] + (sliding ? hd : 0);
    for (int h = 0; h < c.n_heads; ++h) {
      float* qh = q + size_t(h) * hd;
      if (c.qk_norm) ops::rms_norm(qh, L.q_norm.data(), hd, c.rms_eps, qh);
      ops::rope_rotate_half(qh, hd, cs, cs + half);
    }
    kv_.queries_to_key_basis(q, c.n_heads);
    for (int g = 0; g < c.n_kv_heads; ++g) {
      float* kh = k + size_t(g) * hd;
      if (c.qk_norm) ops::rms_norm(kh, L.k_norm.data(), hd, c.rms_eps, kh);
      ops::rope_rotate_half(kh, hd, cs, cs + half);
    }
    kv_.store(l, kv_.slot(l, pos0 + t), k, v);
  }
  attention(l, n, pos0);
  matmul(L.o, attn_out_.data(), n, proj_.data(), d, *pool_);
  add_residual(n, c.sandwich_norms ? L.post_attn_norm.data() : nullptr);
}

// x += PostNorm_f( down( gelu(gate(Norm_f(x))) * up(Norm_f(x)) ) )
void Session::mlp_block(int l, int n) {
  const ModelConfig& c = model_->config();
  const LayerWeights& L = model_->layer(l);
  const int d = c.d_model, F = c.ffn_dim;
  for (int t = 0; t < n; ++t)
    ops::rms_norm(&x_[size_t(t) * d], L.ffn_norm.data(), d, c.rms_eps, &xn_[size_t(t) * d]);
  matmul(L.gate_up, xn_.data(), n, ffn_.data(), 2 * F, *pool_);
  const auto geglu_tokens = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const float* gu = &ffn_[size_t(t) * 2 * F];
      if (c.gelu_tanh) {
        vec::geglu_tanh(gu, gu + F, F, &act_[size_t(t) * F]);
      } else {
        ops::geglu(gu, gu + F, F, false, &act_[size_t(t) * F]);
      }
    }
  };
  if (int64_t(n) * F > 65536) {
    pool_->parallel_for(n, 1, geglu_tokens);
  } else {
    geglu_tokens(0, n);
  }
  matmul(L.down, act_.data(), n, proj_.data(), d, *pool_);
  add_residual(n, c.sandwich_norms ? L.post_ffn_norm.data() : nullptr);
}

// x += PostNorm(proj) (the norm only with Gemma 2/3's sandwich norms: post_norm != null).
void Session::add_residual(int n, const float* post_norm) {
  const ModelConfig& c = model_->config();
  const int d = c.d_model;
  for (int t = 0; t < n; ++t) {
    float* o = &proj_[size_t(t) * d];
    if (post_norm) ops::rms_norm(o, post_norm, d, c.rms_eps, o);
    float* x = &x_[size_t(t) * d];
    for (int i = 0; i < d; ++i) x[i] += o[i];
  }
}

// logits = SoftCap( Norm(x) . embed^T ), for every position or just the last one.
void Session::final_logits(int n, bool all_positions, float* logits_out) {
  const ModelConfig& c = model_->config();
  const int d = c.d_model;
  const int first = all_positions ? 0 : n - 1;
  const int rows = n - first;
  for (int t = first; t < n; ++t)
    ops::rms_norm(&x_[size_t(t) * d], model_->final_norm().data(), d, c.rms_eps, &xn_[size_t(t - first) * d]);
  matmul(model_->embed(), xn_.data(), rows, logits_out, c.vocab_size, *pool_);
  if (c.final_softcap > 0) ops::soft_cap(logits_out, int64_t(rows) * c.vocab_size, c.final_softcap);
}

void Session::attention(int l, int n, int pos0) {
  const ModelConfig& c = model_->config();
  const int hd = c.head_dim, kv_dim = c.kv_dim(), qkv_dim = c.q_dim() + 2 * kv_dim;
  const int group = c.n_heads / c.n_kv_heads;
  const bool sliding = c.layer_sliding[size_t(l)] != 0;
  const int cap = kv_.capacity(l);

  // Threads only pay off with enough work; tiny models would spend more time waking them.
  // (token, KV head) pairs are handed out one at a time (their costs differ with the position);
  // the `group` query heads of a KV head go together, so each K and V row is read once for them.
  const bool parallel = int64_t(n) * c.n_heads * (pos0 + n) * hd > (int64_t(1) << 15);
  const int pairs = n * c.n_kv_heads;
  const int64_t stride = scores_stride_ / group;  // scores of one head
  std::atomic<int> next{0};
  const auto worker = [&](int thread) {
    float* scores = &scores_[size_t(thread) * size_t(scores_stride_)];
    for (int i = next.fetch_add(1, std::memory_order_relaxed); i < pairs;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      const int t = i / c.n_kv_heads, g = i % c.n_kv_heads;
      const int pos = pos0 + t;
      const int lo = sliding ? std::max(0, pos - c.sliding_window + 1) : 0;
      const int nk = pos - lo + 1;
      // Keys lo..pos; a sliding layer's ring may wrap, splitting them into two runs of slots.
      const float* q = &qkv_[size_t(t) * qkv_dim + size_t(g) * group * hd];
      const int s0 = lo % cap, first = std::min(nk, cap - s0);
      kv_.dot_keys(l, g, s0, first, q, hd, group, scores, stride);
      if (first < nk) kv_.dot_keys(l, g, 0, nk - first, q, hd, group, scores + first, stride);
      for (int h = 0; h < group; ++h) {
        float* sh = scores + h * stride;
        for (int j = 0; j < nk; ++j) sh[j] *= c.query_scale;
        if (c.attn_softcap > 0) ops::soft_cap(sh, nk, c.attn_softcap);
        ops::softmax(sh, nk);
      }
      float* out = &attn_out_[size_t(t) * c.q_dim() + size_t(g) * group * hd];
      std::fill(out, out + size_t(group) * hd, 0.f);
      kv_.add_values(l, g, s0, first, scores, stride, group, out, hd);
      if (first < nk) kv_.add_values(l, g, 0, nk - first, scores + first, stride, group, out, hd);
    }
  };
  if (parallel) {
    pool_->run(pool_->size(), worker);
  } else {
    worker(0);
  }
}

}  // namespace gemma
