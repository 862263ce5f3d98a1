#include "engine/src/host_worker.h"

#include <utility>

#include "kernels/error.h"

namespace tandem {

HostWorker::~HostWorker() {
    {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return !running_; });
        stopping_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void HostWorker::post(std::function<void()> job) {
    {
        std::lock_guard lock(mutex_);
        if (busy_) fail("host worker: a job was posted before the last one was waited for");
        job_ = std::move(job);
        busy_ = running_ = true;
        error_ = nullptr;
        if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
    }
    changed_.notify_all();
}

void HostWorker::wait() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !running_; });
    busy_ = false;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void HostWorker::loop() {
    std::unique_lock lock(mutex_);
    while (true) {
        changed_.wait(lock, [&] { return stopping_ || job_; });
        if (!job_) return;  // stopping, nothing in hand
        std::function<void()> job = std::move(job_);
        job_ = nullptr;
        lock.unlock();
        std::exception_ptr error;
        try {
            job();
        } catch (...) {
            error = std::current_exception();
        }
        lock.lock();
        error_ = error;
        running_ = false;
        changed_.notify_all();
    }
}

}  // namespace tandem
