// The row dot products compiled for the avx512 level (flags set in kernels/CMakeLists.txt).
#define TANDEM_ISA_NS avx512
#define TANDEM_ISA_TABLE kVecDotAvx512
#define TANDEM_ISA CpuIsa::Avx512
#include "kernels/cpu/vec_dot_impl.inc"
