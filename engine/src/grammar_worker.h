// GrammarWorker: one thread that computes the grammar masks of the next step while the model
// runs the current one. A sample's next mask depends only on the tokens its grammar accepted,
// all known when the step that feeds the last of them back starts, so the mask (tens of
// microseconds to milliseconds a sample, growing with the vocabulary) leaves the critical path
// of decoding: the scheduler waits for it only when it samples.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

namespace tandem {

class GrammarWorker {
  public:
    GrammarWorker();
    ~GrammarWorker();  // finishes the queued tasks
    GrammarWorker(const GrammarWorker&) = delete;
    GrammarWorker& operator=(const GrammarWorker&) = delete;

    // Runs `task` on the worker thread, after those queued before it. The future holds its
    // exception, if it throws.
    std::future<void> run(std::function<void()> task);

  private:
    void loop();

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::packaged_task<void()>> queue_;
    bool stopping_ = false;
    std::thread thread_;  // last: starts once the rest exists
};

}  // namespace tandem
