// Run-time ISA selection for hot loops that the compiler vectorises.
//
// TANDEM_MULTIVERSION compiles a function three times (AVX-512 = x86-64-v4, AVX2+FMA =
// x86-64-v3, and the baseline) and picks one at load time from CPUID, so one binary is fast on
// new CPUs and never raises SIGILL on old ones. Hand-written intrinsic kernels (quantized types)
// dispatch explicitly instead.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TANDEM_MULTIVERSION \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TANDEM_MULTIVERSION
#endif
