// Which instruction set the kernels run on: detected once, overridable for tests and users.
#pragma once
#include <string>
#include <vector>

namespace gemma {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);  // throws std::invalid_argument naming the choices

// ISAs this binary was compiled with AND this CPU supports, scalar first.
std::vector<Isa> available_isas();

// The ISA kernels use now: GEMMA_CPP_ISA if set (must be available), else the best available.
Isa active_isa();
void set_active_isa(Isa isa);  // throws if not available

}  // namespace gemma
