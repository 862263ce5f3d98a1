// Scheduler: continuous batching on one thread.
//
// Each step: (1) aborted requests leave and a pending weight reload is swapped in; (2) waiting
// requests are admitted first come, first served while KV memory and sequence slots last — a
// request reserves, at admission, the KV blocks its samples can need at most (prompt +
// max_tokens, capped by the context), so an admitted request never stalls for memory and
// nothing is ever preempted; the head of the queue waits rather than being overtaken; (3) one
// forward() runs every decoding sequence's next token and then prompt chunks of the requests
// still prefilling, up to max_step_tokens; (4) each sequence samples, streams its delta and
// leaves when finished, returning its blocks to the pool.
//
// A request with n > 1 samples prefills its prompt once; the other samples copy those KV rows
// when the prompt is done and sample their first token from the same logits with their own
// seeds.
#pragma once

#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include <tandem/engine.h>

#include "engine/src/request_state.h"
#include "engine/src/sequence.h"
#include "kernels/thread_pool.h"
#include "models/expert_runner.h"
#include "models/model.h"

namespace tandem {

struct SchedulerOptions {
    int64_t context_length = 0;
    int max_sequences = 64;
    int64_t max_step_tokens = 512;
    int max_waiting_requests = 1024;
    ExpertRunner* expert_runner = nullptr;  // bound to each swapped-in model on this thread
};

class Scheduler {
  public:
    Scheduler(std::shared_ptr<KvBlockPool> blocks, std::unique_ptr<Model> model, ThreadPool& pool,
              const Tokenizer* tokenizer, const SchedulerOptions& options);
    ~Scheduler();  // aborts everything and joins the thread

    // Throws QueueFullError, or RequestError when the request can never fit.
    void submit(std::shared_ptr<RequestHandle::State> request);
    // Swaps in `model` between two steps and returns the one it replaced.
    std::unique_ptr<Model> swap_model(std::unique_ptr<Model> model);
    EngineStats stats() const;
    Model& model() { return *model_; }

  private:
    struct Running {
        std::shared_ptr<RequestHandle::State> request;
        std::vector<std::unique_ptr<Sequence>> sequences;  // [0] prefills for all
        int64_t prefilled = 0;                             // prompt tokens in sequences[0]'s cache
        int64_t reserved_blocks = 0;
        std::vector<TokenLogprob> prompt_logprobs;
        RoutedExperts prompt_routing;
        Clock::time_point admitted;
        std::optional<Clock::time_point> first_token;
    };
    struct Entry;  // one sequence's part of a step

    void loop();
    void admit_locked();
    int64_t blocks_needed(const RequestHandle::State& request) const;
    bool step();  // false when there was nothing to run
    void process(Running& running, const Entry& entry, const float* logits, int64_t vocab,
                 const StepRouting& routing);
    void start_samples(Running& running, std::span<const float> logits);
    void emit(Running& running, const StreamDelta& delta);
    void fail_all(const std::string& message);
    void retire_finished();
    void complete(Running& running);  // fills the output; retire_finished() wakes the waiter
    static void complete_unstarted(RequestHandle::State& request, FinishReason reason,
                                   const std::string& error);

    std::shared_ptr<KvBlockPool> blocks_;
    std::unique_ptr<Model> model_;
    ThreadPool& pool_;
    const Tokenizer* tokenizer_;
    SchedulerOptions options_;
    std::vector<int32_t> eos_token_ids_;

    std::list<Running> running_;  // scheduler thread only

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable swapped_;
    std::deque<std::shared_ptr<RequestHandle::State>> waiting_;
    std::unique_ptr<Model> incoming_model_;
    bool swap_pending_ = false;
    std::string swap_error_;  // why binding the expert runner to the incoming model failed
    bool stopping_ = false;
    int64_t reserved_blocks_ = 0;
    EngineStats stats_;
    std::thread thread_;
};

}  // namespace tandem
