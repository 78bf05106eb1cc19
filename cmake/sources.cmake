# The static core library shared by the extension and the C++ tests.
# Kept separate from CMakeLists.txt so a plain cross build (NEON under qemu) can reuse it.

set(GEMMA_CORE_SOURCES
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/backend/backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/backend/device.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/backend/make_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/backend/memory.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/backend/cpu/cpu_backend.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/backend/cpu/thread_pool.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/io/mapped_file.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/isa.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_scalar.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_kquant_scalar.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/ops.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/vec.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/quant/quant.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/quant/kquant.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/model/weights.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/model/kv_cache.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/model/forward.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/model/session.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/model/batch_forward.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/model/workspace.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/decode/sampler.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/decode/logits_processors.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/decode/generator.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/decode/batch_decoder.cpp
  ${CMAKE_CURRENT_LIST_DIR}/../csrc/decode/speculative.cpp
)

# ISA-specific translation units: compiled only for the architecture they target.
set(GEMMA_ISA_DEFINES "")
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  set(_avx2 ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_avx2.cpp)
  if(EXISTS ${_avx2})
    list(APPEND GEMMA_CORE_SOURCES ${_avx2})
    set_source_files_properties(${_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    list(APPEND GEMMA_ISA_DEFINES GEMMA_HAVE_AVX2)
    set(_kq_avx2 ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_kquant_avx2.cpp)
    list(APPEND GEMMA_CORE_SOURCES ${_kq_avx2})
    set_source_files_properties(${_kq_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    set(_vec_avx2 ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/vec_avx2.cpp)
    list(APPEND GEMMA_CORE_SOURCES ${_vec_avx2})
    set_source_files_properties(${_vec_avx2} PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  endif()
  set(_avx512 ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_avx512.cpp)
  if(EXISTS ${_avx512})
    list(APPEND GEMMA_CORE_SOURCES ${_avx512})
    # -Wno-*uninitialized: GCC 12 warns about undefined upper halves inside its own AVX-512 headers.
    set_source_files_properties(${_avx512} PROPERTIES COMPILE_OPTIONS
      "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma;-mf16c;-Wno-maybe-uninitialized;-Wno-uninitialized")
    list(APPEND GEMMA_ISA_DEFINES GEMMA_HAVE_AVX512)
    set(_kq_avx512 ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_kquant_avx512.cpp)
    list(APPEND GEMMA_CORE_SOURCES ${_kq_avx512})
    set_source_files_properties(${_kq_avx512} PROPERTIES COMPILE_OPTIONS
      "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma;-mf16c")
    set(_vec_avx512 ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/vec_avx512.cpp)
    list(APPEND GEMMA_CORE_SOURCES ${_vec_avx512})
    set_source_files_properties(${_vec_avx512} PROPERTIES COMPILE_OPTIONS
      "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx2;-mfma;-mf16c;-Wno-maybe-uninitialized;-Wno-uninitialized")
    # AMX tiles (Sapphire Rapids and later) for int8/int4 prefill, where the compiler knows them.
    include(CheckCXXCompilerFlag)
    check_cxx_compiler_flag("-mamx-tile -mamx-int8" GEMMA_CXX_HAS_AMX)
    if(GEMMA_CXX_HAS_AMX)
      set(_amx ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_amx.cpp)
      list(APPEND GEMMA_CORE_SOURCES ${_amx})
      set_source_files_properties(${_amx} PROPERTIES COMPILE_OPTIONS
        "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mavx2;-mfma;-mf16c;-mamx-tile;-mamx-int8;-Wno-maybe-uninitialized;-Wno-uninitialized")
      list(APPEND GEMMA_ISA_DEFINES GEMMA_HAVE_AMX)
    endif()
  endif()
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(_neon ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_neon.cpp)
  if(EXISTS ${_neon})
    list(APPEND GEMMA_CORE_SOURCES ${_neon})
    set_source_files_properties(${_neon} PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod+fp16")
    list(APPEND GEMMA_ISA_DEFINES GEMMA_HAVE_NEON)
    set(_kq_neon ${CMAKE_CURRENT_LIST_DIR}/../csrc/kernels/matmul_kquant_neon.cpp)
    list(APPEND GEMMA_CORE_SOURCES ${_kq_neon})
    set_source_files_properties(${_kq_neon} PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod+fp16")
  endif()
endif()

add_library(gemma_core STATIC ${GEMMA_CORE_SOURCES})
target_include_directories(gemma_core PUBLIC ${CMAKE_CURRENT_LIST_DIR}/../csrc)
target_compile_definitions(gemma_core PUBLIC ${GEMMA_ISA_DEFINES})
target_link_libraries(gemma_core PUBLIC Threads::Threads)
target_compile_options(gemma_core PRIVATE -Wall -Wextra -Wno-unused-parameter)
# Floating-point expressions compile as written: no a * b + c fused behind our back. The
# canonical arithmetic (kernels/quant_canonical.h) and the references it is tested against
# (e.g. the rounding in quantize_activations) depend on it: GCC contracts by default wherever
# the target has FMA (all of aarch64, the AVX2/AVX-512 files), which made the scalar reference
# round an activation differently from the NEON kernel. Fused steps are written as fma().
target_compile_options(gemma_core PUBLIC $<$<CXX_COMPILER_ID:GNU,Clang,AppleClang>:-ffp-contract=off>)
