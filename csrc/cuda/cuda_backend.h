// The CUDA backend: the ops of backend/backend.h as CUDA kernels (cuda/kernels.h) on one GPU,
// queued in order on this backend's own stream. Activations and KV caches live in its device
// memory (memory()); weights and norm gains come from the Model's shared DeviceWeights. Only
// the forward pass's logits are copied back (MemorySpace::to_host, which waits for the stream).
//
// Supported: weights f32, bf16, f16, int8, int4 (others: DeviceError at creation, naming the
// tensor); KV caches f32, bf16, f16 (int8, with its rotated keys, is refused by check_kv_dtype).
// One backend is used by one thread at a time (like a Session); backends of the same Model on
// different threads share only the read-only weights.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "backend/backend.h"
#include "cuda/cuda_memory.h"
#include "cuda/device_weights.h"

namespace gemma::cuda {

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(std::shared_ptr<DeviceWeights> weights);
  ~CudaBackend() override;

  DeviceWeights& weights() { return *weights_; }
  cudaStream_t stream() const { return stream_; }
  void synchronize();

  const char* name() const override { return name_.c_str(); }
  int n_threads() const override { return 1; }  // the GPU's parallelism is not a thread count
  void set_n_threads(int) override {}
  MemorySpace& memory() override { return *memory_; }
  void check_kv_dtype(KvDType t) const override;

  void embed(const WeightView& table, const int32_t* tokens, int n, float scale, float* x, int64_t ldx) override;
  using Backend::matmul;
  void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy) override;
  void rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim,
                const float* one_plus_w, float eps) override;
  void rope_table(const float* inv_freq, int half, int pos0, int n, float* cs, int64_t ldcs) override;
  void rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs) override;
  void store_kv(KVCache& kv, int layer, int pos0, int n, const float* k, const float* v, int64_t ld) override;
  void attention(const KVCache& kv, int layer, const AttentionParams& p, const float* q, int64_t ldq, int n,
                 int pos0, float* out, int64_t ldo) override;
  void geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx, float* out,
             int64_t ldo) override;
  void softmax(float* x, int64_t ldx, int n, int len) override;
  void soft_cap(float* x, int64_t count, float cap) override;
  void add(float* x, const float* y, int64_t count) override;

 private:
  void use_device() const;
  DevKvLayer layer_of(const KVCache& kv, int layer) const;

  std::shared_ptr<DeviceWeights> weights_;
  int device_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CudaMemory> memory_;
  // Scratch, grown when a call needs more (never in the steady token loop).
  Array<int32_t> tokens_;
  Array<int8_t> act_q_;
  Array<float> act_d_;
  Array<float> scores_;
  std::vector<float> rope_host_;  // the rope table, computed on the host exactly as the CPU does
};

}  // namespace gemma::cuda
