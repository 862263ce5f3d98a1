// HybridExecutor: runs each MoE layer's routed experts split between the CPU pool and a device,
// as the per-layer planner decides, with an expert cache in device memory and the impact-driven
// prefetcher (HybriMoE; ../shared/reference/hybrimoe.md).
//
// Per MoE layer, on the thread that runs the model:
//   1. the routing gives the tokens per expert; the cache sees the router's probabilities of
//      every expert, not only the chosen ones' weights (MRS's top-p, p = 2k, is for the
//      near-misses; under replay, the trace's weights), and the accesses (hits and misses);
//   2. the planner (scheduler/planner.h) places each activated expert: CPU, GPU (resident, or
//      still arriving from a prefetch) or Transfer (copied now, then computed on the device);
//   3. the experts this layer uses and the next layer's predicted ones are pinned, demand copies
//      go to the copy stream (evicting the policy's victim when the newcomer outranks it), each
//      followed by an event; a copy the cache refuses goes to a transient slot in step 4;
//   4. on the compute stream: the layer's input rows are copied to the device, the device's
//      experts are launched (DeviceExperts, engine/src/device_experts.h) in as few launches as
//      their copies allow (a launch waits only for the copies of its own experts), and their
//      partial sum is copied back to the host;
//   5. prefetches for the next layers are queued on the copy stream behind the demand copies, in
//      descending impact (scheduler/prefetcher.h), fed by the gate lookahead that the decoder
//      computes (or, under routing replay, by the replay's predictor);
//   6. meanwhile the CPU pool computes the CPU's experts from the host weights with the fused
//      kernel (per NUMA node on its slice copies, with NUMA pools), straight into the layer's
//      output; then, once the download has landed, the device's partial sum is added to it.
// The host touches device memory only through stream copies and memsets, as cuda:N requires
// (sim's memory is not host-addressable: kernels/sim_device.h).
// Host weights (the mapped checkpoint or the load-time quantized copy) are the only host copy
// and the source of every transfer. Slots hold one expert each (gate | up | down, each aligned).
//
// Devices: `sim` computes its experts with the CPU kernel on the compute stream's worker thread
// (one thread, so the CPU pool keeps its cores). `cuda:N` runs them with cuda::moe_experts (the
// CUDA DeviceExperts, in the CUDA plugin); the experts' host memory is page-locked in place, or
// copied into page-locked memory where the driver refuses (engine/src/pinned_experts.h), and the
// layer's rows go up and its partial sum comes back through page-locked buffers, so copies run
// at full PCIe speed and overlap the CPU's experts.
// Captured decode steps (CUDA graphs: the device decoder's --cuda-graphs with an expert device):
// the host plans each layer only after its routing is known, so a captured step cannot hold the
// plan's choices as fixed launches; it keeps them in data instead (models/expert_runner.h,
// GraphLayerIo). The layer's rows are copied to page-locked memory and a host function in stream
// order (graph_begin_layer) routes them with the host's routers (as the CPU engine does), plans,
// and writes the routing, the device's expert table (slot addresses; null: the CPU's) and the
// copy lists (demand copies and transient slots; prefetches apart) instead of queueing stream
// work; it starts the CPU's experts on a worker thread (as kTransformers triggers its CPU work)
// and returns, the step copies the tables up, gathers the listed copies from the mapped host
// weights (cuda::gather_copies) and runs one grouped expert kernel over the table; a second
// host function (graph_end_layer) joins the CPU's experts, whose sum goes up and is added. The
// graph is the same every step while the experts it runs and moves change. Copy times there are
// the cost model's estimates (a host function cannot query CUDA events). On sim the host drives
// each layer; the tests drive the graph functions on sim as a captured step would.
// Counters are kept per layer by the cache; counters() may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "cache/expert_cache.h"
#include "engine/src/cpu_experts.h"
#include "engine/src/device_experts.h"
#include "engine/src/host_worker.h"
#include "engine/src/pinned_experts.h"
#include "kernels/buffer.h"
#include "kernels/stream.h"
#include "models/config.h"
#include "models/expert_runner.h"
#include "scheduler/cost_model.h"
#include "scheduler/planner.h"
#include "scheduler/prefetcher.h"
#include "scheduler/routing_replay.h"

namespace tandem {

namespace cpu {
struct ExpertWeights;
}

struct HybridOptions {
    Device device = {DeviceKind::Sim, 0};
    int64_t budget_bytes = -1;   // device memory for expert slots; -1: use budget_ratio
    double budget_ratio = 0.25;  // of all routed experts of the model
    CachePolicyKind cache_policy = CachePolicyKind::Mrs;
    double mrs_alpha = 0.5;
    PlannerKind planner = PlannerKind::HybriMoe;
    bool prefetch = true;
    CostModel cost = {};
    // Experts copied in at bind() (and the fixed set of the `static` policy), most wanted first;
    // empty: an even spread over the layers, expert ids in order (nothing better is known before
    // the first step; a replayed trace gives its activation-frequency profile).
    std::vector<ExpertKey> warm_set = {};
    // Routing replay (not owned): the trace chooses every layer's experts, and its predictor,
    // not the gate lookahead, feeds the prefetcher.
    RoutingReplay* replay = nullptr;
    // NUMA pools (not owned): the CPU's experts run as NUMA tensor parallelism on them
    // (engine/src/cpu_experts.h); nullptr: on the pool given to run().
    NumaPools* numa = nullptr;
};

struct HybridCounters {
    CacheCounters cache = {};
    int64_t prefetch_issued = 0;
    int64_t cpu_experts = 0;        // expert jobs run on the CPU
    int64_t gpu_experts = 0;        // on the device (resident or transferred)
    int64_t transfers = 0;          // demand copies
    int64_t transient_copies = 0;   // planned copies the cache refused: run from a transient slot
    int64_t transient_bytes = 0;    // what those moved (not in the cache's bytes_moved)
    int64_t refused_transfers = 0;  // refused with every transient slot taken: run on the CPU
    int64_t layers = 0;
    // The cost model against the clock: per layer, the plan's makespan and the time from the
    // plan to the layer's sum (copies, device and CPU experts), added up; logged per layer at
    // debug level and summarised when the executor goes.
    double predicted_ms = 0, measured_ms = 0, abs_error_ms = 0;
};

class HybridExecutor final : public ExpertRunner {
  public:
    explicit HybridExecutor(HybridOptions options);
    ~HybridExecutor() override;

    void bind(const ModelConfig& config, std::span<const MoeWeights* const> moe_layers) override;
    int lookahead() const override { return options_.prefetch && !options_.replay ? 3 : 0; }
    void begin_step(int64_t n_tokens) override;
    bool replace_routing(int moe_layer, int64_t n_tokens, Routing& routing) override;
    void run(const MoeLayerCall& call, ThreadPool& pool) override;
    void end_step() override;
    void drain() override;

    // Captured decode steps (the header comment; models/expert_runner.h).
    bool graph_capable() const override { return true; }
    void graph_begin_step(int64_t n_tokens, ThreadPool& pool) override;
    void graph_begin_layer(int moe_layer, const GraphLayerIo& io) noexcept override;
    void graph_end_layer(int moe_layer, const GraphLayerIo& io) noexcept override;
    void graph_end_step() override;

    // Measures the cost model on this machine with the bound model's experts (MoE layer 0):
    // CPU pool times for a grid of experts x tokens (1x1, 1x4, 1x16, 2x1, 4x1, 4x4) and the
    // device's for 1 expert x 1, 4, 16 tokens, each the median of 7 runs on experts not used by
    // the previous run and made equally cold for both (a 256 MiB buffer written before each run),
    // fitted by least squares (scheduler/cost_model.h: fit_cpu_times, fit_device_times); the fit
    // and its residuals are logged, a coefficient clamped to 0 is warned about. Then one
    // expert's copy. Shared experts stay on the CPU: no GPU intercept. Call between steps.
    CostModel calibrate(ThreadPool& pool);
    void set_cost_model(const CostModel& cost) { options_.cost = cost; }

    int64_t slots() const { return capacity_; }
    int64_t slot_bytes() const { return int64_t(slot_bytes_); }
    const HybridOptions& options() const { return options_; }
    HybridCounters counters() const;
    // The cache policy's priority of an expert (MRS: its score); for tests. Between steps.
    double cache_priority(ExpertKey key) const { return cache_->priority(key); }

  private:
    std::byte* slot_data(int64_t slot) const;
    cpu::ExpertWeights slot_weights(int64_t slot, int32_t layer) const;
    void copy_in(int64_t slot, int32_t layer, int32_t expert);
    // Queues the copy of host expert (layer, expert) into device memory at `dst`; returns when
    // it should land and sets `ready` to its event.
    double queue_copy(std::byte* dst, int32_t layer, int32_t expert, std::shared_ptr<Event>& ready);
    // predicted_tokens_[d] for MoE layers layer + 1 + d, d < returned count.
    size_t predict_later_layers(const MoeLayerCall& call);
    // Steps 1-3 of run(): loads, scores, accesses, the plan, pins and demand copies; sets
    // n_later_ and returns the time the plan was made.
    double plan_and_copy(const MoeLayerCall& call, ThreadPool& pool, double start);
    // The layer's end: counters and the cost model against the clock.
    void finish_layer(int32_t layer, int64_t n_tokens, double planned_at);
    // Step 4 of graph_begin_layer(): the device's experts as table entries (and the copies of
    // transient slots into the demand list).
    void write_device_table(const MoeLayerCall& call);
    void graph_layer(int moe_layer, const GraphLayerIo& io);
    // Step 6's arguments: the plan's CPU experts (skip_ marks the others; counted), views of the
    // layer's groups that stay valid until the next layer's plan.
    cpu::MoeExpertsArgs cpu_experts_args(const MoeLayerCall& call);
    // Appends the copies of host expert (layer, expert) into the slot at dst to the current
    // graph list.
    void list_copy(std::byte* dst, int32_t layer, int32_t expert);
    void issue_prefetches(int32_t layer, size_t n_later, double layer_end_ms);
    // Step 4 of run(): the device's experts as stream work; returns whether there were any.
    bool queue_device_experts(const MoeLayerCall& call);
    // Its launches, from x into out (device tensors), in the planner's GPU order.
    void queue_device_launches(const MoeLayerCall& call, const Tensor& x, const Tensor& out);
    // Queues the launch of the experts gathered in launch_experts_ / launch_skip_, if any.
    void flush_launch(const Tensor& x, const Tensor& out);
    void publish_counters();

    HybridOptions options_;
    CpuExperts cpu_experts_;
    std::unique_ptr<Stream> compute_, copy_;
    // After the streams: it goes first (a CUDA one synchronizes the streams it ran on).
    std::unique_ptr<DeviceExperts> device_experts_;
    PinnedExperts host_source_;  // where copies to the device read the experts from
    std::vector<const MoeWeights*> layers_;
    // The bound model's configuration: its router's full distribution (router_probabilities,
    // models/blocks/moe_block.h) is what the cache's MRS scores, by expert id as routing replay
    // hands a trace's distribution over.
    ModelConfig config_;
    std::vector<int32_t> expert_ids_;  // [n_tokens, n_experts]: 0..n_experts-1 for each token
    int64_t n_experts_ = 0;
    int64_t capacity_ = 0;
    size_t slot_bytes_ = 0;
    Buffer slots_;
    // Transient slots (n_experts_active of them, beside the budget's slots, when there are any):
    // a planned copy that the cache refuses is computed from one and not cached. Used in turn;
    // a copy into one waits for the device job that last read it.
    int64_t n_transient_ = 0;
    int64_t next_transient_ = 0;
    Buffer transient_;
    std::vector<std::shared_ptr<Event>> transient_free_;  // [n_transient_] its last reader done
    std::vector<uint8_t> transient_of_;                   // [n_experts] this layer's refused copies
    std::unique_ptr<ExpertCache> cache_;
    std::vector<std::shared_ptr<Event>> slot_ready_;  // [capacity] the last copy into the slot
    std::vector<double> slot_arrival_ms_;             // [capacity] when that copy should land
    double copy_free_ms_ = 0;                         // when the copy engine should be idle
    double dense_ms_ = 0;  // moving average of the time between two MoE layers
    double last_layer_end_ms_ = -1;

    // Per-layer scratch, reused.
    ExpertGroups groups_;
    std::vector<int32_t> tokens_, active_;
    std::vector<uint8_t> resident_, skip_;
    std::vector<double> ready_ms_;
    std::vector<ExpertKey> pins_;
    LayerPlan plan_, scratch_plan_;
    std::vector<ExpertPlacement> placement_;
    // The device's side of a layer: its input rows (uploaded), its experts' partial sum
    // (downloaded into host_partial_, then added to the output).
    Buffer device_x_;      // [n_tokens, hidden_dim] f32, device
    Buffer device_out_;    // [n_tokens, hidden_dim] f32, device
    Buffer host_x_;        // [n_tokens, hidden_dim] f32, pinned host: the rows' staging copy
    Buffer host_partial_;  // [n_tokens, hidden_dim] f32, pinned host
    std::vector<cpu::ExpertWeights> launch_experts_;  // [n_experts] one launch's slot views
    std::vector<uint8_t> launch_skip_;                // [n_experts] 0 = in this launch
    std::vector<int64_t> launch_transient_;           // transient slots this launch reads
    std::vector<std::vector<int32_t>> predicted_tokens_;
    // predicted_for_[d - 1][layer]: this step's experts predicted for `layer` d layers before,
    // checked when the layer runs; the prefetcher's P of use per distance.
    std::vector<std::vector<std::vector<int32_t>>> predicted_for_;
    LookaheadAccuracy lookahead_accuracy_{3};
    std::vector<std::vector<uint8_t>> predicted_resident_;

    size_t n_later_ = 0;  // this layer's count of predicted later layers

    // Captured steps: while graph_begin_layer plans, copies are listed in graph_io_'s demand (or,
    // while prefetching, prefetch) list instead of queued.
    const GraphLayerIo* graph_io_ = nullptr;
    bool graph_prefetching_ = false;
    ThreadPool* graph_pool_ = nullptr;
    std::exception_ptr graph_error_;  // the first error of this step's host functions
    bool graph_layer_failed_ = false;
    double graph_start_ms_ = 0, graph_planned_at_ = 0;
    Routing graph_routing_;
    std::vector<Routing> graph_predicted_;
    HostWorker cpu_worker_;  // the CPU's experts of a captured layer

    int64_t prefetch_issued_ = 0;
    HybridCounters running_ = {};
    mutable std::mutex counters_mutex_;
    HybridCounters published_ = {};
};

}  // namespace tandem
