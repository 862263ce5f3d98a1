// The sim device's memory (kernels/sim_device.h): a PROT_NONE reservation per allocation, which
// is the address the host sees, and a separate host mapping behind it that the sim streams use.
#include <sys/mman.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "kernels/error.h"
#include "kernels/sim_device.h"

namespace tandem {
namespace {

struct Region {
    size_t bytes = 0;  // as asked for; both mappings are rounded up to whole pages
    std::byte* backing = nullptr;
};

struct Registry {
    std::shared_mutex mutex;
    std::map<uintptr_t, Region> regions;  // by the reservation's first address
};

Registry& registry() {
    static Registry r;
    return r;
}

thread_local bool t_sim_worker = false;

size_t mapped_bytes(size_t bytes) {
    const size_t page = 4096;
    return (bytes + page - 1) / page * page;
}

}  // namespace

void* sim_malloc(size_t bytes) {
    if (bytes == 0) fail("sim: allocation of 0 bytes");
    const size_t mapped = mapped_bytes(bytes);
    void* reserved =
        mmap(nullptr, mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (reserved == MAP_FAILED) fail("sim: out of address space reserving ", bytes, " bytes");
    void* backing =
        mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (backing == MAP_FAILED) {
        munmap(reserved, mapped);
        fail("sim: out of memory allocating ", bytes, " bytes");
    }
    Registry& r = registry();
    std::unique_lock lock(r.mutex);
    r.regions[reinterpret_cast<uintptr_t>(reserved)] = {bytes, static_cast<std::byte*>(backing)};
    return reserved;
}

void sim_free(void* data) noexcept {
    if (data == nullptr) return;
    Registry& r = registry();
    Region region;
    {
        std::unique_lock lock(r.mutex);
        const auto it = r.regions.find(reinterpret_cast<uintptr_t>(data));
        if (it == r.regions.end()) return;
        region = it->second;
        r.regions.erase(it);
    }
    munmap(data, mapped_bytes(region.bytes));
    munmap(region.backing, mapped_bytes(region.bytes));
}

namespace {

// The backing address of [p, p + bytes) when one region holds it all, else nullptr.
std::byte* find_backing(const void* p, size_t bytes) {
    const auto at = reinterpret_cast<uintptr_t>(p);
    Registry& r = registry();
    std::shared_lock lock(r.mutex);
    auto it = r.regions.upper_bound(at);
    if (it == r.regions.begin()) return nullptr;
    --it;
    const uintptr_t base = it->first;
    if (at - base > it->second.bytes || bytes > it->second.bytes - (at - base)) return nullptr;
    return it->second.backing + (at - base);
}

}  // namespace

bool is_sim_address(const void* p, size_t bytes) {
    return find_backing(p, bytes) != nullptr;
}

void* sim_backing_address(const void* p, size_t bytes) {
    std::byte* backing = find_backing(p, bytes);
    if (backing == nullptr) fail("sim: ", bytes, " bytes at ", p, " are not sim device memory");
    return backing;
}

void* sim_kernel_address(const void* p, size_t bytes) {
    if (!t_sim_worker)
        fail("sim: device memory at ", p,
             " read from the host; only work on a sim stream may (copy it with a stream)");
    return sim_backing_address(p, bytes);
}

void sim_mark_worker_thread() {
    t_sim_worker = true;
}

}  // namespace tandem
