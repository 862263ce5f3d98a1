// tandem-bench: prefill and decode throughput, in the manner of llama-bench, next to the
// machine's measured memory bandwidth and the bound it puts on decode.
//
//   tandem-bench --model synthetic:olmoe-1b-7b --layers 4 --quantize q8_0 -p 512 -n 128 -r 3
//   tandem-bench --model DIR|file.gguf -p 64,512 -n 32 -b 1,4 -t 1,2 --json out.json --csv out.csv
//   tandem-bench --model synthetic:qwen3-30b-a3b --layers 6 --quantize q4_k --write q3.gguf
//
// Each case (threads x prompt length p x generated length n x batch b) runs -r times. One run
// submits b requests of p random prompt tokens together (Engine::submit, so continuous batching
// is what is measured) and generates n + 1 tokens each, greedy, EOS ignored. Prefill tokens/s:
// b * p over the time from submission to the last request's first token. Decode tokens/s: the
// tokens generated after that instant over the time they took (b * n for a batch that starts
// together). A warm-up run precedes each engine's first case.
//
// Synthetic models are written once into --model-cache (seeded: the same name, depth, type and
// seed give the same bytes) and reused: bf16 safetensors without --quantize, else one GGUF file
// whose weights are generated directly in that type (no load-time quantization).
//
// Hybrid rows: each --gpu-expert-ratio above 0 runs once per --planner with the experts split
// between the CPU and --expert-device (sim by default: the emulated device; cuda:N on a GPU), and
// reports the expert cache's hit rate and the device's share of the expert jobs. Ratio 0 is one
// CPU-only row. --replay-routing replays a trace's routing (the model's routers are ignored).
#include <tandem/engine.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>

#include "bench/bench_report.h"
#include "bench/machine.h"
#include "bench/weight_bytes.h"
#include "cache/cache_policy.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/device.h"
#include "kernels/error.h"
#include "kernels/thread_pool.h"
#include "models/config.h"
#include "models/gguf.h"
#include "scheduler/planner.h"
#include "tools/engine_flags.h"
#include "tools/routing_recorder.h"
#include "tools/synthetic_writer.h"

namespace {

namespace fs = std::filesystem;
using namespace tandem;
using Clock = std::chrono::steady_clock;

struct Options {
    std::string model = "synthetic:olmoe-1b-7b";
    int64_t layers = 0;  // synthetic: 0 = the real depth
    uint64_t seed = 1;
    std::vector<int64_t> prompts = {512};
    std::vector<int64_t> gens = {128};
    std::vector<int> batches = {1};
    std::vector<int> threads = {0};
    int repetitions = 3;
    std::string quantize;
    std::string json_path, csv_path;
    std::vector<double> gpu_ratios = {0.0};
    std::vector<std::string> planners = {"hybrimoe"};
    std::string cache_policy = "mrs";
    std::string prefetch = "off";
    std::string replay_routing;
    std::string warm_profile;
    std::string record_routing;
    std::string expert_device = "sim";
    std::string hardware_profile;
    std::string numa = "auto", numa_topology;
    std::string write_path;
    std::string model_cache = (fs::temp_directory_path() / "tandem-bench-models").string();
    double bandwidth_gbps = 0;  // 0: measure
    int64_t step_tokens = 512;
    std::string kv_cache_type = "f16";  // EngineConfig::kv_cache_type (and its default)
    std::string cpu_isa;                // EngineConfig::cpu_isa ("": the CPU's best)
    bool no_avx_vnni = false;           // cpu::force_avx_vnni(false)
    std::string device = "cpu";         // EngineConfig::device
    bool cuda_graphs = false;           // EngineConfig::cuda_graphs
    bool progress = false, no_progress = false;
};

// What the engine loads and what each row says about it.
struct PreparedModel {
    std::string path;
    std::string name;
    std::string engine_quantize;  // passed to EngineConfig::quantize
    DType weight_type = DType::BF16;
    DType router_type = DType::BF16;
};

DType parse_weight_type(const std::string& name) {
    const auto type = dtype_from_name(name);
    if (!type || !is_weight_type(*type))
        fail("--quantize: '", name,
             "' is not a weight type (q8_0, q5_0, q4_0, q4_k, q5_k, q6_k, mxfp4)");
    return *type;
}

std::string synthetic_path(const Options& o, const SyntheticModelSpec& spec, DType type) {
    const std::string stem = spec.name + "-" + std::to_string(spec.n_layers) + "l-" +
                             std::string(dtype_name(type)) + "-seed" + std::to_string(spec.seed);
    return (fs::path(o.model_cache) / stem).string() + (is_float_weight_type(type) ? "" : ".gguf");
}

// Writes to a temporary name and renames, so an interrupted write is never mistaken for a model.
void write_synthetic(const SyntheticModelSpec& spec, DType type, const std::string& path) {
    const bool gguf = path.ends_with(".gguf");
    const std::string tmp = path + ".partial";
    fs::remove_all(tmp);
    std::fprintf(
        stderr, "tandem-bench: writing synthetic %s (%lld layers, %.2fB parameters, %s) to %s\n",
        spec.name.c_str(), (long long)spec.n_layers, double(synthetic_parameter_count(spec)) / 1e9,
        std::string(dtype_name(type)).c_str(), path.c_str());
    const auto start = Clock::now();
    const int64_t bytes =
        gguf ? write_synthetic_gguf(tmp, spec, type) : write_synthetic_safetensors(tmp, spec, type);
    fs::rename(tmp, path);
    std::fprintf(stderr, "tandem-bench: %.2f GB in %.1f s\n", double(bytes) / 1e9,
                 std::chrono::duration<double>(Clock::now() - start).count());
}

DType stored_weight_type(const std::string& path) {
    if (is_gguf_path(path)) {
        // The routed experts' type, else the attention output's: DeepSeek's first layers are
        // dense, and with q_lora it has no attn_q.
        const GgufModelFiles files = GgufModelFiles::open(path);
        for (const char* suffix : {".ffn_down_exps.weight", ".attn_output.weight"})
            for (const GgufTensor* t : files.tensors())
                if (t->name.ends_with(suffix) && t->dtype) return *t->dtype;
        return DType::F16;
    }
    std::ifstream in(fs::path(path) / "config.json");
    const auto config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    const std::string torch = config.is_object() ? config.value("torch_dtype", "bfloat16") : "";
    return torch == "float32" ? DType::F32 : torch == "float16" ? DType::F16 : DType::BF16;
}

PreparedModel prepare_model(const Options& o) {
    PreparedModel m;
    if (o.model.starts_with("synthetic:")) {
        SyntheticModelSpec spec = synthetic_preset(o.model.substr(10));
        if (o.layers > 0) spec.n_layers = o.layers;
        spec.seed = o.seed;
        const DType type = o.quantize.empty() ? DType::BF16 : parse_weight_type(o.quantize);
        m.path = synthetic_path(o, spec, type);
        if (!fs::exists(m.path)) write_synthetic(spec, type, m.path);
        m.name = spec.name;
        m.weight_type = type;
        m.router_type = is_float_weight_type(type) ? type : DType::F32;
        return m;
    }
    if (o.layers > 0) fail("--layers cuts synthetic models only");
    if (!fs::exists(o.model)) fail("--model: ", o.model, " does not exist");
    m.path = o.model;
    m.name = fs::path(o.model).filename().string();
    if (m.name.empty()) m.name = fs::path(o.model).parent_path().filename().string();
    m.engine_quantize = o.quantize;
    const DType stored = stored_weight_type(o.model);
    m.weight_type = o.quantize.empty() ? stored : parse_weight_type(o.quantize);
    m.router_type = is_gguf_path(o.model) ? DType::F32 : stored;
    return m;
}

// kTransformers as a row: the static planner over the static cache's frozen set (from the
// routing profile: --warm-profile, or the replayed trace), no prefetch; tandem-sim's name too.
constexpr const char* kKtransformersStatic = "ktransformers-static";

void validate_hybrid_flags(const Options& o) {
    for (double r : o.gpu_ratios) {
        if (!(r >= 0 && r <= 1))
            fail("--gpu-expert-ratio: ", r, " is not a fraction of the experts in [0, 1]");
    }
    parse_device(o.expert_device);
    for (const std::string& p : o.planners)
        if (p != kKtransformersStatic) parse_planner(p);  // throws listing the planners
    parse_cache_policy(o.cache_policy);
    if (o.prefetch != "on" && o.prefetch != "off")
        fail("--prefetch: '", o.prefetch, "' is not on or off");
}

// One engine configuration of the sweep: every expert on the CPU, or a ratio with a planner.
struct HybridCase {
    double ratio = 0;
    std::string planner = "cpu-only";
};

std::vector<HybridCase> hybrid_cases(const Options& o) {
    std::vector<HybridCase> cases;
    for (double r : o.gpu_ratios) {
        if (r == 0) cases.push_back({});
        for (const std::string& p : o.planners)
            if (r > 0) cases.push_back({r, p});
    }
    return cases;
}

EngineConfig engine_config(const Options& o, const PreparedModel& model, const HybridCase& hc,
                           int threads, int64_t context, int max_batch) {
    EngineConfig c{.model_dir = model.path,
                   .n_threads = threads,
                   .context_length = context,
                   .quantize = model.engine_quantize,
                   .max_sequences = std::max(max_batch, 1),
                   .max_step_tokens = o.step_tokens};
    c.replay_routing = o.replay_routing;
    c.numa = o.numa;
    c.numa_topology = o.numa_topology;
    c.kv_cache_type = o.kv_cache_type;
    c.cpu_isa = o.cpu_isa;
    c.device = o.device;
    c.cuda_graphs = o.cuda_graphs;
    if (hc.ratio > 0) {
        c.expert_device = o.expert_device;
        c.gpu_expert_ratio = hc.ratio;
        c.planner = hc.planner;
        c.cache_policy = o.cache_policy;
        c.prefetch = o.prefetch == "on";
        c.hardware_profile = o.hardware_profile;
        c.warm_profile = o.warm_profile;
        if (hc.planner == kKtransformersStatic) {
            c.planner = "static";
            c.cache_policy = "static";
            c.prefetch = false;
        }
    }
    apply_environment_defaults(c);  // TANDEM_TILE_GEMM, the calibration cache (tools' defaults)
    return c;
}

struct RunResult {
    double prefill_tps = 0;
    double decode_tps = 0;
    bool decoded = false;
};

// One run of a case: b requests submitted together; every streamed token is time-stamped.
RunResult run_once(Engine& engine, int64_t p, int64_t n, int b, uint64_t seed,
                   RoutingRecorder* recorder = nullptr) {
    std::mt19937_64 rng(seed);
    const auto vocab = uint64_t(engine.vocab_size());
    struct Track {
        std::vector<std::pair<double, int64_t>> events;  // (seconds since start, tokens)
    };
    std::vector<Track> tracks(static_cast<size_t>(b));
    std::mutex mutex;
    std::vector<RequestHandle> handles;
    const auto start = Clock::now();
    for (int i = 0; i < b; ++i) {
        std::vector<int32_t> prompt(static_cast<size_t>(p));
        for (auto& id : prompt)
            id = int32_t(3 + rng() % (vocab - 3));  // past the usual BOS/EOS/UNK ids
        SamplingParams params{
            .temperature = 0.0f, .max_tokens = int32_t(n > 0 ? n + 1 : 1), .ignore_eos = true};
        params.return_routed_experts = recorder != nullptr;
        handles.push_back(
            engine.submit(Prompt::tokens(std::move(prompt)), params, [&, i](const StreamDelta& d) {
                const double t = std::chrono::duration<double>(Clock::now() - start).count();
                std::lock_guard lock(mutex);
                if (!d.token_ids.empty())
                    tracks[size_t(i)].events.push_back({t, int64_t(d.token_ids.size())});
            }));
    }
    for (size_t i = 0; i < handles.size(); ++i) {
        const RequestOutput& out = handles[i].wait();
        if (!out.error.empty()) fail("request failed: ", out.error);
        if (recorder) recorder->write(cat("bench/", seed, "-", i), "bench", out, 0);
    }
    double prefill_end = 0, last = 0;
    for (const Track& t : tracks) {
        if (t.events.empty()) fail("a request finished without generating a token");
        prefill_end = std::max(prefill_end, t.events.front().first);
        last = std::max(last, t.events.back().first);
    }
    RunResult r;
    r.prefill_tps = double(b) * double(p) / prefill_end;
    int64_t decoded = 0;
    for (const Track& t : tracks)
        for (const auto& [time, count] : t.events)
            if (time > prefill_end) decoded += count;
    if (n > 0 && decoded > 0 && last > prefill_end) {
        r.decoded = true;
        r.decode_tps = double(decoded) / (last - prefill_end);
    }
    return r;
}

std::string join_command(int argc, char** argv) {
    std::string s;
    for (int i = 0; i < argc; ++i)
        s += (i ? " " : "") + std::string(argv[i]);
    return s;
}

// The active ISA level's name, "+avx-vnni" added at the avx2 level where its kernels use AVX-VNNI:
// the avx2 figures of CPUs with and without it differ.
std::string cpu_level_name() {
    std::string name(cpu::isa_name(cpu::active_isa()));
    if (cpu::active_isa() == cpu::CpuIsa::Avx2 && cpu::avx_vnni_active()) name += "+avx-vnni";
    return name;
}

int run(const Options& o, const std::string& command_line) {
    validate_hybrid_flags(o);
    if (!o.write_path.empty()) {
        if (!o.model.starts_with("synthetic:")) fail("--write saves synthetic models only");
        SyntheticModelSpec spec = synthetic_preset(o.model.substr(10));
        if (o.layers > 0) spec.n_layers = o.layers;
        spec.seed = o.seed;
        const DType type = o.quantize.empty() ? DType::BF16 : parse_weight_type(o.quantize);
        if (!is_float_weight_type(type) && !o.write_path.ends_with(".gguf"))
            fail("--write ", o.write_path, ": ", dtype_name(type),
                 " weights go into a GGUF file: name it *.gguf");
        write_synthetic(spec, type, o.write_path);
        return 0;
    }
    const PreparedModel model = prepare_model(o);
    int64_t context = 0;
    for (int64_t p : o.prompts)
        for (int64_t n : o.gens)
            context = std::max(context, p + n + 16);
    const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());

    const std::vector<HybridCase> cases = hybrid_cases(o);
    std::optional<RoutingRecorder> recorder;
    if (!o.record_routing.empty()) recorder.emplace(o.record_routing, false);
    const int total =
        int(o.threads.size() * cases.size() * o.prompts.size() * o.gens.size() * o.batches.size()) *
        o.repetitions;
    bench::ProgressBar bar(total, !o.no_progress && (o.progress || isatty(STDERR_FILENO)));
    int done = 0;
    std::vector<bench::BenchRow> rows;
    for (int t : o.threads) {
        double bandwidth = o.bandwidth_gbps;
        if (bandwidth <= 0) {
            bar.update(done, "measuring memory bandwidth");
            // A model on a GPU is bound by the GPU's memory, measured as a device copy.
            const Device device = parse_device(o.device);
            ThreadPool pool({.n_threads = t});
            bandwidth = device.is_cpu() ? bench::measure_read_bandwidth_gbps(pool)
                                        : bench::measure_device_copy_gbps(device);
        }
        for (const HybridCase& hc : cases) {
            bar.update(done, "loading " + model.path);
            EngineConfig engine_cfg = engine_config(o, model, hc, t, context, max_batch);
            engine_cfg.on_load_progress = [&](const LoadProgress& p) {
                bar.update(done, "loading " + model.path + ": " + std::string(p.stage) + " " +
                                     std::to_string(int(100 * double(p.done) /
                                                        double(std::max<int64_t>(p.total, 1)))) +
                                     "%");
            };
            Engine engine = Engine::open(engine_cfg);
            const ModelConfig& config = engine.model_config();
            run_once(engine, std::min<int64_t>(16, o.prompts.front()), 4, 1, 0);  // warm-up
            for (int64_t p : o.prompts)
                for (int64_t n : o.gens)
                    for (int b : o.batches) {
                        std::vector<double> prefill, decode;
                        const EngineStats before = engine.stats();
                        for (int rep = 0; rep < o.repetitions; ++rep) {
                            bar.update(done, "t" + std::to_string(engine.thread_count()) + " p" +
                                                 std::to_string(p) + " n" + std::to_string(n) +
                                                 " b" + std::to_string(b) + " rep " +
                                                 std::to_string(rep + 1));
                            const RunResult r = run_once(engine, p, n, b, o.seed * 1000 + rep,
                                                         recorder ? &*recorder : nullptr);
                            prefill.push_back(r.prefill_tps);
                            if (r.decoded) decode.push_back(r.decode_tps);
                            ++done;
                        }
                        bench::BenchRow row;
                        row.model = model.name;
                        row.model_path = model.path;
                        row.weight_type = std::string(dtype_name(model.weight_type));
                        row.layers = config.n_layers;
                        row.parameters = bench::parameter_count(config);
                        // The CPU kernels' ISA (at avx2 with AVX-VNNI when it is used), or the
                        // device the model ran on.
                        row.isa = o.device == "cpu" ? cpu_level_name() : o.device;
                        row.threads = engine.thread_count();
                        row.batch = b;
                        row.prompt_tokens = p;
                        row.gen_tokens = n;
                        row.repetitions = o.repetitions;
                        const EngineStats after = engine.stats();
                        row.gpu_expert_ratio = hc.ratio;
                        row.planner = hc.planner;
                        row.replay_routing = o.replay_routing;
                        if (hc.ratio > 0) {
                            row.expert_device = o.expert_device;
                            row.cache_policy = o.cache_policy;
                            row.prefetch = o.prefetch == "on";
                            const double hits =
                                double(after.expert_cache_hits - before.expert_cache_hits);
                            const double misses =
                                double(after.expert_cache_misses - before.expert_cache_misses);
                            const double on_device =
                                double(after.experts_on_device - before.experts_on_device);
                            const double on_cpu =
                                double(after.experts_on_cpu - before.experts_on_cpu);
                            row.expert_hit_rate = hits + misses > 0 ? hits / (hits + misses) : 0;
                            row.device_expert_fraction =
                                on_device + on_cpu > 0 ? on_device / (on_device + on_cpu) : 0;
                            row.prefetches = after.expert_prefetches - before.expert_prefetches;
                            row.prefetches_used =
                                after.expert_prefetches_used - before.expert_prefetches_used;
                        }
                        row.prefill_tps = bench::summarize(prefill);
                        row.decode_tps = bench::summarize(decode);
                        row.bandwidth_gbps = bandwidth;
                        row.bytes_per_token = bench::decode_step_bytes(config, model.weight_type,
                                                                       model.router_type, 1)
                                                  .total();
                        row.bytes_per_step = bench::decode_step_bytes(config, model.weight_type,
                                                                      model.router_type, b)
                                                 .total();
                        row.bound_tps = double(b) * bandwidth * 1e9 / row.bytes_per_step;
                        row.bound_fraction = row.decode_tps.median / row.bound_tps;
                        rows.push_back(row);
                    }
        }
    }
    bar.finish();
    bench::print_markdown(stdout, rows);
    if (!o.json_path.empty()) bench::write_json(o.json_path, rows, command_line);
    if (!o.csv_path.empty()) bench::write_csv(o.csv_path, rows);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Prefill and decode throughput of a Tandem model against the bandwidth bound"};
    Options o;
    if (const char* env = std::getenv("TANDEM_HWLOC_SYNTHETIC")) o.numa_topology = env;
    std::string presets;
    for (const std::string& name : synthetic_preset_names())
        presets += (presets.empty() ? "" : ", ") + name;
    app.add_option("-m,--model", o.model,
                   "model directory, .gguf file, or synthetic:NAME with NAME one of " + presets)
        ->capture_default_str();
    app.add_option("--layers", o.layers, "synthetic models: decoder layers (0: the real depth)");
    app.add_option("--seed", o.seed, "synthetic weights and prompts")->capture_default_str();
    app.add_option("-p,--n-prompt", o.prompts, "prompt lengths (prefill)")->delimiter(',');
    app.add_option("-n,--n-gen", o.gens, "generated lengths (decode; 0: prefill only)")
        ->delimiter(',');
    app.add_option("-b,--batch", o.batches, "concurrent sequences")->delimiter(',');
    app.add_option("-t,--threads", o.threads, "worker threads (0: physical cores)")->delimiter(',');
    app.add_option("-r,--repetitions", o.repetitions, "runs per case")->capture_default_str();
    app.add_option(
        "--quantize", o.quantize,
        "weight type: q8_0, q5_0, q4_0, q4_k, q5_k, q6_k, mxfp4 (synthetic: generated in "
        "it; else quantized at load)");
    app.add_option("--json", o.json_path, "write the rows as JSON");
    app.add_option("--csv", o.csv_path, "write the rows as CSV");
    app.add_option("--gpu-expert-ratio", o.gpu_ratios,
                   "fractions of all routed experts the device holds (0: every expert on the CPU)")
        ->delimiter(',');
    app.add_option("--expert-device", o.expert_device, "device of the hybrid rows: sim or cuda:N")
        ->capture_default_str();
    app.add_option("--hardware-profile", o.hardware_profile,
                   "cost model from this profile instead of calibrating at start-up");
    app.add_option("--planner", o.planners,
                   "hybrid planners: hybrimoe, static, fiddler, gpu-stream, cpu-only, or "
                   "ktransformers-static (static planner and cache, no prefetch)")
        ->delimiter(',');
    app.add_option("--warm-profile", o.warm_profile,
                   "routing trace whose most activated experts start on the device");
    app.add_option("--cache-policy", o.cache_policy, "GPU expert cache: mrs, lru, lfu, static")
        ->capture_default_str();
    app.add_option("--prefetch", o.prefetch, "on or off")->capture_default_str();
    app.add_option("--replay-routing", o.replay_routing,
                   "routing trace whose experts replace the routers' choices (synthetic models)");
    app.add_option("--record-routing", o.record_routing,
                   "write every timed run's decode routing as a trace (JSON lines, .gz ok)");
    app.add_option("--numa", o.numa, "routed experts per NUMA node: auto, off, distribute")
        ->capture_default_str();
    app.add_option("--numa-topology", o.numa_topology,
                   "hwloc synthetic topology instead of this machine's (see tandem-run)");
    app.add_option("--write", o.write_path,
                   "write the synthetic model (a directory of safetensors, or FILE.gguf) and "
                   "exit");
    app.add_option("--model-cache", o.model_cache, "where synthetic models are kept")
        ->capture_default_str();
    app.add_option("--bandwidth-gbps", o.bandwidth_gbps, "use this bandwidth (0: measure)");
    app.add_option("--kv-cache-type", o.kv_cache_type,
                   "KV cache element type: f32, f16 (default), bf16")
        ->check(CLI::IsMember({"f32", "f16", "bf16"}));
    app.add_option("--cpu-isa", o.cpu_isa,
                   "force the CPU kernels' ISA: scalar, avx2, avx512 (default: the CPU's best)");
    app.add_flag("--no-avx-vnni", o.no_avx_vnni,
                 "at the avx2 level, do without AVX-VNNI, as CPUs before it do (Intel before Alder "
                 "Lake, AMD before Zen 5)");
    app.add_option("--device", o.device, "where the model runs: cpu or cuda:N")
        ->capture_default_str();
    app.add_flag("--cuda-graphs", o.cuda_graphs, "on cuda:N, replay decode steps as CUDA graphs");
    app.add_option("--step-tokens", o.step_tokens, "tokens per engine step at most (ubatch)")
        ->capture_default_str();
    app.add_flag("--progress", o.progress, "draw the progress bar even when stderr is a file");
    app.add_flag("--no-progress", o.no_progress, "no progress bar");
    CLI11_PARSE(app, argc, argv);
    try {
        if (o.repetitions < 1) fail("-r: at least 1");
        for (int64_t p : o.prompts)
            if (p < 1) fail("-p: prompts of at least one token");
        for (int64_t n : o.gens)
            if (n < 0) fail("-n: a generated length cannot be negative");
        for (int b : o.batches)
            if (b < 1) fail("-b: at least one sequence");
        if (o.no_avx_vnni) cpu::force_avx_vnni(false);
        return run(o, join_command(argc, argv));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\ntandem-bench: %s\n", e.what());
        return 1;
    }
}
