// The option walk: every rope type that transformers knows and every attention option of each
// supported architecture's config class (tests/data/golden/options.json, written by
// tools/make_golden.py from transformers' own lists) either works or is refused by name:
//   golden   the named fixture has the option, and the engine reproduces its reference logits;
//   refused  the base fixture's config with the option set fails to load, naming the option;
//   ignored  transformers reads it nowhere at inference: the engine loads the base fixture with
//            the option set and gives the base reference's logits.
#include <gtest/gtest.h>

#include <tandem/engine.h>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/src/engine_internals.h"
#include "models/model.h"
#include "tests/golden/golden_reference.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

Json read_json(const fs::path& path) {
    std::ifstream in(path);
    return Json::parse(in);
}

fs::path fixture_dir(const std::string& name) {
    return fs::path(test::data_dir()) / "golden" / name / "f32";
}

// Max |diff| between the engine's prefill logits of the fixture's prompt and its reference.
double worst_diff(const std::string& model_dir, const fs::path& reference) {
    Engine engine = Engine::open({.model_dir = model_dir, .n_threads = 2, .pin_threads = false});
    const Reference ref = read_reference(reference.string());
    KvCache cache(engine_model(engine).kv_cache_shape(int64_t(ref.prompt.size())));
    const SequenceStep step{.tokens = ref.prompt, .cache = &cache, .all_logits = true};
    OwnedTensor logits = engine_model(engine).forward({&step, 1}, engine_pool(engine));
    EXPECT_EQ(size_t(logits.view.numel()), ref.logits.size());
    double worst = 0;
    for (size_t i = 0; i < ref.logits.size(); ++i)
        worst = std::max(worst, std::fabs(double(logits.view.data_as<float>()[i]) - ref.logits[i]));
    return worst;
}

// The base fixture with the entry's patch applied to config.json, weights linked.
void write_patched(const Json& entry, const fs::path& dir) {
    const fs::path base = fixture_dir(entry["base"]);
    for (const auto& file : fs::directory_iterator(base))
        if (file.path().filename() != "config.json")
            fs::create_symlink(file.path(), dir / file.path().filename());
    Json config = read_json(base / "config.json");
    for (const auto& [key, value] : entry["patch"].items())
        config[key] = value;
    std::ofstream(dir / "config.json") << config.dump(2);
}

// Whether the fixture's config.json really holds the option the entry points it to.
bool fixture_has(const Json& config, const Json& entry) {
    if (entry["option"] == "rope_type") {
        const Json rope = config.contains("rope_parameters") ? config["rope_parameters"]
                                                             : config.value("rope_scaling", Json());
        const std::string type = rope.is_object() ? rope.value("rope_type", "default") : "default";
        return type == entry["value"];
    }
    const std::string option = entry["option"];
    const Json& want = entry["patch"][option];
    // transformers 5 moves partial_rotary_factor into rope_parameters.
    if (config.contains("rope_parameters") && config["rope_parameters"].contains(option))
        return config["rope_parameters"][option] == want;
    return config.contains(option) && config[option] == want;
}

class OptionWalk : public ::testing::Test {
  protected:
    void SetUp() override {
        entries_ = read_json(fs::path(test::data_dir()) / "golden" / "options.json")["entries"];
        ASSERT_FALSE(entries_.empty());
    }
    // "refused", "ignored" or "golden" (whose `expect` names the fixture).
    std::vector<Json> of_kind(const std::string& kind) const {
        std::vector<Json> out;
        for (const Json& e : entries_) {
            const bool named = e["expect"] == "refused" || e["expect"] == "ignored";
            if (named ? e["expect"] == kind : kind == "golden") out.push_back(e);
        }
        return out;
    }
    static std::string label(const Json& e) {
        return e["arch"].get<std::string>() + ": " + e["option"].get<std::string>() + " = " +
               (e.contains("value") ? e["value"] : e["patch"].begin().value()).dump();
    }
    Json entries_;
};

TEST_F(OptionWalk, RefusedOptionsFailNamingTheOption) {
    const std::vector<Json> refused = of_kind("refused");
    EXPECT_GT(refused.size(), 20u);
    for (const Json& e : refused) {
        SCOPED_TRACE(label(e));
        test::TempDir dir;
        write_patched(e, dir.path());
        try {
            Engine::open({.model_dir = dir.str(), .n_threads = 2, .pin_threads = false});
            ADD_FAILURE() << "loaded";
        } catch (const std::exception& error) {
            const std::string message = error.what();
            EXPECT_NE(message.find(e["option"].get<std::string>()), std::string::npos) << message;
            if (e.contains("value"))
                EXPECT_NE(message.find(e["value"].get<std::string>()), std::string::npos)
                    << message;
        }
    }
}

TEST_F(OptionWalk, IgnoredOptionsChangeNothing) {
    for (const Json& e : of_kind("ignored")) {
        SCOPED_TRACE(label(e));
        test::TempDir dir;
        write_patched(e, dir.path());
        EXPECT_LE(worst_diff(dir.str(), fixture_dir(e["base"]) / "reference.safetensors"), 1e-4);
    }
}

TEST_F(OptionWalk, SupportedOptionsMatchAGoldenThatHasThem) {
    const std::vector<Json> supported = of_kind("golden");
    EXPECT_GT(supported.size(), 30u);
    std::map<std::string, double> checked;  // fixture -> max |diff|, each fixture run once
    for (const Json& e : supported) {
        SCOPED_TRACE(label(e));
        const std::string fixture = e["expect"];
        const Json config = read_json(fixture_dir(fixture) / "config.json");
        EXPECT_TRUE(fixture_has(config, e)) << fixture << "/f32/config.json lacks it";
        // Options other than the rope type are the architecture's own: its fixture must be too.
        const Json base = read_json(fixture_dir(e["base"]) / "config.json");
        if (e["option"] != "rope_type") EXPECT_EQ(config["architectures"], base["architectures"]);
        if (!checked.contains(fixture))
            checked[fixture] = worst_diff(fixture_dir(fixture).string(),
                                          fixture_dir(fixture) / "reference.safetensors");
        EXPECT_LE(checked[fixture], 1e-4) << fixture;
    }
}

}  // namespace
}  // namespace tandem
