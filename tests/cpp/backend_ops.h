// Per-op tests of a Backend, in the spirit of llama.cpp's test-backend-ops: every op of
// backend/backend.h run on random inputs of random and awkward shapes (odd sizes, K not a multiple
// of the block, T = 1 and T > 1, strided rows, every weight dtype, every KV cache dtype, wrapped
// sliding-window rings) by the backend under test and by a reference backend (CpuBackend pinned
// to the scalar kernels), outputs compared within a tolerance derived for each op below.
//
// Besides agreeing with the reference, a backend must honour the determinism rule (DESIGN.md):
// a token's outputs are the same bits whether it comes alone or in a chunk, and whatever the
// thread count. Those checks are exact.
//
// Notation for the tolerances: u = 2^-24 (float32 unit roundoff); gamma(m) = m u / (1 - m u), the
// classic bound on the relative error of any sum of m terms in float32, whatever the order
// (Higham, Accuracy and Stability of Numerical Algorithms, 3.1). Two computations of the same
// sum in different orders therefore differ by at most 2 gamma(m) sum |terms|.
//
// Over 400 lines: one header is all a new backend's test program includes, and each op's
// tolerance is derived next to its test.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "kernels/matmul.h"
#include "kernels/vec.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "quant/kquant.h"
#include "quant/quant.h"

namespace gemma::testing {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24
inline double gamma_n(double m) { return m * kU / (1.0 - m * kU); }

// What a backend supports (default: everything the CPU does); the rest is not tested on it.
struct Coverage {
  std::vector<DType> weights = {DType::F32,  DType::BF16, DType::F16,  DType::Q8,   DType::Q4,  DType::Q5_0,
                                DType::Q4_1, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  std::vector<KvDType> kv = {KvDType::F32, KvDType::F16, KvDType::BF16, KvDType::Q8};
};

class BackendOpsTest {
 public:
  BackendOpsTest(Backend& be, Backend& ref, uint32_t seed, Coverage cov = Coverage())
      : be_(be), ref_(ref), g_(seed), cov_(std::move(cov)) {}

  // Runs every op's tests; returns the number of failed checks.
  int run() {
    test_add();
    test_soft_cap();
    test_softmax();
    test_rms_norm();
    test_rope_table();
    test_rope();
    test_geglu();
    for (DType dt : cov_.weights) test_embed(dt, Layout::Rows);
    for (DType dt : cov_.weights) test_matmul(dt, Layout::Rows);
    for (DType dt : cov_.weights) {  // the kernel layout the converter writes for int8/int4
      if (dt != DType::Q8 && dt != DType::Q4) continue;
      test_embed(dt, Layout::Rows16);
      test_matmul(dt, Layout::Rows16);
    }
    for (KvDType kt : cov_.kv) test_attention(kt);
    std::printf("backend_ops %s vs %s: %d checks, %d failures\n", be_.name(), ref_.name(), checks_, failures_);
    return failures_;
  }

 private:
  Backend& be_;
  Backend& ref_;
  std::mt19937 g_;
  Coverage cov_;
  int checks_ = 0, failures_ = 0;

  // One failure message per (op, case) is enough: returns ok.
  bool check(bool ok, const char* fmt, ...) {
    ++checks_;
    if (ok) return true;
    ++failures_;
    std::printf("FAIL [%s] ", be_.name());
    va_list a;
    va_start(a, fmt);
    std::vprintf(fmt, a);
    va_end(a);
    std::printf("\n");
    return false;
  }

  std::vector<float> randn(size_t n, float scale = 1.f) {
    std::normal_distribution<float> nd(0.f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(g_);
    return v;
  }
  int randint(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_); }

  // Elementwise: |got - want| <= tol[i] for every i < n (tol empty: exact, bit for bit).
  bool close(const float* got, const float* want, size_t n, const std::vector<double>& tol, const char* what) {
    for (size_t i = 0; i < n; ++i) {
      const bool ok = tol.empty() ? std::memcmp(got + i, want + i, 4) == 0
                                  : std::fabs(double(got[i]) - double(want[i])) <= tol[i];
      if (!ok)
        return check(false, "%s: element %zu: %.9g vs reference %.9g (tolerance %s%.3g)", what, i, double(got[i]),
                     double(want[i]), tol.empty() ? "exact, " : "", tol.empty() ? 0.0 : tol[i]);
    }
    return check(true, "");
  }

  // ---- elementwise and per-row ops -------------------------------------------------------------

  // x + y: one IEEE rounding on any hardware, so exact.
  void test_add() {
    for (int64_t n : {1, 7, 16, 1001}) {
      auto x = randn(size_t(n)), y = randn(size_t(n), 3.f), a = x, b = x;
      be_.add(a.data(), y.data(), n);
      ref_.add(b.data(), y.data(), n);
      close(a.data(), b.data(), size_t(n), {}, ("add n=" + std::to_string(n)).c_str());
    }
  }

  // cap * tanh(x / cap): a division (or multiply by 1/cap: 1.5 u), tanh (a few ulps in any libm or
  // GPU math library) and a product: |error| <= 8 u |result| on either side, 16 u apart.
  void test_soft_cap() {
    for (int64_t n : {1, 9, 1000})
      for (float cap : {3.f, 30.f}) {
        auto x = randn(size_t(n), 2 * cap), a = x, b = x;
        be_.soft_cap(a.data(), n, cap);
        ref_.soft_cap(b.data(), n, cap);
        std::vector<double> tol(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) tol[size_t(i)] = 16 * kU * std::fabs(double(b[size_t(i)])) + 1e-30;
        close(a.data(), b.data(), size_t(n), tol, ("soft_cap n=" + std::to_string(n)).c_str());
      }
  }

  // softmax: exp(x - max) per element (a few ulps), a sum of len terms (gamma(len)), a division:
  // each side within (gamma(len) + 6 u) of exact relative to p_i, so 2 (gamma(len) + 6 u) p_i apart.
  void test_softmax() {
    for (int len : {1, 2, 17, 300})
      for (int n : {1, 3}) {
        const int64_t ld = len + 5;
        auto x = randn(size_t(n * ld), 4.f), a = x, b = x;
        be_.softmax(a.data(), ld, n, len);
        ref_.softmax(b.data(), ld, n, len);
        std::vector<double> tol(x.size(), 0.0);
        for (size_t i = 0; i < x.size(); ++i)
          tol[i] = int64_t(i) % ld < len ? 2 * (gamma_n(len) + 6 * kU) * double(b[i]) + 1e-30 : 0.0;
        close(a.data(), b.data(), a.size(), tol, ("softmax len=" + std::to_string(len)).c_str());
      }
  }

  // RMSNorm: mean of squares (a reduction of dim terms: gamma(dim) relative, smaller for the
  // reference, which sums in double), rsqrt (1-2 ulps), two products: each side within
  // (gamma(dim) / 2 + 4 u) |out| of exact, so tol = (gamma(dim) + 8 u) |out|.
  void test_rms_norm() {
    for (int dim : {1, 24, 80, 257})
      for (int heads : {1, 3})
        for (int n : {1, 5}) {
          const int64_t ldx = int64_t(heads) * dim + 7, ldo = int64_t(heads) * dim + 2;
          auto x = randn(size_t(n * ldx), 3.f), w = randn(size_t(dim), 0.5f);
          for (auto& v : w) v += 1.f;
          std::vector<float> a(size_t(n * ldo), -7.f), b = a;
          be_.rms_norm(x.data(), ldx, a.data(), ldo, n, heads, dim, w.data(), 1e-6f);
          ref_.rms_norm(x.data(), ldx, b.data(), ldo, n, heads, dim, w.data(), 1e-6f);
          std::vector<double> tol(a.size());
          for (size_t i = 0; i < a.size(); ++i) tol[i] = (gamma_n(dim) + 8 * kU) * std::fabs(double(b[i])) + 1e-30;
          const std::string what = "rms_norm dim=" + std::to_string(dim) + " heads=" + std::to_string(heads);
          close(a.data(), b.data(), a.size(), tol, what.c_str());  // gaps between rows (-7) must stay
          auto c = x, d = x;  // in place (qk-norm)
          be_.rms_norm(c.data(), ldx, c.data(), ldx, n, heads, dim, w.data(), 1e-6f);
          ref_.rms_norm(d.data(), ldx, d.data(), ldx, n, heads, dim, w.data(), 1e-6f);
          std::vector<double> tol2(c.size());
          for (size_t i = 0; i < c.size(); ++i) tol2[i] = (gamma_n(dim) + 8 * kU) * std::fabs(double(d[i])) + 1e-30;
          close(c.data(), d.data(), c.size(), tol2, (what + " in place").c_str());
        }
  }

  // Rope angles: float(pos) * inv_freq is one IEEE product (exact same bits anywhere: DESIGN.md
  // wants float32 angles), then cos and sin, |error| <= 2 ulp(1) = 2^-22 absolute in any decent
  // math library, so 2^-21 apart.
  void test_rope_table() {
    for (int half : {1, 12, 64})
      for (int pos0 : {0, 37, 8000}) {
        std::vector<float> inv(static_cast<size_t>(half));
        for (int i = 0; i < half; ++i) inv[size_t(i)] = float(1.0 / std::pow(10000.0, double(2 * i) / (2 * half)));
        const int n = 9;
        const int64_t ld = 2 * half + 3;
        std::vector<float> a(size_t(n * ld), 5.f), b = a;
        be_.rope_table(inv.data(), half, pos0, n, a.data(), ld);
        ref_.rope_table(inv.data(), half, pos0, n, b.data(), ld);
        std::vector<double> tol(a.size());
        for (size_t i = 0; i < a.size(); ++i) tol[i] = int64_t(i) % ld < 2 * half ? 4 * 2 * kU : 0.0;
        close(a.data(), b.data(), a.size(), tol, ("rope_table half=" + std::to_string(half)).c_str());
      }
  }

  // Rotation x' = a cos - b sin, y' = b cos + a sin: two products and a sum, each side within
  // 2 u (|a cos| + |b sin|) (fused or not), so 4 u (...) apart.
  void test_rope() {
    for (int hd : {2, 24, 256})
      for (int heads : {1, 4})
        for (int n : {1, 6}) {
          const int half = hd / 2;
          const int64_t ldx = int64_t(heads) * hd + 5, ldcs = 2 * half + 1;
          auto x = randn(size_t(n * ldx), 2.f), cs = randn(size_t(n * ldcs));
          for (int t = 0; t < n; ++t)  // a real (cos, sin) pair per frequency
            for (int i = 0; i < half; ++i) {
              const float ang = cs[size_t(t * ldcs + i)] * 3.f;
              cs[size_t(t * ldcs + i)] = std::cos(ang), cs[size_t(t * ldcs + half + i)] = std::sin(ang);
            }
          auto a = x, b = x;
          be_.rope(a.data(), ldx, n, heads, hd, cs.data(), ldcs);
          ref_.rope(b.data(), ldx, n, heads, hd, cs.data(), ldcs);
          std::vector<double> tol(a.size(), 0.0);  // the gaps between rows stay untouched: exact
          for (int t = 0; t < n; ++t)
            for (int h = 0; h < heads; ++h)
              for (int i = 0; i < half; ++i) {
                const size_t at = size_t(t * ldx + h * hd + i);
                const double c = cs[size_t(t * ldcs + i)], s = cs[size_t(t * ldcs + half + i)];
                const double m = std::fabs(x[at] * c) + std::fabs(x[at + size_t(half)] * s) +
                                 std::fabs(x[at + size_t(half)] * c) + std::fabs(x[at] * s);
                tol[at] = tol[at + size_t(half)] = 4 * kU * m + 1e-30;
              }
          close(a.data(), b.data(), a.size(), tol, ("rope hd=" + std::to_string(hd)).c_str());
        }
  }

  // GeGLU: the SIMD GELU uses a polynomial exp with |error| < 1e-6 relative (kernels/vec.h), the
  // rest is a few roundings: |error| <= 1e-6 |gate * up| + 1e-7 absolute (the tails, where GELU
  // is ~0 or ~gate), the bound kernel_tests.cpp holds every ISA to. Multithreaded over tokens:
  // the thread count must not change a bit.
  void test_geglu() {
    for (int dim : {1, 7, 100, 1003})
      for (int n : {1, 3, 70})
        for (bool tanh_approx : {true, false}) {
          const int64_t ld_in = 2 * int64_t(dim) + 3, ldo = dim + 1;
          auto gu = randn(size_t(n * ld_in), 4.f);
          gu[0] = 60.f;  // far in the tails
          if (dim > 1) gu[1] = -60.f;
          std::vector<float> a(size_t(n * ldo), 9.f), b = a;
          be_.geglu(gu.data(), gu.data() + dim, ld_in, n, dim, tanh_approx, a.data(), ldo);
          ref_.geglu(gu.data(), gu.data() + dim, ld_in, n, dim, tanh_approx, b.data(), ldo);
          std::vector<double> tol(a.size(), 0.0);
          for (int t = 0; t < n; ++t)
            for (int i = 0; i < dim; ++i)
              tol[size_t(t * ldo + i)] =
                  1e-6 * std::fabs(double(gu[size_t(t * ld_in + i)]) * gu[size_t(t * ld_in + dim + i)]) + 1e-7;
          const std::string what = std::string("geglu ") + (tanh_approx ? "tanh" : "erf") + " dim=" +
                                   std::to_string(dim) + " n=" + std::to_string(n);
          close(a.data(), b.data(), a.size(), tol, what.c_str());
          const int keep = be_.n_threads();
          be_.set_n_threads(keep == 1 ? 2 : 1);
          std::vector<float> c(a.size(), 9.f);
          be_.geglu(gu.data(), gu.data() + dim, ld_in, n, dim, tanh_approx, c.data(), ldo);
          be_.set_n_threads(keep);
          close(c.data(), a.data(), a.size(), {}, (what + " other thread count").c_str());
        }
  }

  // ---- weights ---------------------------------------------------------------------------------

  struct Weights {
    DType dt;
    std::vector<uint8_t> bytes;  // in the Rows layout
    std::vector<uint8_t> bytes16;  // the same rows in the Rows16 layout (when asked for)
    WeightView view, rows_view;  // in the layout asked for; in the Rows layout
    std::vector<float> deq;  // [rows][cols] dequantised (quant::dequantize_row, the one definition)
    std::vector<float> min;  // [rows][cols / 32]: |min| of each 32-block (w = scale * lvl - min)
  };

  // A [rows, cols] tensor in `dt`: float and int8/int4 formats from Gaussian values through the
  // converter's quantiser; the GGUF formats as random blocks (every bit pattern of the levels,
  // sane f16 scales), as a GGUF file may hold anything. Layout Rows16 (int8/int4 only): the
  // same rows interleaved in groups of 16 (quant.h).
  Weights make_weights(DType dt, int64_t rows, int64_t cols, Layout layout = Layout::Rows) {
    Weights w;
    w.dt = dt;
    const int64_t rb = quant::row_bytes(dt, cols);
    w.bytes.assign(size_t(rows * rb), 0);
    if (!quant::is_native_gguf(dt)) {
      auto f = randn(size_t(rows * cols));
      quant::quantize_rows(dt, f.data(), rows, cols, w.bytes.data(), 1);
    } else {
      const int bb = quant::gguf_block_bytes(dt);
      std::normal_distribution<float> nd(0.f, dt == DType::Q6_K ? 3e-4f : dt == DType::Q5_K ? 5e-4f : 0.02f);
      std::uniform_int_distribution<int> byte(0, 255);
      for (auto& v : w.bytes) v = uint8_t(byte(g_));
      for (size_t i = 0; i < w.bytes.size() / size_t(bb); ++i) {
        uint8_t* blk = w.bytes.data() + i * size_t(bb);
        const int n_f16 = dt == DType::Q5_0 || dt == DType::Q6_K ? 1 : 2;
        for (int k = 0; k < n_f16; ++k) {
          const uint16_t h = f32_to_f16(std::fabs(nd(g_)));
          std::memcpy(blk + (dt == DType::Q6_K ? 208 : 2 * k), &h, 2);
        }
      }
    }
    w.view = w.rows_view = WeightView{dt, w.bytes.data(), rows, cols, rb, Layout::Rows};
    if (layout == Layout::Rows16) {
      w.bytes16.assign(size_t(quant::tensor_bytes(dt, layout, rows, cols)), 0);
      quant::interleave_rows16(dt, w.bytes.data(), rows, cols, w.bytes16.data());
      w.view = WeightView{dt, w.bytes16.data(), rows, cols, rb, layout};
    }
    w.deq.resize(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r) dequantize_row(w.view, r, &w.deq[size_t(r * cols)]);
    const int64_t nb = quant::n_blocks(cols);
    w.min.assign(size_t(rows * nb), 0.f);
    if (dt == DType::Q4_1 || dt == DType::Q5_1 || dt == DType::Q4_K || dt == DType::Q5_K)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < nb; ++b) {
          const uint8_t* row = w.bytes.data() + r * rb;
          float m;
          if (dt == DType::Q4_1 || dt == DType::Q5_1) {
            m = quant::load_f16(row + b * quant::gguf_block_bytes(dt) + 2);
          } else {
            const uint8_t* blk = row + (b / 8) * quant::gguf_block_bytes(dt);
            int sc, mi;
            quant::q4k_scale_min(blk + 4, int(b % 8), &sc, &mi);
            m = quant::load_f16(blk + 2) * float(mi);
          }
          w.min[size_t(r * nb + b)] = std::fabs(m);
        }
    return w;
  }

  static int64_t block_of(DType dt) { return quant::is_native_gguf(dt) ? quant::gguf_block_weights(dt) : 1; }

  // Embedding rows: dequantisation has one definition (quant::dequantize_row, which the converter
  // shares), then one product by the scale: exact, in either layout.
  void test_embed(DType dt, Layout layout) {
    const int64_t cols = dt == DType::F32 || dt == DType::BF16 || dt == DType::F16 || dt == DType::Q8 ||
                                 dt == DType::Q4
                             ? 75
                             : 2 * block_of(dt);
    const int64_t vocab = 19, ldx = cols + 4;
    Weights w = make_weights(dt, vocab, cols, layout);
    const std::vector<int32_t> tokens = {3, 0, 18, 3, 7};
    for (int n : {1, 5}) {
      std::vector<float> a(size_t(n * ldx), -3.f), b = a;
      be_.embed(w.view, tokens.data(), n, 8.94427f, a.data(), ldx);
      ref_.embed(w.rows_view, tokens.data(), n, 8.94427f, b.data(), ldx);
      const std::string what = std::string("embed ") + dtype_name(dt) + " " + layout_name(layout);
      close(a.data(), b.data(), a.size(), {}, what.c_str());
    }
  }

  // Y = X W^T. The reference and the backend quantise the activations of int8/int4/GGUF weights
  // the same way (blocks of 32, kernels/matmul.h), so both sum the same terms; they may differ
  // only in the order of the float additions (and in how a block's scale product is associated):
  //  - int8 and int4 follow the canonical arithmetic of kernels/quant_canonical.h on every ISA
  //    (one fused multiply-add per block, blocks in order): exact, bit for bit, in either layout
  //    (the Rows16 product is compared with the reference's on the same rows in the Rows layout).
  //  - float weights: K products summed in any order, |difference| <= 2 gamma(K + 1) sum |x w|.
  //  - other block formats: per 32-block an exact integer dot, then <= 3 float terms (the scaled
  //    dot, the min's correction), summed over the blocks: 2 gamma(3 nb + 2) sum |terms|, plus
  //    4 u sum |terms| for the scale products, with sum |terms| <= sum_k (|w_k| + 2 |min_b|) |xq_k|
  //    and |xq_k| <= |x_k| + dx_b / 2 (the activation rounding step).
  // Then, on the backend alone: every token alone equals its row of the batch, and another thread
  // count gives the same bits (the determinism rule).
  void test_matmul(DType dt, Layout layout) {
    struct Case { int64_t rows, cols, T; };
    const bool gguf = quant::is_native_gguf(dt);
    const int64_t B = block_of(dt);
    std::vector<Case> cases;
    if (!gguf) {
      cases = {{1, 7, 1}, {5, 33, 1}, {37, 75, 1}, {67, 300, 3}, {130, 257, 17}, {70, 96, 40}, {130, 1001, 3},
               {200, 64, 2}, {64, 2049, 1}};
    } else {
      cases = {{1, B, 1}, {5, 3 * B, 6}, {37, 2 * B, 1}, {67, 4 * B, 9}, {130, B, 17}, {130, 8 * B, 2}};
    }
    const bool exact = dt == DType::Q8 || dt == DType::Q4;
    for (const Case& c : cases) {
      const int64_t R = c.rows, K = c.cols, T = c.T, ldy = R + 3, nb = quant::n_blocks(K);
      Weights w = make_weights(dt, R, K, layout);
      auto x = randn(size_t(T * K));
      for (int64_t t = 0; t < T; ++t) x[size_t(t * K + (t * 7) % K)] *= 20.f;  // outliers: block scales matter
      std::vector<float> a(size_t(T * ldy), -1.f), b = a;
      be_.matmul(w.view, x.data(), T, a.data(), ldy);
      ref_.matmul(w.rows_view, x.data(), T, b.data(), ldy);
      std::vector<double> tol;
      if (!exact) {
        tol.assign(a.size(), 0.0);  // the columns past R must stay untouched
        for (int64_t t = 0; t < T; ++t) {
          std::vector<double> step(static_cast<size_t>(nb));
          for (int64_t bl = 0; bl < nb; ++bl) {
            double amax = 0;
            for (int64_t k = bl * 32; k < std::min(K, bl * 32 + 32); ++k)
              amax = std::max(amax, std::fabs(double(x[size_t(t * K + k)])));
            step[size_t(bl)] = amax / 127.0 / 2.0;
          }
          for (int64_t r = 0; r < R; ++r) {
            double mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double wk = std::fabs(double(w.deq[size_t(r * K + k)]));
              const double xk = std::fabs(double(x[size_t(t * K + k)]));
              mag += is_quantized(dt) ? (wk + 2 * w.min[size_t(r * nb + k / 32)]) * (xk + step[size_t(k / 32)])
                                      : wk * xk;
            }
            tol[size_t(t * ldy + r)] =
                is_quantized(dt) ? (2 * gamma_n(3.0 * nb + 2) + 4 * kU) * mag : 2 * gamma_n(K + 1) * mag;
          }
        }
      }
      const std::string what = std::string("matmul ") + dtype_name(dt) + " " + layout_name(layout) +
                               " R=" + std::to_string(R) + " K=" + std::to_string(K) + " T=" + std::to_string(T);
      close(a.data(), b.data(), a.size(), tol, what.c_str());
      // Determinism: each token alone, and another thread count, give the batch's bits.
      for (int64_t t = 0; t < T; ++t) {
        std::vector<float> one(static_cast<size_t>(R));
        be_.matmul(w.view, x.data() + t * K, 1, one.data(), R);
        if (!close(one.data(), a.data() + t * ldy, size_t(R), {}, (what + " token alone vs batch").c_str())) break;
      }
      const int keep = be_.n_threads();
      be_.set_n_threads(keep == 1 ? 2 : 1);
      std::vector<float> c2(a.size(), -1.f);
      be_.matmul(w.view, x.data(), T, c2.data(), ldy);
      be_.set_n_threads(keep);
      close(c2.data(), a.data(), a.size(), {}, (what + " other thread count").c_str());
    }
  }

  // ---- the KV cache: store_kv and attention ----------------------------------------------------

  // Attention of n new tokens after pos0 cached ones, on a two-layer cache (layer 0 global, layer
  // 1 sliding with a ring small enough to wrap). Each backend stores into its own cache (the
  // stored element type is part of what it must get right) and attends over it.
  //
  // Tolerance: the reference scores s_j = scale q.k_j (head_dim products) may differ by
  // delta_j <= 2 gamma(hd + 1) scale sum_i |q_i k_ji|; soft-cap is 1-Lipschitz; softmax turns a
  // score perturbation of at most delta into relative probability errors <= e^(2 delta) - 1
  // (~2 delta); the weighted sum over nk keys adds 2 gamma(nk + 1). So with V = max_j |v_ji|:
  //   |out_i - ref_i| <= (2.01 * 2 delta + 2 gamma(nk + 1) + 16 u) V
  // (16 u: exp and the softmax division on both sides). int8 caches store levels with a scale
  // per block of 32 values (keys in the rotated basis: q . k as stored, which is what attention
  // computes): the same bound with the dequantised values. The reference itself is also held to a
  // double-precision computation from the values it stored (same bound), and on the backend a
  // token attended alone equals its row of the chunk, at any thread count.
  void test_attention(KvDType kt) {
    struct Geo { int heads, kv_heads, hd; };
    for (const Geo& geo : {Geo{4, 1, 24}, Geo{4, 2, 32}, Geo{3, 3, 40}, Geo{8, 1, 256}})
      for (float softcap : {0.f, 5.f})
        for (int pos0 : {0, 13, 70})
          for (int n : {1, 7, 40}) {
            ModelConfig c;
            c.n_layers = 2;
            c.n_heads = geo.heads;
            c.n_kv_heads = geo.kv_heads;
            c.head_dim = geo.hd;
            c.sliding_window = 8;
            c.layer_sliding = {0, 1};
            // A sliding ring holds window + chunk positions (the session's rule): pos0 + n up to 110 wraps it.
            const int max_seq = 128, ring = c.sliding_window + 40;
            KVCache kv_be(c, max_seq, ring, kt), kv_ref(c, max_seq, ring, kt);
            kv_be.reserve(pos0 + n);
            kv_ref.reserve(pos0 + n);
            const int q_dim = geo.heads * geo.hd, kv_dim = geo.kv_heads * geo.hd;
            const int64_t ld = q_dim + 2 * kv_dim + 3;
            for (int layer = 0; layer < 2; ++layer) {
              // Rows q | k | v per token, for the cached prefix (in chunks of 16) and the new tokens.
              auto rows = randn(size_t((pos0 + n) * ld));
              for (int s = 0; s < pos0 + n;) {
                const int m = s < pos0 ? std::min(16, pos0 - s) : n;
                const float* k = rows.data() + size_t(s) * ld + q_dim;
                be_.store_kv(kv_be, layer, s, m, k, k + kv_dim, ld);
                ref_.store_kv(kv_ref, layer, s, m, k, k + kv_dim, ld);
                s += m;
              }
              AttentionParams p;
              p.n_heads = geo.heads;
              p.n_kv_heads = geo.kv_heads;
              p.head_dim = geo.hd;
              p.window = layer == 1 ? c.sliding_window : 0;
              p.query_scale = 1.f / std::sqrt(float(geo.hd));
              p.softcap = softcap;
              const float* q = rows.data() + size_t(pos0) * ld;
              const int64_t ldo = q_dim + 1;
              std::vector<float> a(size_t(n * ldo), -5.f), b = a;
              be_.attention(kv_be, layer, p, q, ld, n, pos0, a.data(), ldo);
              ref_.attention(kv_ref, layer, p, q, ld, n, pos0, b.data(), ldo);
              const std::string what = std::string("attention kv=") + kv_dtype_name(kt) + " heads=" +
                                       std::to_string(geo.heads) + "/" + std::to_string(geo.kv_heads) + " hd=" +
                                       std::to_string(geo.hd) + " layer=" + std::to_string(layer) + " pos0=" +
                                       std::to_string(pos0) + " n=" + std::to_string(n) +
                                       (softcap > 0 ? " softcap" : "");
              std::vector<double> want;
              std::vector<double> tol = attention_bound(kv_ref, layer, p, q, ld, n, pos0, ldo, &want);
              close(a.data(), b.data(), a.size(), tol, what.c_str());
              bool ok = true;
              for (size_t i = 0; i < b.size() && ok; ++i)
                ok = std::fabs(double(b[i]) - want[i]) <= tol[i];
              check(ok, "%s: the reference backend is off the double-precision attention", what.c_str());
              // Determinism: each token alone equals its row of the chunk; another thread count too.
              for (int t = 0; t < n; ++t) {
                std::vector<float> one(static_cast<size_t>(q_dim));
                be_.attention(kv_be, layer, p, q + t * ld, ld, 1, pos0 + t, one.data(), q_dim);
                if (!close(one.data(), a.data() + t * ldo, size_t(q_dim), {}, (what + " token alone").c_str())) break;
              }
              const int keep = be_.n_threads();
              be_.set_n_threads(keep == 1 ? 2 : 1);
              std::vector<float> c2(a.size(), -5.f);
              be_.attention(kv_be, layer, p, q, ld, n, pos0, c2.data(), ldo);
              be_.set_n_threads(keep);
              close(c2.data(), a.data(), a.size(), {}, (what + " other thread count").c_str());
            }
          }
  }

  // The stored value of element i of a cached row, as float (KVCache::Rows' definition).
  static double stored(const KVCache::Rows& r, int64_t j, int i) {
    switch (r.dtype) {
      case KvDType::F32: return reinterpret_cast<const float*>(r.data)[j * r.stride + i];
      case KvDType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(r.data)[j * r.stride + i]);
      case KvDType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(r.data)[j * r.stride + i]);
      case KvDType::Q8:
        return double(reinterpret_cast<const int8_t*>(r.data)[j * r.stride + i]) *
               double(r.scale[j * r.scale_stride + i / vec::kKvBlock]);
    }
    return 0;
  }

  // Attention in double from the values in `kv`, and the tolerance of each output (see above).
  static std::vector<double> attention_bound(const KVCache& kv, int layer, const AttentionParams& p, const float* q,
                                             int64_t ldq, int n, int pos0, int64_t ldo, std::vector<double>* want) {
    const int hd = p.head_dim, group = p.n_heads / p.n_kv_heads, cap = kv.capacity(layer);
    std::vector<double> tol(size_t(n * ldo), 0.0);
    want->assign(size_t(n * ldo), -5.0);
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < p.n_heads; ++h) {
        const int g = h / group, pos = pos0 + t;
        const int lo = p.window > 0 ? std::max(0, pos - p.window + 1) : 0, nk = pos - lo + 1;
        const float* qh = q + t * ldq + int64_t(h) * hd;
        std::vector<double> s(static_cast<size_t>(nk)), vmax(static_cast<size_t>(hd), 0.0);
        double delta = 0;
        for (int j = 0; j < nk; ++j) {
          const KVCache::Rows kr = kv.keys(layer, g, (lo + j) % cap);
          double dot = 0, mag = 0;
          for (int i = 0; i < hd; ++i) {
            const double ki = stored(kr, 0, i);
            dot += qh[i] * ki;
            mag += std::fabs(qh[i] * ki);
          }
          s[size_t(j)] = dot * p.query_scale;
          if (p.softcap > 0) s[size_t(j)] = p.softcap * std::tanh(s[size_t(j)] / p.softcap);
          delta = std::max(delta, 2 * gamma_n(hd + 1) * p.query_scale * mag + 4 * kU * std::fabs(s[size_t(j)]));
        }
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0;
        for (auto& v : s) sum += (v = std::exp(v - m));
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (int j = 0; j < nk; ++j) {
            const double vi = stored(kv.values(layer, g, (lo + j) % cap), 0, i);
            o += s[size_t(j)] / sum * vi;
            vmax[size_t(i)] = std::max(vmax[size_t(i)], std::fabs(vi));
          }
          const size_t at = size_t(t * ldo + int64_t(h) * hd + i);
          (*want)[at] = o;
          tol[at] = (2.01 * 2 * delta + 2 * gamma_n(nk + 1) + 16 * kU) * vmax[size_t(i)] + 1e-30;
        }
      }
    return tol;
  }
};

}  // namespace gemma::testing
