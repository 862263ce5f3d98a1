// The attention tiles compiled for the avx2 level (flags set in kernels/CMakeLists.txt).
#define TANDEM_ISA_NS avx2
#define TANDEM_ISA_TABLE kAttentionAvx2
#define TANDEM_ISA CpuIsa::Avx2
#include "kernels/cpu/attention_impl.inc"
