// backend_ops_cuda: the per-op tests of backend_ops.h for the CUDA backend, against CpuBackend
// pinned to the scalar kernels. Built with GEMMA_CUDA=ON and GEMMA_BUILD_TESTS=ON; exit status 0
// = all passed, 77 = skipped (no usable GPU: the reason is printed).
//
// The harness hands ops host pointers (like any Backend test), so HostCuda adapts: it copies each
// op's inputs to the device, runs CudaBackend on them, and copies the outputs back; weights and
// norm gains are uploaded for the one call and dropped; each host KV cache gets a device mirror
// (a store at position 0 of layer 0 starts a new one: the harness builds a fresh cache per case).
// Only f32/bf16/f16/int8/int4 weights and f32/f16/bf16 caches are covered: what the backend runs.
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "backend/device.h"
#include "cuda/check.h"
#include "cuda/cuda_backend.h"
#include "tests/cpp/backend_ops.h"

namespace gemma {
namespace {

class HostCuda : public Backend {
 public:
  explicit HostCuda(int device) : be_(std::make_shared<cuda::DeviceWeights>(device)) {}
  ~HostCuda() override { mirrors_.clear(); }

  const char* name() const override { return "cuda(host-adapted)"; }
  int n_threads() const override { return 1; }
  void set_n_threads(int) override {}

  void embed(const WeightView& table, const int32_t* tokens, int n, float scale, float* x, int64_t ldx) override {
    be_.weights().add(table, "test");
    Dev dx(*this, x, span(n, ldx, table.cols));
    be_.embed(table, tokens, n, scale, dx.p, ldx);
    dx.back();
    be_.weights().drop(table.data);
  }
  using Backend::matmul;
  void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy) override {
    be_.weights().add(W, "test");
    Dev dx(*this, X, size_t(T * W.cols)), dy(*this, Y, span(T, ldy, W.rows));
    be_.matmul(W, dx.p, T, dy.p, ldy);
    dy.back();
    be_.weights().drop(W.data);
  }
  void rms_norm(const float* x, int64_t ldx, float* out, int64_t ldo, int n, int heads, int dim,
                const float* one_plus_w, float eps) override {
    be_.weights().add(one_plus_w, dim);
    Dev dx(*this, x, span(n, ldx, int64_t(heads) * dim));
    if (out == x) {
      be_.rms_norm(dx.p, ldx, dx.p, ldo, n, heads, dim, one_plus_w, eps);
      dx.back_to(out);
    } else {
      Dev dout(*this, out, span(n, ldo, int64_t(heads) * dim));
      be_.rms_norm(dx.p, ldx, dout.p, ldo, n, heads, dim, one_plus_w, eps);
      dout.back();
    }
    be_.weights().drop(one_plus_w);
  }
  void rope_table(const float* inv_freq, int half, int pos0, int n, float* cs, int64_t ldcs) override {
    Dev d(*this, cs, span(n, ldcs, 2 * half));
    be_.rope_table(inv_freq, half, pos0, n, d.p, ldcs);
    d.back();
  }
  void rope(float* x, int64_t ldx, int n, int heads, int head_dim, const float* cs, int64_t ldcs) override {
    Dev dx(*this, x, span(n, ldx, int64_t(heads) * head_dim)), dc(*this, cs, span(n, ldcs, head_dim));
    be_.rope(dx.p, ldx, n, heads, head_dim, dc.p, ldcs);
    dx.back();
  }
  void store_kv(KVCache& kv, int layer, int pos0, int n, const float* k, const float* v, int64_t ld) override {
    std::unique_ptr<KVCache>& m = mirrors_[&kv];
    if (!m || (layer == 0 && pos0 == 0)) m.reset(new KVCache(kv, be_.memory()));
    m->reserve(pos0 + n);
    Dev dk(*this, k, span(n, ld, kv.kv_dim())), dv(*this, v, span(n, ld, kv.kv_dim()));
    be_.store_kv(*m, layer, pos0, n, dk.p, dv.p, ld);
    be_.synchronize();
  }
  void attention(const KVCache& kv, int layer, const AttentionParams& p, const float* q, int64_t ldq, int n, int pos0,
                 float* out, int64_t ldo) override {
    const int64_t w = int64_t(p.n_heads) * p.head_dim;
    Dev dq(*this, q, span(n, ldq, w)), dout(*this, out, span(n, ldo, w));
    be_.attention(*mirrors_.at(&kv), layer, p, dq.p, ldq, n, pos0, dout.p, ldo);
    dout.back();
  }
  void geglu(const float* gate, const float* up, int64_t ld_in, int n, int dim, bool tanh_approx, float* out,
             int64_t ldo) override {
    Dev dg(*this, gate, span(n, ld_in, dim)), du(*this, up, span(n, ld_in, dim)), dout(*this, out, span(n, ldo, dim));
    be_.geglu(dg.p, du.p, ld_in, n, dim, tanh_approx, dout.p, ldo);
    dout.back();
  }
  void softmax(float* x, int64_t ldx, int n, int len) override {
    Dev dx(*this, x, span(n, ldx, len));
    be_.softmax(dx.p, ldx, n, len);
    dx.back();
  }
  void soft_cap(float* x, int64_t count, float cap) override {
    Dev dx(*this, x, size_t(count));
    be_.soft_cap(dx.p, count, cap);
    dx.back();
  }
  void add(float* x, const float* y, int64_t count) override {
    Dev dx(*this, x, size_t(count)), dy(*this, y, size_t(count));
    be_.add(dx.p, dy.p, count);
    dx.back();
  }

 private:
  // Floats from the first row's start to the end of the last row's `width`.
  static size_t span(int64_t n, int64_t ld, int64_t width) { return n > 0 ? size_t((n - 1) * ld + width) : 0; }

  // A device copy of a host range, written back on request.
  struct Dev {
    Dev(HostCuda& o, const float* host, size_t n) : mem(o.be_.memory()), h(const_cast<float*>(host)), count(n) {
      p = static_cast<float*>(mem.alloc(n * sizeof(float)));
      if (n) GEMMA_CUDA_CHECK(cudaMemcpy(p, host, n * sizeof(float), cudaMemcpyHostToDevice));
    }
    ~Dev() { mem.free(p); }
    void back() { back_to(h); }
    void back_to(float* dst) { mem.to_host(dst, p, count * sizeof(float)); }
    MemorySpace& mem;
    float* h;
    size_t count;
    float* p = nullptr;
  };

  cuda::CudaBackend be_;
  std::map<const KVCache*, std::unique_ptr<KVCache>> mirrors_;
};

}  // namespace
}  // namespace gemma

int main(int argc, char** argv) {
  using namespace gemma;
  uint32_t seed = 1234;
  int device = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = uint32_t(std::stoul(argv[++i]));
    } else if (!std::strcmp(argv[i], "--device") && i + 1 < argc) {
      device = std::stoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: backend_ops_cuda [--device N] [--seed N]\n");
      return 2;
    }
  }
  if (cuda_devices().empty()) {
    std::printf("backend_ops_cuda: skipped: %s\n", cuda_unavailable_reason().c_str());
    return 77;
  }
  testing::Coverage cov;
  cov.weights = {DType::F32, DType::BF16, DType::F16, DType::Q8, DType::Q4};
  cov.kv = {KvDType::F32, KvDType::F16, KvDType::BF16};
  HostCuda be(device);
  CpuBackend ref(1, Isa::Scalar);
  const int failures = testing::BackendOpsTest(be, ref, seed, cov).run();
  std::printf("backend_ops_cuda: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
