// Which instruction set the kernels run on: detected once, overridable for tests and users.
#pragma once
#include <string>
#include <vector>

namespace gemma {

// Amx is Avx512 plus Intel's tile registers (AMX-INT8): the int8/int4 prefill runs on tiles,
// everything else on the AVX-512 kernels (vector_isa).
enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3, Amx = 4 };

// The ISA of the vector kernels an ISA runs: itself, except Amx -> Avx512.
inline Isa vector_isa(Isa isa) { return isa == Isa::Amx ? Isa::Avx512 : isa; }

const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument naming the choices

// ISAs this binary was compiled with AND this CPU supports, scalar first.
std::vector<Isa> available_isas();

// The ISA kernels use now: GEMMA_CPP_ISA if set (must be available), else the best available.
Isa active_isa();
void set_active_isa(Isa isa);  // throws if not available

// Throws std::invalid_argument naming the available ISAs unless `isa` is one of them (a kernel
// of an ISA the CPU lacks would die of SIGILL; Amx also needs the OS's permission, asked for by
// available_isas()).
void require_available(Isa isa);

}  // namespace gemma
