// The engine's own worker threads: created once per Session (or per converter call), reused by
// every parallel step of every forward pass, so a token costs no thread creation and no OpenMP
// runtime (the core builds with any C++17 compiler and links no libgomp, and it changes no
// environment variable of the process it is loaded into).
//
// run(n, fn) calls fn(0) .. fn(n - 1) concurrently, task i on thread i (the caller runs task 0),
// and returns when all are done. Between jobs a worker spins for a short while (the next matmul
// of a forward pass usually comes within microseconds) and then sleeps on a condition variable,
// so idle workers cost nothing when another program needs the cores (spinning OpenMP threads
// made decode collapse on a busy 2-core machine). Tasks must not throw. One caller at a time:
// a pool belongs to one Session, which is used by one thread at a time.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace gemma {

class ThreadPool {
 public:
  // More threads than any machine this runs on has cores: a larger request is a mistake.
  static constexpr int kMaxThreads = 1024;

  // n_threads - 1 workers plus the calling thread; throws std::invalid_argument outside
  // [1, kMaxThreads] and std::system_error if the system refuses a thread (none left running).
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  template <typename F>
  void run(int n_tasks, F&& fn) {
    if (n_tasks <= 1 || workers_.empty()) {
      for (int i = 0; i < n_tasks; ++i) fn(i);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    dispatch(std::min(n_tasks, size()), const_cast<void*>(static_cast<const void*>(&fn)),
             [](void* f, int i) { (*static_cast<Fn*>(f))(i); });
  }

  // fn(begin, end) over contiguous chunks of [0, n) whose boundaries are multiples of `align`,
  // one chunk per thread (fewer when n is small).
  template <typename F>
  void parallel_for(int64_t n, int64_t align, F&& fn) {
    const int64_t per = (n + size() - 1) / size();
    const int64_t chunk = std::max<int64_t>(align, (per + align - 1) / align * align);
    const int tasks = int((n + chunk - 1) / chunk);
    run(tasks, [&](int i) {
      const int64_t b = int64_t(i) * chunk, e = std::min<int64_t>(n, b + chunk);
      if (b < e) fn(b, e);
    });
  }

 private:
  using Call = void (*)(void*, int);
  void dispatch(int n_tasks, void* fn, Call call);
  void worker_loop(int id);
  void stop_workers();

  std::vector<std::thread> workers_;
  // The current job, published by the release-increment of generation_.
  void* job_ = nullptr;
  Call call_ = nullptr;
  int n_tasks_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // workers that have not finished the current job
  std::mutex mutex_;
  std::condition_variable wake_;
  int sleepers_ = 0;  // guarded by mutex_
  bool stop_ = false;  // guarded by mutex_
};

}  // namespace gemma
