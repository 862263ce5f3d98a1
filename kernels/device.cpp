#include "kernels/device.h"

#include <charconv>

#include "kernels/build_config.h"
#include "kernels/error.h"
#include "kernels/log.h"

namespace tandem {

int cuda_query_device_count(std::string* why_none);  // kernels/cuda/device_query.*

std::string Device::name() const {
    switch (kind) {
        case DeviceKind::Cpu:
            return "cpu";
        case DeviceKind::Cuda:
            return cat("cuda:", index);
        case DeviceKind::Sim:
            return cat("sim:", index);
    }
    return "?";
}

Device parse_device(const std::string& text) {
    const auto colon = text.find(':');
    const std::string kind = text.substr(0, colon);
    int index = 0;
    if (colon != std::string::npos) {
        const char* begin = text.data() + colon + 1;
        const char* end = text.data() + text.size();
        auto [ptr, ec] = std::from_chars(begin, end, index);
        if (ec != std::errc() || ptr != end || index < 0 || begin == end)
            fail("device '", text, "': bad index");
    }
    if (kind == "cpu" && colon == std::string::npos) return Device::cpu();
    if (kind == "cuda") return {DeviceKind::Cuda, index};
    if (kind == "sim") return {DeviceKind::Sim, index};
    fail("device '", text, "': expected cpu, cuda[:N] or sim[:N]");
}

bool cuda_compiled() {
    return build::kCudaCompiled;
}

int cuda_device_count() {
    // Asked once: a CUDA build on a machine without a GPU says so a single time.
    static const int count = [] {
        std::string why_none;
        const int n = cuda_query_device_count(&why_none);
        if (n == 0 && cuda_compiled())
            log_info("no CUDA device found (", why_none, "); using the CPU");
        return n;
    }();
    return count;
}

}  // namespace tandem
