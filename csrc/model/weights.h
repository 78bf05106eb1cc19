// The model's weights, bound in place to the mapped .gcpp file after validating every
// tensor's bounds, size and shape against the file and the config.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/device.h"
#include "io/mapped_file.h"
#include "kernels/matmul.h"
#include "model/config.h"

namespace gemma {

// One entry of the file's tensor table (parsed from the header by the Python loader).
struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
  Layout layout = Layout::Rows;
};

// A fused matrix (qkv, gate_up) stored as one tensor, or as consecutive row slices `NAME#0`,
// `NAME#1`, ... of different dtypes (docs/format.md): a GGUF whose q/k/v or gate/up parts had
// different block types keeps each part exact. One matmul per slice, into the slice's columns.
struct SlicedWeight {
  std::vector<WeightView> slices;
  int64_t rows = 0, cols = 0;
};

struct LayerWeights {
  SlicedWeight qkv;      // [(n_heads + 2 * n_kv_heads) * head_dim, d_model]: q, k, v stacked
  WeightView o;          // [d_model, n_heads * head_dim]
  SlicedWeight gate_up;  // [2 * ffn_dim, d_model]: gate rows then up rows
  WeightView down;     // [d_model, ffn_dim]
  // RMSNorm gains stored as (1 + w), the factor the norm multiplies by.
  std::vector<float> attn_norm;       // before attention
  std::vector<float> post_attn_norm;  // after attention (sandwich norms only)
  std::vector<float> ffn_norm;        // before the MLP
  std::vector<float> post_ffn_norm;   // after the MLP (sandwich norms only)
  std::vector<float> q_norm, k_norm;  // per head (qk_norm only)
};

class Model {
 public:
  // data_start: where the file's data region begins; every tensor must lie at or after it.
  // device: where sessions of this model run (backend/device.h; checked when one is made).
  Model(const std::string& path, const ModelConfig& config, const std::vector<TensorEntry>& tensors,
        uint64_t data_start = 0, Device device = Device());

  const ModelConfig& config() const { return config_; }
  const WeightView& embed() const { return embed_; }  // [vocab, d_model], also the output layer
  const std::vector<float>& final_norm() const { return final_norm_; }
  const LayerWeights& layer(int i) const { return layers_[size_t(i)]; }
  const std::string& path() const { return file_->path(); }
  uint64_t weight_bytes() const { return weight_bytes_; }
  const Device& device() const { return device_; }

 private:
  std::shared_ptr<MappedFile> file_;
  ModelConfig config_;
  WeightView embed_;
  std::vector<float> final_norm_;
  std::vector<LayerWeights> layers_;
  uint64_t weight_bytes_ = 0;
  Device device_;
};

}  // namespace gemma
