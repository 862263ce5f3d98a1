#include "engine/src/hybrid_executor.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>

#include "engine/src/expert_slot.h"
#include "kernels/cpu/expert_ffn.h"
#include "kernels/error.h"
#include "kernels/log.h"
#include "models/blocks/moe_block.h"
#include "models/config.h"
#include "models/decoder.h"
#include "scheduler/prefetcher.h"

namespace tandem {
namespace {

// The default warm set: experts 0, 1, ... of every layer in turn, until the slots are full.
std::vector<ExpertKey> even_spread(int64_t slots, int64_t n_layers, int64_t n_experts) {
    std::vector<ExpertKey> keys;
    for (int64_t i = 0; i < std::min(slots, n_layers * n_experts); ++i)
        keys.push_back({int32_t(i % n_layers), int32_t(i / n_layers)});
    return keys;
}

}  // namespace

HybridExecutor::HybridExecutor(HybridOptions options)
    : options_(std::move(options)), cpu_experts_(options_.numa) {
    const Device d = options_.device;
    if (d.kind == DeviceKind::Cpu)
        fail("hybrid executor: the expert device must be sim or cuda:N, not cpu");
    if (options_.budget_bytes < -1 || options_.budget_ratio < 0 || options_.budget_ratio > 1)
        fail("hybrid executor: the expert budget must be >= 0 bytes or a ratio in [0, 1]");
    compute_ = make_stream(d);
    copy_ = make_stream(d);
    device_experts_ = make_device_experts(d);
}

HybridExecutor::~HybridExecutor() {
    // Queued work refers to the slots and the scratch buffers: let it finish first.
    drain();
    const HybridCounters c = counters();
    if (c.layers > 0 && c.measured_ms > 0)
        log_info("hybrid executor: cost model over ", c.layers, " MoE layers: predicted ",
                 c.predicted_ms, " ms, measured ", c.measured_ms, " ms, mean |error| ",
                 c.abs_error_ms / double(c.layers), " ms per layer (",
                 100 * c.abs_error_ms / c.measured_ms, " % of the measured time)");
}

void HybridExecutor::drain() {
    if (copy_) copy_->synchronize();
    if (compute_) compute_->synchronize();
}

void HybridExecutor::bind(const ModelConfig& config,
                          std::span<const MoeWeights* const> moe_layers) {
    copy_->synchronize();
    compute_->synchronize();
    // Everything that can fail comes first, so that a failed bind leaves the old binding intact.
    const int64_t n_layers = int64_t(moe_layers.size()), n_experts = config.n_experts;
    size_t slot_bytes = 0;
    for (const MoeWeights* layer : moe_layers) {
        if (int64_t(layer->experts.size()) != n_experts)
            fail("hybrid executor: a MoE layer has ", layer->experts.size(), " experts, not ",
                 n_experts);
        for (const cpu::ExpertWeights& e : layer->experts) {
            const cpu::ExpertWeights& first = layer->experts[0];
            if (e.gate.dtype() != first.gate.dtype() || e.up.dtype() != first.up.dtype() ||
                e.down.dtype() != first.down.dtype())
                fail(
                    "hybrid executor: the experts of a MoE layer do not all have the same weight "
                    "types");
            slot_bytes = std::max(slot_bytes, expert_slot_bytes(e));
        }
    }
    const int64_t total = n_layers * n_experts;
    int64_t capacity = options_.budget_bytes >= 0
                           ? expert_slots_for_bytes(options_.budget_bytes, int64_t(slot_bytes))
                           : expert_slots_for_ratio(options_.budget_ratio, n_layers, n_experts);
    capacity = std::clamp<int64_t>(capacity, 0, total);
    std::vector<ExpertKey> warm = options_.warm_set;
    if (warm.empty()) warm = even_spread(capacity, n_layers, n_experts);
    if (int64_t(warm.size()) > capacity) warm.resize(size_t(capacity));
    for (ExpertKey key : warm)
        if (key.layer < 0 || key.layer >= n_layers || key.expert < 0 || key.expert >= n_experts)
            fail("hybrid executor: warm-up expert (", key.layer, ", ", key.expert,
                 ") is outside the model");
    auto cache = std::make_unique<ExpertCache>(
        ExpertCacheConfig{.policy = {.kind = options_.cache_policy,
                                     .n_layers = n_layers,
                                     .n_experts = n_experts,
                                     .n_experts_active = config.n_experts_active,
                                     .mrs_alpha = options_.mrs_alpha,
                                     .static_set = warm},
                          .expert_bytes = int64_t(slot_bytes),
                          .capacity = capacity});
    Buffer slots =
        capacity > 0 ? allocate(options_.device, size_t(capacity) * slot_bytes) : Buffer();
    const int64_t n_transient = capacity > 0 ? config.n_experts_active : 0;
    Buffer transient =
        n_transient > 0 ? allocate(options_.device, size_t(n_transient) * slot_bytes) : Buffer();
    // Last of what can fail; it frees the old NUMA copies first (a failure here leaves the CPU
    // experts unbound until the caller binds again, as the scheduler does after a failed reload).
    cpu_experts_.bind(moe_layers);

    layers_.assign(moe_layers.begin(), moe_layers.end());
    host_source_.bind(options_.device, layers_);
    config_ = config;
    n_experts_ = n_experts;
    capacity_ = capacity;
    slot_bytes_ = slot_bytes;
    slots_ = std::move(slots);
    n_transient_ = n_transient;
    transient_ = std::move(transient);
    next_transient_ = 0;
    transient_free_.assign(size_t(n_transient_), nullptr);
    transient_of_.assign(size_t(n_experts), 0);
    cache_ = std::move(cache);
    slot_ready_.assign(size_t(capacity_), nullptr);
    slot_arrival_ms_.assign(size_t(capacity_), 0.0);
    copy_free_ms_ = 0;
    for (ExpertKey key : warm) {
        const InsertResult r = cache_->insert(key, InsertReason::Warmup);
        if (r.inserted) copy_in(r.slot, key.layer, key.expert);
    }
    copy_->synchronize();

    tokens_.assign(size_t(n_experts_), 0);
    resident_.assign(size_t(n_experts_), 0);
    skip_.assign(size_t(n_experts_), 0);
    ready_ms_.assign(size_t(n_experts_), 0.0);
    predicted_tokens_.assign(3, std::vector<int32_t>(size_t(n_experts_)));
    predicted_resident_.assign(3, std::vector<uint8_t>(size_t(n_experts_)));
    predicted_for_.assign(3, std::vector<std::vector<int32_t>>(size_t(n_layers)));
    lookahead_accuracy_ = LookaheadAccuracy(3);
    prefetch_issued_ = 0;
    running_ = {};
    publish_counters();
    log_info("hybrid executor on ", options_.device.name(), ": ", capacity_, " of ", total,
             " routed experts fit in ", double(capacity_) * double(slot_bytes_) / (1 << 20),
             " MiB; cache ", cache_policy_name(options_.cache_policy), ", planner ",
             planner_name(options_.planner), ", prefetch ", options_.prefetch ? "on" : "off");
}

std::byte* HybridExecutor::slot_data(int64_t slot) const {
    return static_cast<std::byte*>(slots_.data()) + size_t(slot) * slot_bytes_;
}

cpu::ExpertWeights HybridExecutor::slot_weights(int64_t slot, int32_t layer) const {
    return expert_at(slot_data(slot), layers_[size_t(layer)]->experts[0], options_.device);
}

double HybridExecutor::queue_copy(std::byte* dst, int32_t layer, int32_t expert,
                                  std::shared_ptr<Event>& ready) {
    if (graph_io_ != nullptr) {
        list_copy(dst, layer, expert);
        ready = nullptr;
    } else {
        const std::vector<cpu::ExpertWeights>& experts = layers_[size_t(layer)]->experts;
        copy_expert(*copy_, expert_at(dst, experts[0], options_.device),
                    host_source_.source(size_t(layer), size_t(expert)));
        ready = copy_->record();
    }
    const double start = std::max(now_ms(), copy_free_ms_);
    copy_free_ms_ = start + options_.cost.transfer_ms;
    return copy_free_ms_;
}

void HybridExecutor::list_copy(std::byte* dst, int32_t layer, int32_t expert) {
    const GraphLayerIo& io = *graph_io_;
    ExpertCopy* list = graph_prefetching_ ? io.prefetch : io.demand;
    int32_t& used = io.n_copies[graph_prefetching_ ? 1 : 0];
    const int64_t capacity = graph_prefetching_ ? io.max_prefetch : io.max_demand;
    const cpu::ExpertWeights to =
        expert_at(dst, layers_[size_t(layer)]->experts[0], options_.device);
    const cpu::ExpertWeights& from = host_source_.device_source(size_t(layer), size_t(expert));
    for (const auto& [d, s] : {std::pair(&to.gate, &from.gate), std::pair(&to.up, &from.up),
                               std::pair(&to.down, &from.down)}) {
        if (used >= capacity)
            fail("hybrid executor: more than ", capacity, " ",
                 graph_prefetching_ ? "prefetch" : "demand", " copies in one captured MoE layer");
        list[used++] = {.src = s->data(), .dst = d->data(), .bytes = uint64_t(s->bytes())};
    }
}

void HybridExecutor::copy_in(int64_t slot, int32_t layer, int32_t expert) {
    slot_arrival_ms_[size_t(slot)] =
        queue_copy(slot_data(slot), layer, expert, slot_ready_[size_t(slot)]);
}

void HybridExecutor::begin_step(int64_t n_tokens) {
    last_layer_end_ms_ = -1;
    for (auto& by_layer : predicted_for_)
        for (std::vector<int32_t>& experts : by_layer)
            experts.clear();
    if (options_.replay) options_.replay->begin_step(n_tokens);
}

bool HybridExecutor::replace_routing(int moe_layer, int64_t, Routing& routing) {
    if (!options_.replay) return false;
    routing = options_.replay->routing(moe_layer);
    return true;
}

void HybridExecutor::end_step() {
    // A failed layer may have left device work queued that refers to this step's buffers.
    compute_->synchronize();
    last_layer_end_ms_ = -1;
    if (options_.replay && options_.replay->step_rows() > 0) options_.replay->end_step();
    publish_counters();
}

size_t HybridExecutor::predict_later_layers(const MoeLayerCall& call) {
    const int64_t n_layers = int64_t(layers_.size());
    size_t n = 0;
    if (options_.replay) {
        if (!options_.replay->has_predictor()) return 0;
        for (int64_t target = call.moe_layer + 1; target <= call.moe_layer + 3 && target < n_layers;
             ++target)
            options_.replay->predict(call.moe_layer, target, predicted_tokens_[n++]);
        return n;
    }
    for (const Routing& later : call.predicted) {
        std::vector<int32_t>& tokens = predicted_tokens_[n++];
        std::fill(tokens.begin(), tokens.end(), 0);
        for (int32_t e : later.experts)
            ++tokens[size_t(e)];
        if (n == predicted_tokens_.size()) break;
    }
    return n;
}

void HybridExecutor::run(const MoeLayerCall& call, ThreadPool& pool) {
    const int32_t layer = call.moe_layer;
    const int64_t n_tokens = call.x.dim(0), hidden = call.x.dim(1);
    const double start = now_ms();
    const double planned_at = plan_and_copy(call, pool, start);

    // 4. The device's experts, in the planner's GPU order, as compute-stream work.
    const bool device_used = queue_device_experts(call);

    // 5. Prefetches for the next layers, behind the demand copies.
    if (n_later_ > 0) issue_prefetches(layer, n_later_, start + plan_.makespan_ms());

    // 6. The CPU's experts, overlapping the device; then the device's sum joins the output.
    cpu_experts_.run(layer, cpu_experts_args(call), pool);
    compute_->synchronize();  // the partial sum has landed in host_partial_
    if (device_used) {
        const float* src = static_cast<const float*>(host_partial_.data());
        for (int64_t t = 0; t < n_tokens; ++t) {
            float* dst = call.out.data_as<float>() + t * call.out.stride(0);
            for (int64_t i = 0; i < hidden; ++i)
                dst[i] += src[t * hidden + i];
        }
    }
    finish_layer(layer, n_tokens, planned_at);
}

void HybridExecutor::finish_layer(int32_t layer, int64_t n_tokens, double planned_at) {
    ++running_.layers;
    last_layer_end_ms_ = now_ms();
    const double predicted = plan_.makespan_ms(), measured = last_layer_end_ms_ - planned_at;
    running_.predicted_ms += predicted;
    running_.measured_ms += measured;
    running_.abs_error_ms += std::fabs(measured - predicted);
    log_debug("hybrid executor: MoE layer ", layer, ", ", n_tokens, " tokens: predicted ",
              predicted, " ms, measured ", measured, " ms");
}

double HybridExecutor::plan_and_copy(const MoeLayerCall& call, ThreadPool& pool, double start) {
    const Routing& routing = *call.routing;
    const int32_t layer = call.moe_layer;
    const int64_t n_tokens = call.x.dim(0);
    if (last_layer_end_ms_ >= 0)  // attention and norms of this layer, as the prefetcher's clock
        dense_ms_ = dense_ms_ == 0 ? start - last_layer_end_ms_
                                   : 0.8 * dense_ms_ + 0.2 * (start - last_layer_end_ms_);

    // 1. Loads, scores, accesses.
    groups_ = group_by_expert(routing, n_experts_);
    active_.clear();
    for (int64_t e = 0; e < n_experts_; ++e) {
        tokens_[size_t(e)] = int32_t(groups_.tokens_of(e));
        if (tokens_[size_t(e)] > 0) active_.push_back(int32_t(e));
    }
    if (options_.replay) {  // the trace's distribution or weights: what tandem-sim scores too
        const Routing scored = options_.replay->scores(layer);
        cache_->observe_step(layer, scored.n_tokens, scored.n_experts_active, scored.experts,
                             scored.weights);
    } else {
        const std::vector<float> probabilities =
            router_probabilities(*call.weights, config_, call.x, pool);
        expert_ids_.resize(size_t(n_tokens * n_experts_));
        for (int64_t t = 0; t < n_tokens; ++t)
            std::iota(expert_ids_.begin() + t * n_experts_,
                      expert_ids_.begin() + (t + 1) * n_experts_, 0);
        cache_->observe_step(layer, n_tokens, n_experts_, expert_ids_, probabilities);
    }
    cache_->record_access(layer, active_);
    for (size_t d = 0; d < predicted_for_.size(); ++d) {
        std::vector<int32_t>& was = predicted_for_[d][size_t(layer)];
        if (was.empty()) continue;
        int64_t used = 0;
        for (int32_t e : was)
            used += tokens_[size_t(e)] > 0;
        lookahead_accuracy_.record(int(d) + 1, int64_t(was.size()), used);
        was.clear();
    }

    // 2. Plan against what is resident, with the arrival times of copies still in flight.
    for (int64_t e = 0; e < n_experts_; ++e) {
        const int64_t slot = cache_->slot({layer, int32_t(e)});
        resident_[size_t(e)] = slot >= 0;
        ready_ms_[size_t(e)] = 0;
        if (slot < 0) continue;
        // In a captured step no event says whether a copy landed: its estimated arrival does.
        const std::shared_ptr<Event>& ready = slot_ready_[size_t(slot)];
        if (graph_io_ != nullptr ? slot_arrival_ms_[size_t(slot)] > start : ready && !ready->done())
            ready_ms_[size_t(e)] = std::max(0.0, slot_arrival_ms_[size_t(slot)] - start);
    }
    const PlanInput plan_input{.cost = options_.cost,
                               .tokens = tokens_,
                               .resident = resident_,
                               .ready_ms = ready_ms_,
                               .pcie_free_ms = std::max(0.0, copy_free_ms_ - start)};
    plan_layer(options_.planner, plan_input, plan_);
    placement_ = plan_.placement;
    const double planned_at = now_ms();

    // 3. Pins (this layer's experts, the next layer's predicted ones), demand copies.
    const size_t n_later = n_later_ = options_.prefetch ? predict_later_layers(call) : 0;
    for (size_t d = 0; d < n_later; ++d) {
        std::vector<int32_t>& experts = predicted_for_[d][size_t(layer) + d + 1];
        experts.clear();
        for (int64_t e = 0; e < n_experts_; ++e)
            if (predicted_tokens_[d][size_t(e)] > 0) experts.push_back(int32_t(e));
    }
    pins_.clear();
    for (int32_t e : active_)
        pins_.push_back({layer, e});
    if (n_later > 0)
        for (int64_t e = 0; e < n_experts_; ++e)
            if (predicted_tokens_[0][size_t(e)] > 0) pins_.push_back({layer + 1, int32_t(e)});
    cache_->set_pinned(pins_);
    bool refused = false;
    std::fill(transient_of_.begin(), transient_of_.end(), 0);
    for (const PlannedJob& copy : plan_.transfers) {
        const InsertResult r = cache_->insert({layer, copy.expert}, InsertReason::Demand);
        if (r.inserted) {
            copy_in(r.slot, layer, copy.expert);
            ++running_.transfers;
        } else if (n_transient_ > 0) {
            // Not admitted, outranked by every victim, or all pinned: copied to a transient slot
            // in step 4, computed there and not cached (tandem-sim does the same).
            transient_of_[size_t(copy.expert)] = 1;
            ++running_.transient_copies;
            running_.transient_bytes += int64_t(slot_bytes_);
        } else {
            placement_[size_t(copy.expert)] = ExpertPlacement::Cpu;
            ++running_.refused_transfers;
            refused = true;
        }
    }
    // The layer's timelines without the refused copies (tandem-sim does the same), for the GPU
    // order below and the prefetcher's clock.
    if (refused) schedule_assignment(plan_input, placement_, plan_);
    return planned_at;
}

bool HybridExecutor::queue_device_experts(const MoeLayerCall& call) {
    bool any = false;
    for (const PlannedJob& job : plan_.gpu_jobs)
        any = any || placement_[size_t(job.expert)] != ExpertPlacement::Cpu;
    if (!any) return false;

    // The model on this device already has the rows and an output there: the device's experts
    // read and add into them, and nothing goes up or comes back.
    const int64_t n_tokens = call.x.dim(0), hidden = call.x.dim(1);
    if (!call.device_x.empty() && call.device_x.device() == options_.device) {
        if (!(call.device_x.shape() == call.x.shape()) ||
            !(call.device_out.shape() == call.x.shape()) ||
            !(call.device_out.device() == options_.device))
            fail("hybrid executor: device_x and device_out must be ", call.x.shape().str(), " on ",
                 options_.device.name());
        queue_device_launches(call, call.device_x, call.device_out);
        return false;
    }
    // The layer's rows go up and the sum buffer is cleared, on the compute stream, which is idle
    // between layers (run() synchronizes it), so the buffers are free to reuse.
    const size_t row_bytes = size_t(hidden) * sizeof(float), bytes = size_t(n_tokens) * row_bytes;
    if (device_x_.bytes() < bytes) {
        device_x_ = allocate(options_.device, bytes);
        device_out_ = allocate(options_.device, bytes);
        host_x_ = allocate_pinned(options_.device, bytes);
        host_partial_ = allocate_pinned(options_.device, bytes);
    }
    const Tensor x(device_x_.data(), DType::F32, {n_tokens, hidden}, options_.device);
    const Tensor out(device_out_.data(), DType::F32, {n_tokens, hidden}, options_.device);
    // Staged in page-locked memory (free: the last layer's upload ran before run() returned),
    // then one asynchronous copy.
    for (int64_t t = 0; t < n_tokens; ++t)
        std::memcpy(static_cast<std::byte*>(host_x_.data()) + size_t(t) * row_bytes,
                    call.x.data_as<const float>() + t * call.x.stride(0), row_bytes);
    compute_->copy_async(device_x_.data(), host_x_.data(), bytes, CopyDirection::HostToDevice);
    compute_->memset_async(device_out_.data(), 0, bytes);
    queue_device_launches(call, x, out);
    compute_->copy_async(host_partial_.data(), device_out_.data(), bytes,
                         CopyDirection::DeviceToHost);
    return true;
}

void HybridExecutor::queue_device_launches(const MoeLayerCall& call, const Tensor& x,
                                           const Tensor& out) {
    const int32_t layer = call.moe_layer;

    // One launch per run of experts whose copies need no wait; an expert whose copy is still in
    // flight closes the launch before it, and the compute stream waits for that copy only.
    launch_experts_.assign(size_t(n_experts_), cpu::ExpertWeights{});
    launch_skip_.assign(size_t(n_experts_), 1);
    launch_transient_.clear();
    for (const PlannedJob& job : plan_.gpu_jobs) {
        const int32_t e = job.expert;
        if (placement_[size_t(e)] == ExpertPlacement::Cpu) continue;
        const int64_t slot = cache_->slot({layer, e});
        std::shared_ptr<Event> ready;
        cpu::ExpertWeights w;
        int64_t t = -1;
        if (slot >= 0) {
            ready = slot_ready_[size_t(slot)];
            w = slot_weights(slot, layer);
        } else if (transient_of_[size_t(e)]) {
            t = next_transient_;
            next_transient_ = (next_transient_ + 1) % n_transient_;
            if (transient_free_[size_t(t)]) copy_->wait(transient_free_[size_t(t)]);
            std::byte* p = static_cast<std::byte*>(transient_.data()) + size_t(t) * slot_bytes_;
            queue_copy(p, layer, e, ready);
            w = expert_at(p, layers_[size_t(layer)]->experts[0], options_.device);
        } else {
            fail("hybrid executor: expert ", e, " of MoE layer ", layer, " lost its slot");
        }
        if (ready && !ready->done()) {
            flush_launch(x, out);
            compute_->wait(ready);
        }
        // Biases stay in host memory (the sim device reads them there; cuda:N uploads them with
        // the launch's tables).
        const cpu::ExpertWeights& host = layers_[size_t(layer)]->experts[size_t(e)];
        w.gate_bias = host.gate_bias;
        w.up_bias = host.up_bias;
        w.down_bias = host.down_bias;
        launch_experts_[size_t(e)] = w;
        launch_skip_[size_t(e)] = 0;
        if (t >= 0) launch_transient_.push_back(t);
        ++running_.gpu_experts;
    }
    flush_launch(x, out);
}

void HybridExecutor::flush_launch(const Tensor& x, const Tensor& out) {
    if (std::all_of(launch_skip_.begin(), launch_skip_.end(), [](uint8_t s) { return s != 0; }))
        return;
    device_experts_->run(*compute_, {.x = x,
                                     .out = out,
                                     .experts = launch_experts_,
                                     .offsets = groups_.offsets,
                                     .token_index = groups_.token_index,
                                     .token_weight = groups_.token_weight,
                                     .skip = launch_skip_,
                                     .glu = glu_options(config_)});
    if (!launch_transient_.empty()) {
        const std::shared_ptr<Event> read = compute_->record();
        for (int64_t t : launch_transient_)
            transient_free_[size_t(t)] = read;
        launch_transient_.clear();
    }
    for (size_t e = 0; e < launch_skip_.size(); ++e)
        if (!launch_skip_[e]) {
            launch_skip_[e] = 1;
            launch_experts_[e] = {};
        }
}

void HybridExecutor::issue_prefetches(int32_t layer, size_t n_later, double layer_end_ms) {
    const double now = now_ms();
    std::vector<PrefetchLayer> later;
    double starts_in = std::max(0.0, layer_end_ms - now);
    for (size_t d = 0; d < n_later; ++d) {
        const int32_t target = layer + int32_t(d) + 1;
        const std::vector<int32_t>& tokens = predicted_tokens_[d];
        std::vector<uint8_t>& resident = predicted_resident_[d];
        for (int64_t e = 0; e < n_experts_; ++e)
            resident[size_t(e)] = cache_->resident({target, int32_t(e)});
        starts_in += dense_ms_;
        later.push_back({.layer = target,
                         .predicted_tokens = tokens,
                         .resident = resident,
                         .starts_in_ms = starts_in,
                         .use_probability = lookahead_accuracy_.probability(int(d) + 1)});
        plan_layer(options_.planner,
                   {.cost = options_.cost, .tokens = tokens, .resident = resident}, scratch_plan_);
        starts_in += scratch_plan_.makespan_ms();
    }
    const std::vector<PrefetchRequest> requests =
        plan_prefetches({.cost = options_.cost,
                         .planner = options_.planner,
                         .layers = later,
                         .copy_free_in_ms = std::max(0.0, copy_free_ms_ - now)});
    if (requests.empty()) return;
    // Every predicted target stays through the evictions these copies cause.
    const size_t own_pins = pins_.size();
    for (size_t d = 0; d < n_later; ++d)
        for (int64_t e = 0; e < n_experts_; ++e)
            if (predicted_tokens_[d][size_t(e)] > 0)
                pins_.push_back({layer + int32_t(d) + 1, int32_t(e)});
    cache_->set_pinned(pins_);
    for (const PrefetchRequest& r : requests) {
        const InsertResult inserted = cache_->insert({r.layer, r.expert}, InsertReason::Prefetch);
        if (!inserted.inserted) continue;
        copy_in(inserted.slot, r.layer, r.expert);
        ++prefetch_issued_;
    }
    pins_.resize(own_pins);
    cache_->set_pinned(pins_);
}

void HybridExecutor::write_device_table(const MoeLayerCall& call) {
    const int32_t layer = call.moe_layer;
    ExpertTableEntry* entries = graph_io_->entries;
    std::fill_n(entries, n_experts_, ExpertTableEntry{});
    // A captured layer copies every expert before computing any, so a transient slot holds one
    // expert per layer (an eager layer reuses them in turn, each copy after the last reads).
    int64_t transients_left = n_transient_;
    for (const PlannedJob& job : plan_.gpu_jobs) {
        const int32_t e = job.expert;
        if (placement_[size_t(e)] == ExpertPlacement::Cpu) continue;
        const int64_t slot = cache_->slot({layer, e});
        cpu::ExpertWeights w;
        if (slot < 0 && transient_of_[size_t(e)] && transients_left == 0) {
            placement_[size_t(e)] = ExpertPlacement::Cpu;  // the rest run on the CPU
            --running_.transient_copies;
            running_.transient_bytes -= int64_t(slot_bytes_);
            ++running_.refused_transfers;
            continue;
        }
        if (slot >= 0) {
            w = slot_weights(slot, layer);
        } else if (transient_of_[size_t(e)]) {
            --transients_left;
            // Listed behind the demand copies; the step's stream order keeps the last layer's
            // reads of this transient slot before it.
            std::byte* p =
                static_cast<std::byte*>(transient_.data()) + size_t(next_transient_) * slot_bytes_;
            next_transient_ = (next_transient_ + 1) % n_transient_;
            list_copy(p, layer, e);
            w = expert_at(p, layers_[size_t(layer)]->experts[0], options_.device);
        } else {
            fail("hybrid executor: expert ", e, " of MoE layer ", layer, " lost its slot");
        }
        entries[e] = {.gate = w.gate.data(), .up = w.up.data(), .down = w.down.data()};
        ++running_.gpu_experts;
    }
}

void HybridExecutor::graph_begin_step(int64_t n_tokens, ThreadPool& pool) {
    // Eager steps' copies still in flight on this executor's streams would race the step's own.
    drain();
    begin_step(n_tokens);
    graph_pool_ = &pool;
    graph_error_ = nullptr;
}

void HybridExecutor::graph_begin_layer(int moe_layer, const GraphLayerIo& io) noexcept {
    graph_layer_failed_ = false;
    try {
        graph_layer(moe_layer, io);
        return;
    } catch (...) {
        if (!graph_error_) graph_error_ = std::current_exception();
    }
    // Tables that make the device do nothing, and no CPU job: graph_end_step() reports the error.
    graph_io_ = nullptr;
    graph_prefetching_ = false;
    graph_layer_failed_ = true;
    const int64_t k = config_.n_experts_active;
    std::fill_n(io.ids, io.n_tokens * k, -1);
    std::fill_n(io.weights, io.n_tokens * k, 0.0f);
    std::fill_n(io.entries, n_experts_, ExpertTableEntry{});
    io.n_copies[0] = io.n_copies[1] = 0;
    std::fill_n(io.partial, io.n_tokens * config_.hidden_dim, 0.0f);
}

void HybridExecutor::graph_layer(int moe_layer, const GraphLayerIo& io) {
    if (graph_pool_ == nullptr) fail("hybrid executor: graph_begin_step() was not called");
    if (graph_error_) fail("an earlier MoE layer of this step failed");
    ThreadPool& pool = *graph_pool_;
    const int64_t n = io.n_tokens, k = config_.n_experts_active, hidden = config_.hidden_dim;
    const auto layer = size_t(moe_layer);
    const Tensor x(io.x, DType::F32, {n, hidden});
    // The routing as the CPU engine computes it (the host's router weights), or the trace's.
    graph_routing_ = {};
    if (!replace_routing(moe_layer, n, graph_routing_))
        graph_routing_ = route_with(*layers_[layer], config_, x, pool);
    if (graph_routing_.n_tokens != n || graph_routing_.n_experts_active != k)
        fail("hybrid executor: MoE layer ", moe_layer, " routed ", graph_routing_.n_tokens,
             " tokens x top-", graph_routing_.n_experts_active, ", the step has ", n, " x top-", k);
    std::copy(graph_routing_.experts.begin(), graph_routing_.experts.end(), io.ids);
    std::copy(graph_routing_.weights.begin(), graph_routing_.weights.end(), io.weights);
    graph_predicted_.clear();
    for (int d = 1; d <= lookahead() && layer + size_t(d) < layers_.size(); ++d)
        graph_predicted_.push_back(route_with(*layers_[layer + size_t(d)], config_, x, pool));
    const Tensor partial(io.partial, DType::F32, {n, hidden});
    std::fill_n(io.partial, n * hidden, 0.0f);
    const MoeLayerCall call{.layer = moe_layer,
                            .moe_layer = moe_layer,
                            .weights = layers_[layer],
                            .x = x,
                            .routing = &graph_routing_,
                            .predicted = graph_predicted_,
                            .out = partial};

    // Steps 1-3, then 4 and 5 as tables and lists instead of stream work.
    io.n_copies[0] = io.n_copies[1] = 0;
    graph_io_ = &io;
    graph_start_ms_ = now_ms();
    graph_planned_at_ = plan_and_copy(call, pool, graph_start_ms_);
    write_device_table(call);
    if (n_later_ > 0) {
        graph_prefetching_ = true;
        issue_prefetches(moe_layer, n_later_, graph_start_ms_ + plan_.makespan_ms());
        graph_prefetching_ = false;
    }
    graph_io_ = nullptr;

    // 6. The CPU's experts on the worker, overlapping the device's; graph_end_layer joins them.
    cpu_worker_.post([this, moe_layer, args = cpu_experts_args(call), &pool] {
        cpu_experts_.run(moe_layer, args, pool);
    });
}

cpu::MoeExpertsArgs HybridExecutor::cpu_experts_args(const MoeLayerCall& call) {
    for (int64_t e = 0; e < n_experts_; ++e) {
        skip_[size_t(e)] = placement_[size_t(e)] != ExpertPlacement::Cpu;
        if (!skip_[size_t(e)] && tokens_[size_t(e)] > 0) ++running_.cpu_experts;
    }
    return {.x = call.x,
            .out = call.out,
            .experts = call.weights->experts,
            .offsets = groups_.offsets,
            .token_index = groups_.token_index,
            .token_weight = groups_.token_weight,
            .skip = skip_,
            .glu = glu_options(config_)};
}

void HybridExecutor::graph_end_layer(int moe_layer, const GraphLayerIo& io) noexcept {
    if (graph_layer_failed_) return;
    try {
        cpu_worker_.wait();
        finish_layer(moe_layer, io.n_tokens, graph_planned_at_);
    } catch (...) {
        if (!graph_error_) graph_error_ = std::current_exception();
        std::fill_n(io.partial, io.n_tokens * config_.hidden_dim, 0.0f);
    }
}

void HybridExecutor::graph_end_step() {
    graph_pool_ = nullptr;
    end_step();
    if (!graph_error_) return;
    // The cache may name slots whose copies were listed but never made: start again from the
    // warm set, as after a reload.
    std::vector<const MoeWeights*> layers = layers_;
    bind(config_, layers);
    std::rethrow_exception(std::exchange(graph_error_, nullptr));
}

void HybridExecutor::publish_counters() {
    HybridCounters c = running_;
    if (cache_) c.cache = cache_->total();
    c.prefetch_issued = prefetch_issued_;
    std::lock_guard lock(counters_mutex_);
    published_ = c;
}

HybridCounters HybridExecutor::counters() const {
    std::lock_guard lock(counters_mutex_);
    return published_;
}

}  // namespace tandem
