#include "backend/cpu/thread_pool.h"

#include <chrono>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
static inline void cpu_relax() { _mm_pause(); }
#elif defined(__aarch64__)
static inline void cpu_relax() { asm volatile("yield"); }
#else
static inline void cpu_relax() {}
#endif

namespace gemma {

namespace {
// How long a thread spins before it sleeps (workers) or yields its core (the caller). Long enough
// to bridge the gaps between the matmuls of a forward pass and between decode steps, short enough
// that an idle model leaves the cores to others.
constexpr auto kSpin = std::chrono::microseconds(50);

// Spins until done() or kSpin has passed; returns done().
template <typename Done>
bool spin_until(Done done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads < 1 || n_threads > kMaxThreads)
    throw std::invalid_argument("n_threads must be in [1, " + std::to_string(kMaxThreads) + "], got " +
                                std::to_string(n_threads));
  try {
    for (int id = 1; id < n_threads; ++id) workers_.emplace_back([this, id] { worker_loop(id); });
  } catch (...) {  // the system refused a thread: stop the ones already started, then report
    stop_workers();
    throw;
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::dispatch(int n_tasks, void* fn, Call call) {
  job_ = fn;
  call_ = call;
  n_tasks_ = n_tasks;
  pending_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // a worker between its check and its wait sees it
    if (sleepers_ > 0) wake_.notify_all();
  }
  call(fn, 0);
  const auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
  while (!spin_until(done)) std::this_thread::yield();  // a worker was asleep or preempted
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  for (;;) {
    const auto ready = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    if (!spin_until(ready)) {
      std::unique_lock<std::mutex> lock(mutex_);
      ++sleepers_;
      wake_.wait(lock, [&] { return stop_ || ready(); });
      --sleepers_;
      if (stop_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    if (id < n_tasks_) call_(job_, id);
    pending_.fetch_sub(1, std::memory_order_release);
  }
}

}  // namespace gemma
