// The CPU backend: the ops of backend.h on the SIMD kernels (csrc/kernels/), with this backend's
// own persistent thread pool. Threads split outputs (rows of a matmul, tokens, (token, KV head)
// pairs of attention), never a reduction, so results do not depend on the thread count.
#pragma once
#include <memory>
#include <optional>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/thread_pool.h"
#include "kernels/isa.h"

namespace gemma {

class CpuBackend : public Backend {
 public:
  // isa: the kernels to run (tests pin one); none = the process-wide active_isa() at each op, which
  // GEMMA_CPP_ISA and gemma_cpp._core.set_isa choose.
  explicit CpuBackend(int n_threads, std::optional<Isa> isa = std::nullopt);

  Isa isa() const { return isa_ ? *isa_ : active_isa(); }

  const char* name() const override;
  int n_threads() const override { return pool_->size(); }
  void set_n_threads(int n) override;

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
  void reserve_scores(int n_keys, int group);

  std::optional<Isa> isa_;
  std::unique_ptr<ThreadPool> pool_;  // the caller is one of its threads
  // Attention's scratch: per thread, one row of scores per query head of a KV group, as long as the
  // longest key run so far (grown x1.5 at a time: memory follows the context actually used).
  std::vector<float> scores_;
  int64_t scores_stride_ = 0;  // floats per thread (0: re-laid out at the next attention)
  int scores_group_ = 0;
};

}  // namespace gemma
