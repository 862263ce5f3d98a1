// HostWorker: one thread that runs one job at a time, handed over by another thread, which later
// waits for it. The hybrid executor's captured decode steps start the CPU's experts from one host
// function and join them in the next (models/expert_runner.h, GraphLayerIo), so the device's
// experts, launched in between, overlap them; a host function that blocked on the CPU's experts
// would hold the stream instead.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace tandem {

class HostWorker {
  public:
    HostWorker() = default;
    HostWorker(const HostWorker&) = delete;
    HostWorker& operator=(const HostWorker&) = delete;
    ~HostWorker();  // waits for the job in hand, then ends the thread

    // Starts `job` on the worker (the thread is made on first use). One job at a time: a second
    // post() before wait() is an error.
    void post(std::function<void()> job);
    // Blocks until the posted job has run; rethrows what it threw. Returns at once when nothing
    // was posted.
    void wait();

  private:
    void loop();

    std::mutex mutex_;
    std::condition_variable changed_;
    std::function<void()> job_;
    bool busy_ = false;  // posted and not yet waited for
    bool running_ = false;
    bool stopping_ = false;
    std::exception_ptr error_;
    std::thread thread_;
};

}  // namespace tandem
