# The optional CUDA backend (GEMMA_CUDA=ON; docs/cuda.md): csrc/cuda/ as an object library
# folded into gemma_core, with the CUDA runtime linked statically so the extension still loads
# on machines without a GPU or an NVIDIA driver (device="cuda" then raises DeviceError).
#
# Architectures: sm_80 (A100; its SASS also runs on every 8.x GPU: RTX 30/40, Jetson Orin) and
# sm_90 (H100/H200), plus compute_90 PTX that newer GPUs JIT-compile. `native` cannot work on a
# build machine without a GPU; override with -DCMAKE_CUDA_ARCHITECTURES=... (nvcc 13 has no
# sm_50..sm_70 any more).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 80-real 90)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

add_library(gemma_cuda OBJECT
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/attention.cu
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/cuda_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/cuda_memory.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/device_info.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/device_weights.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/elementwise.cu
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/cuda/matmul.cu
)
target_include_directories(gemma_cuda PRIVATE ${CMAKE_CURRENT_LIST_DIR}/../csrc)
target_link_libraries(gemma_cuda PRIVATE CUDA::cudart_static)
# Host code as the rest of the core compiles it; device code without fast-math (IEEE division and
# sqrt: the int8/int4 matmuls must give the CPU's bits; docs/cuda.md).
target_compile_options(gemma_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter -ffp-contract=off>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)

target_sources(gemma_core PRIVATE $<TARGET_OBJECTS:gemma_cuda>)
target_link_libraries(gemma_core PUBLIC CUDA::cudart_static)
target_compile_definitions(gemma_core PUBLIC GEMMA_HAVE_CUDA)
