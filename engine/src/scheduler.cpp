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
    int64_t position;  // of the first token: the cache's length before the step
    int64_t n_tokens;
    bool prompt;  // the request's prompt, before its samples start
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
    // The step's temporaries are allocated now, for the largest step, not during steps.
    model_->reserve_scratch(options_.max_step_tokens);
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
    // Whatever else runs, a request that fits the pool alone runs in the end (everything newer
    // gives way to it), so this is the one limit.
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
    s.waiting_requests = int64_t(waiting_.size()) + n_preempted_;
    const KvPoolStats kv = blocks_->stats();
    s.kv_blocks_used = kv.used;
    s.kv_blocks_cached = kv.cached;
    s.kv_blocks_free = kv.free;
    s.prefix_cache_queries = kv.prefix_queries;
    s.prefix_cache_hits = kv.prefix_hits;
    return s;
}

void Scheduler::loop() {
    for (;;) {
        std::vector<std::shared_ptr<RequestHandle::State>> aborted;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] {
                return stopping_ || swap_pending_ || !running_.empty() || !preempted_.empty() ||
                       !waiting_.empty();
            });
            if (stopping_) break;
            if (swap_pending_) {
                try {  // between steps, on this thread: the runner is idle
                    if (options_.expert_runner != nullptr)
                        incoming_model_->set_expert_runner(options_.expert_runner);
                    incoming_model_->reserve_scratch(options_.max_step_tokens);
                    std::swap(model_, incoming_model_);
                    blocks_->reset_prefix_cache();  // its rows came from the old weights
                } catch (const std::exception& e) {
                    swap_error_ = cat("reload_weights: ", e.what());
                    model_->set_expert_runner(options_.expert_runner);  // back to the old weights
                }
                swap_pending_ = false;
                swapped_.notify_all();
            }
            aborted = admit_locked();
        }
        // Their callbacks run without the lock: a consumer may call back into the engine.
        for (const auto& request : aborted)
            complete_unstarted(*request, FinishReason::Abort, "");
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
    running_.splice(running_.end(), preempted_);
    for (Running& r : running_)
        for (auto& seq : r.sequences)
            if (!seq->finished()) emit(r, seq->finish(FinishReason::Abort));
    retire_finished();
    std::deque<std::shared_ptr<RequestHandle::State>> unstarted;
    {
        std::lock_guard lock(mutex_);
        unstarted.swap(waiting_);
        swapped_.notify_all();
    }
    for (auto& request : unstarted)
        complete_unstarted(*request, FinishReason::Abort, "");
}

void Scheduler::attach_prefix(Running& r, Sequence& seq) {
    const SamplingParams& p = r.request->params;
    // Prompt logprobs and routing come out of the prompt's own rows.
    if (!options_.prefix_caching || seq.cache().blocks() > 0 ||
        (!r.started && (p.prompt_logprobs >= 0 || p.return_routed_experts)))
        return;
    seq.cache().attach_cached_prefix(seq.tokens());
}

bool Scheduler::allocate(Running& r) {
    const bool alone = std::none_of(running_.begin(), running_.end(),
                                    [&](const Running& other) { return &other != &r; });
    std::vector<Sequence*> runs;
    for (auto& seq : r.sequences)
        if (!seq->finished() && (r.started || seq->index() == 0)) runs.push_back(seq.get());
    bool fits = true;
    for (Sequence* seq : runs) {
        attach_prefix(r, *seq);
        fits = fits && seq->cache().reserve(int64_t(seq->tokens().size()));
    }
    // A little room for the decodes of what runs already, so that admitting does not preempt
    // at once; none is needed when nothing else runs, nor when max_tokens are reserved.
    const int64_t watermark = alone || options_.reserve_max_tokens
                                  ? 0
                                  : std::max<int64_t>(1, blocks_->total_blocks() / 100);
    if (fits && blocks_->free_blocks() >= watermark) {
        if (options_.prefix_caching)
            for (Sequence* seq : runs)
                blocks_->count_lookup(int64_t(seq->tokens().size()), seq->cache().length());
        return true;
    }
    for (Sequence* seq : runs)
        seq->cache().clear();
    return false;
}

std::vector<std::shared_ptr<RequestHandle::State>> Scheduler::admit_locked() {
    std::vector<std::shared_ptr<RequestHandle::State>> aborted;
    int64_t active = 0;
    auto unfinished = [](const Running& r) {
        return int64_t(std::count_if(r.sequences.begin(), r.sequences.end(),
                                     [](const auto& s) { return !s->finished(); }));
    };
    for (const Running& r : running_)
        active += unfinished(r);
    // Preempted requests were admitted before anything still waiting: they come back first.
    while (!preempted_.empty()) {
        Running& r = preempted_.front();
        const int64_t n = unfinished(r);
        if (!r.request->abort_requested &&  // an aborted one leaves through running_ at once
            (active + n > options_.max_sequences || !allocate(r)))
            break;
        active += n;
        // Back in its place by first admission: what ran longest is preempted last.
        const auto at = std::find_if(running_.begin(), running_.end(), [&](const Running& other) {
            return other.admitted > r.admitted;
        });
        running_.splice(at, preempted_, preempted_.begin());
    }
    while (preempted_.empty() && !waiting_.empty()) {
        std::shared_ptr<RequestHandle::State> request = waiting_.front();
        if (request->abort_requested) {
            waiting_.pop_front();
            aborted.push_back(std::move(request));
            continue;
        }
        const int64_t need = blocks_needed(*request);
        if (active + request->params.n > options_.max_sequences ||
            (options_.reserve_max_tokens && reserved_blocks_ + need > blocks_->total_blocks()))
            break;  // first come, first served: later requests wait behind this one
        Running& r = running_.emplace_back();
        r.request = request;
        const int64_t max_positions = std::min<int64_t>(
            options_.context_length, int64_t(request->prompt.size()) + request->params.max_tokens);
        for (int32_t i = 0; i < request->params.n; ++i)
            r.sequences.push_back(std::make_unique<Sequence>(
                *request, i,
                std::make_unique<KvCache>(blocks_, std::max<int64_t>(max_positions, 1)), tokenizer_,
                eos_token_ids_, options_.context_length, &grammar_worker_));
        if (!allocate(r)) {
            running_.pop_back();
            break;
        }
        waiting_.pop_front();
        r.cached_prompt_tokens = r.sequences[0]->cache().length();
        r.admitted = Clock::now();
        if (options_.reserve_max_tokens) {
            r.reserved_blocks = need;
            reserved_blocks_ += need;
        }
        active += request->params.n;
    }
    stats_.running_requests = int64_t(running_.size());
    stats_.active_sequences = active;
    n_preempted_ = int64_t(preempted_.size());
    return aborted;
}

void Scheduler::preempt(std::list<Running>::iterator it) {
    Running& r = *it;
    for (auto& seq : r.sequences)
        seq->cache().clear();
    if (!r.started) {  // the prompt starts over, and its logprobs and routing with it
        r.prompt_logprobs.clear();
        r.prompt_routing = {};
    }
    // In order of first admission, so that the oldest comes back first.
    auto at = std::find_if(preempted_.begin(), preempted_.end(),
                           [&](const Running& other) { return other.admitted > r.admitted; });
    preempted_.splice(at, running_, it);
    std::lock_guard lock(mutex_);
    ++stats_.preemptions;
    n_preempted_ = int64_t(preempted_.size());
}

bool Scheduler::step() {
    // 1. What runs: every decode, then prompt chunks and recomputations while the budget lasts.
    struct Planned {
        Running* running;  // null once preempted
        Sequence* sequence;
        int64_t n_tokens;
    };
    std::vector<Planned> plan;
    auto pending = [](Sequence& seq) {
        return int64_t(seq.tokens().size()) - seq.cache().length();
    };
    std::vector<std::pair<Running*, Sequence*>> runs;
    for (Running& r : running_)
        for (auto& seq : r.sequences)
            if (!seq->finished() && (r.started || seq->index() == 0)) {
                // A sample whose fork found no free block catches up from the prefix cache.
                if (seq->cache().blocks() == 0) attach_prefix(r, *seq);
                runs.emplace_back(&r, seq.get());
            }
    int64_t budget = options_.max_step_tokens;
    for (const auto& [r, seq] : runs)
        if (pending(*seq) == 1) {
            plan.push_back({r, seq, 1});
            --budget;
        }
    for (const auto& [r, seq] : runs)
        if (const int64_t n = pending(*seq); n > 1 && budget > 0) {
            plan.push_back({r, seq, std::min(n, budget)});
            budget -= plan.back().n_tokens;
        }

    // 2. Their blocks. When the pool runs out, the most recently admitted request gives way,
    // down to the one asking.
    for (Planned& p : plan) {
        if (p.running == nullptr) continue;
        KvCache& cache = p.sequence->cache();
        while (!cache.reserve(cache.length() + p.n_tokens)) {
            const auto victim = std::prev(running_.end());
            const Running* gone = &*victim;
            for (Planned& q : plan)
                if (q.running == gone) q.running = nullptr;
            preempt(victim);
            if (gone == p.running) break;
        }
    }

    // 3. The step.
    std::vector<Entry> entries;
    std::vector<SequenceStep> steps;
    int64_t rows = 0, tokens = 0;
    bool routing = false;
    int lookahead = 0;
    bool probabilities = false;
    for (const Planned& p : plan) {
        if (p.running == nullptr) continue;
        Running& r = *p.running;
        Sequence& seq = *p.sequence;
        const int64_t position = seq.cache().length();
        const bool all_logits = !r.started && r.request->params.prompt_logprobs >= 0;
        entries.push_back({&r, &seq, position, p.n_tokens, !r.started, all_logits, rows, tokens});
        steps.push_back(
            {.tokens = std::span(seq.tokens()).subspan(size_t(position), size_t(p.n_tokens)),
             .cache = &seq.cache(),
             .all_logits = all_logits});
        rows += all_logits ? p.n_tokens : 1;
        tokens += p.n_tokens;
        routing = routing || seq.wants_routing();
        if (seq.wants_routing()) {
            lookahead = std::max(lookahead, int(r.request->params.routing_lookahead));
            probabilities = probabilities || r.request->params.routing_probabilities;
        }
    }
    if (steps.empty()) return false;

    OwnedTensor logits;
    StepRouting step_routing{.lookahead = lookahead, .want_probabilities = probabilities};
    try {
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
        (e.n_tokens > 1 || e.prompt ? stats_.prompt_tokens_total : stats_.generated_tokens_total) +=
            e.n_tokens;
    return true;
}

void Scheduler::process(Running& r, const Entry& e, const float* logits, int64_t vocab,
                        const StepRouting& routing) {
    Sequence& seq = *e.sequence;
    if (seq.finished()) return;
    auto row = [&](int64_t i) {
        return std::span<const float>(logits + (e.first_row + i) * vocab, size_t(vocab));
    };
    // Routing of this entry's tokens, position by position.
    if (seq.wants_routing() && !routing.layers.empty()) {
        const int32_t lookahead = r.request->params.routing_lookahead;
        const bool probabilities = r.request->params.routing_probabilities;
        if (e.prompt) {
            append_routing(r.prompt_routing, routing_of(routing, e.first_token, e.n_tokens,
                                                        lookahead, probabilities));
        } else {
            // A recomputation after a preemption repeats positions the sample has.
            const int64_t skip =
                std::clamp<int64_t>(seq.routing_positions() - e.position, 0, e.n_tokens);
            if (skip < e.n_tokens)
                seq.add_routing(routing_of(routing, e.first_token + skip, e.n_tokens - skip,
                                           lookahead, probabilities));
        }
    }
    if (options_.prefix_caching) seq.cache().publish(seq.tokens());
    // Caught up with its tokens: the last row predicts the next one.
    const bool caught_up = seq.cache().length() == int64_t(seq.tokens().size());
    const std::span<const float> last = row(e.all_logits ? e.n_tokens - 1 : 0);
    if (e.prompt) {
        const std::vector<int32_t>& prompt = r.request->prompt;
        if (e.all_logits)
            for (int64_t i = 0; i < e.n_tokens; ++i) {
                const int64_t next = e.position + i + 1;
                if (next < int64_t(prompt.size()))
                    r.prompt_logprobs.push_back(token_logprob(row(i), prompt[size_t(next)],
                                                              r.request->params.prompt_logprobs));
            }
        if (caught_up) start_samples(r, last);
        return;
    }
    if (!caught_up) return;
    if (!r.first_token) r.first_token = Clock::now();
    emit(r, seq.advance(last));
}

void Scheduler::start_samples(Running& r, std::span<const float> logits) {
    r.started = true;
    const int64_t prompt = int64_t(r.request->prompt.size());
    if (r.request->params.max_tokens == 0) {
        for (auto& seq : r.sequences)
            emit(r, seq->finish(FinishReason::Length));
        return;
    }
    r.first_token = Clock::now();
    const KvCache& first = r.sequences[0]->cache();
    for (auto& seq : r.sequences) {
        // A sample that finds no free block for its copy of the prompt's partly filled last
        // block starts empty and recomputes its prompt in a later step instead.
        if (seq->index() > 0) seq->cache().share_prefix_from(first, prompt);
        if (r.prompt_routing.n_layers > 0) seq->add_routing(r.prompt_routing);
        emit(r, seq->advance(logits));
    }
}

void Scheduler::emit(Running& r, StreamDelta delta) {
    if (!r.request->on_delta) return;
    if (delta.finish_reason) delta.cached_prompt_tokens = r.cached_prompt_tokens;
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
            for (auto& seq : it->sequences)  // a finished sample's blocks go back at once
                if (seq->finished()) seq->cache().clear();
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
        n_preempted_ = int64_t(preempted_.size());
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
    out.cached_prompt_tokens = r.cached_prompt_tokens;
    out.timings.prefill_tokens = out.prompt_tokens - r.cached_prompt_tokens;
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
