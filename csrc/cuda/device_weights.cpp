#include "cuda/device_weights.h"

#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "backend/device.h"
#include "cuda/check.h"
#include "model/weights.h"
#include "quant/quant.h"

namespace gemma::cuda {

DeviceWeights::~DeviceWeights() {
  cudaSetDevice(device_);
  for (auto& kv : owned_)
    for (void* p : kv.second) cudaFree(p);
}

void* DeviceWeights::upload(const void* src, size_t bytes) {
  void* p = nullptr;
  GEMMA_CUDA_CHECK(cudaSetDevice(device_));
  GEMMA_CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 1));
  if (bytes) {
    const cudaError_t e = cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice);
    if (e != cudaSuccess) cudaFree(p);
    GEMMA_CUDA_CHECK(e);
  }
  bytes_ += int64_t(bytes);
  return p;
}

void DeviceWeights::add(const WeightView& w, const char* name) {
  if (matrices_.count(w.data)) return;
  DevMatrix m;
  m.dtype = w.dtype;
  m.rows = w.rows;
  m.cols = w.cols;
  std::vector<void*>& own = owned_[w.data];
  switch (w.dtype) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      // Float formats are only ever stored row after row (Layout::Rows).
      m.row_bytes = w.row_bytes;
      m.data = static_cast<const uint8_t*>(upload(w.data, size_t(w.rows) * size_t(w.row_bytes)));
      own.push_back(const_cast<uint8_t*>(m.data));
      break;
    case DType::Q8:
    case DType::Q4: {
      // Each row [nb f16 scales][nb blocks of levels] (quant.h) split into the two arrays.
      const int64_t nb = quant::n_blocks(w.cols), qb = quant::block_quant_bytes(w.dtype);
      m.nb = nb;
      std::vector<uint16_t> scales(size_t(w.rows * nb));
      std::vector<uint8_t> levels(size_t(w.rows * nb * qb)), buf(size_t(w.row_bytes));
      for (int64_t r = 0; r < w.rows; ++r) {
        const uint8_t* row = plain_row(w, r, buf.data());
        std::memcpy(&scales[size_t(r * nb)], row, size_t(2 * nb));
        std::memcpy(&levels[size_t(r * nb * qb)], row + 2 * nb, size_t(nb * qb));
      }
      m.scales = static_cast<const uint16_t*>(upload(scales.data(), scales.size() * 2));
      own.push_back(const_cast<uint16_t*>(m.scales));
      m.levels = static_cast<const uint8_t*>(upload(levels.data(), levels.size()));
      own.push_back(const_cast<uint8_t*>(m.levels));
      break;
    }
    default:
      owned_.erase(w.data);
      throw DeviceError(std::string("the CUDA backend runs f32, bf16, f16, int8 and int4 weights; tensor ") + name +
                        " is " + dtype_name(w.dtype) +
                        ": convert the checkpoint with gemma-convert --dtype int8 (or int4, bf16) to run it on a GPU");
  }
  matrices_[w.data] = m;
}

void DeviceWeights::add(const float* host, int64_t n) {
  if (arrays_.count(host)) return;
  auto* d = static_cast<const float*>(upload(host, size_t(n) * sizeof(float)));
  owned_[host].push_back(const_cast<float*>(d));
  arrays_[host] = d;
}

void DeviceWeights::drop(const void* host) {
  auto it = owned_.find(host);
  if (it == owned_.end()) return;
  cudaSetDevice(device_);
  for (void* p : it->second) cudaFree(p);
  owned_.erase(it);
  matrices_.erase(host);
  arrays_.erase(host);
}

const DevMatrix& DeviceWeights::find(const WeightView& w) const {
  auto it = matrices_.find(w.data);
  if (it == matrices_.end())
    throw std::invalid_argument("CudaBackend: a weight matrix that was never uploaded to the GPU (a bug)");
  return it->second;
}

const float* DeviceWeights::find(const float* host) const {
  auto it = arrays_.find(host);
  if (it == arrays_.end())
    throw std::invalid_argument("CudaBackend: a norm weight that was never uploaded to the GPU (a bug)");
  return it->second;
}

std::shared_ptr<DeviceWeights> DeviceWeights::of(const Model& model, int device) {
  // One upload per (model, device) while anything uses it. A Model outlives its backends (they
  // hold it), so an expired entry is the only kind a reused address can meet.
  static std::mutex mu;
  static std::map<std::pair<const Model*, int>, std::weak_ptr<DeviceWeights>> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(&model, device);
  if (auto w = cache[key].lock()) return w;
  auto w = std::make_shared<DeviceWeights>(device);
  const ModelConfig& c = model.config();
  w->add(model.embed(), "embed");
  w->add(model.final_norm().data(), int64_t(model.final_norm().size()));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = model.layer(l);
    const std::string at = "of layer " + std::to_string(l);
    for (const WeightView& s : L.qkv.slices) w->add(s, ("qkv " + at).c_str());
    w->add(L.o, ("o " + at).c_str());
    for (const WeightView& s : L.gate_up.slices) w->add(s, ("gate_up " + at).c_str());
    w->add(L.down, ("down " + at).c_str());
    for (const std::vector<float>* v :
         {&L.attn_norm, &L.post_attn_norm, &L.ffn_norm, &L.post_ffn_norm, &L.q_norm, &L.k_norm})
      if (!v->empty()) w->add(v->data(), int64_t(v->size()));
  }
  cache[key] = w;
  return w;
}

}  // namespace gemma::cuda
