// The hybrid executor driven as a captured (CUDA graph) decode step drives it, on sim: every
// layer's work is queued up front, as a graph replays it, and the tables the host functions write
// (routing, the device's expert table, the demand and prefetch copy lists) are only read by the
// emulated kernels when the streams reach them. Whatever the planner, budget and prefetcher
// decide, each layer's output is the CPU's; the counters say who computed. Runs under
// ThreadSanitizer in CI (the host functions run on a sim stream's worker, the CPU's experts on
// the executor's worker thread, prefetch copies on a second stream).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "engine/src/hybrid_executor.h"
#include "kernels/error.h"
#include "kernels/sim_device.h"
#include "models/blocks/moe_block.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

constexpr int64_t kLayers = 3, kExperts = 16, kTopK = 4, kHidden = 32, kFfn = 16;
const Device kSim{DeviceKind::Sim, 0};

struct TestModel {
    ModelConfig config;
    std::vector<OwnedTensor> owned;
    std::vector<MoeWeights> layers;
    std::vector<const MoeWeights*> pointers;

    explicit TestModel(std::mt19937_64& rng) {
        config.hidden_dim = kHidden;
        config.n_experts = kExperts;
        config.n_experts_active = kTopK;
        config.expert_ffn_dim = kFfn;
        config.norm_topk_prob = true;
        layers.resize(kLayers);
        for (MoeWeights& layer : layers) {
            layer.router = random({kExperts, kHidden}, rng, 1.0f);
            for (int64_t e = 0; e < kExperts; ++e)
                layer.experts.push_back({.gate = random({kFfn, kHidden}, rng, 0.3f),
                                         .up = random({kFfn, kHidden}, rng, 0.3f),
                                         .down = random({kHidden, kFfn}, rng, 0.3f)});
            pointers.push_back(&layer);
        }
    }

    Tensor random(Shape shape, std::mt19937_64& rng, float scale) {
        owned.push_back(make_tensor(DType::F32, shape));
        const std::vector<float> v =
            test::random_floats(rng, size_t(owned.back().view.numel()), scale);
        std::copy(v.begin(), v.end(), owned.back().view.data_as<float>());
        return owned.back().view;
    }
};

// The reference for one layer's rows (`input`, [n, hidden]): the CPU's router and every expert
// on the CPU. The routing is returned in `routing`.
std::vector<float> cpu_reference(const TestModel& model, int64_t layer,
                                 const std::vector<float>& input, ThreadPool& pool,
                                 Routing& routing) {
    const auto n = int64_t(input.size()) / kHidden;
    const Tensor x(const_cast<float*>(input.data()), DType::F32, {n, kHidden});
    routing = route_with(model.layers[size_t(layer)], model.config, x, pool);
    const ExpertGroups groups = group_by_expert(routing, kExperts);
    std::vector<float> out(input.size(), 0.0f);
    cpu::moe_experts({.x = x,
                      .out = Tensor(out.data(), DType::F32, {n, kHidden}),
                      .experts = model.layers[size_t(layer)].experts,
                      .offsets = groups.offsets,
                      .token_index = groups.token_index,
                      .token_weight = groups.token_weight},
                     pool);
    return out;
}

// One MoE layer's page-locked tables, laid out as the device decoder lays them out, and their
// device mirror.
struct LayerTables {
    std::vector<std::byte> host;
    GraphLayerIo io;
    size_t table_bytes = 0;    // ids .. lists: what is copied up after graph_begin_layer
    Buffer device;             // the mirror of the tables
    std::vector<float> input;  // the layer's rows (the caller's)
    std::vector<float> x, partial, result;

    explicit LayerTables(int64_t n) {
        const int64_t slots = n * kTopK, demand = graph_demand_capacity(n, kTopK),
                      prefetch = graph_prefetch_capacity(n, kTopK);
        table_bytes = size_t(slots) * 8 + size_t(kExperts) * sizeof(ExpertTableEntry) + 8 +
                      size_t(demand + prefetch) * sizeof(ExpertCopy);
        host.resize(table_bytes);
        std::byte* at = host.data();
        auto take = [&](size_t bytes) { return std::exchange(at, at + bytes); };
        x.resize(size_t(n * kHidden));
        partial.resize(x.size());
        result.resize(x.size());
        io = {
            .n_tokens = n,
            .x = x.data(),
            .ids = reinterpret_cast<int32_t*>(take(size_t(slots) * 4)),
            .weights = reinterpret_cast<float*>(take(size_t(slots) * 4)),
            .entries = reinterpret_cast<ExpertTableEntry*>(
                take(size_t(kExperts) * sizeof(ExpertTableEntry))),
            .n_copies = reinterpret_cast<int32_t*>(take(8)),
            .demand = reinterpret_cast<ExpertCopy*>(take(size_t(demand) * sizeof(ExpertCopy))),
            .prefetch = reinterpret_cast<ExpertCopy*>(take(size_t(prefetch) * sizeof(ExpertCopy))),
            .max_demand = demand,
            .max_prefetch = prefetch,
            .partial = partial.data()};
        device = allocate(kSim, table_bytes);
    }
    // The mirror's address of a host table pointer, as kernels see it (on a stream's worker).
    template <class T>
    T* on_device(const T* host_pointer, size_t bytes) const {
        const auto offset = size_t(reinterpret_cast<const std::byte*>(host_pointer) - host.data());
        return static_cast<T*>(
            sim_kernel_address(static_cast<std::byte*>(device.data()) + offset, bytes));
    }
};

// cuda::gather_copies on sim: the listed copies, read from the device mirror when it runs.
void gather(Stream& stream, const LayerTables& t, bool prefetch) {
    stream.launch_host([&t, prefetch] {
        const int32_t n = t.on_device(t.io.n_copies, 8)[prefetch ? 1 : 0];
        const ExpertCopy* list =
            t.on_device(prefetch ? t.io.prefetch : t.io.demand, size_t(n) * sizeof(ExpertCopy));
        for (int32_t i = 0; i < n; ++i)
            std::memcpy(sim_kernel_address(list[i].dst, list[i].bytes), list[i].src, list[i].bytes);
    });
}

// cuda::moe_experts_routed over a writable table on sim: the routing and the table read from
// the device mirror when it runs; experts with a null entry contribute nothing.
void routed_experts(Stream& stream, const LayerTables& t, const Buffer& x, const Buffer& out,
                    ThreadPool& pool) {
    stream.launch_host([&t, &x, &out, &pool] {
        const int64_t n = t.io.n_tokens, bytes = n * kHidden * 4;
        const int32_t* ids = t.on_device(t.io.ids, size_t(n * kTopK) * 4);
        const float* weights = t.on_device(t.io.weights, size_t(n * kTopK) * 4);
        const ExpertTableEntry* entries =
            t.on_device(t.io.entries, size_t(kExperts) * sizeof(ExpertTableEntry));
        Routing routing{.n_tokens = n, .n_experts_active = kTopK};
        routing.experts.assign(ids, ids + n * kTopK);
        routing.weights.assign(weights, weights + n * kTopK);
        const ExpertGroups groups = group_by_expert(routing, kExperts);
        std::vector<cpu::ExpertWeights> experts(kExperts);
        std::vector<uint8_t> skip(kExperts, 1);
        auto view = [](const void* p, Shape shape) {
            return Tensor(sim_kernel_address(p, size_t(shape.numel() * 4)), DType::F32, shape);
        };
        for (int64_t e = 0; e < kExperts; ++e) {
            const ExpertTableEntry& entry = entries[e];
            if (entry.gate == nullptr) continue;
            experts[size_t(e)] = {.gate = view(entry.gate, {kFfn, kHidden}),
                                  .up = view(entry.up, {kFfn, kHidden}),
                                  .down = view(entry.down, {kHidden, kFfn})};
            skip[size_t(e)] = 0;
        }
        cpu::moe_experts(
            {.x = Tensor(sim_kernel_address(x.data(), size_t(bytes)), DType::F32, {n, kHidden}),
             .out = Tensor(sim_kernel_address(out.data(), size_t(bytes)), DType::F32, {n, kHidden}),
             .experts = experts,
             .offsets = groups.offsets,
             .token_index = groups.token_index,
             .token_weight = groups.token_weight,
             .skip = skip},
            pool);
    });
}

// One captured decode step of `n` tokens over every MoE layer, each layer with its own input
// rows: the work of every layer queued before any of it runs, as a graph launch does.
void run_captured_step(HybridExecutor& executor, std::vector<LayerTables>& tables,
                       ThreadPool& cpu_pool) {
    const int64_t n = tables[0].io.n_tokens;
    const size_t bytes = size_t(n * kHidden * 4);
    auto stream = make_stream(kSim), side = make_stream(kSim);
    ThreadPool device_pool(ThreadPoolOptions{.n_threads = 1, .pin = false});
    std::vector<Buffer> x, out, partial;  // the queued work holds references: never reallocated
    for (std::vector<Buffer>* v : {&x, &out, &partial})
        v->reserve(size_t(kLayers));
    executor.graph_begin_step(n, cpu_pool);
    std::shared_ptr<Event> prefetched;
    for (int64_t layer = 0; layer < kLayers; ++layer) {
        LayerTables& t = tables[size_t(layer)];
        x.push_back(allocate(kSim, bytes));
        out.push_back(allocate(kSim, bytes));
        partial.push_back(allocate(kSim, bytes));
        // The layer's rows are on the device (here: put there first); then the step's work.
        stream->copy_async(x.back().data(), t.input.data(), bytes, CopyDirection::HostToDevice);
        stream->synchronize();
        stream->copy_async(t.io.x, x.back().data(), bytes, CopyDirection::DeviceToHost);
        stream->launch_host(
            [&executor, layer, &t] { executor.graph_begin_layer(int(layer), t.io); });
        stream->copy_async(t.device.data(), t.host.data(), t.table_bytes,
                           CopyDirection::HostToDevice);
        if (prefetched) stream->wait(prefetched);  // the last layer's prefetches have landed
        gather(*stream, t, false);
        side->wait(stream->record());
        gather(*side, t, true);
        prefetched = side->record();
        stream->memset_async(out.back().data(), 0, bytes);
        routed_experts(*stream, t, x.back(), out.back(), device_pool);
        stream->launch_host([&executor, layer, &t] { executor.graph_end_layer(int(layer), t.io); });
        stream->copy_async(partial.back().data(), t.io.partial, bytes, CopyDirection::HostToDevice);
        stream->launch_host([&out, &partial, layer, bytes] {
            auto* o = static_cast<float*>(sim_kernel_address(out[size_t(layer)].data(), bytes));
            const auto* p =
                static_cast<const float*>(sim_kernel_address(partial[size_t(layer)].data(), bytes));
            for (size_t i = 0; i < bytes / 4; ++i)
                o[i] += p[i];
        });
        stream->copy_async(t.result.data(), out.back().data(), bytes, CopyDirection::DeviceToHost);
    }
    stream->wait(prefetched);
    stream->synchronize();
    executor.graph_end_step();
}

struct Case {
    PlannerKind planner;
    double ratio;
    bool prefetch;
};

TEST(HybridGraph, CapturedStepsOnSimGiveTheCpuOutputWhateverThePlan) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    TestModel model(rng);
    ThreadPool pool(ThreadPoolOptions{.n_threads = 2, .pin = false});
    const std::vector<Case> cases = {
        {PlannerKind::HybriMoe, 0.0, true},   {PlannerKind::HybriMoe, 0.25, true},
        {PlannerKind::HybriMoe, 0.25, false}, {PlannerKind::HybriMoe, 0.5, true},
        {PlannerKind::HybriMoe, 1.0, true},   {PlannerKind::Static, 0.25, false},
        {PlannerKind::Static, 1.0, false},    {PlannerKind::CpuOnly, 0.5, true},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(::testing::Message() << planner_name(c.planner) << " at " << c.ratio
                                          << ", prefetch " << c.prefetch);
        HybridExecutor executor({.budget_ratio = c.ratio,
                                 .planner = c.planner,
                                 .prefetch = c.prefetch,
                                 .cost = CostModel::hybrimoe_published()});
        executor.bind(model.config, model.pointers);
        int64_t listed = 0;
        for (const int64_t n : {1, 3, 1, 2, 1, 1}) {
            std::vector<LayerTables> tables;
            for (int64_t layer = 0; layer < kLayers; ++layer) {
                tables.emplace_back(n);
                // Poisoned: a table the host function left unwritten shows.
                std::fill(tables.back().host.begin(), tables.back().host.end(), std::byte{0xA5});
                tables.back().input = test::random_floats(rng, size_t(n * kHidden));
                std::fill(tables.back().result.begin(), tables.back().result.end(), NAN);
            }
            run_captured_step(executor, tables, pool);
            for (int64_t layer = 0; layer < kLayers; ++layer) {
                LayerTables& t = tables[size_t(layer)];
                listed += t.io.n_copies[0] + t.io.n_copies[1];
                // One expert per slot within a layer: its copies all land before any expert runs.
                std::set<const void*> slots;
                for (int64_t e = 0; e < kExperts; ++e)
                    if (t.io.entries[e].gate) {
                        ASSERT_TRUE(slots.insert(t.io.entries[e].gate).second)
                            << "layer " << layer << ": expert " << e << " shares a slot";
                    }
                Routing routing;
                const std::vector<float> want = cpu_reference(model, layer, t.input, pool, routing);
                ASSERT_TRUE(std::equal(routing.experts.begin(), routing.experts.end(), t.io.ids));
                for (size_t i = 0; i < want.size(); ++i)
                    ASSERT_NEAR(t.result[i], want[i], 1e-5 + 1e-5 * std::fabs(want[i]))
                        << "layer " << layer << ", element " << i << ", " << n << " tokens";
            }
        }
        const HybridCounters counters = executor.counters();
        EXPECT_EQ(counters.layers, 6 * kLayers);
        EXPECT_EQ(listed % 3, 0);  // whole experts: gate, up and down
        if (c.ratio == 0.0 || c.planner == PlannerKind::CpuOnly) {
            EXPECT_EQ(counters.gpu_experts, 0);
        }
        if (c.ratio == 1.0 && c.planner == PlannerKind::Static) {
            EXPECT_EQ(counters.cpu_experts, 0);
        }
        if (c.ratio == 1.0) {
            EXPECT_EQ(listed, 0);  // everything resident from the start
        }
        if (c.ratio == 0.25 && c.planner == PlannerKind::HybriMoe) {
            EXPECT_GT(counters.gpu_experts, 0);
            EXPECT_GT(counters.cpu_experts, 0);
        }
        if (!c.prefetch) {
            EXPECT_EQ(counters.prefetch_issued, 0);
        }
    }
}

// The eager path with the model on the executor's device (MoeLayerCall.device_x/device_out): the
// device's experts read the rows and add into the output where they are, the CPU's go into the
// host output, and the two add up to the CPU's sum.
TEST(HybridGraph, EagerLayersAddTheDevicesExpertsIntoTheDeviceOutput) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    TestModel model(rng);
    ThreadPool pool(ThreadPoolOptions{.n_threads = 2, .pin = false});
    HybridExecutor executor({.budget_ratio = 0.5,
                             .planner = PlannerKind::HybriMoe,
                             .cost = CostModel::hybrimoe_published()});
    executor.bind(model.config, model.pointers);
    auto stream = make_stream(kSim);
    for (const int64_t n : {1, 4, 2}) {
        const size_t bytes = size_t(n * kHidden * 4);
        Buffer device_x = allocate(kSim, bytes), device_out = allocate(kSim, bytes);
        executor.begin_step(n);
        for (int64_t layer = 0; layer < kLayers; ++layer) {
            std::vector<float> x = test::random_floats(rng, size_t(n * kHidden));
            std::vector<float> out(x.size(), 0.0f), from_device(x.size(), NAN);
            const Tensor host_x(x.data(), DType::F32, {n, kHidden});
            stream->copy_async(device_x.data(), x.data(), bytes, CopyDirection::HostToDevice);
            stream->memset_async(device_out.data(), 0, bytes);
            stream->synchronize();
            Routing routing;
            const std::vector<float> want = cpu_reference(model, layer, x, pool, routing);
            executor.run({.layer = int(layer),
                          .moe_layer = int(layer),
                          .weights = &model.layers[size_t(layer)],
                          .x = host_x,
                          .routing = &routing,
                          .out = Tensor(out.data(), DType::F32, {n, kHidden}),
                          .device_x = Tensor(device_x.data(), DType::F32, {n, kHidden}, kSim),
                          .device_out = Tensor(device_out.data(), DType::F32, {n, kHidden}, kSim)},
                         pool);
            stream->copy_async(from_device.data(), device_out.data(), bytes,
                               CopyDirection::DeviceToHost);
            stream->synchronize();
            for (size_t i = 0; i < want.size(); ++i)
                ASSERT_NEAR(out[i] + from_device[i], want[i], 1e-5 + 1e-5 * std::fabs(want[i]))
                    << "layer " << layer << ", element " << i;
        }
        executor.end_step();
    }
    const HybridCounters counters = executor.counters();
    EXPECT_GT(counters.gpu_experts, 0);
    EXPECT_GT(counters.cpu_experts, 0);
}

// An error in a host function cannot be thrown there: the layer's tables make the device do
// nothing, and graph_end_step() throws it, after which the executor works again.
TEST(HybridGraph, AHostFunctionsErrorComesBackAtTheStepsEnd) {
    const uint64_t seed = test::fresh_seed();
    std::mt19937_64 rng(seed);
    TestModel model(rng);
    ThreadPool pool(ThreadPoolOptions{.n_threads = 1, .pin = false});
    HybridExecutor executor({.budget_ratio = 0.5, .cost = CostModel::hybrimoe_published()});
    executor.bind(model.config, model.pointers);
    LayerTables t(2);
    std::fill(t.host.begin(), t.host.end(), std::byte{0xA5});
    executor.graph_begin_layer(0, t.io);  // no graph_begin_step(): refused
    EXPECT_EQ(t.io.n_copies[0], 0);
    EXPECT_EQ(t.io.n_copies[1], 0);
    for (int64_t i = 0; i < 2 * kTopK; ++i)
        EXPECT_EQ(t.io.ids[i], -1);
    for (int64_t e = 0; e < kExperts; ++e)
        EXPECT_EQ(t.io.entries[e].gate, nullptr);
    executor.graph_end_layer(0, t.io);
    try {
        executor.graph_end_step();
        FAIL() << "no error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("graph_begin_step"), std::string::npos) << e.what();
    }
    // And the next captured step runs.
    std::vector<LayerTables> tables;
    for (int64_t layer = 0; layer < kLayers; ++layer) {
        tables.emplace_back(1);
        tables.back().input = test::random_floats(rng, size_t(kHidden));
    }
    EXPECT_NO_THROW(run_captured_step(executor, tables, pool));
    EXPECT_EQ(executor.counters().layers, kLayers);
}

}  // namespace
}  // namespace tandem
