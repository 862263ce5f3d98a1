// Which instruction set the CPU kernels use, chosen at run time.
//
// The hot kernels (kernels/cpu/vec_dot_*.cpp) are compiled three times: for baseline x86-64
// (`scalar`), for AVX2+FMA+F16C (`avx2`), and for AVX-512 with VNNI and BF16 (`avx512`). At
// start-up the best level the CPU supports is detected with CPUID; force_isa() selects a lower
// one (to test every path on one machine, or to compare them), and refuses a level the CPU
// lacks, so the binary never raises SIGILL.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace tandem::cpu {

enum class CpuIsa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

std::string_view isa_name(CpuIsa isa);
CpuIsa parse_isa(const std::string& text);  // "scalar", "avx2", "avx512"; throws otherwise
CpuIsa detected_isa();                      // the best level this CPU runs
CpuIsa active_isa();                        // what the kernels use now
// Uses `isa` (nullopt: back to the detected level). Throws if the CPU cannot run it. Not
// thread-safe with running kernels: call it between steps, as tests and tools do.
void force_isa(std::optional<CpuIsa> isa);

// AVX-VNNI (VEX-encoded vpdpbusd, Alder Lake and later), an optional feature of the avx2 level:
// the avx2 int8 tiles use it in place of vpmaddubsw + vpmaddwd where the CPU has it. The avx512
// level has its own (EVEX) VNNI. force_avx_vnni(false) turns it off (tests, benchmarks: both
// variants on one machine), nullopt restores the detected state; true on a CPU without it throws.
bool cpu_has_avx_vnni();
bool avx_vnni_active();
void force_avx_vnni(std::optional<bool> on);

}  // namespace tandem::cpu
