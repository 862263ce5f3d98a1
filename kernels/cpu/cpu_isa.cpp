#include "kernels/cpu/cpu_isa.h"

#include <atomic>
#include <cstdint>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "kernels/error.h"

namespace tandem::cpu {

namespace {

#if defined(__x86_64__)
// CPUID and XGETBV read directly (not __builtin_cpu_supports, whose feature names differ between
// compiler versions): an instruction set counts only if the CPU has it AND the OS saves its
// registers (XCR0), or the first AVX instruction would fault.
bool cpu_has(unsigned leaf, unsigned subleaf, int reg, int bit) {
    unsigned r[4] = {0, 0, 0, 0};  // eax, ebx, ecx, edx
    if (!__get_cpuid_count(leaf, subleaf, &r[0], &r[1], &r[2], &r[3])) return false;
    return (r[reg] >> bit) & 1u;
}

uint64_t xcr0() {
    uint32_t eax = 0, edx = 0;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (uint64_t(edx) << 32) | eax;
}

CpuIsa detect() {
    enum { kEax = 0, kEbx = 1, kEcx = 2 };
    if (!cpu_has(1, 0, kEcx, 27)) return CpuIsa::Scalar;  // OSXSAVE: XGETBV usable
    const uint64_t os_state = xcr0();
    const bool os_avx = (os_state & 0x6) == 0x6;       // XMM and YMM state
    const bool os_avx512 = (os_state & 0xe6) == 0xe6;  // plus opmask and ZMM state
    const bool avx2 = os_avx && cpu_has(7, 0, kEbx, 5) && cpu_has(1, 0, kEcx, 12) &&  // AVX2, FMA
                      cpu_has(1, 0, kEcx, 29) && cpu_has(7, 0, kEbx, 8);              // F16C, BMI2
    const bool avx512 = avx2 && os_avx512 && cpu_has(7, 0, kEbx, 16) &&               // F
                        cpu_has(7, 0, kEbx, 17) && cpu_has(7, 0, kEbx, 30) &&         // DQ, BW
                        cpu_has(7, 0, kEbx, 31) && cpu_has(7, 0, kEcx, 11) &&         // VL, VNNI
                        cpu_has(7, 1, kEax, 5);                                       // BF16
    if (avx512) return CpuIsa::Avx512;
    if (avx2) return CpuIsa::Avx2;
    return CpuIsa::Scalar;
}

bool detect_avx_vnni() {
    enum { kEax = 0, kEcx = 2 };
    if (!cpu_has(1, 0, kEcx, 27) || (xcr0() & 0x6) != 0x6) return false;  // YMM state saved
    return cpu_has(7, 1, kEax, 4);                                        // AVX-VNNI
}
#else
CpuIsa detect() {
    return CpuIsa::Scalar;
}

bool detect_avx_vnni() {
    return false;
}
#endif

std::atomic<int>& active() {
    static std::atomic<int> isa{int(detected_isa())};
    return isa;
}

std::atomic<bool>& avx_vnni_on() {
    static std::atomic<bool> on{cpu_has_avx_vnni()};
    return on;
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

bool cpu_has_avx_vnni() {
    static const bool has = detect_avx_vnni();
    return has;
}

bool avx_vnni_active() {
    return avx_vnni_on().load(std::memory_order_relaxed);
}

void force_avx_vnni(std::optional<bool> on) {
    const bool chosen = on.value_or(cpu_has_avx_vnni());
    if (chosen && !cpu_has_avx_vnni()) fail("cpu feature avx_vnni is not supported by this CPU");
    avx_vnni_on().store(chosen, std::memory_order_relaxed);
}

}  // namespace tandem::cpu
