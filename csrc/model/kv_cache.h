// The keys and values a Session keeps, per layer, in one of three element types:
//   f32   exact (4 bytes per value)
//   f16   IEEE half, rounded to nearest even, saturated at +-65504 (2 bytes; 3 more mantissa
//         bits than bf16, the type llama.cpp's cache uses by default)
//   bf16  the top half of each f32, rounded to nearest even (2 bytes)
//   int8  per (position, KV head, block of 32 values): levels q in [-127, 127] and a float
//         scale amax / 127, so a block's values are scale * q (1 byte per value + 4 bytes per
//         32: 28% of f32). Keys are first rotated, block by block, by the 32 x 32 Hadamard
//         matrix H (entries +-1, H H = 32 I): an outlier channel is spread over its block, so
//         the block's scale fits the other values too. Queries get the same rotation divided by
//         32 (queries_to_key_basis), so (H q / 32) . (H k) = q . k and scores need no inverse.
//         On the real Gemma 3 270M, per-head scales gave mean KL 5.7e-3 to the f32 cache, blocks
//         of 32 1.2e-3, rotated keys in blocks of 32 3e-4 (keys matter most: their errors go
//         through the softmax). A head_dim that is not a multiple of 32 leaves its last, shorter
//         block unrotated.
// A value is stored once, when its token is evaluated, the same way whatever the chunking, so
// the determinism rule holds for every type. Sliding-window layers keep a ring of `window +
// chunk` positions (slot = pos % capacity); global layers grow with the sequence, never per token.
// The storage lives in the backend's memory (backend/memory.h): host for the CPU backend, device
// memory for CUDA, whose own store_kv and attention write and read it (store() is host-only).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/memory.h"
#include "model/config.h"

namespace gemma {

enum class KvDType : uint8_t { F32 = 0, BF16 = 1, Q8 = 2, F16 = 3 };

const char* kv_dtype_name(KvDType t);
KvDType kv_dtype_from_name(const std::string& name);  // throws std::invalid_argument naming the choices

class KVCache {
 public:
  // max_seq: positions a global layer may hold; ring: capacity of sliding layers.
  KVCache(const ModelConfig& c, int max_seq, int ring, KvDType dtype, MemorySpace& mem = host_memory());
  // An empty cache of the same shape and type as `shape`, in `mem` (tests mirror a host cache on a device).
  KVCache(const KVCache& shape, MemorySpace& mem);

  MemorySpace& memory() const { return *mem_; }
  int kv_dim() const { return kv_dim_; }

  KvDType dtype() const { return dtype_; }
  int capacity(int layer) const { return cap_[size_t(layer)]; }
  int slot(int layer, int pos) const { return pos % cap_[size_t(layer)]; }

  // Global layers hold at least n positions afterwards (grown x1.5, at least 256 at a time).
  void reserve(int n);

  // Stores one token's k and v (kv_dim floats each) at `slot` of `layer` (host memory only: CpuBackend).
  void store(int layer, int slot, const float* k, const float* v);

  // Brings n_heads query heads (q, head_dim floats each) into the basis keys are stored in:
  // int8 rotates each block of 32 by H / 32 (see above); the other types store keys as they are.
  // The attention block calls it after RoPE, before the backend's attention reads the keys.
  void queries_to_key_basis(float* q, int n_heads) const;

  // The keys (values) of KV head g of `layer` from `slot` on, as the attention kernels read them
  // (backend/): element type, first row, elements from one slot's row to the next, and for int8
  // the block scales (scale[j * scale_stride + i / vec::kKvBlock] for element i of slot + j;
  // scale_stride = scales per position; null otherwise).
  struct Rows {
    KvDType dtype;
    const uint8_t* data;
    int64_t stride;
    const float* scale;
    int64_t scale_stride;
  };
  Rows keys(int layer, int g, int slot) const;
  Rows values(int layer, int g, int slot) const;

  // Becomes a copy of the first n positions of `o` (a cache of the same config, max_seq, ring and
  // type): global layers copy rows 0..n-1, sliding layers their whole ring. Throws otherwise.
  void copy_prefix(const KVCache& o, int n);

  // Bytes one position takes in every layer's K and V (what a longer context costs).
  int64_t bytes_per_position() const;

 private:
  const uint8_t* row(const Array<uint8_t>& m, int slot, int g) const;
  const float* scale(const std::vector<Array<float>>& s, int layer, int slot, int g) const;
  void allocate_rings();

  MemorySpace* mem_;
  KvDType dtype_;
  int kv_dim_, head_dim_, n_kv_heads_, max_seq_, elem_bytes_;
  int scales_per_pos_;  // int8: n_kv_heads * blocks per head (0 for the other types)
  std::vector<int> cap_;
  std::vector<uint8_t> sliding_;
  std::vector<Array<uint8_t>> k_, v_;    // [capacity][kv_dim] elements per layer
  std::vector<Array<float>> ks_, vs_;    // int8: [capacity][n_kv_heads][blocks] scales per layer
};

}  // namespace gemma
