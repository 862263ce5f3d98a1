// Streams and events: ordered queues of device work, as CUDA has them, behind one interface for
// `cuda:N` and `sim`.
//
//   auto copy = make_stream(device), compute = make_stream(device);
//   copy->copy_async(dst, src, bytes, CopyDirection::HostToDevice);
//   auto ready = copy->record();
//   compute->wait(*ready);            // later work on `compute` runs after the copy
//   compute->launch_host([&] { ... });
//   compute->synchronize();
//
// `sim` is an emulated accelerator for machines without a GPU, so that everything that
// orchestrates streams (the hybrid executor, prefetching) runs and is tested here, under
// ThreadSanitizer: its memory is not host-addressable (kernels/sim_device.h: a host read dies
// as it would on a GPU; copies and memsets reach it, and so do its kernels, which are
// launch_host work calling sim_kernel_address); each stream has a worker thread that runs the
// stream's work in order; copies go through a copy engine per direction (host-to-device and
// device-to-host overlap each other, two copies in one direction do not, as on an H100/H200)
// that takes bytes / bandwidth + latency of wall time before the bytes land; events really
// order work across streams. On `cuda:N`, launch_host is cudaLaunchHostFunc, copies are
// cudaMemcpyAsync and events are CUDA events.
//
// This header is C++17: the CUDA sources include it.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/device.h"

namespace tandem {

enum class CopyDirection { HostToDevice, DeviceToHost, DeviceToDevice };

class Event {
  public:
    virtual ~Event() = default;
    // Blocks until the work recorded before this event has run.
    virtual void synchronize() = 0;
    virtual bool done() = 0;
};

class Stream {
  public:
    virtual ~Stream() = default;  // finishes the queued work first
    virtual Device device() const = 0;
    // Runs `work` on the host in stream order, after what was queued before it. On sim this is
    // how kernels run; on CUDA it is a host callback (it must not call CUDA).
    virtual void launch_host(std::function<void()> work) = 0;
    // Copies `bytes` from src to dst in stream order; both must stay valid until it has run.
    virtual void copy_async(void* dst, const void* src, size_t bytes, CopyDirection direction) = 0;
    // Sets `bytes` of device memory at dst to `value` in stream order. The default uploads a
    // host buffer of the value (kept until the copy has run); sim sets the bytes in place, and a
    // backend with a native memset (cudaMemsetAsync) should override it.
    // (Defined here, inline: the CUDA backend's library links below tandem_kernels.)
    virtual void memset_async(void* dst, int value, size_t bytes) {
        auto fill = std::make_shared<std::vector<unsigned char>>(bytes, (unsigned char)value);
        copy_async(dst, fill->data(), bytes, CopyDirection::HostToDevice);
        launch_host([fill] {});  // frees the host buffer once the copy has run
    }
    // An event that completes when everything queued so far has run.
    virtual std::shared_ptr<Event> record() = 0;
    // Work queued on this stream from now on waits for `event` (recorded on any stream of the
    // same device).
    virtual void wait(const std::shared_ptr<Event>& event) = 0;
    // Blocks until everything queued so far has run. Rethrows the first exception thrown by
    // launch_host work on sim (the stream keeps working).
    virtual void synchronize() = 0;
    // The backend's own handle (a cudaStream_t on cuda:N), for kernels launched on this stream;
    // null on sim.
    virtual void* native_handle() { return nullptr; }
};

// A new stream on `device` (sim or cuda). Throws tandem::Error when the device is not there.
std::unique_ptr<Stream> make_stream(Device device);

// The sim device's copy engine: what copies cost in wall time.
struct SimOptions {
    double host_to_device_bytes_per_second = 25e9;  // about PCIe 4.0 x16
    double device_to_host_bytes_per_second = 25e9;
    double device_to_device_bytes_per_second = 1e12;
    double copy_latency_seconds = 10e-6;
};
// Process-wide; streams created afterwards use them.
void set_sim_options(const SimOptions& options);
SimOptions sim_options();

// The modelled duration of one sim copy.
double sim_copy_seconds(const SimOptions& options, size_t bytes, CopyDirection direction);

// Stream implementations, chosen by make_stream().
std::unique_ptr<Stream> make_sim_stream(Device device);
std::unique_ptr<Stream> make_cuda_stream(Device device);  // kernels/cuda/stream_cuda.cu

}  // namespace tandem
