// The seam between the forward pass and the hardware: a Backend runs the ops of one Gemma forward
// pass over buffers of float32 activations (Workspace) and the weights it is handed.
//
// Every op works on a whole chunk of n tokens at once (one virtual call per op per chunk, never
// per element), on row-major rows with an explicit stride (`ld*`: floats from one token's row to
// the next), so the forward pass (model/forward.cpp) can hand it slices of its fused buffers
// (q, k, v inside qkv; gate, up inside gate_up) without copies.
//
// Memory: activations (Workspace), the rope table and the KV cache live in the backend's
// memory() (backend/memory.h): host memory for CpuBackend, device memory for CudaBackend
// (csrc/cuda/), so every float* below that points at activations is in that space. Three kinds
// of argument are always host memory: token ids (embed), rope frequencies (rope_table), and the
// weights and norm gains of the Model (WeightView::data, one_plus_w), which a device backend maps
// to the copies it uploaded once. Only the forward pass's final logits cross back to the host
// (MemorySpace::to_host; on the CPU no copy at all).
//
// CpuBackend (backend/cpu/) implements it with the SIMD kernels and the thread pool; CudaBackend
// (csrc/cuda/, built with GEMMA_CUDA=ON) with CUDA kernels; make_backend picks the Model's. tests/cpp/backend_ops.cpp holds any Backend to the scalar reference,
// op by op (random shapes, every weight dtype, every KV dtype; tolerances stated there).
//
// Determinism (DESIGN.md): an output row of a token may depend only on that token's inputs (and,
// for attention, the cache), never on n, the chunk it is part of or the thread count.
#pragma once
#include <cstdint>

#include "backend/memory.h"
#include "kernels/matmul.h"

namespace gemma {

class KVCache;
enum class KvDType : uint8_t;
struct SlicedWeight;

// One attention layer's geometry and scalars.
struct AttentionParams {
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // KV heads; query head h uses KV head h / (n_heads / n_kv_heads)
  int head_dim = 0;
  int window = 0;      // 0: every earlier position; else keys pos - window + 1 .. pos
  float query_scale = 1.f;  // scores = q.k * query_scale
  float softcap = 0.f;      // 0: none; else scores = softcap * tanh(scores / softcap)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;  // e.g. "cpu/avx512"
  virtual int n_threads() const = 0;
  virtual void set_n_threads(int n) = 0;  // a failure leaves the backend as it was

  // Where this backend's activations and KV cache live (see above).
  virtual MemorySpace& memory() { return host_memory(); }
  // Throws std::invalid_argument naming the supported types when this backend cannot run
  // attention over a cache of type t (checked when a Session is made).
  virtual void check_kv_dtype(KvDType t) const { (void)t; }

  // x[t] = table[tokens[t]] * scale   (row t at x + t * ldx; table.cols floats each)
  virtual void embed(const WeightView& table, const int32_t* tokens, int n, float scale, float* x,
                     int64_t ldx) = 0;

  // Y[t, r] = sum_k X[t, k] W[r, k]   for t < T, r < W.rows; X rows of W.cols floats, Y rows ldy apart.
  virtual void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy) = 0;
  // A fused matrix stored as row slices of possibly different dtypes: one matmul per slice,
  // into its columns of Y.
  void matmul(const SlicedWeight& W, const float* X, int64_t T, float* Y, int64_t ldy);

  // Gemma's RMSNorm on n x heads rows of dim floats: row (t, h) at x + t * ldx + h * dim, written
  // at out + t * ldo + h * dim (out may be x):  out = x * rsqrt(mean(x^2) + eps) * one_plus_w.
  virtual void rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim,
                        const float* one_plus_w, float eps) = 0;

  // Rope table of n positions pos0..: cs + t * ldcs holds cos[half] then sin[half] of the float32
  // angles float(pos0 + t) * inv_freq[i], i < half.
  virtual void rope_table(const float* inv_freq, int half, int pos0, int n, float* cs, int64_t ldcs) = 0;

  // Rotary embedding, rotate-half layout, in place on n x heads rows of head_dim floats (row (t, h)
  // at x + t * ldx + h * head_dim), with token t's table at cs + t * ldcs (rope_table's layout).
  virtual void rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs) = 0;

  // Stores the keys and values of n tokens at positions pos0.. of `layer` (k and v of token t at
  // k + t * ld and v + t * ld, kv_dim floats each) in the cache's element type.
  virtual void store_kv(KVCache& kv, int layer, int pos0, int n, const float* k, const float* v, int64_t ld) = 0;

  // Causal (and, with p.window, windowed) attention of n query tokens at positions pos0.. over the
  // keys and values already stored for `layer` (the chunk's own included):
  //   out_h = sum_j softmax_j(SoftCap(q_h . k_j * query_scale)) v_j    keys j in position order
  // q of token t at q + t * ldq (n_heads x head_dim), out at out + t * ldo (same shape).
  virtual void attention(const KVCache& kv, int layer, const AttentionParams& p, const float* q, int64_t ldq,
                         int n, int pos0, float* out, int64_t ldo) = 0;

  // GeGLU on n rows of dim: out = gelu(gate) * up, GELU's tanh form or (tanh_approx false) erf form;
  // gate and up of token t at gate + t * ld_in and up + t * ld_in, out at out + t * ldo.
  virtual void geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx,
                     float* out, int64_t ldo) = 0;

  // In place on n rows of len floats (x + t * ldx): softmax.
  virtual void softmax(float* x, int64_t ldx, int n, int len) = 0;
  // In place on count floats: x = cap * tanh(x / cap).
  virtual void soft_cap(float* x, int64_t count, float cap) = 0;
  // x[i] += y[i] for i < count.
  virtual void add(float* x, const float* y, int64_t count) = 0;
};

}  // namespace gemma
