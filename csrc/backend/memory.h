// Where a backend keeps the activations (Workspace) and the KV cache it computes on: host memory
// for the CPU backend, device memory for the CUDA one. The forward pass hands the backend raw
// pointers into these buffers (backend.h), so they must live in memory the backend can address;
// the backend owns that choice through its MemorySpace.
//
// Array<T> is the one owning buffer type: zero-filled on allocation and growth, like the
// std::vector it replaced, so on the host it behaves (and costs) exactly as before.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

namespace gemma {

class MemorySpace {
 public:
  virtual ~MemorySpace() = default;
  virtual bool is_host() const = 0;
  // `bytes` of zeroed memory (nullptr for 0 bytes); throws std::bad_alloc or std::runtime_error.
  virtual void* alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // both in this space
  virtual void to_host(void* dst, const void* src, size_t bytes) = 0;  // src in this space
};

// Zeroed, 64-byte-aligned host memory (memory.cpp says how): the CPU backend's.
MemorySpace& host_memory();

template <typename T>
class Array {
 public:
  Array() = default;
  explicit Array(MemorySpace& mem, size_t n = 0) : mem_(&mem) { resize(n); }
  Array(Array&& o) noexcept { swap(o); }
  Array& operator=(Array&& o) noexcept {
    Array tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
  ~Array() {
    if (p_) mem_->free(p_);
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  MemorySpace& memory() const { return *mem_; }

  // Keeps the first min(n, size()) elements; new ones are zero.
  void resize(size_t n) {
    if (n == n_) return;
    T* p = n ? static_cast<T*>(mem_->alloc(n * sizeof(T))) : nullptr;
    if (p_ && p) mem_->copy(p, p_, (n < n_ ? n : n_) * sizeof(T));
    if (p_) mem_->free(p_);
    p_ = p;
    n_ = n;
  }

 private:
  void swap(Array& o) noexcept {
    std::swap(mem_, o.mem_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
  }

  MemorySpace* mem_ = &host_memory();
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace gemma
