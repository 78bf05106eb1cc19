// Architecture facts of one Gemma model, already normalised by the converter: the runtime
// never re-derives Hugging Face's per-family rules (those live in python/gemma_cpp/convert/).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace gemma {

// The longest context (and sliding window) a config may name: 16M positions, far past any Gemma
// (128K), and small enough that position arithmetic in int never overflows.
constexpr int kMaxPosition = 1 << 24;
// Upper bounds of the other sizes (ModelConfig::validate; the converter reads them through
// _core.CONFIG_LIMITS before it builds anything per layer): far past any Gemma, and small enough
// that products of two of them fit int64 and per-layer tables stay small.
constexpr int kMaxLayers = 4096;
constexpr int kMaxDModel = 1 << 16;
constexpr int kMaxHeads = 1024;
constexpr int kMaxHeadDim = 4096;
constexpr int kMaxFfn = 1 << 20;
constexpr int kMaxVocab = 1 << 24;

struct ModelConfig {
  int family = 1;  // 1, 2 or 3 (Gemma generation): selects the norm layout
  int n_layers = 0;
  int d_model = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_dim = 0;
  int vocab_size = 0;
  int max_position = 0;   // context length the model was trained for
  float rms_eps = 1e-6f;
  float embed_scale = 0;  // float32(sqrt(d_model)), applied to embeddings
  float query_scale = 0;  // multiplies q.k (head_dim^-0.5 or query_pre_attn_scalar^-0.5)
  float attn_softcap = 0;   // 0: none; else scores = c * tanh(scores / c)
  float final_softcap = 0;  // 0: none; else logits = c * tanh(logits / c)
  bool gelu_tanh = true;    // GELU tanh approximation (else exact erf GELU)
  bool qk_norm = false;     // Gemma 3: RMSNorm(1 + w) on each q and k head
  bool sandwich_norms = false;  // Gemma 2/3: norms after attention and after the MLP too
  int sliding_window = 0;       // keys a sliding layer's query sees (0: no sliding layers)
  std::vector<uint8_t> layer_sliding;  // per layer: 1 = sliding-window attention
  float rope_theta_global = 10000.f;
  float rope_theta_local = 10000.f;    // rope base of sliding layers
  float rope_scale_global = 1.f;       // linear rope scaling factor of global layers

  // Throws std::invalid_argument naming the field when a value is out of range.
  void validate() const;
  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

}  // namespace gemma
