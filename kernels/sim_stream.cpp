// The sim device's streams (see kernels/stream.h): a worker thread per stream, copy engines
// shared by all sim streams, events on a condition variable. Copies and memsets reach device
// memory through its host backing (kernels/sim_device.h).
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

#include "kernels/error.h"
#include "kernels/sim_device.h"
#include "kernels/stream.h"

namespace tandem {

namespace {

std::mutex g_options_mutex;
SimOptions g_options;

// One engine per direction: a copy holds its engine for its modelled duration, so copies in one
// direction queue behind each other while the other direction and computation go on.
struct CopyEngines {
    std::mutex host_to_device, device_to_host, device_to_device;
    std::mutex& of(CopyDirection d) {
        switch (d) {
            case CopyDirection::HostToDevice: return host_to_device;
            case CopyDirection::DeviceToHost: return device_to_host;
            case CopyDirection::DeviceToDevice: return device_to_device;
        }
        return device_to_device;
    }
};

CopyEngines& copy_engines() {
    static CopyEngines engines;
    return engines;
}

class SimEvent final : public Event {
  public:
    void complete() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        cv_.notify_all();
    }
    void synchronize() override {
        std::unique_lock lock(mutex_);
        cv_.wait(lock, [&] { return done_; });
    }
    bool done() override {
        std::lock_guard lock(mutex_);
        return done_;
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
};

class SimStream final : public Stream {
  public:
    SimStream(Device device, const SimOptions& options)
        : device_(device), options_(options), worker_([this] { run(); }) {}

    ~SimStream() override {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_all();
        worker_.join();  // runs what was queued, then stops
    }

    Device device() const override { return device_; }

    void launch_host(std::function<void()> work) override { push(std::move(work)); }

    void copy_async(void* dst, const void* src, size_t bytes, CopyDirection direction) override {
        const double seconds = sim_copy_seconds(options_, bytes, direction);
        // Device sides translated now, so a wrong pointer fails where it was passed; a host side
        // must not be device memory (it would die on the worker).
        const bool to_device = direction != CopyDirection::DeviceToHost;
        const bool from_device = direction != CopyDirection::HostToDevice;
        if (bytes > 0) {
            if (!to_device && is_sim_address(dst, 1))
                fail(device_.name(), ": copy to the host into device memory at ", dst);
            if (!from_device && is_sim_address(src, 1))
                fail(device_.name(), ": copy from the host out of device memory at ", src);
            if (to_device) dst = sim_backing_address(dst, bytes);
            if (from_device) src = sim_backing_address(src, bytes);
        }
        push([dst, src, bytes, direction, seconds] {
            std::lock_guard engine(copy_engines().of(direction));
            std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
            if (bytes > 0) std::memcpy(dst, src, bytes);
        });
    }

    void memset_async(void* dst, int value, size_t bytes) override {
        if (bytes == 0) return;
        void* backing = sim_backing_address(dst, bytes);
        push([backing, value, bytes] { std::memset(backing, value, bytes); });
    }

    std::shared_ptr<Event> record() override {
        auto event = std::make_shared<SimEvent>();
        push([event] { event->complete(); });
        return event;
    }

    void wait(const std::shared_ptr<Event>& event) override {
        if (!event) fail(device_.name(), ": wait on a null event");
        if (dynamic_cast<SimEvent*>(event.get()) == nullptr)
            fail(device_.name(), ": wait on an event of another device kind");
        push([event] { event->synchronize(); });
    }

    void synchronize() override {
        record()->synchronize();
        std::exception_ptr error;
        {
            std::lock_guard lock(mutex_);
            std::swap(error, error_);
        }
        if (error) std::rethrow_exception(error);
    }

  private:
    void push(std::function<void()> work) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) fail(device_.name(), ": the stream is being destroyed");
            queue_.push_back(std::move(work));
        }
        cv_.notify_one();
    }

    void run() {
        sim_mark_worker_thread();
        for (;;) {
            std::function<void()> work;
            {
                std::unique_lock lock(mutex_);
                cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;  // stopping, and nothing left
                work = std::move(queue_.front());
                queue_.pop_front();
            }
            try {
                work();
            } catch (...) {
                std::lock_guard lock(mutex_);
                if (!error_) error_ = std::current_exception();
            }
        }
    }

    Device device_;
    SimOptions options_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::exception_ptr error_;
    std::thread worker_;  // last: starts once the rest exists
};

}  // namespace

void set_sim_options(const SimOptions& options) {
    if (!(options.host_to_device_bytes_per_second > 0) ||
        !(options.device_to_host_bytes_per_second > 0) ||
        !(options.device_to_device_bytes_per_second > 0) || !(options.copy_latency_seconds >= 0))
        fail("sim options: bandwidths must be positive and the latency not negative");
    std::lock_guard lock(g_options_mutex);
    g_options = options;
}

SimOptions sim_options() {
    std::lock_guard lock(g_options_mutex);
    return g_options;
}

double sim_copy_seconds(const SimOptions& o, size_t bytes, CopyDirection direction) {
    const double bandwidth =
        direction == CopyDirection::HostToDevice   ? o.host_to_device_bytes_per_second
        : direction == CopyDirection::DeviceToHost ? o.device_to_host_bytes_per_second
                                                   : o.device_to_device_bytes_per_second;
    return double(bytes) / bandwidth + o.copy_latency_seconds;
}

std::unique_ptr<Stream> make_sim_stream(Device device) {
    return std::make_unique<SimStream>(device, sim_options());
}

std::unique_ptr<Stream> make_stream(Device device) {
    switch (device.kind) {
        case DeviceKind::Sim: return make_sim_stream(device);
        case DeviceKind::Cuda: return make_cuda_stream(device);
        case DeviceKind::Cpu: break;
    }
    fail("streams exist on sim and cuda devices, not on ", device.name());
}

}  // namespace tandem
