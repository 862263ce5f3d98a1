#include "kernels/cpu/cpu_isa.h"

#include <atomic>

#include "kernels/error.h"

namespace tandem::cpu {

namespace {

CpuIsa detect() {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16"))
        return CpuIsa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2"))
        return CpuIsa::Avx2;
#endif
    return CpuIsa::Scalar;
}

std::atomic<int>& active() {
    static std::atomic<int> isa{int(detected_isa())};
    return isa;
}

}  // namespace

std::string_view isa_name(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::Scalar: return "scalar";
        case CpuIsa::Avx2: return "avx2";
        case CpuIsa::Avx512: return "avx512";
    }
    return "?";
}

CpuIsa parse_isa(const std::string& text) {
    for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
        if (isa_name(isa) == text) return isa;
    fail("cpu isa '", text, "': expected scalar, avx2 or avx512");
}

CpuIsa detected_isa() {
    static const CpuIsa isa = detect();
    return isa;
}

CpuIsa active_isa() {
    return CpuIsa(active().load(std::memory_order_relaxed));
}

void force_isa(std::optional<CpuIsa> isa) {
    const CpuIsa chosen = isa.value_or(detected_isa());
    if (int(chosen) > int(detected_isa()))
        fail("cpu isa ", isa_name(chosen),
             " is not supported by this CPU (best: ", isa_name(detected_isa()), ")");
    active().store(int(chosen), std::memory_order_relaxed);
}

}  // namespace tandem::cpu
