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
// (An int8 cache stores keys rotated block by block: the roped q is rotated to match before
// attention, KVCache::queries_to_key_basis, which leaves q.k as it was.)
//
// Each step below is one Backend op per chunk of tokens (backend/backend.h) on the Workspace's
// buffers: this file says what is computed and in which order, the backend how.
#include "model/session.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "backend/cpu/cpu_backend.h"

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
    : Session(std::move(model), max_seq_len, std::unique_ptr<Backend>(new CpuBackend(n_threads)), kv_dtype) {}

Session::Session(std::shared_ptr<const Model> model, int max_seq_len, std::unique_ptr<Backend> backend,
                 KvDType kv_dtype)
    : model_(std::move(model)),
      max_seq_(checked_max_seq(model_->config(), max_seq_len)),
      backend_(std::move(backend)),
      chunk_(prefill_chunk(max_seq_)),
      kv_(model_->config(), max_seq_, model_->config().sliding_window + chunk_, kv_dtype),
      ws_(model_->config(), chunk_) {
  if (!backend_) throw std::invalid_argument("Session: no backend");
  const ModelConfig& c = model_->config();
  inv_freq_global_ = rope_inv_freq(c.head_dim, c.rope_theta_global, c.rope_scale_global);
  inv_freq_local_ = rope_inv_freq(c.head_dim, c.rope_theta_local, 1.f);
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
  if (check_layers_) check_activations("the embedding", -1, n, pos0);
  rope_angles(n, pos0);
  for (int l = 0; l < model_->config().n_layers; ++l) {
    if (check_interrupt) check_interrupt();
    attention_block(l, n, pos0);
    if (check_layers_) check_activations("attention block", l, n, pos0);
    mlp_block(l, n);
    if (check_layers_) check_activations("MLP block", l, n, pos0);
  }
  if (logits_out) final_logits(n, all_positions, logits_out);
}

void Session::check_activations(const char* step, int layer, int n, int pos0) const {
  const int d = model_->config().d_model;
  const int64_t bad = first_non_finite(ws_.x.data(), int64_t(n) * d);
  if (bad < 0) return;
  const std::string where = layer < 0 ? step : "layer " + std::to_string(layer) + "'s " + step;
  throw std::runtime_error("non-finite activations (" + std::string(std::isnan(ws_.x[size_t(bad)]) ? "NaN" : "Inf") +
                           ") first after " + where + ", at position " + std::to_string(pos0 + bad / d) +
                           ", channel " + std::to_string(bad % d) +
                           " (GEMMA_CPP_CHECK_LAYERS): that layer's weights or scales in the model file hold "
                           "NaN/Inf or overflow float32; re-convert it from a good checkpoint");
}

// x[t] = embed[token t] * float32(sqrt(d)).
void Session::embed(const int32_t* tokens, int n) {
  const ModelConfig& c = model_->config();
  backend_->embed(model_->embed(), tokens, n, c.embed_scale, ws_.x.data(), c.d_model);
}

// Rope cos/sin per token for the global and local bases: angle = float(pos) * inv_freq (float32).
void Session::rope_angles(int n, int pos0) {
  const int hd = model_->config().head_dim;
  backend_->rope_table(inv_freq_global_.data(), hd / 2, pos0, n, ws_.rope_cs.data(), 2 * hd);
  backend_->rope_table(inv_freq_local_.data(), hd / 2, pos0, n, ws_.rope_cs.data() + hd, 2 * hd);
}

// x += PostNorm_a(o( Attn( QKNorm+RoPE( qkv( Norm_a(x) ) ) ) ))
void Session::attention_block(int l, int n, int pos0) {
  const ModelConfig& c = model_->config();
  const LayerWeights& L = model_->layer(l);
  Backend& be = *backend_;
  const int d = c.d_model, hd = c.head_dim, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int qkv_dim = q_dim + 2 * kv_dim;
  const bool sliding = c.layer_sliding[size_t(l)] != 0;
  float* q = ws_.qkv.data();
  float* k = q + q_dim;
  const float* v = k + kv_dim;

  be.rms_norm(ws_.x.data(), d, ws_.xn.data(), d, n, 1, d, L.attn_norm.data(), c.rms_eps);
  be.matmul(L.qkv, ws_.xn.data(), n, ws_.qkv.data(), qkv_dim);
  if (c.qk_norm) {
    be.rms_norm(q, qkv_dim, q, qkv_dim, n, c.n_heads, hd, L.q_norm.data(), c.rms_eps);
    be.rms_norm(k, qkv_dim, k, qkv_dim, n, c.n_kv_heads, hd, L.k_norm.data(), c.rms_eps);
  }
  const float* cs = ws_.rope_cs.data() + (sliding ? hd : 0);
  be.rope(q, qkv_dim, n, c.n_heads, hd, cs, 2 * hd);
  be.rope(k, qkv_dim, n, c.n_kv_heads, hd, cs, 2 * hd);
  // int8 keys are stored rotated (KVCache): bring the roped queries into their basis.
  for (int t = 0; t < n; ++t) kv_.queries_to_key_basis(q + size_t(t) * qkv_dim, c.n_heads);
  be.store_kv(kv_, l, pos0, n, k, v, qkv_dim);
  AttentionParams p;
  p.n_heads = c.n_heads;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = hd;
  p.window = sliding ? c.sliding_window : 0;
  p.query_scale = c.query_scale;
  p.softcap = c.attn_softcap;
  be.attention(kv_, l, p, q, qkv_dim, n, pos0, ws_.attn_out.data(), q_dim);
  be.matmul(L.o, ws_.attn_out.data(), n, ws_.proj.data(), d);
  add_residual(n, c.sandwich_norms ? L.post_attn_norm.data() : nullptr);
}

// x += PostNorm_f( down( gelu(gate(Norm_f(x))) * up(Norm_f(x)) ) )
void Session::mlp_block(int l, int n) {
  const ModelConfig& c = model_->config();
  const LayerWeights& L = model_->layer(l);
  Backend& be = *backend_;
  const int d = c.d_model, F = c.ffn_dim;
  be.rms_norm(ws_.x.data(), d, ws_.xn.data(), d, n, 1, d, L.ffn_norm.data(), c.rms_eps);
  be.matmul(L.gate_up, ws_.xn.data(), n, ws_.ffn.data(), 2 * F);
  be.geglu(ws_.ffn.data(), ws_.ffn.data() + F, 2 * F, n, F, c.gelu_tanh, ws_.act.data(), F);
  be.matmul(L.down, ws_.act.data(), n, ws_.proj.data(), d);
  add_residual(n, c.sandwich_norms ? L.post_ffn_norm.data() : nullptr);
}

// x += PostNorm(proj) (the norm only with Gemma 2/3's sandwich norms: post_norm != null).
void Session::add_residual(int n, const float* post_norm) {
  const ModelConfig& c = model_->config();
  const int d = c.d_model;
  if (post_norm) backend_->rms_norm(ws_.proj.data(), d, ws_.proj.data(), d, n, 1, d, post_norm, c.rms_eps);
  backend_->add(ws_.x.data(), ws_.proj.data(), int64_t(n) * d);
}

// logits = SoftCap( Norm(x) . embed^T ), for every position or just the last one.
void Session::final_logits(int n, bool all_positions, float* logits_out) {
  const ModelConfig& c = model_->config();
  const int d = c.d_model;
  const int first = all_positions ? 0 : n - 1;
  const int rows = n - first;
  backend_->rms_norm(ws_.x.data() + size_t(first) * d, d, ws_.xn.data(), d, rows, 1, d, model_->final_norm().data(),
                     c.rms_eps);
  backend_->matmul(model_->embed(), ws_.xn.data(), rows, logits_out, c.vocab_size);
  if (c.final_softcap > 0) backend_->soft_cap(logits_out, int64_t(rows) * c.vocab_size, c.final_softcap);
}

}  // namespace gemma
