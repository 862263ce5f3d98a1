// config.json reading: the keys each architecture honours and the errors for bad values.
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "models/config.h"
#include "models/rope.h"

namespace tandem {
namespace {

using Json = nlohmann::json;

Json base_config() {
    return {{"vocab_size", 100},        {"hidden_size", 64},
            {"num_hidden_layers", 4},   {"num_attention_heads", 4},
            {"num_key_value_heads", 2}, {"max_position_embeddings", 128},
            {"rms_norm_eps", 1e-5},     {"rope_theta", 500000.0}};
}

std::string error_of(const Json& json) {
    try {
        ModelConfig config;
        read_common_config(ConfigReader(json, "config.json"), config);
        validate_config(config, "config.json");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST(Config, ReadsCommonKeys) {
    ModelConfig c;
    read_common_config(ConfigReader(base_config(), "config.json"), c);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.n_kv_heads, 2);
    EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
    EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
    EXPECT_EQ(c.layer_is_moe.size(), 4u);
}

TEST(Config, ReadsTransformers5RopeParameters) {
    Json j = base_config();
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_theta", 1234.0}, {"rope_type", "linear"}, {"factor", 2.0}};
    ModelConfig c;
    read_common_config(ConfigReader(j, "config.json"), c);
    EXPECT_DOUBLE_EQ(c.rope.theta, 1234.0);
    EXPECT_EQ(c.rope.type, "linear");
    const auto inv = rope_inv_freq(c);
    EXPECT_NEAR(inv[0], 0.5, 1e-7);
}

TEST(Config, Llama3RopeScalingFollowsTheFormula) {
    Json j = base_config();
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 32}};
    ModelConfig c;
    read_common_config(ConfigReader(j, "config.json"), c);
    const auto inv = rope_inv_freq(c);
    ASSERT_EQ(inv.size(), 8u);
    for (size_t i = 0; i < inv.size(); ++i) {
        const double base = 1.0 / std::pow(500000.0, double(2 * i) / 16.0);
        const double wavelen = 2 * M_PI / base;
        double want = base;
        if (wavelen > 32.0)
            want = base / 8.0;
        else if (wavelen >= 8.0) {
            const double smooth = (32.0 / wavelen - 1.0) / 3.0;
            want = (1 - smooth) * base / 8.0 + smooth * base;
        }
        EXPECT_NEAR(inv[i], want, 1e-6 * want) << i;
    }
}

TEST(Config, ErrorsNameTheKey) {
    Json j = base_config();
    j.erase("hidden_size");
    EXPECT_NE(error_of(j).find("config.json: hidden_size: missing"), std::string::npos);
    j = base_config();
    j["num_attention_heads"] = "four";
    EXPECT_NE(error_of(j).find("num_attention_heads: expected an integer"), std::string::npos);
    j = base_config();
    j["num_key_value_heads"] = 3;
    EXPECT_NE(error_of(j).find("not a multiple"), std::string::npos);
    j = base_config();
    j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4.0}};
    EXPECT_NE(error_of(j).find("'longrope' is not supported"), std::string::npos);
    j = base_config();
    j["vocab_size"] = -5;
    EXPECT_NE(error_of(j).find("vocab_size: must be positive"), std::string::npos);
}

TEST(Config, SparseLayersFollowStepAndDenseList) {
    Json j = base_config();
    j["decoder_sparse_step"] = 2;
    j["mlp_only_layers"] = {3};
    ModelConfig c;
    ConfigReader reader(j, "config.json");
    read_common_config(reader, c);
    c.n_experts = 8;
    read_sparse_layers(reader, c);
    EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, true, false, false}));
}

}  // namespace
}  // namespace tandem
