// EngineConfig checked up front (engine/src/engine_config.h): a table of bad configurations, each
// refused by Engine::open with a message naming its field (and, for the fields with a fixed set
// of values, the values); several bad fields at once are all named in one error; the hybrid
// fields without an expert device are refused; a good configuration parses into typed values;
// the environment changes nothing.
#include <gtest/gtest.h>

#include <tandem/engine.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/src/engine_config.h"
#include "kernels/error.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

class EngineConfigTest : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dir_ = new test::TempDir();
        test::write_tiny_model(dir_->str());
    }
    static void TearDownTestSuite() { delete dir_; }
    static EngineConfig good() {
        return {.model_dir = dir_->str(), .n_threads = 1, .pin_threads = false};
    }
    // The message of the tandem::Error that check_engine_config throws; "" when none.
    static std::string refusal(const EngineConfig& config) {
        try {
            check_engine_config(config);
        } catch (const Error& e) {
            return e.what();
        }
        return "";
    }
    static test::TempDir* dir_;
};
test::TempDir* EngineConfigTest::dir_ = nullptr;

struct BadCase {
    const char* name;
    std::function<void(EngineConfig&)> spoil;
    std::vector<std::string> message_holds;
};

TEST_F(EngineConfigTest, EveryBadFieldIsNamed) {
    const std::vector<BadCase> cases = {
        {"empty model_dir", [](EngineConfig& c) { c.model_dir = ""; }, {"model_dir: empty"}},
        {"missing model_dir",
         [](EngineConfig& c) { c.model_dir = "/nonexistent/model"; },
         {"model_dir: '/nonexistent/model' does not exist"}},
        {"negative threads", [](EngineConfig& c) { c.n_threads = -1; }, {"n_threads: -1"}},
        {"threads above the cap",
         [](EngineConfig& c) { c.n_threads = max_engine_threads() + 1; },
         {"n_threads: ", "above the cap of " + std::to_string(max_engine_threads())}},
        {"negative context", [](EngineConfig& c) { c.context_length = -5; }, {"context_length"}},
        {"negative kv bytes", [](EngineConfig& c) { c.kv_cache_bytes = -1; }, {"kv_cache_bytes"}},
        {"zero block size", [](EngineConfig& c) { c.kv_block_size = 0; }, {"kv_block_size"}},
        {"zero sequences", [](EngineConfig& c) { c.max_sequences = 0; }, {"max_sequences"}},
        {"zero step tokens", [](EngineConfig& c) { c.max_step_tokens = 0; }, {"max_step_tokens"}},
        {"negative waiting",
         [](EngineConfig& c) { c.max_waiting_requests = -1; },
         {"max_waiting_requests"}},
        {"device sim", [](EngineConfig& c) { c.device = "sim"; }, {"device: 'sim'", "cuda:N"}},
        {"device nonsense", [](EngineConfig& c) { c.device = "tpu:0"; }, {"device: ", "tpu:0"}},
        {"unknown quantize",
         [](EngineConfig& c) { c.quantize = "q3_k"; },
         {"quantize: 'q3_k'", "q8_0, q5_0, q4_0, q4_k, q5_k, q6_k, mxfp4"}},
        {"float quantize", [](EngineConfig& c) { c.quantize = "bf16"; }, {"quantize: 'bf16'"}},
        {"kv type", [](EngineConfig& c) { c.kv_cache_type = "q8_0"; }, {"kv_cache_type: 'q8_0'"}},
        {"cpu isa", [](EngineConfig& c) { c.cpu_isa = "sse"; }, {"cpu_isa: ", "sse"}},
        {"tile gemm", [](EngineConfig& c) { c.tile_gemm = "sometimes"; }, {"tile_gemm: "}},
        {"numa", [](EngineConfig& c) { c.numa = "yes"; }, {"numa: 'yes'"}},
        {"expert device cpu",
         [](EngineConfig& c) { c.expert_device = "cpu"; },
         {"expert_device: 'cpu'"}},
        {"expert device nonsense",
         [](EngineConfig& c) { c.expert_device = "gpu"; },
         {"expert_device: ", "gpu"}},
        {"planner",
         [](EngineConfig& c) {
             c.expert_device = "sim";
             c.planner = "greedy";
         },
         {"planner: ", "greedy"}},
        {"cache policy",
         [](EngineConfig& c) {
             c.expert_device = "sim";
             c.cache_policy = "fifo";
         },
         {"cache_policy: ", "fifo"}},
        {"ratio",
         [](EngineConfig& c) {
             c.expert_device = "sim";
             c.gpu_expert_ratio = 1.5;
         },
         {"gpu_expert_ratio: 1.5"}},
        {"budget",
         [](EngineConfig& c) {
             c.expert_device = "sim";
             c.gpu_expert_budget = -2;
         },
         {"gpu_expert_budget: -2"}},
        {"predictor",
         [](EngineConfig& c) {
             c.expert_device = "sim";
             c.replay_predictor = "oracle:2";
         },
         {"replay_predictor: 'oracle:2'"}},
        {"missing trace",
         [](EngineConfig& c) { c.replay_routing = "/nonexistent/trace.jsonl"; },
         {"replay_routing: '/nonexistent/trace.jsonl'"}},
        {"missing profile",
         [](EngineConfig& c) {
             c.expert_device = "sim";
             c.hardware_profile = "/nonexistent/profile.json";
         },
         {"hardware_profile: '/nonexistent/profile.json'"}},
    };
    for (const BadCase& bad : cases) {
        EngineConfig config = good();
        bad.spoil(config);
        const std::string message = refusal(config);
        ASSERT_FALSE(message.empty()) << bad.name << ": accepted";
        EXPECT_NE(message.find("EngineConfig: 1 bad field:"), std::string::npos)
            << bad.name << ": " << message;
        for (const std::string& part : bad.message_holds)
            EXPECT_NE(message.find(part), std::string::npos)
                << bad.name << ": '" << message << "' lacks '" << part << "'";
        // Engine::open refuses it the same way, before it loads anything.
        try {
            Engine::open(config);
            ADD_FAILURE() << bad.name << ": Engine::open accepted it";
        } catch (const Error& e) {
            EXPECT_EQ(std::string(e.what()), message) << bad.name;
        }
    }
}

TEST_F(EngineConfigTest, SeveralBadFieldsAreNamedInOneError) {
    EngineConfig config = good();
    config.n_threads = -3;
    config.quantize = "q3_k";
    config.kv_cache_type = "f8";
    config.device = "sim";
    config.numa = "maybe";
    const std::string message = refusal(config);
    EXPECT_NE(message.find("EngineConfig: 5 bad fields:"), std::string::npos) << message;
    for (const char* field :
         {"\n  n_threads: ", "\n  quantize: ", "\n  kv_cache_type: ", "\n  device: ", "\n  numa: "})
        EXPECT_NE(message.find(field), std::string::npos) << message << "\nlacks " << field;
}

// The hybrid fields only mean something with an expert device: without one they would be
// ignored, so each is refused by name.
TEST_F(EngineConfigTest, HybridFieldsWithoutAnExpertDeviceAreRefused) {
    const std::vector<std::pair<const char*, std::function<void(EngineConfig&)>>> fields = {
        {"gpu_expert_budget", [](EngineConfig& c) { c.gpu_expert_budget = 1 << 20; }},
        {"gpu_expert_ratio", [](EngineConfig& c) { c.gpu_expert_ratio = 0.5; }},
        {"cache_policy", [](EngineConfig& c) { c.cache_policy = "lru"; }},
        {"planner", [](EngineConfig& c) { c.planner = "static"; }},
        {"prefetch", [](EngineConfig& c) { c.prefetch = false; }},
        {"hardware_profile", [](EngineConfig& c) { c.hardware_profile = "x.json"; }},
        {"calibration_file", [](EngineConfig& c) { c.calibration_file = "c.json"; }},
        {"recalibrate", [](EngineConfig& c) { c.recalibrate = true; }},
        {"replay_predictor", [](EngineConfig& c) { c.replay_predictor = "history"; }},
    };
    for (const auto& [field, set] : fields) {
        EngineConfig config = good();
        set(config);
        const std::string message = refusal(config);
        EXPECT_NE(message.find(std::string(field) + ": set, but expert_device is empty"),
                  std::string::npos)
            << field << ": " << message;
    }
}

TEST_F(EngineConfigTest, AGoodConfigurationParsesIntoTypedValues) {
    EngineConfig config = good();
    EXPECT_EQ(refusal(config), "");
    config.quantize = "q5_0";
    config.kv_cache_type = "bf16";
    config.cpu_isa = "scalar";
    config.tile_gemm = "never";
    config.expert_device = "sim";
    config.planner = "fiddler";
    config.replay_predictor = "oracle:0.5";
    const ParsedEngineConfig parsed = parse_engine_config(config);
    EXPECT_TRUE(parsed.device.is_cpu());
    EXPECT_EQ(parsed.quantize, DType::Q5_0);
    EXPECT_EQ(parsed.kv_cache_type, DType::BF16);
    EXPECT_EQ(parsed.cpu_isa, cpu::CpuIsa::Scalar);
    EXPECT_EQ(parsed.tile_gemm, cpu::TileGemmPolicy::Never);
    EXPECT_FALSE(parse_engine_config(good()).tile_gemm.has_value());
}

// Item 6 of issue 20: HOME, XDG_CACHE_HOME and TANDEM_TILE_GEMM change nothing the library
// does. An engine with a sim expert device and no calibration_file measures its cost model and
// caches it nowhere; the tile policy stays the process's.
TEST_F(EngineConfigTest, TheLibraryReadsNoEnvironment) {
    test::TempDir home;
    struct Saved {
        std::string name;
        std::optional<std::string> value;
    };
    std::vector<Saved> saved;
    for (const char* name : {"HOME", "XDG_CACHE_HOME", "TANDEM_TILE_GEMM"}) {
        const char* v = std::getenv(name);
        saved.push_back({name, v ? std::optional<std::string>(v) : std::nullopt});
    }
    setenv("HOME", home.str().c_str(), 1);
    setenv("XDG_CACHE_HOME", (home.str() + "/cache").c_str(), 1);
    setenv("TANDEM_TILE_GEMM", "never", 1);
    const cpu::TileGemmPolicy before = cpu::tile_gemm_policy();
    {
        EngineConfig config = good();
        config.expert_device = "sim";
        Engine engine = Engine::open(config);
        EXPECT_FALSE(
            engine.generate(Prompt::tokens({1, 2, 3}), {.max_tokens = 2}).completions.empty());
    }
    EXPECT_EQ(cpu::tile_gemm_policy(), before);
    EXPECT_TRUE(std::filesystem::is_empty(home.str()))
        << "the library wrote under $HOME: "
        << std::filesystem::directory_iterator(home.str())->path();
    for (const Saved& s : saved) {
        if (s.value)
            setenv(s.name.c_str(), s.value->c_str(), 1);
        else
            unsetenv(s.name.c_str());
    }
}

}  // namespace
}  // namespace tandem
