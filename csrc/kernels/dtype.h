// Element types of weight tensors and the scalar conversions every kernel agrees on.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace gemma {

// Values are stored in the .gcpp file: never renumber, only append.
enum class DType : uint8_t {
  F32 = 0,
  BF16 = 1,
  F16 = 2,
  Q8 = 3,  // int8 blocks of 32 with one scale (csrc/quant/quant.h)
  Q4 = 4,  // int4 blocks of 32 with one scale (csrc/quant/quant.h)
  // GGUF block formats stored natively, byte for byte (csrc/quant/kquant.h)
  Q5_0 = 5,
  Q4_K = 6,
  Q6_K = 7,
  Q5_K = 8,
  Q4_1 = 9,
  Q5_1 = 10,
};

// How a tensor's rows lie in the file (recorded per tensor in the .gcpp; docs/format.md).
//   Rows:   row after row, each quant::row_bytes(dtype, cols) bytes.
//   Rows16: int8/int4 only: rows in groups of 16, interleaved block by block so that one
//           64-byte line holds the same 4 levels of all 16 rows (quant.h: the kernel layout).
enum class Layout : uint8_t { Rows = 0, Rows16 = 1 };

const char* layout_name(Layout l);
Layout layout_from_name(const std::string& name);  // throws std::invalid_argument

const char* dtype_name(DType t);
DType dtype_from_name(const std::string& name);  // throws std::invalid_argument

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch and ml_dtypes do; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// IEEE half <-> float without relying on F16C (used by the scalar path and the converters).
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { man <<= 1; ++e; } while (!(man & 0x400u));
      u = sign | uint32_t(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | man << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return uint16_t(sign | 0x7e00u);            // NaN
  if (absu >= 0x477ff000u) return uint16_t(sign | 0x7c00u);           // overflow -> inf
  if (absu < 0x38800000u) {                                           // subnormal or zero
    float af;
    std::memcpy(&af, &absu, 4);
    // 2^-24 is the smallest subnormal; rint rounds to nearest even.
    float scaled = af * 16777216.0f;
    uint32_t m = uint32_t(__builtin_rintf(scaled));
    return uint16_t(sign | m);
  }
  uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u);  // round to nearest even at bit 13
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

}  // namespace gemma
