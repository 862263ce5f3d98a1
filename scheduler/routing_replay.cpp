#include "scheduler/routing_replay.h"

#include <algorithm>

#include "kernels/error.h"
#include "kernels/log.h"

namespace tandem {

std::vector<ExpertKey> most_activated_experts(const RoutingTrace& t, int64_t n_experts,
                                              int64_t count) {
    std::vector<int64_t> activations(size_t(t.n_layers * n_experts), 0);
    for (int64_t tok = 0; tok < t.n_tokens(); ++tok)
        for (int64_t l = 0; l < t.n_layers; ++l)
            for (int64_t i = 0; i < t.top_k; ++i)
                ++activations[size_t(l * n_experts + t.experts_at(tok, l)[i])];
    std::vector<int32_t> order(activations.size());
    for (size_t i = 0; i < order.size(); ++i)
        order[i] = int32_t(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        return activations[size_t(a)] > activations[size_t(b)];
    });
    std::vector<ExpertKey> keys;
    for (int64_t i = 0; i < std::min<int64_t>(count, int64_t(order.size())); ++i)
        keys.push_back(
            {int32_t(order[size_t(i)] / n_experts), int32_t(order[size_t(i)] % n_experts)});
    return keys;
}
namespace {

void check_fits(const RoutingTrace& t, const RoutingReplayConfig& c) {
    if (c.n_moe_layers <= 0 || c.n_experts <= 0 || c.n_experts_active <= 0)
        fail(t.source, ": routing replay needs a model with MoE layers, got ", c.n_moe_layers,
             " MoE layers of ", c.n_experts, " experts, top-", c.n_experts_active);
    const bool layers_fit =
        c.allow_deeper_trace ? t.n_layers >= c.n_moe_layers : t.n_layers == c.n_moe_layers;
    if (!layers_fit)
        fail(t.source, ": the trace has ", t.n_layers, " MoE layers, the model ", c.n_moe_layers,
             c.allow_deeper_trace ? " (a trace may have more, not fewer)" : "");
    if (t.top_k != c.n_experts_active)
        fail(t.source, ": the trace routes each token to top-", t.top_k,
             " experts, the model to top-", c.n_experts_active);
    if (t.max_expert >= c.n_experts)
        fail(t.source, ": the trace has expert id ", t.max_expert, ", the model ", c.n_experts,
             " experts per layer");
    if (t.has_probs() && t.n_probs != c.n_experts)
        fail(t.source, ": the trace's 'probs' cover ", t.n_probs, " experts, the model has ",
             c.n_experts, " per layer");
}

}  // namespace

RoutingReplay::RoutingReplay(RoutingTrace trace, const RoutingReplayConfig& config)
    : trace_(std::make_unique<const RoutingTrace>(std::move(trace))), config_(config) {
    check_fits(*trace_, config_);
    if (has_predictor()) predictor_ = make_predictor();
    if (!trace_->has_weights)
        log_warn(trace_->source, ": no router probabilities; routing replay weights each chosen ",
                 "expert 1/", trace_->top_k);
}

std::unique_ptr<ExpertPredictor> RoutingReplay::make_predictor() const {
    return make_expert_predictor(config_.predictor, *trace_, config_.n_experts, config_.seed);
}

void RoutingReplay::begin_step(int64_t n_rows) {
    if (rows_ != 0) fail("routing replay: begin_step while a step of ", rows_, " rows is open");
    if (n_rows < 1) fail("routing replay: a step of ", n_rows, " rows");
    if (has_predictor() && cursor_ + n_rows > trace_->n_tokens())
        next_predictor_ = make_predictor();
    rows_ = n_rows;
}

Routing RoutingReplay::routing(int64_t moe_layer) const {
    if (rows_ == 0) fail("routing replay: routing() outside a step");
    if (moe_layer < 0 || moe_layer >= config_.n_moe_layers)
        fail("routing replay: MoE layer ", moe_layer, " not in [0, ", config_.n_moe_layers, ")");
    const int64_t k = trace_->top_k;
    Routing r{.n_tokens = rows_, .n_experts_active = k, .experts = {}, .weights = {}};
    r.experts.reserve(size_t(rows_ * k));
    r.weights.reserve(size_t(rows_ * k));
    for (int64_t row = 0; row < rows_; ++row) {
        const int64_t token = token_of(row);
        const int32_t* e = trace_->experts_at(token, moe_layer);
        r.experts.insert(r.experts.end(), e, e + k);
        if (trace_->has_weights) {
            const float* w = trace_->weights_at(token, moe_layer);
            r.weights.insert(r.weights.end(), w, w + k);
        } else {
            r.weights.insert(r.weights.end(), size_t(k), 1.0f / float(k));
        }
    }
    return r;
}

Routing RoutingReplay::scores(int64_t moe_layer) const {
    if (!trace_->has_probs()) return routing(moe_layer);
    if (rows_ == 0) fail("routing replay: scores() outside a step");
    if (moe_layer < 0 || moe_layer >= config_.n_moe_layers)
        fail("routing replay: MoE layer ", moe_layer, " not in [0, ", config_.n_moe_layers, ")");
    const int64_t n = trace_->n_probs;
    Routing r{.n_tokens = rows_, .n_experts_active = n, .experts = {}, .weights = {}};
    r.experts.reserve(size_t(rows_ * n));
    r.weights.reserve(size_t(rows_ * n));
    for (int64_t row = 0; row < rows_; ++row) {
        const float* p = trace_->probs_at(token_of(row), moe_layer);
        for (int64_t e = 0; e < n; ++e)
            r.experts.push_back(int32_t(e));
        r.weights.insert(r.weights.end(), p, p + n);
    }
    return r;
}

void RoutingReplay::predict(int64_t moe_layer, int64_t target_layer,
                            std::span<int32_t> tokens_per_expert) {
    if (!has_predictor()) fail("routing replay: predict() without a predictor");
    if (rows_ == 0) fail("routing replay: predict() outside a step");
    if (moe_layer < 0 || target_layer <= moe_layer || target_layer > moe_layer + 3 ||
        target_layer >= config_.n_moe_layers)
        fail("routing replay: cannot predict MoE layer ", target_layer, " from ", moe_layer, " of ",
             config_.n_moe_layers, " (1 to 3 layers ahead)");
    if (int64_t(tokens_per_expert.size()) != config_.n_experts)
        fail("routing replay: predict() into ", tokens_per_expert.size(), " counts, expected ",
             config_.n_experts);
    std::fill(tokens_per_expert.begin(), tokens_per_expert.end(), 0);
    for (int64_t row = 0; row < rows_; ++row) {
        // Rows past the trace's end belong to the next pass and its fresh predictor.
        ExpertPredictor& p = cursor_ + row < trace_->n_tokens() ? *predictor_ : *next_predictor_;
        p.predict(token_of(row), moe_layer, target_layer, predicted_);
        for (int32_t e : predicted_)
            ++tokens_per_expert[size_t(e)];
    }
}

void RoutingReplay::end_step() {
    if (rows_ == 0) fail("routing replay: end_step() outside a step");
    const int64_t n_tokens = trace_->n_tokens();
    const int64_t end = cursor_ + rows_;
    if (has_predictor()) {
        if (end < n_tokens) {
            for (int64_t token = cursor_; token < end; ++token)
                predictor_->observe(token);
        } else {
            // The pass is over: the next one's predictor has seen none of it, and observes the
            // tokens this step has already replayed of that pass.
            predictor_ = next_predictor_ ? std::move(next_predictor_) : make_predictor();
            for (int64_t token = 0; token < end % n_tokens; ++token)
                predictor_->observe(token);
        }
    }
    cursor_ = end % n_tokens;
    rows_ = 0;
}

}  // namespace tandem
