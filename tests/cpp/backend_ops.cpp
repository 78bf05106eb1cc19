// backend_ops: the per-op tests of backend_ops.h for the CPU backend on every ISA this CPU
// supports (or the one named: backend_ops --isa avx2), each against CpuBackend pinned to the
// scalar kernels. Exit status 0 = all passed. A CUDA backend gets its own main that runs the same
// BackendOpsTest with itself as the backend under test.
#include <cstdio>
#include <cstring>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "tests/cpp/backend_ops.h"

int main(int argc, char** argv) {
  using namespace gemma;
  std::vector<Isa> isas = available_isas();
  uint32_t seed = 1234;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--isa") && i + 1 < argc) {
      isas = {isa_from_name(argv[++i])};
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = uint32_t(std::stoul(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: backend_ops [--isa scalar|avx2|avx512|amx|neon] [--seed N]\n");
      return 2;
    }
  }
  int failures = 0;
  for (Isa isa : isas) {
    CpuBackend be(2, isa);  // two threads: outputs split across threads must not change a bit
    CpuBackend ref(1, Isa::Scalar);
    failures += testing::BackendOpsTest(be, ref, seed).run();
  }
  std::printf("backend_ops: %d failures\n", failures);
  return failures == 0 ? 0 : 1;
}
