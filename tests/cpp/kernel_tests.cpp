// Self-contained kernel tests: every ISA available at run time against the scalar reference,
// and the scalar reference against a double-precision float reference, for every dtype over
// odd sizes; plus quantisation round-trip bounds. Exit status 0 = all passed.
//
// Built by CMake with GEMMA_BUILD_TESTS=ON (ctest runs it) and cross-built for aarch64 by
// tests/cpp/run_neon_qemu.sh (runs under qemu-aarch64).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/isa.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/vec.h"
#include "quant/kquant.h"
#include "quant/quant.h"

using namespace gemma;

static int g_failures = 0, g_checks = 0;

#define CHECK(cond, ...)                               \
  do {                                                 \
    ++g_checks;                                        \
    if (!(cond)) {                                     \
      ++g_failures;                                    \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__); \
      std::printf(__VA_ARGS__);                        \
      std::printf("\n");                               \
    }                                                  \
  } while (0)

static std::vector<float> randn(std::mt19937& g, size_t n, float scale = 1.f) {
  std::normal_distribution<float> nd(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(g);
  return v;
}

struct Case { int64_t rows, cols, T; };

static void test_matmul(DType dt, const Case& c, std::mt19937& g) {
  const int64_t R = c.rows, K = c.cols, T = c.T;
  std::vector<float> w = randn(g, size_t(R * K));
  std::vector<float> x = randn(g, size_t(T * K));
  // A few activation outliers, as real models have, so per-block scales matter.
  for (int64_t t = 0; t < T; ++t) x[size_t(t * K + (t * 7) % K)] *= 20.f;
  const int64_t rb = quant::row_bytes(dt, K);
  std::vector<uint8_t> wq(size_t(R * rb));
  quant::quantize_rows(dt, w.data(), R, K, wq.data(), 1);
  WeightView W{dt, wq.data(), R, K, rb};
  std::vector<float> wd(size_t(R * K));
  for (int64_t r = 0; r < R; ++r) dequantize_row(W, r, &wd[size_t(r * K)]);

  // Scalar reference vs a double-precision product of the dequantised weights and float x.
  // Float weights: only summation rounding, bounded by ~K * eps * sum|w x|. Quantised weights:
  // the activations are also quantised (|x - dx qx| <= dx / 2 per element, dx = max|x_block|/127),
  // so |error| <= sum_k |w_k| dx_b(k) / 2 exactly, plus the same rounding term.
  const int64_t ldy = R + 3;  // a row stride wider than the row count, as the model uses
  std::vector<float> ys(size_t(T * ldy), -1.f);
  matmul_isa(Isa::Scalar, W, x.data(), T, ys.data(), ldy, 1);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t r = 0; r < R; ++r) {
      double ref = 0, mag = 0, qbound = 0;
      for (int64_t b = 0; b * 32 < K; ++b) {
        double amax = 0;
        for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k)
          amax = std::max(amax, std::fabs(double(x[size_t(t * K + k)])));
        for (int64_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) {
          const double wk = wd[size_t(r * K + k)], xk = x[size_t(t * K + k)];
          ref += wk * xk;
          mag += std::fabs(wk * xk);
          qbound += std::fabs(wk) * amax / 127.0 / 2.0;
        }
      }
      const double tol = 2e-6 * double(K) * mag / 64 + 1e-6 * mag + (is_quantized(dt) ? 1.001 * qbound : 0.0);
      const double got = ys[size_t(t * ldy + r)];
      CHECK(std::fabs(got - ref) <= tol, "%s scalar vs float ref R=%ld K=%ld T=%ld t=%ld r=%ld: %g vs %g (tol %g)",
            dtype_name(dt), long(R), long(K), long(T), long(t), long(r), got, ref, tol);
    }
    CHECK(ys[size_t(t * ldy + R)] == -1.f, "wrote past the rows");
  }

  // Every ISA vs scalar. Quantised: the canonical arithmetic (quant_canonical.h), so the same
  // bits. Float: same products, only the order of float additions differs, so agreement is to a
  // few ulps of sum |terms|. Either way each token alone (decode) equals its row of the batch.
  for (Isa isa : available_isas()) {
    if (isa == Isa::Scalar) continue;
    for (int threads : {1, 2}) {
      std::vector<float> y(size_t(T * ldy), -1.f);
      matmul_isa(isa, W, x.data(), T, y.data(), ldy, threads);
      double worst = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t r = 0; r < R; ++r) {
          double mag = 0;
          for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(wd[size_t(r * K + k)]) * x[size_t(t * K + k)]);
          const double diff = std::fabs(double(y[size_t(t * ldy + r)]) - ys[size_t(t * ldy + r)]);
          const double tol = is_quantized(dt) ? 0.0 : 1e-5 * mag + 1e-6;
          if (diff > tol) worst = std::max(worst, diff / tol);
          CHECK(diff <= tol, "%s %s vs scalar R=%ld K=%ld T=%ld thr=%d t=%ld r=%ld: %g vs %g",
                isa_name(isa), dtype_name(dt), long(R), long(K), long(T), threads, long(t), long(r),
                double(y[size_t(t * ldy + r)]), double(ys[size_t(t * ldy + r)]));
          if (diff > tol) return;  // one message per case is enough
        }
      for (int64_t t = 0; t < T; ++t) CHECK(y[size_t(t * ldy + R)] == -1.f, "%s wrote past the rows", isa_name(isa));
      for (int64_t t = 0; t < T; ++t) {
        std::vector<float> y1(size_t(R), -1.f);
        matmul_isa(isa, W, x.data() + t * K, 1, y1.data(), R, threads);
        CHECK(std::memcmp(y1.data(), y.data() + t * ldy, size_t(R) * 4) == 0,
              "%s %s token %ld alone differs from the batch of %ld", isa_name(isa), dtype_name(dt), long(t), long(T));
      }
    }
  }

  // The Rows16 kernel layout (int8/int4) only moves bytes: every ISA, the scalar reference
  // included, gives the Rows scalar bits, in a batch and token by token, and writes no row
  // of the padding.
  if (dt != DType::Q8 && dt != DType::Q4) return;
  std::vector<uint8_t> w16(size_t(quant::tensor_bytes(dt, Layout::Rows16, R, K)));
  quant::interleave_rows16(dt, wq.data(), R, K, w16.data());
  WeightView W16 = W;
  W16.data = w16.data();
  W16.layout = Layout::Rows16;
  for (Isa isa : available_isas()) {
    std::vector<float> y(size_t(T * ldy), -1.f);
    matmul_isa(isa, W16, x.data(), T, y.data(), ldy, 2);
    for (int64_t t = 0; t < T; ++t) {
      CHECK(std::memcmp(y.data() + t * ldy, ys.data() + t * ldy, size_t(R) * 4) == 0,
            "%s %s rows16 R=%ld K=%ld T=%ld: token %ld differs from the rows layout", isa_name(isa), dtype_name(dt),
            long(R), long(K), long(T), long(t));
      CHECK(y[size_t(t * ldy + R)] == -1.f, "%s rows16 wrote past the rows", isa_name(isa));
      std::vector<float> y1(size_t(R), -1.f);
      matmul_isa(isa, W16, x.data() + t * K, 1, y1.data(), R, 1);
      CHECK(std::memcmp(y1.data(), ys.data() + t * ldy, size_t(R) * 4) == 0, "%s %s rows16 token %ld alone differs",
            isa_name(isa), dtype_name(dt), long(t));
    }
  }
}

// Round trip: the stored block scale must do at least as well (sum of squared errors) as the
// naive max-abs scale, and every element must be within the format's resolution.
static void test_roundtrip(DType dt, std::mt19937& g) {
  const int64_t R = 9, K = 333;  // 11 blocks, the last one partial (13 columns)
  std::vector<float> w = randn(g, size_t(R * K));
  w[5] = 40.f;  // an outlier in block 0 of row 0
  for (int64_t k = 0; k < K; ++k) w[size_t(3 * K + k)] = 0.f;  // an all-zero row
  const int64_t rb = quant::row_bytes(dt, K);
  CHECK(rb == 11 * (dt == DType::Q8 ? 34 : 18), "row_bytes %ld", long(rb));
  std::vector<uint8_t> q(size_t(R * rb));
  quant::quantize_rows(dt, w.data(), R, K, q.data(), 2);
  std::vector<float> back(static_cast<size_t>(K));
  const int qmin = dt == DType::Q8 ? -127 : -8, qmax = dt == DType::Q8 ? 127 : 7;
  double sse = 0, sse_naive = 0;
  for (int64_t r = 0; r < R; ++r) {
    quant::dequantize_row(dt, q.data() + r * rb, K, back.data());
    for (int64_t b = 0; b * 32 < K; ++b) {
      const int64_t k1 = std::min(K, b * 32 + 32);
      float amax = 0, xm = 0;
      for (int64_t k = b * 32; k < k1; ++k)
        if (std::fabs(w[size_t(r * K + k)]) > amax) amax = std::fabs(w[size_t(r * K + k)]), xm = w[size_t(r * K + k)];
      // Naive: the largest magnitude maps to the longest end of the range.
      const float dn = f16_to_f32(f32_to_f16(xm / float(-qmin > qmax ? qmin : qmax)));
      for (int64_t k = b * 32; k < k1; ++k) {
        const float x = w[size_t(r * K + k)];
        float qn = dn != 0.f ? std::nearbyint(x / dn) : 0.f;
        qn = std::min(std::max(qn, float(qmin)), float(qmax));
        sse_naive += double(x - dn * qn) * (x - dn * qn);
        const double e = double(back[size_t(k)]) - x;
        sse += e * e;
        // Resolution bound: half a step of the widest scale the search may pick, or clipping.
        const double bound = amax * (dt == DType::Q8 ? 1.0 / 126.0 : 1.0 / 7.0);
        CHECK(std::fabs(e) <= bound + 1e-12, "%s roundtrip r=%ld k=%ld x=%g back=%g", dtype_name(dt),
              long(r), long(k), double(x), double(back[size_t(k)]));
      }
    }
    if (r == 3)
      for (int64_t k = 0; k < K; ++k) CHECK(back[size_t(k)] == 0.f, "zero row decodes to %g", double(back[size_t(k)]));
  }
  CHECK(sse <= sse_naive * 1.0001, "%s search SSE %g > naive %g", dtype_name(dt), sse, sse_naive);
  std::printf("  %s round trip: SSE %.4g vs naive max-abs %.4g (%.1f%% lower)\n", dtype_name(dt), sse,
              sse_naive, 100.0 * (1 - sse / sse_naive));
}

// Attention vector kernels: every ISA against the scalar reference (float sums in another order:
// relative tolerance a few float ulps times the number of terms).
static void test_vec(std::mt19937& g) {
  for (int64_t n : {1, 7, 8, 24, 33, 256, 257})
    for (int64_t nk : {1, 3, 17}) {
      const int64_t stride = n + 5;
      auto q = randn(g, size_t(n)), K = randn(g, size_t(nk * stride)), p = randn(g, size_t(nk));
      std::vector<float> ref(static_cast<size_t>(nk)), got(static_cast<size_t>(nk));
      vec::scalar::dot_rows(q.data(), K.data(), stride, nk, n, ref.data());
      std::vector<float> wref(static_cast<size_t>(n), 0.5f), wgot(static_cast<size_t>(n));
      vec::scalar::weighted_sum_rows(p.data(), K.data(), stride, nk, n, wref.data());
      for (Isa isa : available_isas()) {
        vec::dot_rows_isa(isa, q.data(), K.data(), stride, nk, n, got.data());
        for (int64_t j = 0; j < nk; ++j)
          CHECK(std::fabs(got[size_t(j)] - ref[size_t(j)]) <= 1e-5f * float(n) + 1e-6f,
                "%s dot_rows n=%ld nk=%ld j=%ld: %g vs %g", isa_name(isa), long(n), long(nk), long(j),
                double(got[size_t(j)]), double(ref[size_t(j)]));
        std::fill(wgot.begin(), wgot.end(), 0.5f);
        vec::weighted_sum_rows_isa(isa, p.data(), K.data(), stride, nk, n, wgot.data());
        for (int64_t i = 0; i < n; ++i)
          CHECK(std::fabs(wgot[size_t(i)] - wref[size_t(i)]) <= 1e-5f * float(nk) + 1e-6f,
                "%s weighted_sum_rows n=%ld nk=%ld i=%ld", isa_name(isa), long(n), long(nk), long(i));
      }
    }
}

// Largest block scale of row j (int8 rows: a scale per block of vec::kKvBlock values).
static float row_scale_max(const std::vector<float>& scale, int64_t ss, int64_t n, int64_t j) {
  float m = 0.f;
  for (int64_t b = 0; b < (n + vec::kKvBlock - 1) / vec::kKvBlock; ++b) m = std::max(m, scale[size_t(j * ss + b)]);
  return m;
}

// The typed-row kernels of the KV cache (bf16 and f16 rows; int8 rows with a scale per block): every ISA
// against the scalar reference, and the scalar reference against the f32 kernel on the same
// values widened to float (exactly representable, so only the summation order could differ: the
// reference uses the same order, hence equality).
static void test_vec_typed(std::mt19937& g) {
  std::uniform_int_distribution<int> lv(-127, 127);
  for (int64_t n : {1, 7, 8, 24, 33, 256, 257})
    for (int64_t nk : {1, 3, 17}) {
      const int64_t stride = n + 5;
      auto q = randn(g, size_t(n)), p = randn(g, size_t(nk)), Kf = randn(g, size_t(nk * stride));
      std::vector<uint16_t> Kb(Kf.size());
      std::vector<int8_t> K8(Kf.size());
      const int64_t ss = (n + vec::kKvBlock - 1) / vec::kKvBlock + 1;  // scales of a row, and one unused
      std::vector<float> Kbf(Kf.size()), K8f(Kf.size()), scale(size_t(nk * ss));
      for (size_t i = 0; i < Kf.size(); ++i) {
        Kb[i] = f32_to_bf16(Kf[i]);
        Kbf[i] = bf16_to_f32(Kb[i]);
        K8[i] = int8_t(lv(g));
        K8f[i] = float(K8[i]);
      }
      for (auto& s : scale) s = std::fabs(randn(g, 1)[0]) * 0.01f;
      std::vector<float> ref(static_cast<size_t>(nk)), ref_f(static_cast<size_t>(nk)), got(static_cast<size_t>(nk));
      vec::scalar::dot_rows_t<uint16_t>(q.data(), Kb.data(), stride, nullptr, 0, nk, n, ref.data());
      vec::scalar::dot_rows(q.data(), Kbf.data(), stride, nk, n, ref_f.data());
      CHECK(ref == ref_f, "bf16 dot_rows reference differs from f32 on the widened values n=%ld", long(n));
      std::vector<float> wref(static_cast<size_t>(n), 0.5f), wgot(static_cast<size_t>(n));
      vec::scalar::weighted_sum_rows_t<int8_t>(p.data(), K8.data(), stride, scale.data(), ss, nk, n, wref.data());
      std::vector<float> ref8(static_cast<size_t>(nk));
      vec::scalar::dot_rows_t<int8_t>(q.data(), K8.data(), stride, scale.data(), ss, nk, n, ref8.data());
      // The reference's block scales against the dequantised values in double: value i of row j
      // is scale[j * ss + i / kKvBlock] * level.
      for (int64_t j = 0; j < nk; ++j) {
        double d = 0.0, mag = 0.0;
        for (int64_t i = 0; i < n; ++i) {
          const double v = double(scale[size_t(j * ss + i / vec::kKvBlock)]) * K8f[size_t(j * stride + i)];
          d += double(q[size_t(i)]) * v, mag += std::fabs(double(q[size_t(i)]) * v);
        }
        CHECK(std::fabs(ref8[size_t(j)] - d) <= 1e-5 * mag + 1e-7, "int8 dot_rows reference vs double n=%ld j=%ld",
              long(n), long(j));
      }
      for (int64_t i = 0; i < n; ++i) {
        double w = 0.5, mag = 0.5;
        for (int64_t j = 0; j < nk; ++j) {
          const double v = double(scale[size_t(j * ss + i / vec::kKvBlock)]) * K8f[size_t(j * stride + i)];
          w += double(p[size_t(j)]) * v, mag += std::fabs(double(p[size_t(j)]) * v);
        }
        CHECK(std::fabs(wref[size_t(i)] - w) <= 1e-5 * mag + 1e-7, "int8 weighted_sum reference vs double i=%ld",
              long(i));
      }
      for (Isa isa : available_isas()) {
        vec::dot_rows_multi_isa(isa, q.data(), 0, 1, Kb.data(), stride, nullptr, 0, nk, n, got.data(), 0);
        for (int64_t j = 0; j < nk; ++j)
          CHECK(std::fabs(got[size_t(j)] - ref[size_t(j)]) <= 1e-5f * float(n) + 1e-6f,
                "%s dot_rows_bf16 n=%ld nk=%ld j=%ld", isa_name(isa), long(n), long(nk), long(j));
        vec::dot_rows_multi_isa(isa, q.data(), 0, 1, K8.data(), stride, scale.data(), ss, nk, n, got.data(), 0);
        for (int64_t j = 0; j < nk; ++j)
          CHECK(std::fabs(got[size_t(j)] - ref8[size_t(j)]) <=
                    (1e-5f * float(n) + 1e-6f) * 127.f * row_scale_max(scale, ss, n, j),
                "%s dot_rows_q8 n=%ld nk=%ld j=%ld", isa_name(isa), long(n), long(nk), long(j));
        std::fill(wgot.begin(), wgot.end(), 0.5f);
        vec::weighted_sum_rows_multi_isa(isa, p.data(), 0, 1, K8.data(), stride, scale.data(), ss, nk, n, wgot.data(), 0);
        for (int64_t i = 0; i < n; ++i)
          CHECK(std::fabs(wgot[size_t(i)] - wref[size_t(i)]) <= 1e-5f * float(nk) + 1e-6f,
                "%s weighted_sum_rows_q8 n=%ld nk=%ld i=%ld", isa_name(isa), long(n), long(nk), long(i));
        {  // f16 rows: against the f32 kernels on the widened values
          std::vector<vec::Half> Kh(Kf.size());
          std::vector<float> Khf(Kf.size());
          for (size_t i = 0; i < Kf.size(); ++i) Kh[i].bits = f32_to_f16(Kf[i]), Khf[i] = f16_to_f32(Kh[i].bits);
          std::vector<float> href(static_cast<size_t>(nk)), wh(static_cast<size_t>(n), 0.5f), whref(static_cast<size_t>(n), 0.5f);
          vec::scalar::dot_rows(q.data(), Khf.data(), stride, nk, n, href.data());
          vec::dot_rows_multi_isa(isa, q.data(), 0, 1, Kh.data(), stride, nullptr, 0, nk, n, got.data(), 0);
          for (int64_t j = 0; j < nk; ++j)
            CHECK(std::fabs(got[size_t(j)] - href[size_t(j)]) <= 1e-5f * float(n) + 1e-6f,
                  "%s dot_rows_f16 n=%ld nk=%ld j=%ld", isa_name(isa), long(n), long(nk), long(j));
          vec::scalar::weighted_sum_rows(p.data(), Khf.data(), stride, nk, n, whref.data());
          vec::weighted_sum_rows_multi_isa(isa, p.data(), 0, 1, Kh.data(), stride, nullptr, 0, nk, n, wh.data(), 0);
          for (int64_t i = 0; i < n; ++i)
            CHECK(std::fabs(wh[size_t(i)] - whref[size_t(i)]) <= 1e-5f * float(nk) + 1e-6f,
                  "%s weighted_sum_rows_f16 n=%ld nk=%ld i=%ld", isa_name(isa), long(n), long(nk), long(i));
        }
        std::fill(wgot.begin(), wgot.end(), 0.5f);
        std::vector<float> wref_b(static_cast<size_t>(n), 0.5f);
        vec::scalar::weighted_sum_rows(p.data(), Kbf.data(), stride, nk, n, wref_b.data());
        vec::weighted_sum_rows_multi_isa(isa, p.data(), 0, 1, Kb.data(), stride, nullptr, 0, nk, n, wgot.data(), 0);
        for (int64_t i = 0; i < n; ++i)
          CHECK(std::fabs(wgot[size_t(i)] - wref_b[size_t(i)]) <= 1e-5f * float(nk) + 1e-6f,
                "%s weighted_sum_rows_bf16 n=%ld nk=%ld i=%ld", isa_name(isa), long(n), long(nk), long(i));
      }
    }
}

// Several heads against the same rows (grouped-query attention): each head's result must be
// exactly that of the one-head kernel on the same ISA (attention's determinism relies on it).
template <typename E>
static void check_multi_heads(std::mt19937& g, const std::vector<E>& K, int64_t stride, const float* scale,
                              int64_t ss, int64_t nk, int64_t n, const char* what) {
  for (int nq : {1, 3, 4, 7}) {
    auto Q = randn(g, size_t(nq * (n + 2))), P = randn(g, size_t(nq * (nk + 1)));
    for (Isa isa : available_isas()) {
      std::vector<float> got(static_cast<size_t>(nq * (nk + 1)), 0.f), one(static_cast<size_t>(nk));
      vec::dot_rows_multi_isa(isa, Q.data(), n + 2, nq, K.data(), stride, scale, ss, nk, n, got.data(), nk + 1);
      std::vector<float> wgot(static_cast<size_t>(nq * (n + 3)), 0.25f), wone(static_cast<size_t>(n));
      vec::weighted_sum_rows_multi_isa(isa, P.data(), nk + 1, nq, K.data(), stride, scale, ss, nk, n, wgot.data(),
                                       n + 3);
      for (int h = 0; h < nq; ++h) {
        vec::dot_rows_multi_isa(isa, Q.data() + h * (n + 2), 0, 1, K.data(), stride, scale, ss, nk, n, one.data(), 0);
        CHECK(std::memcmp(one.data(), got.data() + h * (nk + 1), size_t(nk) * 4) == 0,
              "%s %s dot_rows_multi head %d of %d differs from one head (n=%ld nk=%ld)", isa_name(isa), what, h, nq,
              long(n), long(nk));
        std::fill(wone.begin(), wone.end(), 0.25f);
        vec::weighted_sum_rows_multi_isa(isa, P.data() + h * (nk + 1), 0, 1, K.data(), stride, scale, ss, nk, n,
                                         wone.data(), 0);
        CHECK(std::memcmp(wone.data(), wgot.data() + h * (n + 3), size_t(n) * 4) == 0,
              "%s %s weighted_sum_rows_multi head %d of %d differs from one head", isa_name(isa), what, h, nq);
      }
      // AVX-512 (and AMX, which runs it) computes the AVX2 kernels' bits, in zmm (vec_avx512.cpp)
      if (vector_isa(isa) == Isa::Avx512) {
        std::vector<float> got2(got.size(), 0.f), wgot2(wgot.size(), 0.25f);
        vec::dot_rows_multi_isa(Isa::Avx2, Q.data(), n + 2, nq, K.data(), stride, scale, ss, nk, n, got2.data(), nk + 1);
        vec::weighted_sum_rows_multi_isa(Isa::Avx2, P.data(), nk + 1, nq, K.data(), stride, scale, ss, nk, n,
                                         wgot2.data(), n + 3);
        CHECK(std::memcmp(got.data(), got2.data(), got.size() * 4) == 0,
              "%s %s dot_rows_multi differs from AVX2 (nq=%d n=%ld nk=%ld)", isa_name(isa), what, nq, long(n), long(nk));
        CHECK(std::memcmp(wgot.data(), wgot2.data(), wgot.size() * 4) == 0,
              "%s %s weighted_sum_rows_multi differs from AVX2 (nq=%d n=%ld nk=%ld)", isa_name(isa), what, nq, long(n),
              long(nk));
      }
      // and one head equals the scalar reference to float rounding
      std::vector<float> ref(static_cast<size_t>(nk));
      vec::dot_rows_multi_isa(Isa::Scalar, Q.data(), 0, 1, K.data(), stride, scale, ss, nk, n, ref.data(), 0);
      for (int64_t j = 0; j < nk; ++j)
        CHECK(std::fabs(got[size_t(j)] - ref[size_t(j)]) <=
                  1e-4f * float(n) * (scale ? 127.f * *std::max_element(scale + j * ss, scale + (j + 1) * ss) : 1.f) + 1e-5f,
              "%s %s dot_rows_multi vs scalar j=%ld: %g vs %g", isa_name(isa), what, long(j), double(got[size_t(j)]),
              double(ref[size_t(j)]));
    }
  }
}

static void test_vec_multi(std::mt19937& g) {
  std::uniform_int_distribution<int> lv(-127, 127);
  for (int64_t n : {7, 24, 40, 72, 100, 256})  // 16-chunks, 64-column sweeps, an 8-step, a scalar tail
    for (int64_t nk : {1, 5, 33}) {
      const int64_t stride = n + 3;
      auto Kf = randn(g, size_t(nk * stride));
      std::vector<uint16_t> Kb(Kf.size());
      std::vector<vec::Half> Kh(Kf.size());
      std::vector<int8_t> K8(Kf.size());
      for (size_t i = 0; i < Kf.size(); ++i)
        Kb[i] = f32_to_bf16(Kf[i]), Kh[i].bits = f32_to_f16(Kf[i]), K8[i] = int8_t(lv(g));
      const int64_t ss = (n + vec::kKvBlock - 1) / vec::kKvBlock + 2;
      std::vector<float> scale(size_t(ss * nk));
      for (auto& s : scale) s = 0.001f + std::fabs(randn(g, 1)[0]) * 0.01f;
      check_multi_heads(g, Kf, stride, nullptr, 0, nk, n, "f32");
      check_multi_heads(g, Kb, stride, nullptr, 0, nk, n, "bf16");
      check_multi_heads(g, Kh, stride, nullptr, 0, nk, n, "f16");
      check_multi_heads(g, K8, stride, scale.data(), ss, nk, n, "int8");
    }
}

// Activation quantisation: every ISA's version gives the reference's bits (the canonical
// arithmetic of the int8/int4 kernels starts from these integers).
static void test_quantize_activations(std::mt19937& g) {
  for (int64_t K : {1, 31, 32, 33, 64, 100, 640, 2049})
    for (int64_t T : {1, 3}) {
      auto X = randn(g, size_t(T * K));
      for (int64_t i = 0; i < T * K; i += 7) X[size_t(i)] *= 40.f;  // outliers
      for (int64_t i = 0; i < std::min<int64_t>(32, T * K); ++i) X[size_t(i)] = i % 3 ? 0.f : -0.f;  // a zero block
      if (T * K > 40) X[40] = -X[40];
      const int64_t nb = quant::n_blocks(K);
      std::vector<int8_t> q0(size_t(T * nb * 32), 99), q1(size_t(T * nb * 32), 98);
      std::vector<float> d0(size_t(T * nb)), d1(size_t(T * nb));
      std::vector<int32_t> s0(size_t(T * nb)), s1(size_t(T * nb));
      quantize_activations(X.data(), T, K, q0.data(), d0.data(), s0.data());
      for (Isa isa : available_isas()) {
        quantize_activations_isa(isa, X.data(), T, K, q1.data(), d1.data(), s1.data());
        CHECK(q0 == q1 && s0 == s1 && std::memcmp(d0.data(), d1.data(), d0.size() * 4) == 0,
              "%s quantize_activations differs from the reference (K=%ld T=%ld)", isa_name(isa), long(K), long(T));
      }
    }
}

// GeGLU (tanh GELU): SIMD exp/tanh against std::tanh, over the range activations take.
static void test_geglu(std::mt19937& g) {
  for (int64_t n : {1, 7, 8, 100, 1003}) {
    auto gate = randn(g, size_t(n), 4.f), up = randn(g, size_t(n));
    gate[0] = 60.f;  // far in the tails: exp saturates, tanh must still be +-1
    if (n > 1) gate[1] = -60.f;
    std::vector<float> ref(static_cast<size_t>(n)), got(static_cast<size_t>(n));
    ops::geglu(gate.data(), up.data(), n, true, ref.data());
    for (Isa isa : available_isas()) {
      vec::geglu_tanh_isa(isa, gate.data(), up.data(), n, got.data());
      for (int64_t i = 0; i < n; ++i)
        CHECK(std::fabs(got[size_t(i)] - ref[size_t(i)]) <=
                  1e-6f * std::fabs(gate[size_t(i)] * up[size_t(i)]) + 1e-7f,
              "%s geglu n=%ld i=%ld g=%g: %g vs %g", isa_name(isa), long(n), long(i),
              double(gate[size_t(i)]), double(got[size_t(i)]), double(ref[size_t(i)]));
    }
  }
}

// RMSNorm: every ISA gives the reference's bits (ops::rms_norm), any length (the 8-wide loop,
// the tail, a row shorter than 8), rows with large and tiny values.
static void test_rms_norm(std::mt19937& g) {
  for (int64_t n : {1, 5, 8, 13, 256, 640, 1003}) {
    auto x = randn(g, size_t(n), 3.f), w = randn(g, size_t(n));
    x[0] = 1e4f;
    if (n > 2) x[2] = 1e-6f;
    std::vector<float> ref(static_cast<size_t>(n)), got(static_cast<size_t>(n));
    ops::rms_norm(x.data(), w.data(), n, 1e-6f, ref.data());
    for (Isa isa : available_isas()) {
      vec::rms_norm_isa(isa, x.data(), w.data(), n, 1e-6f, got.data());
      CHECK(std::memcmp(got.data(), ref.data(), size_t(n) * 4) == 0, "%s rms_norm n=%ld differs from the reference",
            isa_name(isa), long(n));
    }
  }
}

// Native GGUF formats (q4_1, q5_0, q5_1, q4_k, q5_k, q6_k): random blocks (every quant bit pattern, sane f16
// scales). Every ISA against the scalar reference (same integers; float additions reordered), the
// scalar reference against a double product of the dequantised weights (activation-rounding
// bound), and DETERMINISM: T tokens at once equal each token alone, bit for bit, per ISA.
static void test_kquant(DType dt, int64_t R, int64_t nblk, int64_t T, std::mt19937& g) {
  const int qk = quant::gguf_block_weights(dt), bb = quant::gguf_block_bytes(dt);
  const int64_t K = nblk * qk, rb = quant::row_bytes(dt, K);
  CHECK(rb == nblk * bb, "%s row_bytes", dtype_name(dt));
  std::vector<uint8_t> wq(size_t(R * rb));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.f, dt == DType::Q6_K ? 3e-4f : dt == DType::Q5_K ? 5e-4f : 0.02f);
  for (auto& v : wq) v = uint8_t(byte(g));
  for (int64_t i = 0; i < R * nblk; ++i) {
    uint8_t* blk = wq.data() + i * bb;
    const int n_f16 = dt == DType::Q5_0 || dt == DType::Q6_K ? 1 : 2;
    for (int k = 0; k < n_f16; ++k) {
      const uint16_t h = f32_to_f16(std::fabs(nd(g)));
      std::memcpy(blk + (dt == DType::Q6_K ? 208 : 2 * k), &h, 2);
    }
  }
  WeightView W{dt, wq.data(), R, K, rb};
  std::vector<float> wd(size_t(R * K));
  for (int64_t r = 0; r < R; ++r) dequantize_row(W, r, &wd[size_t(r * K)]);
  std::vector<float> x = randn(g, size_t(T * K));
  for (int64_t t = 0; t < T; ++t) x[size_t(t * K + (t * 13) % K)] *= 25.f;
  std::vector<float> ys(size_t(T * R));
  matmul_isa(Isa::Scalar, W, x.data(), T, ys.data(), R, 1);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) {
      double ref = 0, mag = 0, qbound = 0;
      for (int64_t b = 0; b < K / 32; ++b) {
        double amax = 0;
        for (int64_t k = b * 32; k < b * 32 + 32; ++k) amax = std::max(amax, std::fabs(double(x[size_t(t * K + k)])));
        for (int64_t k = b * 32; k < b * 32 + 32; ++k) {
          const double wk = wd[size_t(r * K + k)], xk = x[size_t(t * K + k)];
          ref += wk * xk;
          mag += std::fabs(wk * xk);
          qbound += std::fabs(wk) * amax / 127.0 / 2.0;
        }
      }
      const double got = ys[size_t(t * R + r)];
      CHECK(std::fabs(got - ref) <= 4e-7 * double(K) * mag + 1.001 * qbound + 1e-6,
            "%s scalar vs float ref R=%ld K=%ld t=%ld r=%ld: %g vs %g", dtype_name(dt), long(R), long(K), long(t),
            long(r), got, ref);
    }
  for (Isa isa : available_isas()) {
    std::vector<float> y(static_cast<size_t>(T * R)), y1(static_cast<size_t>(R));
    matmul_isa(isa, W, x.data(), T, y.data(), R, 2);
    bool ok = true, same = true;
    for (int64_t t = 0; t < T && ok; ++t) {
      matmul_isa(isa, W, x.data() + t * K, 1, y1.data(), R, 1);
      for (int64_t r = 0; r < R; ++r) {
        double mag = 0;
        for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(wd[size_t(r * K + k)]) * x[size_t(t * K + k)]);
        const double diff = std::fabs(double(y[size_t(t * R + r)]) - ys[size_t(t * R + r)]);
        if (diff > 1e-5 * mag + 1e-6) ok = false;
        if (y1[size_t(r)] != y[size_t(t * R + r)]) same = false;
      }
    }
    CHECK(ok, "%s %s vs scalar R=%ld K=%ld T=%ld", isa_name(isa), dtype_name(dt), long(R), long(K), long(T));
    CHECK(same, "%s %s: T=%ld at once != one token at a time (R=%ld K=%ld)", isa_name(isa), dtype_name(dt),
          long(T), long(R), long(K));
  }
}

int main() {
  std::mt19937 g(1234);
  std::string isas;
  for (Isa i : available_isas()) isas += std::string(" ") + isa_name(i);
  std::printf("kernel_tests: ISAs available:%s\n", isas.c_str());
  test_vec(g);
  test_vec_typed(g);
  test_vec_multi(g);
  test_quantize_activations(g);
  test_geglu(g);
  test_rms_norm(g);
  test_roundtrip(DType::Q8, g);
  test_roundtrip(DType::Q4, g);
  const Case cases[] = {{1, 32, 1}, {1, 7, 1}, {5, 33, 1}, {37, 75, 1}, {67, 300, 3}, {130, 257, 17},
                        {70, 96, 64}, {19, 1001, 5}, {200, 64, 2}};
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::Q8, DType::Q4})
    for (const Case& c : cases) test_matmul(dt, c, g);
  for (DType dt : {DType::Q5_0, DType::Q4_1, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    for (const Case& c : {Case{1, 1, 1}, Case{5, 3, 6}, Case{37, 2, 1}, Case{67, 4, 9}, Case{130, 1, 17}})
      test_kquant(dt, c.rows, c.cols, c.T, g);
  std::printf("kernel_tests: %d checks, %d failures\n", g_checks, g_failures);
  return g_failures == 0 ? 0 : 1;
}
