// Scheduler: continuous batching on one thread.
//
// Each step: (1) aborted requests leave and a pending weight reload is swapped in (which resets
// the prefix cache); (2) requests are admitted first come, first served — preempted ones first —
// while sequence slots last and the KV pool holds the blocks of what they compute next: a new
// request's prompt, minus the full blocks the prefix cache already holds, plus a watermark of 1%
// of the pool; the head of the queue waits rather than being overtaken; (3) each sequence that
// runs gets a block when it crosses a block boundary; when the pool is out of blocks, the most
// recently admitted request is preempted (recompute: its blocks go back, it waits at the front
// of the queue, returns to its place by first admission, and when readmitted each sample recomputes
// its prompt and generated tokens as a prefill, sampling only after the last one, so the stream
// goes on without repeating a token and its sampler's state is kept); (4) one forward() runs every
// decoding sequence's next token and then prompt chunks (and recomputations) up to max_step_tokens;
// (5) each sequence samples, streams its delta and publishes its full blocks to the prefix cache; a
// finished sample gives its blocks back at once, a finished request leaves.
//
// A request with n > 1 samples prefills its prompt once; the other samples then share its full
// blocks (and copy the partly filled last one) and sample their first token from the same logits
// with their own seeds. Requests that want prompt logprobs or routing compute every prompt
// position (no prefix cache hit), since those come out of the prompt's rows.
//
// SchedulerOptions::reserve_max_tokens restores the old admission rule (prompt + max_tokens per
// sample reserved up front, never a preemption), kept for comparisons.
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
    bool prefix_caching = true;
    bool reserve_max_tokens = false;
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
        bool started = false;              // the prompt is done: every unfinished sample runs
        int64_t reserved_blocks = 0;       // with reserve_max_tokens
        int64_t cached_prompt_tokens = 0;  // prefill the prefix cache saved at admission
        std::vector<TokenLogprob> prompt_logprobs;
        RoutedExperts prompt_routing;
        Clock::time_point admitted;
        std::optional<Clock::time_point> first_token;
    };
    struct Entry;  // one sequence's part of a step

    void loop();
    // Admits what fits, under mutex_; returns the waiting requests aborted before they started,
    // for the caller to complete once it has released the mutex (their callbacks run then).
    std::vector<std::shared_ptr<RequestHandle::State>> admit_locked();
    int64_t blocks_needed(const RequestHandle::State& request) const;
    // Gives each sample of `running` that runs next its cached prefix and the blocks for the
    // tokens it has to compute; false, holding nothing, when the pool cannot (the watermark
    // too, unless nothing else runs).
    bool allocate(Running& running);
    // Attaches the cached prefix of `sequence`'s tokens to its empty cache, where allowed.
    void attach_prefix(Running& running, Sequence& sequence);
    // Frees every block of `running` and queues it at the front of the preempted requests.
    void preempt(std::list<Running>::iterator running);
    bool step();  // false when there was nothing to run
    void process(Running& running, const Entry& entry, const float* logits, int64_t vocab,
                 const StepRouting& routing);
    void start_samples(Running& running, std::span<const float> logits);
    void emit(Running& running, StreamDelta delta);  // a last delta gets the cached count
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
    GrammarWorker grammar_worker_;  // before the sequences, which wait for it as they go

    std::list<Running> running_;    // scheduler thread only, in order of admission
    std::list<Running> preempted_;  // scheduler thread only, first to be readmitted first

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable swapped_;
    std::deque<std::shared_ptr<RequestHandle::State>> waiting_;
    std::unique_ptr<Model> incoming_model_;
    bool swap_pending_ = false;
    std::string swap_error_;  // why binding the expert runner to the incoming model failed
    bool stopping_ = false;
    int64_t reserved_blocks_ = 0;
    int64_t n_preempted_ = 0;  // preempted_.size(), for stats()
    EngineStats stats_;
    std::thread thread_;
};

}  // namespace tandem
