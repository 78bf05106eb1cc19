// Memory read bandwidth: sum a 1 GiB buffer (far larger than any cache) with N OpenMP threads,
// each reading one contiguous ascending chunk, like the matmul kernels stream weights.
// Prints one line per thread count: "threads GB/s(median) GB/s(best)".
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  const size_t bytes = size_t(argc > 1 ? atof(argv[1]) : 1.0) * (size_t(1) << 30);
  const int reps = argc > 2 ? atoi(argv[2]) : 7;
  const size_t n = bytes / 8;
  std::vector<uint64_t> buf(n);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = i * 2654435761u;  // touch every page
  for (int a = 3; a < argc; ++a) {
    const int nt = atoi(argv[a]);
    std::vector<double> gbs;
    uint64_t sink = 0;
    for (int r = 0; r < reps; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      uint64_t s = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : s)
      for (size_t i = 0; i < n; ++i) s += buf[i];
      auto t1 = std::chrono::steady_clock::now();
      sink += s;
      gbs.push_back(double(bytes) / std::chrono::duration<double>(t1 - t0).count() / 1e9);
    }
    std::sort(gbs.begin(), gbs.end());
    std::printf("%d %.2f %.2f %llu\n", nt, gbs[gbs.size() / 2], gbs.back(), (unsigned long long)(sink & 1));
  }
  return 0;
}
