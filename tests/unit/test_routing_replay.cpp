// Routing replay: steps of several rows get the trace's experts and weights row by row, the
// cursor advances once per step and wraps, a trace that does not fit the model is refused by
// name, and the prefetcher's predictions are the named predictors' (oracle:1 = the truth; history
// as tandem-sim drives it, fresh on every pass over the trace).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "scheduler/expert_predictor.h"
#include "scheduler/routing_replay.h"
#include "scheduler/routing_trace.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

struct TraceShape {
    int n_tokens = 5;
    int n_layers = 2;
    int n_experts = 8;
    int top_k = 2;
};

// One JSON object per token (the olmoe-decode-dev format) with distinct random experts and
// weights; `weights` false writes the [[layer, expert], ...] pairs format, which has none.
std::string random_trace(const TraceShape& s, uint64_t seed, bool weights = true) {
    std::mt19937_64 rng(seed);
    std::string text;
    for (int tok = 0; tok < s.n_tokens; ++tok) {
        nlohmann::json ids = nlohmann::json::array(), probs = nlohmann::json::array();
        nlohmann::json pairs = nlohmann::json::array();
        for (int l = 0; l < s.n_layers; ++l) {
            std::vector<int> chosen;
            while (int(chosen.size()) < s.top_k) {
                const int e = int(rng() % uint64_t(s.n_experts));
                if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
            }
            std::vector<float> p;
            for (int e : chosen) {
                p.push_back(float(rng() % 1000 + 1) / 4096.0f);
                pairs.push_back({l, e});
            }
            ids.push_back(chosen);
            probs.push_back(p);
        }
        // Sequences of 7 tokens, so that history's temporal term has something to find.
        const nlohmann::json line = weights ? nlohmann::json{{"seq", "s" + std::to_string(tok / 7)},
                                                             {"experts", ids},
                                                             {"weights", probs}}
                                            : pairs;
        text += line.dump() + "\n";
    }
    return text;
}

RoutingReplayConfig config_for(const TraceShape& s, const std::string& predictor = "") {
    return {.n_moe_layers = s.n_layers,
            .n_experts = s.n_experts,
            .n_experts_active = s.top_k,
            .predictor = predictor};
}

// Row `row` of `r` holds token `token` of layer `layer`, experts and weights.
void expect_row(const Routing& r, int64_t row, const RoutingTrace& t, int64_t token,
                int64_t layer) {
    const int64_t k = t.top_k;
    for (int64_t i = 0; i < k; ++i) {
        EXPECT_EQ(r.experts[size_t(row * k + i)], t.experts_at(token, layer)[i])
            << "row " << row << " token " << token << " layer " << layer;
        EXPECT_EQ(r.weights[size_t(row * k + i)], t.weights_at(token, layer)[i])
            << "row " << row << " token " << token << " layer " << layer;
    }
}

TEST(RoutingReplay, ServesTheTraceRowByRowForMultiRowSteps) {
    TANDEM_SEEDED(seed);
    const TraceShape s{.n_tokens = 5, .n_layers = 3};
    const RoutingTrace t = parse_routing_trace(random_trace(s, seed), "mem.jsonl");
    RoutingReplay replay(t, config_for(s));
    // Tokens 0..2, then 3, 4, 0 (across the end), then 1.
    const std::vector<std::vector<int64_t>> steps = {{0, 1, 2}, {3, 4, 0}, {1}};
    for (const auto& tokens : steps) {
        replay.begin_step(int64_t(tokens.size()));
        EXPECT_EQ(replay.step_rows(), int64_t(tokens.size()));
        for (int64_t l = 0; l < s.n_layers; ++l) {
            const Routing r = replay.routing(l);
            ASSERT_EQ(r.n_tokens, int64_t(tokens.size()));
            ASSERT_EQ(r.n_experts_active, s.top_k);
            ASSERT_EQ(r.experts.size(), tokens.size() * size_t(s.top_k));
            ASSERT_EQ(r.weights.size(), r.experts.size());
            for (size_t row = 0; row < tokens.size(); ++row)
                expect_row(r, int64_t(row), t, tokens[row], l);
            // Usable as it is by the rest of the scheduler.
            EXPECT_NO_THROW(group_by_expert(r, s.n_experts));
        }
        replay.end_step();
    }
}

TEST(RoutingReplay, CursorAdvancesOncePerStepAndWraps) {
    TANDEM_SEEDED(seed);
    const TraceShape s{.n_tokens = 5};
    const RoutingTrace t = parse_routing_trace(random_trace(s, seed), "mem.jsonl");
    RoutingReplay replay(t, config_for(s));
    EXPECT_EQ(replay.cursor(), 0);
    int64_t expect = 0;
    for (int64_t rows : {2, 2, 1, 4, 3, 12, 1}) {
        replay.begin_step(rows);
        // Serving a layer twice, or every layer, does not move the cursor: only end_step does.
        for (int rep = 0; rep < 2; ++rep)
            for (int64_t l = 0; l < s.n_layers; ++l)
                EXPECT_EQ(replay.routing(l).experts[0], t.experts_at(expect, l)[0]);
        EXPECT_EQ(replay.cursor(), expect);
        // A step longer than the trace goes round it more than once.
        const Routing r = replay.routing(0);
        for (int64_t row = 0; row < rows; ++row)
            expect_row(r, row, t, (expect + row) % s.n_tokens, 0);
        replay.end_step();
        expect = (expect + rows) % s.n_tokens;
        EXPECT_EQ(replay.cursor(), expect);
        EXPECT_EQ(replay.step_rows(), 0);
    }
}

TEST(RoutingReplay, CallsOutOfStepOrRangeThrow) {
    const TraceShape s;
    const RoutingTrace t = parse_routing_trace(random_trace(s, 1), "mem.jsonl");
    RoutingReplay replay(t, config_for(s, "oracle:1"));
    std::vector<int32_t> counts(size_t(s.n_experts));
    EXPECT_THROW(replay.routing(0), Error);
    EXPECT_THROW(replay.predict(0, 1, counts), Error);
    EXPECT_THROW(replay.end_step(), Error);
    EXPECT_THROW(replay.begin_step(0), Error);
    replay.begin_step(2);
    EXPECT_THROW(replay.begin_step(1), Error);
    EXPECT_THROW(replay.routing(s.n_layers), Error);
    EXPECT_THROW(replay.routing(-1), Error);
    EXPECT_THROW(replay.predict(1, 2, counts), Error) << "past the last MoE layer";
    EXPECT_THROW(replay.predict(0, 0, counts), Error);
    std::vector<int32_t> short_counts(size_t(s.n_experts - 1));
    EXPECT_THROW(replay.predict(0, 1, short_counts), Error);
    EXPECT_NO_THROW(replay.predict(0, 1, counts));
    replay.end_step();

    RoutingReplay none(t, config_for(s));
    none.begin_step(1);
    EXPECT_FALSE(none.has_predictor());
    EXPECT_THROW(none.predict(0, 1, counts), Error);
}

// The message names the trace and what does not fit.
void expect_refused(const RoutingTrace& t, const RoutingReplayConfig& c, const std::string& what) {
    try {
        RoutingReplay replay(t, c);
        ADD_FAILURE() << "expected an error about " << what;
    } catch (const Error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("mem.jsonl"), std::string::npos) << msg;
        EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
}

TEST(RoutingReplay, RefusesATraceThatDoesNotFitTheModel) {
    const TraceShape s{.n_tokens = 4, .n_layers = 3, .n_experts = 8, .top_k = 2};
    const RoutingTrace t = parse_routing_trace(random_trace(s, 3), "mem.jsonl");
    RoutingReplayConfig c = config_for(s);
    c.n_moe_layers = 4;
    expect_refused(t, c, "3 MoE layers, the model 4");
    c.n_moe_layers = 2;
    expect_refused(t, c, "3 MoE layers, the model 2");
    // A model cut to its first layers may replay a deeper trace, never a shallower one.
    c.allow_deeper_trace = true;
    EXPECT_NO_THROW(RoutingReplay deeper(t, c));
    c.n_moe_layers = 4;
    expect_refused(t, c, "3 MoE layers, the model 4");
    c = config_for(s);
    c.n_experts_active = 3;
    expect_refused(t, c, "top-2 experts, the model to top-3");
    c = config_for(s);
    c.n_experts = t.max_expert;  // the largest id is one too many
    expect_refused(t, c, cat("expert id ", t.max_expert));
    EXPECT_THROW(RoutingReplay bad(t, config_for(s, "psychic")), Error);
    EXPECT_THROW(RoutingReplay bad(t, config_for(s, "oracle:1.5")), Error);
}

TEST(RoutingReplay, WeighsEachExpertOneOverKWithoutProbabilities) {
    TANDEM_SEEDED(seed);
    const TraceShape s{.n_tokens = 6, .n_layers = 2, .n_experts = 16, .top_k = 4};
    const RoutingTrace t =
        parse_routing_trace(random_trace(s, seed, /*weights=*/false), "pairs.jsonl");
    ASSERT_FALSE(t.has_weights);
    testing::internal::CaptureStderr();
    RoutingReplay replay(t, config_for(s));
    for (int step = 0; step < 4; ++step) {
        replay.begin_step(3);
        for (int64_t l = 0; l < s.n_layers; ++l) {
            const Routing r = replay.routing(l);
            ASSERT_EQ(r.weights.size(), size_t(3 * s.top_k));
            for (float w : r.weights)
                EXPECT_EQ(w, 0.25f);
            for (int64_t row = 0; row < 3; ++row)
                EXPECT_TRUE(std::equal(r.experts.begin() + row * s.top_k,
                                       r.experts.begin() + (row + 1) * s.top_k,
                                       t.experts_at((step * 3 + row) % s.n_tokens, l)));
        }
        replay.end_step();
    }
    const std::string log = testing::internal::GetCapturedStderr();
    // Said once, when the replay is made, not per step.
    const std::string what = "pairs.jsonl: no router probabilities";
    ASSERT_NE(log.find(what), std::string::npos) << log;
    EXPECT_EQ(log.find(what, log.find(what) + 1), std::string::npos) << log;
}

// tokens_per_expert of `target` for the rows `tokens`: the truth.
std::vector<int32_t> true_counts(const RoutingTrace& t, int64_t n_experts,
                                 const std::vector<int64_t>& tokens, int64_t target) {
    std::vector<int32_t> counts(size_t(n_experts), 0);
    for (int64_t token : tokens)
        for (int64_t i = 0; i < t.top_k; ++i)
            ++counts[size_t(t.experts_at(token, target)[i])];
    return counts;
}

TEST(RoutingReplay, PerfectOraclePredictsTheTrueFutureCounts) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const TraceShape s{.n_tokens = 23, .n_layers = 6, .n_experts = 16, .top_k = 4};
    const RoutingTrace t = parse_routing_trace(random_trace(s, seed), "mem.jsonl");
    RoutingReplay replay(t, config_for(s, "oracle:1.0"));
    std::vector<int32_t> counts(size_t(s.n_experts));
    int64_t cursor = 0;
    // Steps of 1..7 rows for about three passes, across the wrap and once longer than the trace.
    for (int step = 0; step < 20; ++step) {
        const int64_t rows = step == 10 ? 30 : int64_t(rng() % 7 + 1);
        std::vector<int64_t> tokens;
        for (int64_t row = 0; row < rows; ++row)
            tokens.push_back((cursor + row) % s.n_tokens);
        replay.begin_step(rows);
        for (int64_t l = 0; l < s.n_layers; ++l)
            for (int64_t target = l + 1; target <= std::min<int64_t>(l + 3, s.n_layers - 1);
                 ++target) {
                replay.predict(l, target, counts);
                EXPECT_EQ(counts, true_counts(t, s.n_experts, tokens, target))
                    << "step " << step << " layer " << l << " -> " << target;
            }
        replay.end_step();
        cursor = (cursor + rows) % s.n_tokens;
    }
}

// A history predictor driven as tandem-sim drives it: predict every layer of a token, then
// observe it. Its predictions for one pass over the trace, [token][from][d - 1] as counts.
using PassPredictions = std::vector<std::vector<std::vector<std::vector<int32_t>>>>;

PassPredictions sim_history_pass(const RoutingTrace& t, int64_t n_experts) {
    auto p = make_expert_predictor("history", t, n_experts, 1);
    PassPredictions out(size_t(t.n_tokens()));
    std::vector<int32_t> ids;
    for (int64_t tok = 0; tok < t.n_tokens(); ++tok) {
        out[size_t(tok)].resize(size_t(t.n_layers));
        for (int64_t l = 0; l < t.n_layers; ++l)
            for (int64_t d = 1; d <= 3 && l + d < t.n_layers; ++d) {
                p->predict(tok, l, l + d, ids);
                std::vector<int32_t> counts(size_t(n_experts), 0);
                for (int32_t e : ids)
                    ++counts[size_t(e)];
                out[size_t(tok)][size_t(l)].push_back(counts);
            }
        p->observe(tok);
    }
    return out;
}

TEST(RoutingReplay, HistoryWithOneRowStepsPredictsEveryPassAsTandemSim) {
    TANDEM_SEEDED(seed);
    const TraceShape s{.n_tokens = 40, .n_layers = 5, .n_experts = 12, .top_k = 3};
    const RoutingTrace t = parse_routing_trace(random_trace(s, seed), "mem.jsonl");
    const PassPredictions want = sim_history_pass(t, s.n_experts);
    RoutingReplay replay(t, config_for(s, "history"));
    std::vector<int32_t> counts(size_t(s.n_experts));
    // Three passes: after the wrap, history starts over instead of predicting tokens it has seen.
    for (int64_t step = 0; step < 3 * s.n_tokens; ++step) {
        const int64_t tok = step % s.n_tokens;
        replay.begin_step(1);
        for (int64_t l = 0; l < s.n_layers; ++l)
            for (int64_t d = 1; d <= 3 && l + d < s.n_layers; ++d) {
                replay.predict(l, l + d, counts);
                ASSERT_EQ(counts, want[size_t(tok)][size_t(l)][size_t(d - 1)])
                    << "pass " << step / s.n_tokens << " token " << tok << " layer " << l << " -> "
                    << l + d;
            }
        replay.end_step();
    }
}

// In a step that crosses the end of the trace, the rows past the end are predicted by a fresh
// predictor, and the next steps by one that has observed exactly the new pass's tokens so far.
TEST(RoutingReplay, HistoryAcrossTheWrapSeesOnlyTheNewPass) {
    TANDEM_SEEDED(seed);
    const TraceShape s{.n_tokens = 10, .n_layers = 4, .n_experts = 12, .top_k = 3};
    const RoutingTrace t = parse_routing_trace(random_trace(s, seed), "mem.jsonl");
    RoutingReplay replay(t, config_for(s, "history"));
    std::vector<int32_t> counts(size_t(s.n_experts));
    std::vector<int32_t> ids;
    // Steps of 4: 0-3, 4-7, then 8 9 | 0 1 across the end, then 2-5.
    for (int i = 0; i < 2; ++i) {
        replay.begin_step(4);
        replay.end_step();
    }
    auto reference = [&](const std::vector<int64_t>& observed, const std::vector<int64_t>& rows) {
        auto p = make_expert_predictor("history", t, s.n_experts, 1);
        for (int64_t tok : observed)
            p->observe(tok);
        std::vector<int32_t> want(size_t(s.n_experts), 0);
        for (int64_t tok : rows) {
            p->predict(tok, 0, 1, ids);
            for (int32_t e : ids)
                ++want[size_t(e)];
        }
        return want;
    };
    auto add = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
        for (size_t i = 0; i < a.size(); ++i)
            a[i] += b[i];
        return a;
    };
    replay.begin_step(4);
    replay.predict(0, 1, counts);
    EXPECT_EQ(counts, add(reference({0, 1, 2, 3, 4, 5, 6, 7}, {8, 9}), reference({}, {0, 1})));
    replay.end_step();
    replay.begin_step(4);
    replay.predict(0, 1, counts);
    EXPECT_EQ(counts, reference({0, 1}, {2, 3, 4, 5}));
    replay.end_step();
}

// History's temporal term (the previous token's experts at the target layer) waits until that
// token has completed: in a step of several rows, the row before is still in flight.
TEST(ExpertPredictor, HistoryUsesThePreviousTokenOnlyOnceObserved) {
    // Two tokens of one sequence, 2 layers x top-2 of 8; disjoint experts at layer 0, so that
    // only the temporal term can score token 0's layer-1 experts for token 1.
    const RoutingTrace t = parse_routing_trace(
        R"({"seq": "a", "experts": [[0, 1], [5, 6]], "weights": [[0.5, 0.5], [0.5, 0.5]]})"
        "\n"
        R"({"seq": "a", "experts": [[2, 3], [4, 7]], "weights": [[0.5, 0.5], [0.5, 0.5]]})"
        "\n",
        "mem.jsonl");
    auto p = make_expert_predictor("history", t, 8, 1);
    std::vector<int32_t> ids;
    p->predict(1, 0, 1, ids);
    EXPECT_EQ(ids, (std::vector<int32_t>{0, 1})) << "nothing known: ties go to the lowest ids";
    p->observe(0);
    p->predict(1, 0, 1, ids);
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(ids, (std::vector<int32_t>{5, 6}));
}

// The demo model's trace is committed (models/demo/), so this one never skips: 8 MoE layers of
// 32 experts, top-4, with router probabilities and the gate lookahead.
TEST(RoutingReplay, ReplaysTheDemoModelsCommittedTrace) {
    const std::string path = test::data_dir() + "/../../models/demo/routing-trace.jsonl.gz";
    const RoutingTrace t = read_routing_trace(path, 200);
    ASSERT_EQ(t.n_tokens(), 200) << path;
    EXPECT_EQ(t.n_layers, 8);
    EXPECT_EQ(t.top_k, 4);
    EXPECT_TRUE(t.has_weights);
    EXPECT_LT(t.max_expert, 32);
    RoutingReplay replay(
        t, {.n_moe_layers = 8, .n_experts = 32, .n_experts_active = 4, .predictor = "oracle:1"});
    std::vector<int32_t> counts(32);
    for (int64_t step = 0; step < 40; ++step) {
        const int64_t first = replay.cursor();
        replay.begin_step(9);
        for (int64_t l = 0; l < 8; ++l) {
            const Routing r = replay.routing(l);
            for (int64_t row = 0; row < 9; ++row)
                expect_row(r, row, t, (first + row) % 200, l);
            if (l + 1 < 8) {
                replay.predict(l, l + 1, counts);
                std::vector<int64_t> tokens;
                for (int64_t row = 0; row < 9; ++row)
                    tokens.push_back((first + row) % 200);
                EXPECT_EQ(counts, true_counts(t, 32, tokens, l + 1));
            }
        }
        replay.end_step();
    }
    EXPECT_EQ(replay.cursor(), 40 * 9 % 200);
}

TEST(RoutingReplay, ReplaysTheSharedOlmoeDevTrace) {
    const std::string path = test::shared_dir() + "/traces/olmoe-decode-dev.jsonl.gz";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not present (../shared/traces)";
    const RoutingTrace t = read_routing_trace(path, 100);
    // OLMoE-1B-7B: 16 MoE layers of 64 experts, top-8.
    RoutingReplay replay(
        t, {.n_moe_layers = 16, .n_experts = 64, .n_experts_active = 8, .predictor = "oracle:1"});
    std::vector<int32_t> counts(64);
    for (int64_t step = 0; step < 30; ++step) {
        const int64_t first = replay.cursor();
        replay.begin_step(7);
        for (int64_t l = 0; l < 16; ++l) {
            const Routing r = replay.routing(l);
            for (int64_t row = 0; row < 7; ++row)
                expect_row(r, row, t, (first + row) % 100, l);
            if (l + 1 < 16) {
                replay.predict(l, l + 1, counts);
                std::vector<int64_t> tokens;
                for (int64_t row = 0; row < 7; ++row)
                    tokens.push_back((first + row) % 100);
                EXPECT_EQ(counts, true_counts(t, 64, tokens, l + 1));
            }
        }
        replay.end_step();
    }
    EXPECT_EQ(replay.cursor(), 30 * 7 % 100);
}

}  // namespace
}  // namespace tandem
