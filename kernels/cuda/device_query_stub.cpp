// CPU-only build: no CUDA devices, by construction.
#include <string>

namespace tandem {

int cuda_query_device_count(std::string* why_none) {
    *why_none = "built without CUDA";
    return 0;
}

}  // namespace tandem
