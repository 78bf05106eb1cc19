#include "backend/memory.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace gemma {

namespace {

class HostMemory final : public MemorySpace {
 public:
  bool is_host() const override { return true; }
  void* alloc(size_t bytes) override {
    if (!bytes) return nullptr;
    void* p = std::calloc(1, bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
  void free(void* p) override { std::free(p); }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

}  // namespace

MemorySpace& host_memory() {
  static HostMemory m;
  return m;
}

}  // namespace gemma
