// Checked 64-bit size arithmetic: every size computed from numbers read from a file or handed in
// from Python (shapes, row counts, byte counts) goes through these, so a hostile shape such as
// [1, 2^62] gets a clear std::invalid_argument instead of signed overflow (undefined behaviour)
// and a wrapped, too-small size.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace gemma {

// a * b for sizes (both >= 0); throws std::invalid_argument naming `what` on a negative operand
// or when the product does not fit int64.
inline int64_t size_mul(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    throw std::invalid_argument(std::string(what) + ": size " + std::to_string(a) + " x " + std::to_string(b) +
                                (a < 0 || b < 0 ? " is negative" : " overflows 64 bits"));
  return r;
}

// a + b for sizes (both >= 0), checked the same way.
inline int64_t size_add(int64_t a, int64_t b, const char* what) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r))
    throw std::invalid_argument(std::string(what) + ": size " + std::to_string(a) + " + " + std::to_string(b) +
                                (a < 0 || b < 0 ? " is negative" : " overflows 64 bits"));
  return r;
}

}  // namespace gemma
