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
// Each step below is one Backend op over the Workspace's rows (backend/backend.h), or, for the
// steps that need positions or a cache (RoPE tables, KV store, attention), one op per sequence
// (forward.h): this file says what is computed and in which order, the backend how.
#include "model/forward.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "core/finite.h"

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

ForwardPass::ForwardPass(const ModelConfig& c)
    : inv_freq_global_(rope_inv_freq(c.head_dim, c.rope_theta_global, c.rope_scale_global)),
      inv_freq_local_(rope_inv_freq(c.head_dim, c.rope_theta_local, 1.f)),
      check_layers_(check_layers_requested()) {}

void ForwardPass::run(const Model& model, Backend& be, Workspace& ws, const int32_t* tokens, int rows,
                      const SeqRows* seqs, int n_seqs, const int* logit_rows, int n_logits, float* logits_out,
                      const std::function<void()>& check) const {
  const ModelConfig& c = model.config();
  // x[t] = embed[token t] * float32(sqrt(d)).
  be.embed(model.embed(), tokens, rows, c.embed_scale, ws.x.data(), c.d_model);
  if (check_layers_) check_activations(ws, c.d_model, rows, seqs, n_seqs, "the embedding", -1);
  rope_angles(be, ws, seqs, n_seqs);
  for (int l = 0; l < c.n_layers; ++l) {
    if (check) check();
    attention_block(model, be, ws, l, rows, seqs, n_seqs);
    if (check_layers_) check_activations(ws, c.d_model, rows, seqs, n_seqs, "attention block", l);
    mlp_block(model, be, ws, l, rows);
    if (check_layers_) check_activations(ws, c.d_model, rows, seqs, n_seqs, "MLP block", l);
  }
  if (logits_out && n_logits > 0) final_logits(model, be, ws, rows, logit_rows, n_logits, logits_out);
}

// Debug mode (GEMMA_CPP_CHECK_LAYERS=1): names the first step whose output holds NaN/Inf, and
// the position (in its sequence) and channel, so a broken model file can be pinned to a layer.
void ForwardPass::check_activations(const Workspace& ws, int d, int rows, const SeqRows* seqs, int n_seqs,
                                    const char* step, int layer) {
  std::vector<float> host;  // a device backend's residual stream, copied out (debug mode only)
  const float* x = ws.x.data();
  if (!ws.x.memory().is_host()) {
    host.resize(size_t(rows) * size_t(d));
    ws.x.memory().to_host(host.data(), x, host.size() * sizeof(float));
    x = host.data();
  }
  const int64_t bad = first_non_finite(x, int64_t(rows) * d);
  if (bad < 0) return;
  const int row = int(bad / d);
  int pos = row;
  for (int s = 0; s < n_seqs; ++s)
    if (row >= seqs[s].row0 && row < seqs[s].row0 + seqs[s].n) pos = seqs[s].pos0 + (row - seqs[s].row0);
  const std::string where = layer < 0 ? step : "layer " + std::to_string(layer) + "'s " + step;
  throw std::runtime_error("non-finite activations (" + std::string(std::isnan(x[bad]) ? "NaN" : "Inf") +
                           ") first after " + where + ", at position " + std::to_string(pos) + ", channel " +
                           std::to_string(bad % d) +
                           " (GEMMA_CPP_CHECK_LAYERS): that layer's weights or scales in the model file hold "
                           "NaN/Inf or overflow float32; re-convert it from a good checkpoint");
}

// Rope cos/sin per token for the global and local bases: angle = float(pos) * inv_freq (float32).
void ForwardPass::rope_angles(Backend& be, Workspace& ws, const SeqRows* seqs, int n_seqs) const {
  const int hd = int(inv_freq_global_.size()) * 2;
  for (int s = 0; s < n_seqs; ++s) {
    float* cs = ws.rope_cs.data() + size_t(seqs[s].row0) * size_t(2 * hd);
    be.rope_table(inv_freq_global_.data(), hd / 2, seqs[s].pos0, seqs[s].n, cs, 2 * hd);
    be.rope_table(inv_freq_local_.data(), hd / 2, seqs[s].pos0, seqs[s].n, cs + hd, 2 * hd);
  }
}

// x += PostNorm_a(o( Attn( QKNorm+RoPE( qkv( Norm_a(x) ) ) ) ))
void ForwardPass::attention_block(const Model& model, Backend& be, Workspace& ws, int l, int rows,
                                  const SeqRows* seqs, int n_seqs) const {
  const ModelConfig& c = model.config();
  const LayerWeights& L = model.layer(l);
  const int d = c.d_model, hd = c.head_dim, q_dim = c.q_dim(), kv_dim = c.kv_dim();
  const int qkv_dim = q_dim + 2 * kv_dim;
  const bool sliding = c.layer_sliding[size_t(l)] != 0;
  float* q = ws.qkv.data();
  float* k = q + q_dim;
  const float* v = k + kv_dim;

  be.rms_norm(ws.x.data(), d, ws.xn.data(), d, rows, 1, d, L.attn_norm.data(), c.rms_eps);
  be.matmul(L.qkv, ws.xn.data(), rows, ws.qkv.data(), qkv_dim);
  if (c.qk_norm) {
    be.rms_norm(q, qkv_dim, q, qkv_dim, rows, c.n_heads, hd, L.q_norm.data(), c.rms_eps);
    be.rms_norm(k, qkv_dim, k, qkv_dim, rows, c.n_kv_heads, hd, L.k_norm.data(), c.rms_eps);
  }
  const float* cs = ws.rope_cs.data() + (sliding ? hd : 0);
  be.rope(q, qkv_dim, rows, c.n_heads, hd, cs, 2 * hd);
  be.rope(k, qkv_dim, rows, c.n_kv_heads, hd, cs, 2 * hd);
  AttentionParams p;
  p.n_heads = c.n_heads;
  p.n_kv_heads = c.n_kv_heads;
  p.head_dim = hd;
  p.window = sliding ? c.sliding_window : 0;
  p.query_scale = c.query_scale;
  p.softcap = c.attn_softcap;
  for (int s = 0; s < n_seqs; ++s) {
    const SeqRows& sq = seqs[s];
    const size_t r0 = size_t(sq.row0);
    float* qs = q + r0 * size_t(qkv_dim);
    // int8 keys are stored rotated (KVCache): bring the roped queries into their basis.
    for (int t = 0; t < sq.n; ++t) sq.kv->queries_to_key_basis(qs + size_t(t) * size_t(qkv_dim), c.n_heads);
    be.store_kv(*sq.kv, l, sq.pos0, sq.n, k + r0 * size_t(qkv_dim), v + r0 * size_t(qkv_dim), qkv_dim);
    be.attention(*sq.kv, l, p, qs, qkv_dim, sq.n, sq.pos0, ws.attn_out.data() + r0 * size_t(q_dim), q_dim);
  }
  be.matmul(L.o, ws.attn_out.data(), rows, ws.proj.data(), d);
  add_residual(model, be, ws, rows, c.sandwich_norms ? L.post_attn_norm.data() : nullptr);
}

// x += PostNorm_f( down( gelu(gate(Norm_f(x))) * up(Norm_f(x)) ) )
void ForwardPass::mlp_block(const Model& model, Backend& be, Workspace& ws, int l, int rows) const {
  const ModelConfig& c = model.config();
  const LayerWeights& L = model.layer(l);
  const int d = c.d_model, F = c.ffn_dim;
  be.rms_norm(ws.x.data(), d, ws.xn.data(), d, rows, 1, d, L.ffn_norm.data(), c.rms_eps);
  be.matmul(L.gate_up, ws.xn.data(), rows, ws.ffn.data(), 2 * F);
  be.geglu(ws.ffn.data(), ws.ffn.data() + F, 2 * F, rows, F, c.gelu_tanh, ws.act.data(), F);
  be.matmul(L.down, ws.act.data(), rows, ws.proj.data(), d);
  add_residual(model, be, ws, rows, c.sandwich_norms ? L.post_ffn_norm.data() : nullptr);
}

// x += PostNorm(proj) (the norm only with Gemma 2/3's sandwich norms: post_norm != null).
void ForwardPass::add_residual(const Model& model, Backend& be, Workspace& ws, int rows,
                               const float* post_norm) const {
  const ModelConfig& c = model.config();
  const int d = c.d_model;
  if (post_norm) be.rms_norm(ws.proj.data(), d, ws.proj.data(), d, rows, 1, d, post_norm, c.rms_eps);
  be.add(ws.x.data(), ws.proj.data(), int64_t(rows) * d);
}

// logits = SoftCap( Norm(x) . embed^T ), for the rows asked for (all of them, or a list).
// A backend in host memory writes them straight into logits_out; a device backend computes them
// ws.logit_rows rows at a time in its own memory and copies each group out.
void ForwardPass::final_logits(const Model& model, Backend& be, Workspace& ws, int rows, const int* logit_rows,
                               int n_logits, float* logits_out) const {
  const ModelConfig& c = model.config();
  const int d = c.d_model;
  const float* w = model.final_norm().data();
  if (!logit_rows) {
    be.rms_norm(ws.x.data(), d, ws.xn.data(), d, rows, 1, d, w, c.rms_eps);
  } else {
    for (int i = 0; i < n_logits; ++i)
      be.rms_norm(ws.x.data() + size_t(logit_rows[i]) * d, d, ws.xn.data() + size_t(i) * d, d, 1, 1, d, w, c.rms_eps);
  }
  const int64_t V = c.vocab_size;
  if (ws.logits.empty()) {
    be.matmul(model.embed(), ws.xn.data(), n_logits, logits_out, V);
    if (c.final_softcap > 0) be.soft_cap(logits_out, n_logits * V, c.final_softcap);
    return;
  }
  for (int i0 = 0; i0 < n_logits; i0 += ws.logit_rows) {
    const int m = std::min(ws.logit_rows, n_logits - i0);
    be.matmul(model.embed(), ws.xn.data() + size_t(i0) * d, m, ws.logits.data(), V);
    if (c.final_softcap > 0) be.soft_cap(ws.logits.data(), m * V, c.final_softcap);
    be.memory().to_host(logits_out + size_t(i0) * size_t(V), ws.logits.data(), size_t(m) * size_t(V) * sizeof(float));
  }
}

}  // namespace gemma
