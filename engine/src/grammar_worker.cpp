#include "engine/src/grammar_worker.h"

namespace tandem {

GrammarWorker::GrammarWorker() : thread_([this] { loop(); }) {}

GrammarWorker::~GrammarWorker() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
}

std::future<void> GrammarWorker::run(std::function<void()> task) {
    std::packaged_task<void()> packaged(std::move(task));
    std::future<void> done = packaged.get_future();
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(packaged));
    }
    wake_.notify_one();
    return done;
}

void GrammarWorker::loop() {
    for (;;) {
        std::packaged_task<void()> task;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stopping, and nothing left to do
            task = std::move(queue_.front());
            queue_.pop_front();
        }
        task();
    }
}

}  // namespace tandem
