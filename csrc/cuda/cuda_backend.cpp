#include "cuda/cuda_backend.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "cuda/check.h"
#include "cuda/kernels.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "quant/quant.h"

namespace gemma {

namespace cuda {

// Grows a scratch array to at least n elements (x1.5 steps: a growing context re-allocates rarely).
template <typename T>
static T* at_least(Array<T>& a, size_t n) {
  if (a.size() < n) a.resize(std::max(n, a.size() + a.size() / 2));
  return a.data();
}

CudaBackend::CudaBackend(std::shared_ptr<DeviceWeights> weights)
    : weights_(std::move(weights)), device_(weights_->device()), name_("cuda:" + std::to_string(device_)) {
  GEMMA_CUDA_CHECK(cudaSetDevice(device_));
  GEMMA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  memory_.reset(new CudaMemory(device_, stream_));
  tokens_ = Array<int32_t>(*memory_);
  act_q_ = Array<int8_t>(*memory_);
  act_d_ = Array<float>(*memory_);
  scores_ = Array<float>(*memory_);
}

CudaBackend::~CudaBackend() {
  // The scratch arrays go first (through memory_), then the stream.
  tokens_ = Array<int32_t>();
  act_q_ = Array<int8_t>();
  act_d_ = Array<float>();
  scores_ = Array<float>();
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
}

void CudaBackend::use_device() const { GEMMA_CUDA_CHECK(cudaSetDevice(device_)); }

void CudaBackend::synchronize() {
  use_device();
  GEMMA_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::check_kv_dtype(KvDType t) const {
  if (t == KvDType::F32 || t == KvDType::BF16 || t == KvDType::F16) return;
  throw std::invalid_argument(std::string("kv_dtype '") + kv_dtype_name(t) +
                              "' is not supported on a CUDA device (supported there: f32, f16, bf16)");
}

void CudaBackend::embed(const WeightView& table, const int32_t* tokens, int n, float scale, float* x, int64_t ldx) {
  if (n <= 0) return;
  use_device();
  int32_t* d = at_least(tokens_, size_t(n));
  // From pageable host memory: returns once the ids are staged, so the caller may reuse them.
  GEMMA_CUDA_CHECK(cudaMemcpyAsync(d, tokens, size_t(n) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  cuda::embed(weights_->find(table), d, n, scale, x, ldx, stream_);
}

void CudaBackend::matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy) {
  if (T <= 0) return;
  use_device();
  const DevMatrix& m = weights_->find(W);
  int8_t* q = nullptr;
  float* d = nullptr;
  if (m.dtype == DType::Q8 || m.dtype == DType::Q4) {
    const int64_t nb = quant::n_blocks(W.cols);
    q = at_least(act_q_, size_t(T * nb * 32));
    d = at_least(act_d_, size_t(T * nb));
    quantize_acts(X, T, W.cols, q, d, stream_);
  }
  cuda::matmul(m, X, q, d, T, Y, ldy, stream_);
}

void CudaBackend::rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim,
                           const float* one_plus_w, float eps) {
  use_device();
  cuda::rms_norm(x, ldx, out, ldo, n, heads, dim, weights_->find(one_plus_w), eps, stream_);
}

void CudaBackend::rope_table(const float* inv_freq, int half, int pos0, int n, float* cs, int64_t ldcs) {
  if (n <= 0 || half <= 0) return;
  use_device();
  // Computed on the host with the CPU backend's exact code (float32 angles, libm cos/sin), so
  // both backends rotate by the same bits; n * hd floats a call, copied into the strided rows.
  const size_t w = size_t(2 * half);
  rope_host_.resize(size_t(n) * w);
  for (int t = 0; t < n; ++t) {
    float* c = rope_host_.data() + size_t(t) * w;
    const float p = float(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float a = p * inv_freq[i];
      c[i] = std::cos(a);
      c[half + i] = std::sin(a);
    }
  }
  GEMMA_CUDA_CHECK(cudaMemcpy2DAsync(cs, size_t(ldcs) * sizeof(float), rope_host_.data(), w * sizeof(float),
                                     w * sizeof(float), size_t(n), cudaMemcpyHostToDevice, stream_));
  // rope_host_ is reused by the next call: wait until this copy has read it.
  GEMMA_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs) {
  use_device();
  cuda::rope(x, ldx, n, heads, head_dim, cs, ldcs, stream_);
}

DevKvLayer CudaBackend::layer_of(const KVCache& kv, int layer) const {
  if (&kv.memory() != memory_.get())
    throw std::invalid_argument("CudaBackend: the KV cache lives in another backend's memory");
  DevKvLayer l;
  switch (kv.dtype()) {
    case KvDType::F32: l.dtype = 0; break;
    case KvDType::BF16: l.dtype = 1; break;
    case KvDType::F16: l.dtype = 2; break;
    default: check_kv_dtype(kv.dtype());
  }
  // Slot 0 of KV head 0: the layer's base (rows of kv_dim elements).
  l.k = const_cast<uint8_t*>(kv.keys(layer, 0, 0).data);
  l.v = const_cast<uint8_t*>(kv.values(layer, 0, 0).data);
  l.stride = kv.keys(layer, 0, 0).stride;
  l.cap = kv.capacity(layer);
  return l;
}

void CudaBackend::store_kv(KVCache& kv, int layer, int pos0, int n, const float* k, const float* v, int64_t ld) {
  use_device();
  cuda::store_kv(layer_of(kv, layer), kv.kv_dim(), pos0, n, k, v, ld, stream_);
}

void CudaBackend::attention(const KVCache& kv, int layer, const AttentionParams& p, const float* q, int64_t ldq,
                            int n, int pos0, float* out, int64_t ldo) {
  if (n <= 0) return;
  use_device();
  // The most keys one query of this call sees: the last one's (window or all before it).
  const int64_t keys = p.window > 0 ? std::min<int64_t>(p.window, int64_t(pos0) + n) : int64_t(pos0) + n;
  float* s = at_least(scores_, size_t(n) * size_t(p.n_heads) * size_t(keys));
  cuda::attention(layer_of(kv, layer), p, q, ldq, n, pos0, out, ldo, s, keys, stream_);
}

void CudaBackend::geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx,
                        float* out, int64_t ldo) {
  use_device();
  cuda::geglu(gate, up, ld_in, n, dim, tanh_approx, out, ldo, stream_);
}

void CudaBackend::softmax(float* x, int64_t ldx, int n, int len) {
  use_device();
  cuda::softmax(x, ldx, n, len, stream_);
}

void CudaBackend::soft_cap(float* x, int64_t count, float cap) {
  use_device();
  cuda::soft_cap(x, count, cap, stream_);
}

void CudaBackend::add(float* x, const float* y, int64_t count) {
  use_device();
  cuda::add(x, y, count, stream_);
}

}  // namespace cuda

// backend/make_backend.cpp's CUDA branch.
std::unique_ptr<Backend> make_cuda_backend(const std::shared_ptr<const Model>& model, int device) {
  return std::unique_ptr<Backend>(new cuda::CudaBackend(cuda::DeviceWeights::of(*model, device)));
}

}  // namespace gemma
