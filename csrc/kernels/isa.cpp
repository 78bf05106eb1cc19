#include "kernels/isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace gemma {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Neon: return "neon";
    case Isa::Amx: return "amx";
  }
  return "?";
}

Isa isa_from_name(const std::string& name) {
  if (name == "scalar") return Isa::Scalar;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  if (name == "neon") return Isa::Neon;
  if (name == "amx") return Isa::Amx;
  throw std::invalid_argument("unknown ISA '" + name + "' (choose scalar, avx2, avx512, amx or neon)");
}

namespace {

#if defined(__x86_64__) || defined(_M_X64)
bool os_saves_ymm_zmm(bool zmm) {
  unsigned a, b, c, d;
  __cpuid(1, a, b, c, d);
  if (!(c & (1u << 27))) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  unsigned need = zmm ? 0xe6u : 0x06u;  // XMM|YMM (+ opmask|ZMM_hi256|Hi16_ZMM)
  return (lo & need) == need;
}

[[maybe_unused]] bool cpu_has_avx2() {
  unsigned a, b, c, d;
  __cpuid(1, a, b, c, d);
  bool fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return fma && f16c && (b & (1u << 5)) && os_saves_ymm_zmm(false);
}

[[maybe_unused]] bool cpu_has_avx512_vnni() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  bool vnni = c & (1u << 11);
  return f && dq && bw && vl && vnni && os_saves_ymm_zmm(true);
}

// AMX-TILE + AMX-INT8 in CPUID, the tile state enabled in XCR0, and (Linux) the process's
// permission to use the tile data, which the kernel grants on request (arch_prctl
// ARCH_REQ_XCOMP_PERM; process-wide, asked once). Without the permission the first tile
// instruction would kill the process with SIGILL, so no permission, no Amx.
[[maybe_unused]] bool cpu_has_amx_int8() {
  static const bool ok = [] {
    if (!cpu_has_avx512_vnni()) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!(d & (1u << 24)) || !(d & (1u << 25))) return false;  // AMX-TILE, AMX-INT8
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return false;  // XTILECFG | XTILEDATA
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
}
#endif

Isa best_available() {
  auto all = available_isas();
  return all.back();
}

std::atomic<int> g_active{-1};

}  // namespace

std::vector<Isa> available_isas() {
  std::vector<Isa> out{Isa::Scalar};
#if defined(GEMMA_HAVE_AVX2)
  if (cpu_has_avx2()) out.push_back(Isa::Avx2);
#endif
#if defined(GEMMA_HAVE_AVX512)
  if (cpu_has_avx512_vnni()) out.push_back(Isa::Avx512);
#endif
#if defined(GEMMA_HAVE_AMX)
  if (cpu_has_amx_int8()) out.push_back(Isa::Amx);
#endif
#if defined(GEMMA_HAVE_NEON)
  out.push_back(Isa::Neon);  // dotprod is required by the aarch64 build (armv8.2-a+dotprod)
#endif
  return out;
}

void require_available(Isa isa) {
  const std::vector<Isa> all = available_isas();
  for (Isa a : all)
    if (a == isa) return;
  std::string have;
  for (Isa a : all) have += std::string(have.empty() ? "" : ", ") + isa_name(a);
  throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                              "' is not available on this CPU/build (available: " + have + ")");
}

void set_active_isa(Isa isa) {
  require_available(isa);
  g_active.store(int(isa));
}

Isa active_isa() {
  int v = g_active.load();
  if (v >= 0) return Isa(v);
  Isa chosen = best_available();
  if (const char* env = std::getenv("GEMMA_CPP_ISA"); env && *env) {
    Isa want = isa_from_name(env);
    set_active_isa(want);  // throws a clear message if unavailable
    chosen = want;
  }
  g_active.store(int(chosen));
  return chosen;
}

}  // namespace gemma
