// The core's side of the CUDA plugin (kernels/cuda_backend.h): dlopen on first use, and the
// backend functions of the core forwarded to it. Linked only into the core of a CUDA build.
#include "kernels/cuda_backend.h"

#include <dlfcn.h>

#include <string_view>

#include "kernels/build_config.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {

namespace {

struct Plugin {
    void* handle = nullptr;
    const CudaBackend* backend = nullptr;  // null: not loaded, `error` says why
    std::string error;
};

// Loaded once, by the first caller; a failure is remembered (it would fail the same way again).
const Plugin& plugin() {
    static const Plugin loaded = [] {
        Plugin p;
        // RTLD_NOW: a missing symbol fails here, not in the middle of a step. RTLD_LOCAL: the
        // plugin's copy of the core stays its own.
        p.handle = dlopen(build::kCudaBackendLibrary, RTLD_NOW | RTLD_LOCAL);
        if (p.handle == nullptr) {
            p.error = dlerror();
            return p;
        }
        using Entry = const CudaBackend* (*)();
        auto entry = reinterpret_cast<Entry>(dlsym(p.handle, "tandem_cuda_backend"));
        if (entry == nullptr) {
            p.error = "it has no entry point tandem_cuda_backend";
            return p;
        }
        const CudaBackend* backend = entry();
        if (backend->abi != kCudaBackendAbi ||
            std::string_view(backend->version) != std::string_view(build::kVersion)) {
            p.error = cat("it is of Tandem ", backend->version, " (backend ABI ", backend->abi,
                          "), this library of Tandem ", build::kVersion, " (ABI ", kCudaBackendAbi,
                          "): install both from one build");
            return p;
        }
        p.backend = backend;
        return p;
    }();
    return loaded;
}

const CudaBackend& loaded_backend() {
    const Plugin& p = plugin();
    if (p.backend == nullptr)
        fail("the CUDA backend ", build::kCudaBackendLibrary, " could not be loaded: ", p.error,
             " (it is installed next to libtandem.so; without it only the CPU runs)");
    return *p.backend;
}

}  // namespace

const CudaBackend& cuda_backend() {
    const CudaBackend& backend = loaded_backend();
    backend.apply_settings(current_cuda_backend_settings());
    return backend;
}

void* cuda_backend_symbol(const char* name) {
    cuda_backend();
    void* symbol = dlsym(plugin().handle, name);
    if (symbol == nullptr)
        fail("the CUDA backend ", build::kCudaBackendLibrary, " has no symbol ", name);
    return symbol;
}

int cuda_query_device_count(std::string* why_none) {
    const Plugin& p = plugin();
    if (p.backend == nullptr) {
        *why_none = cat(build::kCudaBackendLibrary, " could not be loaded: ", p.error);
        return 0;
    }
    return p.backend->query_device_count(why_none);
}

// Allocation runs no kernel of the plugin's, so it leaves the settings alone (they are not to
// change while kernels run).
void* cuda_malloc(Device device, size_t bytes) {
    return loaded_backend().malloc(device, bytes);
}

void cuda_free(void* data) noexcept {
    // Device memory came from the plugin, so it is loaded.
    plugin().backend->free(data);
}

std::unique_ptr<Stream> make_cuda_stream(Device device) {
    return cuda_backend().make_stream(device);
}

void* cuda_host_alloc(size_t bytes) {
    return loaded_backend().host_alloc(bytes);
}

void cuda_host_free(void* data) noexcept {
    plugin().backend->host_free(data);  // the memory came from the plugin
}

void* cuda_host_register(void* data, size_t bytes, std::string* why) {
    return loaded_backend().host_register(data, bytes, why);
}

void cuda_host_unregister(void* data) noexcept {
    plugin().backend->host_unregister(data);
}

}  // namespace tandem
