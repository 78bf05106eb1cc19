// The keys and values a Session keeps, per layer, in one of three element types:
//   f32   exact (4 bytes per value)
//   f16   IEEE half, rounded to nearest even, saturated at +-65504 (2 bytes; 3 more mantissa
//         bits than bf16, the type llama.cpp's cache uses by default)
//   bf16  the top half of each f32, rounded to nearest even (2 bytes)
//   int8  per (position, KV head): levels q in [-127, 127] and a float scale amax / 127, so a
//         head's values are scale * q (1 byte per value + 4 bytes per head_dim values)
// A value is stored once, when its token is evaluated, the same way whatever the chunking, so
// the determinism rule holds for every type. Sliding-window layers keep a ring of `window +
// chunk` positions (slot = pos % capacity); global layers grow with the sequence, never per token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace gemma {

enum class KvDType : uint8_t { F32 = 0, BF16 = 1, Q8 = 2, F16 = 3 };

const char* kv_dtype_name(KvDType t);
KvDType kv_dtype_from_name(const std::string& name);  // throws std::invalid_argument naming the choices

class KVCache {
 public:
  // max_seq: positions a global layer may hold; ring: capacity of sliding layers.
  KVCache(const ModelConfig& c, int max_seq, int ring, KvDType dtype);

  KvDType dtype() const { return dtype_; }
  int capacity(int layer) const { return cap_[size_t(layer)]; }
  int slot(int layer, int pos) const { return pos % cap_[size_t(layer)]; }

  // Global layers hold at least n positions afterwards (grown x1.5, at least 256 at a time).
  void reserve(int n);

  // Stores one token's k and v (kv_dim floats each) at `slot` of `layer`.
  void store(int layer, int slot, const float* k, const float* v);

  // The keys (values) of KV head g of `layer` from `slot` on, as the attention kernels read them
  // (backend/): element type, first row, elements from one slot's row to the next, and for int8
  // the row scales (scale[j * scale_stride] for slot + j; null otherwise).
  struct Rows {
    KvDType dtype;
    const uint8_t* data;
    int64_t stride;
    const float* scale;
    int64_t scale_stride;
  };
  Rows keys(int layer, int g, int slot) const;
  Rows values(int layer, int g, int slot) const;

  // Bytes one position takes in every layer's K and V (what a longer context costs).
  int64_t bytes_per_position() const;

 private:
  const uint8_t* row(const std::vector<uint8_t>& m, int slot, int g) const;
  const float* scale(const std::vector<std::vector<float>>& s, int layer, int slot, int g) const;

  KvDType dtype_;
  int kv_dim_, head_dim_, n_kv_heads_, max_seq_, elem_bytes_;
  std::vector<int> cap_;
  std::vector<uint8_t> sliding_;
  std::vector<std::vector<uint8_t>> k_, v_;    // [capacity][kv_dim] elements per layer
  std::vector<std::vector<float>> ks_, vs_;    // int8: [capacity][n_kv_heads] scales per layer
};

}  // namespace gemma
