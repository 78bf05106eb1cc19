#include "backend/memory.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace gemma {

namespace {

// Every buffer starts on a 64-byte boundary (a cache line, one zmm): the SIMD kernels' row loads
// then never split across lines (calloc's 16-byte alignment cost the float prefill ~10% on an Intel
// Xeon). Large buffers come from mmap, zeroed by the kernel page by page as they are first
// touched, so a KV cache sized for a long context costs no memory until used, as with calloc.
class HostMemory final : public MemorySpace {
 public:
  bool is_host() const override { return true; }
  void* alloc(size_t bytes) override {
    if (!bytes) return nullptr;
    if (bytes > SIZE_MAX - kHeader) throw std::bad_alloc();
    const size_t total = bytes + kHeader;
    uint8_t* base;
    if (total >= kMmapBytes) {
      void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw std::bad_alloc();
      base = static_cast<uint8_t*>(m);
    } else {
      base = static_cast<uint8_t*>(std::aligned_alloc(kHeader, (total + kHeader - 1) / kHeader * kHeader));
      if (!base) throw std::bad_alloc();
      std::memset(base, 0, total);
    }
    std::memcpy(base, &total, sizeof total);  // the header: the mapping's length
    return base + kHeader;
  }
  void free(void* p) override {
    if (!p) return;
    uint8_t* base = static_cast<uint8_t*>(p) - kHeader;
    size_t total;
    std::memcpy(&total, base, sizeof total);
    if (total >= kMmapBytes) {
      munmap(base, total);
    } else {
      std::free(base);
    }
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }

 private:
  static constexpr size_t kHeader = 64;             // the alignment, and room for the length
  static constexpr size_t kMmapBytes = size_t(256) << 10;  // from here on: mmap
};

}  // namespace

MemorySpace& host_memory() {
  static HostMemory m;
  return m;
}

}  // namespace gemma
