// The row dot products compiled for the scalar level (flags set in kernels/CMakeLists.txt).
#define TANDEM_ISA_NS scalar
#define TANDEM_ISA_TABLE kVecDotScalar
#define TANDEM_ISA CpuIsa::Scalar
#include "kernels/cpu/vec_dot_impl.inc"
