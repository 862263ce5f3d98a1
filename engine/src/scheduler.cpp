#include "engine/src/scheduler.h"

#include <algorithm>

#include "kernels/error.h"
#include "kernels/log.h"

namespace tandem {

namespace {

double seconds_between(Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

int64_t ceil_div(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

// Rows [first, first + n) of a step's routing as RoutedExperts, position-major.
RoutedExperts routing_of(const StepRouting& step, int64_t first, int64_t n, int32_t lookahead,
                         bool probabilities) {
    RoutedExperts out{.n_layers = int32_t(step.layers.size()),
                      .top_k = int32_t(step.routing.at(0).n_experts_active),
                      .layers = {step.layers.begin(), step.layers.end()},
                      .lookahead = lookahead};
    const auto k = size_t(out.top_k);
    probabilities = probabilities && step.probabilities.size() == step.routing.size();
    if (probabilities)
        out.n_experts = int32_t(step.probabilities[0].size() / size_t(step.routing[0].n_tokens));
    const auto n_experts = size_t(out.n_experts);
    for (int64_t t = first; t < first + n; ++t)
        for (size_t l = 0; l < step.routing.size(); ++l) {
            const Routing& layer = step.routing[l];
            const size_t at = size_t(t) * k;
            out.experts.insert(out.experts.end(), layer.experts.begin() + std::ptrdiff_t(at),
                               layer.experts.begin() + std::ptrdiff_t(at + k));
            out.weights.insert(out.weights.end(), layer.weights.begin() + std::ptrdiff_t(at),
                               layer.weights.begin() + std::ptrdiff_t(at + k));
            for (int32_t j = 0; j < lookahead; ++j) {
                const std::vector<Routing>& predicted = step.predicted[l];
                const Routing* p = size_t(j) < predicted.size() ? &predicted[size_t(j)] : nullptr;
                for (size_t i = 0; i < k; ++i)
                    out.predicted.push_back(p && !p->experts.empty() ? p->experts[at + i] : -1);
            }
            if (probabilities) {
                const std::vector<float>& p = step.probabilities[l];
                out.probabilities.insert(out.probabilities.end(),
                                         p.begin() + std::ptrdiff_t(size_t(t) * n_experts),
                                         p.begin() + std::ptrdiff_t(size_t(t + 1) * n_experts));
            }
        }
    return out;
}

}  // namespace

struct Scheduler::Entry {
    Running* running;
    Sequence* sequence;
    int64_t n_tokens;
    bool prefill;
    bool all_logits;
    int64_t first_row;    // of the logits
    int64_t first_token;  // of the step's tokens (routing rows)
};

Scheduler::Scheduler(std::shared_ptr<KvBlockPool> blocks, std::unique_ptr<Model> model,
                     ThreadPool& pool, const Tokenizer* tokenizer, const SchedulerOptions& options)
    : blocks_(std::move(blocks)),
      model_(std::move(model)),
      pool_(pool),
      tokenizer_(tokenizer),
      options_(options),
      eos_token_ids_(model_->config().eos_token_ids) {
    stats_.kv_blocks_total = blocks_->total_blocks();
    thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

int64_t Scheduler::blocks_needed(const RequestHandle::State& r) const {
    const int64_t positions =
        std::min<int64_t>(options_.context_length, int64_t(r.prompt.size()) + r.params.max_tokens);
    return r.params.n * ceil_div(std::max<int64_t>(positions, 1), blocks_->block_size());
}

void Scheduler::submit(std::shared_ptr<RequestHandle::State> request) {
    const int64_t need = blocks_needed(*request);
    if (need > blocks_->total_blocks())
        throw RequestError("the request needs " + std::to_string(need) + " KV blocks of " +
                           std::to_string(blocks_->block_size()) + " positions (" +
                           std::to_string(request->prompt.size()) + " prompt tokens + " +
                           std::to_string(request->params.max_tokens) + " max_tokens, x " +
                           std::to_string(request->params.n) +
                           " samples) but the KV cache has only " +
                           std::to_string(blocks_->total_blocks()) +
                           "; lower max_tokens or n, or raise the KV budget");
    if (request->params.n > options_.max_sequences)
        throw RequestError("n = " + std::to_string(request->params.n) +
                           " exceeds the engine's max_sequences of " +
                           std::to_string(options_.max_sequences));
    {
        std::lock_guard lock(mutex_);
        if (stopping_) throw QueueFullError("the engine is shutting down");
        if (int64_t(waiting_.size()) >= options_.max_waiting_requests)
            throw QueueFullError("too many waiting requests (" + std::to_string(waiting_.size()) +
                                 "); try again later");
        waiting_.push_back(std::move(request));
    }
    wake_.notify_all();
}

std::unique_ptr<Model> Scheduler::swap_model(std::unique_ptr<Model> model) {
    std::unique_lock lock(mutex_);
    swapped_.wait(lock, [&] { return !swap_pending_; });  // one reload at a time
    incoming_model_ = std::move(model);
    swap_pending_ = true;
    wake_.notify_all();
    swapped_.wait(lock, [&] { return !swap_pending_ || stopping_; });
    if (!swap_error_.empty()) fail(std::exchange(swap_error_, {}));
    return std::move(incoming_model_);  // now the old model
}

EngineStats Scheduler::stats() const {
    std::lock_guard lock(mutex_);
    EngineStats s = stats_;
    s.waiting_requests = int64_t(waiting_.size());
    s.kv_blocks_used = blocks_->total_blocks() - blocks_->free_blocks();
    return s;
}

void Scheduler::loop() {
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] {
                return stopping_ || swap_pending_ || !running_.empty() || !waiting_.empty();
            });
            if (stopping_) break;
            if (swap_pending_) {
                try {  // between steps, on this thread: the runner is idle
                    if (options_.expert_runner != nullptr)
                        incoming_model_->set_expert_runner(options_.expert_runner);
                    std::swap(model_, incoming_model_);
                } catch (const std::exception& e) {
                    swap_error_ = cat("reload_weights: ", e.what());
                    model_->set_expert_runner(options_.expert_runner);  // back to the old weights
                }
                swap_pending_ = false;
                swapped_.notify_all();
            }
            admit_locked();
        }
        // Aborts requested while running take effect here, between steps.
        for (Running& r : running_)
            if (r.request->abort_requested)
                for (auto& seq : r.sequences)
                    if (!seq->finished()) emit(r, seq->finish(FinishReason::Abort));
        retire_finished();
        step();
        retire_finished();
    }
    // Shutting down: nothing more runs.
    for (Running& r : running_)
        for (auto& seq : r.sequences)
            if (!seq->finished()) emit(r, seq->finish(FinishReason::Abort));
    retire_finished();
    std::lock_guard lock(mutex_);
    for (auto& request : waiting_)
        complete_unstarted(*request, FinishReason::Abort, "");
    waiting_.clear();
    swapped_.notify_all();
}

void Scheduler::admit_locked() {
    int64_t active = 0;
    for (const Running& r : running_)
        active += int64_t(r.sequences.size());
    while (!waiting_.empty()) {
        std::shared_ptr<RequestHandle::State> request = waiting_.front();
        if (request->abort_requested) {
            waiting_.pop_front();
            complete_unstarted(*request, FinishReason::Abort, "");
            continue;
        }
        const int64_t need = blocks_needed(*request);
        if (active + request->params.n > options_.max_sequences ||
            reserved_blocks_ + need > blocks_->total_blocks())
            break;  // first come, first served: later requests wait behind this one
        waiting_.pop_front();
        Running& r = running_.emplace_back();
        r.request = request;
        r.reserved_blocks = need;
        r.admitted = Clock::now();
        reserved_blocks_ += need;
        active += request->params.n;
        const int64_t max_positions = std::min<int64_t>(
            options_.context_length, int64_t(request->prompt.size()) + request->params.max_tokens);
        for (int32_t i = 0; i < request->params.n; ++i)
            r.sequences.push_back(std::make_unique<Sequence>(
                *request, i,
                std::make_unique<KvCache>(blocks_, std::max<int64_t>(max_positions, 1)), tokenizer_,
                eos_token_ids_, options_.context_length));
    }
    stats_.running_requests = int64_t(running_.size());
    stats_.active_sequences = active;
}

bool Scheduler::step() {
    std::vector<Entry> entries;
    std::vector<SequenceStep> steps;
    int64_t budget = options_.max_step_tokens, rows = 0, tokens = 0;
    bool routing = false;
    int lookahead = 0;
    bool probabilities = false;
    auto add = [&](Running& r, Sequence& seq, std::span<const int32_t> ids, bool prefill,
                   bool all_logits) {
        entries.push_back({&r, &seq, int64_t(ids.size()), prefill, all_logits, rows, tokens});
        steps.push_back({.tokens = ids, .cache = &seq.cache(), .all_logits = all_logits});
        rows += all_logits ? int64_t(ids.size()) : 1;
        tokens += int64_t(ids.size());
        budget -= int64_t(ids.size());
        routing = routing || seq.wants_routing();
        if (seq.wants_routing()) {
            lookahead = std::max(lookahead, int(r.request->params.routing_lookahead));
            probabilities = probabilities || r.request->params.routing_probabilities;
        }
    };
    // Decodes first: a running sequence never waits for someone else's prompt.
    for (Running& r : running_)
        if (r.prefilled == int64_t(r.request->prompt.size()))
            for (auto& seq : r.sequences)
                if (!seq->finished()) add(r, *seq, {&seq->tokens().back(), 1}, false, false);
    for (Running& r : running_) {
        const int64_t prompt = int64_t(r.request->prompt.size());
        if (r.prefilled == prompt || budget <= 0) continue;
        const int64_t chunk = std::min(prompt - r.prefilled, budget);
        add(r, *r.sequences[0], {r.request->prompt.data() + r.prefilled, size_t(chunk)}, true,
            r.request->params.prompt_logprobs >= 0);
    }
    if (steps.empty()) return false;

    OwnedTensor logits;
    StepRouting step_routing{.lookahead = lookahead, .want_probabilities = probabilities};
    try {
        for (const SequenceStep& s : steps)
            if (!s.cache->reserve(s.cache->length() + int64_t(s.tokens.size())))
                fail("the KV cache ran out of blocks that admission had reserved");
        logits = model_->forward(steps, pool_, routing ? &step_routing : nullptr);
    } catch (const std::exception& e) {
        log_error("step failed: ", e.what());
        fail_all(e.what());
        return true;
    }
    const int64_t vocab = logits.view.dim(1);
    for (const Entry& e : entries)
        process(*e.running, e, logits.view.data_as<const float>(), vocab, step_routing);
    std::lock_guard lock(mutex_);
    ++stats_.steps_total;
    for (const Entry& e : entries)
        (e.prefill ? stats_.prompt_tokens_total : stats_.generated_tokens_total) += e.n_tokens;
    return true;
}

void Scheduler::process(Running& r, const Entry& e, const float* logits, int64_t vocab,
                        const StepRouting& routing) {
    if (e.sequence->finished()) return;
    auto row = [&](int64_t i) {
        return std::span<const float>(logits + (e.first_row + i) * vocab, size_t(vocab));
    };
    // Routing of this entry's tokens, position by position.
    if (e.sequence->wants_routing() && !routing.layers.empty()) {
        RoutedExperts part =
            routing_of(routing, e.first_token, e.n_tokens, r.request->params.routing_lookahead,
                       r.request->params.routing_probabilities);
        if (e.prefill) {
            append_routing(r.prompt_routing, part);
        } else {
            e.sequence->add_routing(part);
        }
    }
    if (!e.prefill) {
        if (!r.first_token) r.first_token = Clock::now();
        emit(r, e.sequence->advance(row(0)));
        return;
    }
    const std::vector<int32_t>& prompt = r.request->prompt;
    if (e.all_logits)
        for (int64_t i = 0; i < e.n_tokens; ++i) {
            const int64_t next = r.prefilled + i + 1;
            if (next < int64_t(prompt.size()))
                r.prompt_logprobs.push_back(
                    token_logprob(row(i), prompt[size_t(next)], r.request->params.prompt_logprobs));
        }
    r.prefilled += e.n_tokens;
    if (r.prefilled == int64_t(prompt.size()))
        start_samples(r, row(e.all_logits ? e.n_tokens - 1 : 0));
}

void Scheduler::start_samples(Running& r, std::span<const float> logits) {
    const int64_t prompt = int64_t(r.request->prompt.size());
    if (r.request->params.max_tokens == 0) {
        for (auto& seq : r.sequences)
            emit(r, seq->finish(FinishReason::Length));
        return;
    }
    r.first_token = Clock::now();
    for (auto& seq : r.sequences) {
        if (seq->index() > 0) seq->cache().copy_prefix_from(r.sequences[0]->cache(), prompt);
        if (r.prompt_routing.n_layers > 0) seq->add_routing(r.prompt_routing);
        emit(r, seq->advance(logits));
    }
}

void Scheduler::emit(Running& r, const StreamDelta& delta) {
    if (!r.request->on_delta) return;
    try {
        r.request->on_delta(delta);
    } catch (const std::exception& e) {
        // A failing consumer (a closed connection) ends its own request, nothing else.
        log_warn("request ", r.request->id, ": stream callback failed: ", e.what());
        r.request->abort_requested = true;
    }
}

void Scheduler::fail_all(const std::string& message) {
    for (Running& r : running_) {
        for (auto& seq : r.sequences)
            if (!seq->finished()) emit(r, seq->finish(FinishReason::Error));
        r.request->output.error = message;  // read only after completion
    }
}

void Scheduler::retire_finished() {
    std::vector<std::shared_ptr<RequestHandle::State>> done;
    for (auto it = running_.begin(); it != running_.end();) {
        const bool finished = std::all_of(it->sequences.begin(), it->sequences.end(),
                                          [](const auto& s) { return s->finished(); });
        if (!finished) {
            ++it;
            continue;
        }
        complete(*it);
        done.push_back(it->request);
        it = running_.erase(it);  // the caches go, and their blocks with them
    }
    {
        std::lock_guard lock(mutex_);
        reserved_blocks_ = 0;
        int64_t active = 0;
        for (const Running& r : running_) {
            reserved_blocks_ += r.reserved_blocks;
            for (const auto& seq : r.sequences)
                active += seq->finished() ? 0 : 1;
        }
        stats_.running_requests = int64_t(running_.size());
        stats_.active_sequences = active;
    }
    // Only now, with the blocks back in the pool and the stats current, are the waiters woken.
    for (const auto& request : done) {
        std::lock_guard lock(request->mutex);
        request->done = true;
        request->finished_cv.notify_all();
    }
}

void Scheduler::complete(Running& r) {
    RequestHandle::State& request = *r.request;
    const auto now = Clock::now();
    std::lock_guard lock(request.mutex);
    RequestOutput& out = request.output;
    out.prompt_token_ids = request.prompt;
    out.prompt_tokens = int64_t(request.prompt.size());
    out.prompt_logprobs = std::move(r.prompt_logprobs);
    for (auto& seq : r.sequences) {
        out.completions.push_back(seq->take_completion());
        out.completion_tokens += int64_t(out.completions.back().token_ids.size());
    }
    out.timings.queue_seconds = seconds_between(request.submitted, r.admitted);
    out.timings.first_token_seconds =
        r.first_token ? seconds_between(request.submitted, *r.first_token) : 0.0;
    out.timings.total_seconds = seconds_between(request.submitted, now);
    out.timings.prefill_tokens = out.prompt_tokens;
    out.timings.decode_steps = std::max<int64_t>(0, out.completion_tokens - request.params.n);
}

void Scheduler::complete_unstarted(RequestHandle::State& request, FinishReason reason,
                                   const std::string& error) {
    if (request.on_delta) {
        try {
            for (int32_t i = 0; i < request.params.n; ++i)
                request.on_delta({.index = i, .finish_reason = reason});
        } catch (const std::exception& e) {
            log_warn("request ", request.id, ": stream callback failed: ", e.what());
        }
    }
    std::lock_guard lock(request.mutex);
    request.output.prompt_token_ids = request.prompt;
    request.output.prompt_tokens = int64_t(request.prompt.size());
    request.output.error = error;
    for (int32_t i = 0; i < request.params.n; ++i)
        request.output.completions.push_back({.index = i, .finish_reason = reason});
    request.done = true;
    request.finished_cv.notify_all();
}

}  // namespace tandem
