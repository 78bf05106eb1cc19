#include "backend/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/ops.h"
#include "kernels/vec.h"
#include "model/kv_cache.h"

namespace gemma {

static std::optional<Isa> checked(std::optional<Isa> isa) {
  if (isa) require_available(*isa);
  return isa;
}

CpuBackend::CpuBackend(int n_threads, std::optional<Isa> isa)
    : isa_(checked(isa)), pool_(new ThreadPool(std::max(1, n_threads))) {}

const char* CpuBackend::name() const {
  switch (isa()) {
    case Isa::Scalar: return "cpu/scalar";
    case Isa::Avx2: return "cpu/avx2";
    case Isa::Avx512: return "cpu/avx512";
    case Isa::Neon: return "cpu/neon";
    case Isa::Amx: return "cpu/amx";
  }
  return "cpu";
}

void CpuBackend::set_n_threads(int n) {
  // The new pool is complete before the old one goes (a failure leaves the backend as it was);
  // attention's per-thread score rows are re-laid out for it at the next call.
  std::unique_ptr<ThreadPool> pool(new ThreadPool(std::max(1, n)));
  pool_.swap(pool);
  scores_stride_ = 0;
}

void CpuBackend::embed(const WeightView& table, const int32_t* tokens, int n, float scale, float* x, int64_t ldx) {
  for (int t = 0; t < n; ++t) {
    float* xt = x + t * ldx;
    dequantize_row(table, tokens[t], xt);
    for (int64_t i = 0; i < table.cols; ++i) xt[i] *= scale;
  }
}

void CpuBackend::matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy) {
  matmul_isa(isa(), W, X, T, Y, ldy, *pool_);
}

void CpuBackend::rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim,
                          const float* one_plus_w, float eps) {
  for (int t = 0; t < n; ++t)
    for (int h = 0; h < heads; ++h)
      vec::rms_norm_isa(isa(), x + t * ldx + int64_t(h) * dim, one_plus_w, dim, eps, out + t * ldo + int64_t(h) * dim);
}

void CpuBackend::rope_table(const float* inv_freq, int half, int pos0, int n, float* cs, int64_t ldcs) {
  for (int t = 0; t < n; ++t) {
    float* c = cs + t * ldcs;
    const float p = float(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float a = p * inv_freq[i];
      c[i] = std::cos(a);
      c[half + i] = std::sin(a);
    }
  }
}

void CpuBackend::rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs) {
  const int half = head_dim / 2;
  for (int t = 0; t < n; ++t) {
    const float* c = cs + t * ldcs;
    for (int h = 0; h < heads; ++h) ops::rope_rotate_half(x + t * ldx + int64_t(h) * head_dim, head_dim, c, c + half);
  }
}

void CpuBackend::store_kv(KVCache& kv, int layer, int pos0, int n, const float* k, const float* v, int64_t ld) {
  for (int t = 0; t < n; ++t) kv.store(layer, kv.slot(layer, pos0 + t), k + t * ld, v + t * ld);
}

void CpuBackend::reserve_scores(int n_keys, int group) {
  const int64_t have = scores_stride_ && group == scores_group_ ? scores_stride_ / group : 0;
  if (n_keys <= have) return;
  const int64_t len = std::max<int64_t>({int64_t(n_keys), have + have / 2, 256});
  scores_stride_ = len * group;
  scores_group_ = group;
  scores_.assign(size_t(pool_->size()) * size_t(scores_stride_), 0.f);
}

// The element type behind each KvDType, for the typed vector kernels.
template <typename F>
static void with_rows(const KVCache::Rows& r, F&& f) {
  switch (r.dtype) {
    case KvDType::F32: f(reinterpret_cast<const float*>(r.data)); break;
    case KvDType::BF16: f(reinterpret_cast<const uint16_t*>(r.data)); break;
    case KvDType::F16: f(reinterpret_cast<const vec::Half*>(r.data)); break;
    case KvDType::Q8: f(reinterpret_cast<const int8_t*>(r.data)); break;
  }
}

void CpuBackend::attention(const KVCache& kv, int l, const AttentionParams& p, const float* q, int64_t ldq, int n,
                           int pos0, float* out, int64_t ldo) {
  const Isa isa = this->isa();
  const int hd = p.head_dim, group = p.n_heads / p.n_kv_heads, cap = kv.capacity(l);
  reserve_scores(pos0 + n, group);

  // Threads only pay off with enough work; tiny models would spend more time waking them.
  // (token, KV head) pairs are handed out one at a time (their costs differ with the position);
  // the `group` query heads of a KV head go together, so each K and V row is read once for them.
  const bool parallel = int64_t(n) * p.n_heads * (pos0 + n) * hd > (int64_t(1) << 15);
  const int pairs = n * p.n_kv_heads;
  const int64_t stride = scores_stride_ / group;  // scores of one head
  // keys[j] . q_h for the query heads of KV head g, slots s0 .. s0 + m - 1
  const auto dot_keys = [&](int g, int s0, int m, const float* qg, float* scores) {
    const KVCache::Rows r = kv.keys(l, g, s0);
    with_rows(r, [&](auto K) {
      vec::dot_rows_multi_isa(isa, qg, hd, group, K, r.stride, r.scale, r.scale_stride, m, hd, scores, stride);
    });
  };
  const auto add_values = [&](int g, int s0, int m, const float* scores, float* og) {
    const KVCache::Rows r = kv.values(l, g, s0);
    with_rows(r, [&](auto V) {
      vec::weighted_sum_rows_multi_isa(isa, scores, stride, group, V, r.stride, r.scale, r.scale_stride, m, hd, og,
                                       hd);
    });
  };
  std::atomic<int> next{0};
  const auto worker = [&](int thread) {
    float* scores = &scores_[size_t(thread) * size_t(scores_stride_)];
    for (int i = next.fetch_add(1, std::memory_order_relaxed); i < pairs;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      const int t = i / p.n_kv_heads, g = i % p.n_kv_heads;
      const int pos = pos0 + t;
      const int lo = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
      const int nk = pos - lo + 1;
      // Keys lo..pos; a sliding layer's ring may wrap, splitting them into two runs of slots.
      const float* qg = q + t * ldq + int64_t(g) * group * hd;
      const int s0 = lo % cap, first = std::min(nk, cap - s0);
      dot_keys(g, s0, first, qg, scores);
      if (first < nk) dot_keys(g, 0, nk - first, qg, scores + first);
      for (int h = 0; h < group; ++h) vec::attention_softmax_isa(isa, scores + h * stride, nk, p.query_scale, p.softcap);
      float* og = out + t * ldo + int64_t(g) * group * hd;
      std::fill(og, og + size_t(group) * hd, 0.f);
      add_values(g, s0, first, scores, og);
      if (first < nk) add_values(g, 0, nk - first, scores + first, og);
    }
  };
  if (parallel) {
    pool_->run(pool_->size(), worker);
  } else {
    worker(0);
  }
}

void CpuBackend::geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx,
                       float* out, int64_t ldo) {
  const Isa isa = this->isa();
  const auto tokens = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      if (tanh_approx) {
        vec::geglu_tanh_isa(isa, gate + t * ld_in, up + t * ld_in, dim, out + t * ldo);
      } else {
        ops::geglu(gate + t * ld_in, up + t * ld_in, dim, false, out + t * ldo);
      }
    }
  };
  if (int64_t(n) * dim > 65536) {
    pool_->parallel_for(n, 1, tokens);
  } else {
    tokens(0, n);
  }
}

void CpuBackend::softmax(float* x, int64_t ldx, int n, int len) {
  for (int t = 0; t < n; ++t) ops::softmax(x + t * ldx, len);
}

void CpuBackend::soft_cap(float* x, int64_t count, float cap) { ops::soft_cap(x, count, cap); }

void CpuBackend::add(float* x, const float* y, int64_t count) {
  for (int64_t i = 0; i < count; ++i) x[i] += y[i];
}

}  // namespace gemma
