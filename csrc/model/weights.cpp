#include "model/weights.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <stdexcept>

#include "quant/quant.h"

namespace gemma {

static std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void ModelConfig::validate() const {
  auto need = [](bool ok, const char* field, const std::string& why) {
    if (!ok) throw std::invalid_argument(std::string("config field '") + field + "': " + why);
  };
  need(family >= 1 && family <= 3, "family", "must be 1, 2 or 3, got " + std::to_string(family));
  need(n_layers > 0 && n_layers <= kMaxLayers, "n_layers", "out of range: " + std::to_string(n_layers));
  need(d_model > 0 && d_model <= kMaxDModel, "d_model", "out of range: " + std::to_string(d_model));
  need(n_heads > 0 && n_heads <= kMaxHeads, "n_heads", "out of range: " + std::to_string(n_heads));
  need(n_kv_heads > 0 && n_kv_heads <= n_heads && n_heads % n_kv_heads == 0, "n_kv_heads",
       std::to_string(n_kv_heads) + " does not divide n_heads=" + std::to_string(n_heads));
  need(head_dim > 0 && head_dim % 2 == 0 && head_dim <= kMaxHeadDim, "head_dim",
       "must be even and positive, got " + std::to_string(head_dim));
  need(ffn_dim > 0 && ffn_dim <= kMaxFfn, "ffn_dim", "out of range: " + std::to_string(ffn_dim));
  need(vocab_size > 0 && vocab_size <= kMaxVocab, "vocab_size", "out of range: " + std::to_string(vocab_size));
  need(max_position > 0 && max_position <= kMaxPosition, "max_position",
       "must be in [1, " + std::to_string(kMaxPosition) + "], got " + std::to_string(max_position));
  // Scalars: NaN fails every comparison below; inf is caught by the finite() checks.
  auto finite = [](float v) { return std::isfinite(v); };
  need(rms_eps > 0 && rms_eps <= 1, "rms_eps", "must be a finite number in (0, 1], got " + std::to_string(rms_eps));
  need(embed_scale > 0 && finite(embed_scale), "embed_scale",
       "must be a finite number > 0, got " + std::to_string(embed_scale));
  need(query_scale > 0 && finite(query_scale), "query_scale",
       "must be a finite number > 0, got " + std::to_string(query_scale));
  need(attn_softcap >= 0 && finite(attn_softcap), "attn_softcap",
       "must be a finite number >= 0, got " + std::to_string(attn_softcap));
  need(final_softcap >= 0 && finite(final_softcap), "final_softcap",
       "must be a finite number >= 0, got " + std::to_string(final_softcap));
  need(sliding_window >= 0 && sliding_window <= kMaxPosition, "sliding_window",
       "must be in [0, " + std::to_string(kMaxPosition) + "], got " + std::to_string(sliding_window));
  need(layer_sliding.size() == size_t(n_layers), "layer_sliding",
       "has " + std::to_string(layer_sliding.size()) + " entries for " + std::to_string(n_layers) +
           " layers");
  bool any_sliding = false;
  for (auto s : layer_sliding) any_sliding |= s != 0;
  need(!any_sliding || sliding_window > 0, "sliding_window", "must be > 0 with sliding layers");
  need(rope_theta_global > 0 && finite(rope_theta_global), "rope_theta_global",
       "must be a finite number > 0, got " + std::to_string(rope_theta_global));
  need(rope_theta_local > 0 && finite(rope_theta_local), "rope_theta_local",
       "must be a finite number > 0, got " + std::to_string(rope_theta_local));
  need(rope_scale_global > 0 && finite(rope_scale_global), "rope_scale_global",
       "must be a finite number > 0, got " + std::to_string(rope_scale_global));
}

Model::Model(const std::string& path, const ModelConfig& config,
             const std::vector<TensorEntry>& tensors, uint64_t data_start, Device device)
    : config_(config), device_(device) {
  config_.validate();  // before mapping: a bad config needs no file
  file_ = std::make_shared<MappedFile>(path);
  const ModelConfig& c = config_;
  const uint64_t fsize = file_->size();

  std::map<std::string, const TensorEntry*> by_name;
  for (const auto& t : tensors) {
    if (!by_name.emplace(t.name, &t).second)
      throw std::runtime_error(path + ": tensor '" + t.name + "' appears twice");
    if (t.shape.empty() || t.shape.size() > 2)
      throw std::runtime_error(path + ": tensor '" + t.name + "' has rank " +
                               std::to_string(t.shape.size()) + " (expected 1 or 2)");
    for (int64_t d : t.shape)
      if (d <= 0) throw std::runtime_error(path + ": tensor '" + t.name + "' has shape " + shape_str(t.shape));
    const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1;
    const int64_t cols = t.shape.back();
    int64_t tb = 0;
    try {
      if (t.layout == Layout::Rows16 && t.shape.size() != 2)
        throw std::invalid_argument("layout rows16 needs a matrix");
      tb = quant::tensor_bytes(t.dtype, t.layout, rows, cols);
    } catch (const std::invalid_argument& e) {  // e.g. a K-quant row that is not whole super-blocks
      throw std::runtime_error(path + ": tensor '" + t.name + "' " + shape_str(t.shape) + ": " + e.what());
    }
    const uint64_t expect = uint64_t(tb);
    if (t.nbytes != expect)
      throw std::runtime_error(path + ": tensor '" + t.name + "' (" + dtype_name(t.dtype) + " " +
                               shape_str(t.shape) + ") has " + std::to_string(t.nbytes) +
                               " bytes, expected " + std::to_string(expect));
    if (t.offset < data_start)
      throw std::runtime_error(path + ": tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                               " lies before the data region (which starts at " + std::to_string(data_start) +
                               "); the file is corrupt");
    if (t.offset % 64 != 0)
      throw std::runtime_error(path + ": tensor '" + t.name + "' offset " + std::to_string(t.offset) +
                               " is not 64-byte aligned");
    if (t.offset > fsize || t.nbytes > fsize - t.offset)
      throw std::runtime_error(path + ": tensor '" + t.name + "' lies past the end of the file (needs " +
                               std::to_string(t.offset + t.nbytes) + " bytes, file has " +
                               std::to_string(fsize) + "); the file is truncated or corrupt");
  }

  // No two tensors share bytes: sorted by offset, each ends at or before the next begins.
  std::vector<const TensorEntry*> by_offset;
  for (const auto& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorEntry* a, const TensorEntry* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorEntry& a = *by_offset[i - 1];
    const TensorEntry& b = *by_offset[i];
    if (b.offset < a.offset + a.nbytes)  // no overflow: both lie inside the file (checked above)
      throw std::runtime_error(path + ": tensors '" + a.name + "' and '" + b.name + "' overlap (bytes " +
                               std::to_string(a.offset) + "+" + std::to_string(a.nbytes) + " and " +
                               std::to_string(b.offset) + "+" + std::to_string(b.nbytes) + "); the file is corrupt");
  }

  std::set<std::string> used;
  auto get = [&](const std::string& name, std::vector<int64_t> shape) -> const TensorEntry& {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw std::runtime_error(path + ": missing tensor '" + name + "'");
    const TensorEntry& t = *it->second;
    if (t.shape != shape)
      throw std::runtime_error(path + ": tensor '" + name + "' has shape " + shape_str(t.shape) +
                               ", the config requires " + shape_str(shape));
    used.insert(name);
    return t;
  };
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols) {
    const TensorEntry& t = get(name, {rows, cols});
    WeightView w;
    w.dtype = t.dtype;
    w.data = file_->data() + t.offset;
    w.rows = rows;
    w.cols = cols;
    w.row_bytes = quant::row_bytes(t.dtype, cols);
    w.layout = t.layout;
    weight_bytes_ += t.nbytes;
    return w;
  };
  // NAME, or its row slices NAME#0, NAME#1, ... (consecutive, covering exactly `rows` rows).
  auto sliced = [&](const std::string& name, int64_t rows, int64_t cols) {
    SlicedWeight s;
    s.rows = rows;
    s.cols = cols;
    if (by_name.count(name) || !by_name.count(name + "#0")) {
      s.slices.push_back(matrix(name, rows, cols));
      return s;
    }
    int64_t covered = 0;
    for (int i = 0; by_name.count(name + "#" + std::to_string(i)); ++i) {
      const std::string part = name + "#" + std::to_string(i);
      const TensorEntry& t = *by_name.at(part);
      if (t.shape.size() != 2 || t.shape[1] != cols || t.shape[0] > rows - covered)
        throw std::runtime_error(path + ": row slice '" + part + "' has shape " + shape_str(t.shape) + "; '" + name +
                                 "' needs " + std::to_string(rows) + " rows of " + std::to_string(cols) +
                                 " in all (" + std::to_string(covered) + " before this slice)");
      s.slices.push_back(matrix(part, t.shape[0], cols));
      covered += t.shape[0];
    }
    if (covered != rows)
      throw std::runtime_error(path + ": the row slices of '" + name + "' cover " + std::to_string(covered) +
                               " rows, the config requires " + std::to_string(rows));
    return s;
  };
  auto norm = [&](const std::string& name, int64_t n) {
    const TensorEntry& t = get(name, {n});
    if (t.dtype != DType::F32)
      throw std::runtime_error(path + ": norm tensor '" + name + "' must be f32, got " + dtype_name(t.dtype));
    const float* w = reinterpret_cast<const float*>(file_->data() + t.offset);
    std::vector<float> one_plus(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) one_plus[size_t(i)] = 1.0f + w[i];
    weight_bytes_ += t.nbytes;
    return one_plus;
  };

  embed_ = matrix("embed", c.vocab_size, c.d_model);
  final_norm_ = norm("final_norm", c.d_model);
  layers_.resize(size_t(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    LayerWeights& L = layers_[size_t(i)];
    L.qkv = sliced(p + "qkv", c.q_dim() + 2 * c.kv_dim(), c.d_model);
    L.o = matrix(p + "o", c.d_model, c.q_dim());
    L.gate_up = sliced(p + "gate_up", 2 * int64_t(c.ffn_dim), c.d_model);
    L.down = matrix(p + "down", c.d_model, c.ffn_dim);
    L.attn_norm = norm(p + "attn_norm", c.d_model);
    L.ffn_norm = norm(p + "ffn_norm", c.d_model);
    if (c.sandwich_norms) {
      L.post_attn_norm = norm(p + "post_attn_norm", c.d_model);
      L.post_ffn_norm = norm(p + "post_ffn_norm", c.d_model);
    }
    if (c.qk_norm) {
      L.q_norm = norm(p + "q_norm", c.head_dim);
      L.k_norm = norm(p + "k_norm", c.head_dim);
    }
  }
  for (const auto& t : tensors)
    if (!used.count(t.name))
      throw std::runtime_error(path + ": unexpected tensor '" + t.name + "' for this config");
}

}  // namespace gemma
