// The shared state of one request: written by the scheduler thread, read by the caller that
// waits on it or aborts it. Everything after `mutex` is guarded by it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include <tandem/request.h>
#include <tandem/sampling.h>

namespace tandem {

struct CompiledGrammar;  // engine/src/structured_output.h

using Clock = std::chrono::steady_clock;

struct RequestHandle::State {
    uint64_t id = 0;
    std::vector<int32_t> prompt;
    SamplingParams params;
    uint64_t seed = 0;                               // params.seed, or drawn at submission
    std::shared_ptr<const CompiledGrammar> grammar;  // params.grammar, compiled at submission
    StreamCallback on_delta;
    Clock::time_point submitted;
    std::atomic<bool> abort_requested{false};

    std::mutex mutex;
    std::condition_variable finished_cv;
    bool done = false;
    RequestOutput output;
};

}  // namespace tandem
