// The attention tiles compiled for the scalar level (flags set in kernels/CMakeLists.txt).
#define TANDEM_ISA_NS scalar
#define TANDEM_ISA_TABLE kAttentionScalar
#define TANDEM_ISA CpuIsa::Scalar
#include "kernels/cpu/attention_impl.inc"
