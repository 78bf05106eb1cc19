#include "model/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/dtype.h"
#include "kernels/vec.h"

namespace gemma {

const char* kv_dtype_name(KvDType t) {
  switch (t) {
    case KvDType::F32: return "f32";
    case KvDType::BF16: return "bf16";
    case KvDType::Q8: return "int8";
    case KvDType::F16: return "f16";
  }
  return "?";
}

KvDType kv_dtype_from_name(const std::string& n) {
  if (n == "f32") return KvDType::F32;
  if (n == "bf16") return KvDType::BF16;
  if (n == "int8") return KvDType::Q8;
  if (n == "f16") return KvDType::F16;
  throw std::invalid_argument("unknown KV cache dtype '" + n + "' (expected f32, f16, bf16 or int8)");
}

KVCache::KVCache(const ModelConfig& c, int max_seq, int ring, KvDType dtype, MemorySpace& mem)
    : mem_(&mem),
      dtype_(dtype), kv_dim_(c.kv_dim()), head_dim_(c.head_dim), n_kv_heads_(c.n_kv_heads), max_seq_(max_seq),
      elem_bytes_(dtype == KvDType::F32 ? 4 : dtype == KvDType::Q8 ? 1 : 2),
      scales_per_pos_(dtype == KvDType::Q8 ? c.n_kv_heads * ((c.head_dim + vec::kKvBlock - 1) / vec::kKvBlock) : 0) {
  const size_t L = size_t(c.n_layers);
  cap_.resize(L);
  sliding_ = c.layer_sliding;
  for (size_t l = 0; l < L; ++l) cap_[l] = sliding_[l] ? std::min(max_seq, ring) : max_seq;
  allocate_rings();
}

KVCache::KVCache(const KVCache& o, MemorySpace& mem)
    : mem_(&mem), dtype_(o.dtype_), kv_dim_(o.kv_dim_), head_dim_(o.head_dim_), n_kv_heads_(o.n_kv_heads_),
      max_seq_(o.max_seq_), elem_bytes_(o.elem_bytes_), scales_per_pos_(o.scales_per_pos_), cap_(o.cap_),
      sliding_(o.sliding_) {
  allocate_rings();
}

// Every layer's (empty) arrays in this cache's memory; sliding layers' rings at full size
// (global layers grow with the sequence: reserve).
void KVCache::allocate_rings() {
  const size_t L = cap_.size();
  for (size_t l = 0; l < L; ++l) {
    k_.emplace_back(*mem_);
    v_.emplace_back(*mem_);
    ks_.emplace_back(*mem_);
    vs_.emplace_back(*mem_);
    if (!sliding_[l]) continue;
    k_[l].resize(size_t(cap_[l]) * size_t(kv_dim_) * size_t(elem_bytes_));
    v_[l].resize(k_[l].size());
    if (dtype_ == KvDType::Q8) {
      ks_[l].resize(size_t(cap_[l]) * size_t(scales_per_pos_));
      vs_[l].resize(ks_[l].size());
    }
  }
}

void KVCache::reserve(int n) {
  const size_t row = size_t(kv_dim_) * size_t(elem_bytes_);
  for (size_t l = 0; l < cap_.size(); ++l) {
    if (sliding_[l]) continue;
    const size_t have = k_[l].size() / row;
    if (have >= size_t(n)) continue;
    size_t want = std::max<size_t>({size_t(n), have + have / 2, 256});
    want = std::min<size_t>(want, size_t(max_seq_));
    k_[l].resize(want * row);
    v_[l].resize(want * row);
    if (dtype_ == KvDType::Q8) {
      ks_[l].resize(want * size_t(scales_per_pos_));
      vs_[l].resize(want * size_t(scales_per_pos_));
    }
  }
}

// One block's values as int8 levels and a scale (max-abs / 127, round half to even).
static float quantize_block(const float* x, int n, int8_t* q) {
  float amax = 0.f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float scale = amax / 127.f;
  const float inv = amax > 0.f ? 127.f / amax : 0.f;
  for (int i = 0; i < n; ++i) q[i] = int8_t(std::max(-127.f, std::min(127.f, std::nearbyint(x[i] * inv))));
  return scale;
}

// x <- H x for the 32 x 32 Sylvester-Hadamard matrix (entries +-1), then times `mul` (a power
// of two: exact). Butterflies in a fixed order: the same floats every time.
static void hadamard32(float* x, float mul) {
  static_assert(vec::kKvBlock == 32, "the rotation is one block");
  for (int h = 1; h < 32; h *= 2)
    for (int i = 0; i < 32; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  if (mul != 1.f)
    for (int i = 0; i < 32; ++i) x[i] *= mul;
}

// A head's values (keys rotated first) as int8 blocks, a scale per block.
static void quantize_head(const float* x, int n, bool rotate, int8_t* q, float* scales) {
  for (int b0 = 0, b = 0; b0 < n; b0 += vec::kKvBlock, ++b) {
    const int m = std::min(vec::kKvBlock, n - b0);
    float r[vec::kKvBlock];
    std::copy(x + b0, x + b0 + m, r);
    if (rotate && m == vec::kKvBlock) hadamard32(r, 1.f);
    scales[b] = quantize_block(r, m, q + b0);
  }
}

void KVCache::queries_to_key_basis(float* q, int n_heads) const {
  if (dtype_ != KvDType::Q8) return;
  for (int h = 0; h < n_heads; ++h)
    for (int b0 = 0; b0 + vec::kKvBlock <= head_dim_; b0 += vec::kKvBlock)
      hadamard32(q + size_t(h) * size_t(head_dim_) + size_t(b0), 1.f / 32.f);
}

void KVCache::store(int layer, int slot, const float* k, const float* v) {
  const size_t l = size_t(layer), at = size_t(slot) * size_t(kv_dim_);
  switch (dtype_) {
    case KvDType::F32:
      std::memcpy(k_[l].data() + at * 4, k, size_t(kv_dim_) * 4);
      std::memcpy(v_[l].data() + at * 4, v, size_t(kv_dim_) * 4);
      break;
    case KvDType::BF16: {
      auto* kd = reinterpret_cast<uint16_t*>(k_[l].data() + at * 2);
      auto* vd = reinterpret_cast<uint16_t*>(v_[l].data() + at * 2);
      for (int i = 0; i < kv_dim_; ++i) kd[i] = f32_to_bf16(k[i]), vd[i] = f32_to_bf16(v[i]);
      break;
    }
    case KvDType::F16: {
      auto* kd = reinterpret_cast<uint16_t*>(k_[l].data() + at * 2);
      auto* vd = reinterpret_cast<uint16_t*>(v_[l].data() + at * 2);
      const auto half = [](float x) { return f32_to_f16(std::max(-65504.f, std::min(65504.f, x))); };
      for (int i = 0; i < kv_dim_; ++i) kd[i] = half(k[i]), vd[i] = half(v[i]);
      break;
    }
    case KvDType::Q8:
      for (int g = 0; g < n_kv_heads_; ++g) {
        const size_t h = size_t(g) * size_t(head_dim_);
        const size_t s = size_t(slot) * size_t(scales_per_pos_) + size_t(g) * size_t(scales_per_pos_ / n_kv_heads_);
        quantize_head(k + h, head_dim_, true, reinterpret_cast<int8_t*>(k_[l].data() + at + h), ks_[l].data() + s);
        quantize_head(v + h, head_dim_, false, reinterpret_cast<int8_t*>(v_[l].data() + at + h), vs_[l].data() + s);
      }
      break;
  }
}

const uint8_t* KVCache::row(const Array<uint8_t>& m, int slot, int g) const {
  return m.data() + (size_t(slot) * size_t(kv_dim_) + size_t(g) * size_t(head_dim_)) * size_t(elem_bytes_);
}

const float* KVCache::scale(const std::vector<Array<float>>& s, int layer, int slot, int g) const {
  return dtype_ == KvDType::Q8 ? s[size_t(layer)].data() + size_t(slot) * size_t(scales_per_pos_) +
                                     size_t(g) * size_t(scales_per_pos_ / n_kv_heads_)
                               : nullptr;
}

KVCache::Rows KVCache::keys(int layer, int g, int slot) const {
  return {dtype_, row(k_[size_t(layer)], slot, g), kv_dim_, scale(ks_, layer, slot, g), scales_per_pos_};
}

KVCache::Rows KVCache::values(int layer, int g, int slot) const {
  return {dtype_, row(v_[size_t(layer)], slot, g), kv_dim_, scale(vs_, layer, slot, g), scales_per_pos_};
}

void KVCache::copy_prefix(const KVCache& o, int n) {
  if (o.dtype_ != dtype_ || o.cap_ != cap_ || o.kv_dim_ != kv_dim_ || o.max_seq_ != max_seq_ || n < 0 || n > max_seq_)
    throw std::invalid_argument("KVCache::copy_prefix: the caches differ in shape or type");
  if (o.mem_ != mem_) throw std::invalid_argument("KVCache::copy_prefix: the caches live on different devices");
  reserve(n);
  const size_t row = size_t(kv_dim_) * size_t(elem_bytes_), srow = size_t(scales_per_pos_);
  for (size_t l = 0; l < cap_.size(); ++l) {
    // A ring's slots hold positions modulo its capacity: copy all of it.
    const size_t rows = sliding_[l] ? size_t(cap_[l]) : size_t(n);
    mem_->copy(k_[l].data(), o.k_[l].data(), rows * row);
    mem_->copy(v_[l].data(), o.v_[l].data(), rows * row);
    if (srow) {
      mem_->copy(ks_[l].data(), o.ks_[l].data(), rows * srow * sizeof(float));
      mem_->copy(vs_[l].data(), o.vs_[l].data(), rows * srow * sizeof(float));
    }
  }
}

int64_t KVCache::bytes_per_position() const {
  const int64_t per_layer = 2 * (int64_t(kv_dim_) * elem_bytes_ + 4 * int64_t(scales_per_pos_));
  return per_layer * int64_t(cap_.size());
}

}  // namespace gemma
