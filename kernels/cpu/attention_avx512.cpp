// The attention tiles compiled for the avx512 level (flags set in kernels/CMakeLists.txt).
#define TANDEM_ISA_NS avx512
#define TANDEM_ISA_TABLE kAttentionAvx512
#define TANDEM_ISA CpuIsa::Avx512
#include "kernels/cpu/attention_impl.inc"
