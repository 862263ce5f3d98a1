#include "tools/sim_engine.h"

#include <algorithm>
#include <memory>

#include "cache/expert_cache.h"
#include "kernels/error.h"
#include "scheduler/expert_predictor.h"
#include "scheduler/prefetcher.h"
#include "scheduler/routing_replay.h"

namespace tandem::sim {
namespace {

constexpr int kPrefetchDistance = 3;  // layers L+1..L+3, as the paper predicts

class Run {
  public:
    Run(const SimConfig& c, const CostModel& cost, int64_t slots,
        const std::vector<ExpertKey>& profile)
        : c_(c),
          cost_(cost),
          n_experts_(c.shape.n_experts),
          cache_(ExpertCacheConfig{.policy = {.kind = c.policy.cache,
                                              .n_layers = c.trace.n_layers,
                                              .n_experts = c.shape.n_experts,
                                              .n_experts_active = c.trace.top_k,
                                              .mrs_alpha = c.mrs_alpha,
                                              .static_set = profile},
                                   .expert_bytes = c.shape.expert_bytes(),
                                   .capacity = slots}),
          n_transient_(slots > 0 ? c.trace.top_k : 0),
          arrival_(size_t(c.trace.n_layers * n_experts_), 0.0),
          tokens_(size_t(n_experts_), 0),
          resident_(size_t(n_experts_), 0),
          ready_(size_t(n_experts_), 0.0) {
        for (ExpertKey key : profile)
            cache_.insert(key, InsertReason::Warmup);
    }

    ExpertCache& cache() { return cache_; }
    double clock = 0.0;
    int64_t bytes_moved = 0;
    int64_t prefetch_issued = 0;
    int64_t refused_transfers = 0;
    int64_t transient_copies = 0;

    // Runs the experts of layer l: tokens_ holds the per-expert loads, `active` their ids.
    // Returns the layer's planned makespan; the clock is not advanced.
    double run_layer(int32_t l, std::span<const int32_t> active, int64_t n_tokens,
                     std::span<const ExpertKey> extra_pins) {
        cache_.record_access(l, active);
        std::fill(resident_.begin(), resident_.end(), 0);
        std::fill(ready_.begin(), ready_.end(), 0.0);
        pins_.clear();
        for (int32_t e : active) {
            pins_.push_back({l, e});
            if (cache_.resident({l, e})) {
                resident_[size_t(e)] = 1;
                ready_[size_t(e)] = std::max(0.0, arrival_[key_index(l, e)] - clock);
            }
        }
        pins_.insert(pins_.end(), extra_pins.begin(), extra_pins.end());
        cache_.set_pinned(pins_);
        const PlanInput input{.cost = cost_,
                              .tokens = tokens_,
                              .resident = resident_,
                              .ready_ms = ready_,
                              .gpu_start_ms = cost_.shared_ms(n_tokens),
                              .pcie_free_ms = std::max(0.0, pcie_free_ - clock)};
        plan_layer(c_.policy.planner, input, plan_);
        // A copy the cache refuses (not admitted, or no victim it outranks) goes to a transient
        // device slot, is computed there and not cached, as in the executor (whose few
        // transient slots are reused in turn, each copy waiting for the slot's last reader:
        // not modelled). Without any slots (budget 0) the CPU computes it and the layer is
        // rescheduled.
        bool refused = false;
        placement_ = plan_.placement;
        for (const PlannedJob& tr : plan_.transfers) {
            if (cache_.insert({l, tr.expert}, InsertReason::Demand).inserted) {
                bytes_moved += c_.shape.expert_bytes();
                arrival_[key_index(l, tr.expert)] = clock + tr.finish_ms;
            } else if (n_transient_ > 0) {
                ++transient_copies;
                bytes_moved += c_.shape.expert_bytes();
            } else {
                placement_[size_t(tr.expert)] = ExpertPlacement::Cpu;
                ++refused_transfers;
                refused = true;
            }
        }
        if (refused) {
            schedule_assignment(input, placement_, plan_);
            for (const PlannedJob& tr : plan_.transfers)  // the kept copies, re-timed
                arrival_[key_index(l, tr.expert)] = clock + tr.finish_ms;
        }
        if (!plan_.transfers.empty()) pcie_free_ = clock + plan_.pcie_finish_ms;
        return plan_.makespan_ms();
    }

    // Prefetches for layers l+1..l+3 of `token`, issued at the start of layer l's experts.
    // `predicted[d]` holds the predicted experts of layer l+d.
    void prefetch(int32_t l, double layer_ms, double dense_ms,
                  const std::vector<std::vector<int32_t>>& predicted,
                  const LookaheadAccuracy& accuracy) {
        std::vector<PrefetchLayer> layers;
        double starts_in = layer_ms;
        for (int d = 1; d <= kPrefetchDistance && l + d < c_.trace.n_layers; ++d) {
            const int32_t j = l + d;
            const auto& pred = predicted[size_t(d)];
            // Compact: only the predicted experts, one token each; the planner's index space is
            // these k entries, which keeps the impact evaluations cheap.
            ptok_[d].assign(pred.size(), 1);
            pres_[d].resize(pred.size());
            for (size_t i = 0; i < pred.size(); ++i)
                pres_[d][i] = cache_.resident({j, pred[i]});
            starts_in += dense_ms;
            layers.push_back({.layer = j,
                              .predicted_tokens = ptok_[d],
                              .resident = pres_[d],
                              .starts_in_ms = starts_in,
                              .gpu_start_ms = cost_.shared_ms(1),
                              .use_probability = accuracy.probability(d)});
            plan_layer(c_.policy.planner,
                       {.cost = cost_,
                        .tokens = ptok_[d],
                        .resident = pres_[d],
                        .gpu_start_ms = cost_.shared_ms(1)},
                       scratch_);
            starts_in += scratch_.makespan_ms();
        }
        if (layers.empty()) return;
        const std::vector<PrefetchRequest> reqs =
            plan_prefetches({.cost = cost_,
                             .planner = c_.policy.planner,
                             .layers = layers,
                             .copy_free_in_ms = std::max(0.0, pcie_free_ - clock)});
        if (reqs.empty()) return;
        // Keep this layer, the next one and every predicted target through the evictions below.
        const std::vector<ExpertKey> current = pins_;
        for (int d = 1; d <= kPrefetchDistance && l + d < c_.trace.n_layers; ++d)
            for (int32_t e : predicted[size_t(d)])
                pins_.push_back({l + d, e});
        cache_.set_pinned(pins_);
        for (const PrefetchRequest& r : reqs) {
            const int32_t expert = predicted[size_t(r.layer - l)][size_t(r.expert)];
            if (!cache_.insert({r.layer, expert}, InsertReason::Prefetch).inserted) continue;
            ++prefetch_issued;
            bytes_moved += c_.shape.expert_bytes();
            arrival_[key_index(r.layer, expert)] = clock + r.finish_ms;
            pcie_free_ = std::max(pcie_free_, clock + r.finish_ms);
        }
        pins_ = current;
    }

    std::vector<int32_t>& tokens() { return tokens_; }

  private:
    size_t key_index(int32_t l, int32_t e) const {
        return size_t(l) * size_t(n_experts_) + size_t(e);
    }

    const SimConfig& c_;
    const CostModel& cost_;
    int64_t n_experts_;
    ExpertCache cache_;
    int64_t n_transient_;          // transient device slots per layer for refused copies
    std::vector<double> arrival_;  // [n_layers, n_experts] absolute time a copy lands
    double pcie_free_ = 0.0;
    std::vector<int32_t> tokens_;
    std::vector<uint8_t> resident_;
    std::vector<double> ready_;
    std::vector<ExpertKey> pins_;
    std::vector<ExpertPlacement> placement_;
    LayerPlan plan_, scratch_;
    std::vector<int32_t> ptok_[kPrefetchDistance + 1];
    std::vector<uint8_t> pres_[kPrefetchDistance + 1];
};

}  // namespace

std::string SimPolicy::name() const {
    if (is_ktransformers_static()) return "ktransformers-static";
    std::string n = cat(cache_policy_name(cache), "+", planner_name(planner));
    if (prefetch) n += "+prefetch(" + predictor + ")";
    return n;
}

SimResult simulate(const SimConfig& c) {
    const RoutingTrace& t = c.trace;
    const ModelShape& s = c.shape;
    if (t.n_layers != s.n_moe_layers)
        fail(t.source, ": ", t.n_layers, " MoE layers, but model ", s.name, " has ",
             s.n_moe_layers);
    if (t.top_k != s.n_experts_active)
        fail(t.source, ": top-", t.top_k, ", but model ", s.name, " routes to ",
             s.n_experts_active);
    if (t.max_expert >= s.n_experts)
        fail(t.source, ": expert id ", t.max_expert, ", but model ", s.name, " has ", s.n_experts,
             " experts");
    const CostModel cost = CostModel::from_profile(c.hw, s);
    const int64_t slots = expert_slots_for_ratio(c.budget_ratio, s.n_moe_layers, s.n_experts);
    const std::vector<ExpertKey> profile = most_activated_experts(t, s.n_experts, slots);
    // Attention, norms, router and lm_head run where the modelled engine runs them.
    const double dense_bw = c.attention_on_gpu ? c.hw.gpu_bandwidth_gbs * 1e6  // bytes per ms
                                               : c.hw.cpu_bandwidth_gbs * 1e6;
    const double dense_flops = c.attention_on_gpu ? c.hw.gpu_tflops * 1e9  // FLOP per ms
                                                  : c.hw.cpu_gflops * 1e6;
    const double dense_ms = double(s.dense_params_per_layer) * 2.0 / dense_bw;
    const double head_ms = double(s.head_params) * 2.0 / dense_bw;
    const int64_t k = t.top_k;
    const std::vector<float> uniform(size_t(k), 1.0f / float(k));
    // With the router's full distribution in the trace, MRS scores every expert from it (top-p
    // sees the near-misses), as the executor does; else the chosen experts' weights.
    if (t.has_probs() && t.n_probs != s.n_experts)
        fail(t.source, ": 'probs' cover ", t.n_probs, " experts, the model ", s.n_experts);
    std::vector<int32_t> every_expert(size_t(t.n_probs));
    for (int64_t e = 0; e < t.n_probs; ++e)
        every_expert[size_t(e)] = int32_t(e);

    SimResult r;
    r.spec = c.policy;
    r.policy = c.policy.name();
    r.budget_ratio = c.budget_ratio;
    r.slots = slots;

    // TTFT: one prefill step on a fresh warm cache.
    {
        Run run(c, cost, slots, profile);
        const int64_t p = std::min<int64_t>(std::max<int64_t>(c.prompt_len, 1), t.n_tokens());
        std::vector<int32_t> ids;
        std::vector<float> weights;
        std::vector<int32_t> active;
        for (int32_t l = 0; l < t.n_layers; ++l) {
            run.clock += dense_ms + 2.0 * double(s.dense_params_per_layer * p) / dense_flops;
            ids.clear();
            weights.clear();
            auto& tokens = run.tokens();
            std::fill(tokens.begin(), tokens.end(), 0);
            for (int64_t tok = 0; tok < p; ++tok) {
                const int32_t* e = t.experts_at(tok, l);
                if (t.has_probs()) {
                    ids.insert(ids.end(), every_expert.begin(), every_expert.end());
                    weights.insert(weights.end(), t.probs_at(tok, l),
                                   t.probs_at(tok, l) + t.n_probs);
                } else {
                    const float* w = t.has_weights ? t.weights_at(tok, l) : uniform.data();
                    ids.insert(ids.end(), e, e + k);
                    weights.insert(weights.end(), w, w + k);
                }
                for (int64_t i = 0; i < k; ++i)
                    ++tokens[size_t(e[i])];
            }
            active.clear();
            for (int64_t e = 0; e < s.n_experts; ++e)
                if (tokens[size_t(e)] > 0) active.push_back(int32_t(e));
            run.cache().observe_step(l, p, t.has_probs() ? t.n_probs : k, ids, weights);
            run.clock += run.run_layer(l, active, p, {});
        }
        r.ttft_ms = run.clock + head_ms;
    }

    // Decode: every token of the trace, one step each.
    Run run(c, cost, slots, profile);
    std::unique_ptr<ExpertPredictor> predictor;
    if (c.policy.prefetch)
        predictor = make_expert_predictor(c.policy.predictor, t, s.n_experts, c.seed);
    std::vector<std::vector<int32_t>> predicted(kPrefetchDistance + 1);
    // predicted_for[d][j]: the experts predicted for layer j from d layers before, this token.
    std::vector<std::vector<std::vector<int32_t>>> predicted_for(
        kPrefetchDistance + 1, std::vector<std::vector<int32_t>>(size_t(t.n_layers)));
    LookaheadAccuracy accuracy(kPrefetchDistance);
    std::vector<ExpertKey> next_pins;
    double total_ms = 0.0;
    for (int64_t tok = 0; tok < t.n_tokens(); ++tok) {
        const double start = run.clock;
        for (int32_t l = 0; l < t.n_layers; ++l) {
            run.clock += dense_ms;
            const std::span<const int32_t> ids(t.experts_at(tok, l), size_t(k));
            const std::span<const float> w(t.has_weights ? t.weights_at(tok, l) : uniform.data(),
                                           size_t(k));
            if (t.has_probs())
                run.cache().observe_scores(l, every_expert,
                                           {t.probs_at(tok, l), size_t(t.n_probs)});
            else
                run.cache().observe_scores(l, ids, w);
            auto& tokens = run.tokens();
            for (int32_t e : ids)
                tokens[size_t(e)] = 1;
            next_pins.clear();
            if (predictor) {
                for (int d = 1; d <= kPrefetchDistance; ++d) {
                    std::vector<int32_t>& was = predicted_for[size_t(d)][size_t(l)];
                    if (was.empty()) continue;
                    int64_t used = 0;
                    for (int32_t e : was)
                        used += std::find(ids.begin(), ids.end(), e) != ids.end();
                    accuracy.record(d, int64_t(was.size()), used);
                    was.clear();
                }
                for (int d = 1; d <= kPrefetchDistance && l + d < t.n_layers; ++d) {
                    predictor->predict(tok, l, l + d, predicted[size_t(d)]);
                    predicted_for[size_t(d)][size_t(l + d)] = predicted[size_t(d)];
                }
                if (l + 1 < t.n_layers)
                    for (int32_t e : predicted[1])
                        next_pins.push_back({l + 1, e});
            }
            const double layer_ms = run.run_layer(l, ids, 1, next_pins);
            if (predictor) run.prefetch(l, layer_ms, dense_ms, predicted, accuracy);
            run.clock += layer_ms;
            for (int32_t e : ids)
                tokens[size_t(e)] = 0;
        }
        run.clock += head_ms;
        if (predictor) predictor->observe(tok);
        total_ms += run.clock - start;
    }
    const CacheCounters counters = run.cache().total();
    r.tokens = t.n_tokens();
    r.hit_rate = counters.hit_rate();
    r.prefetch_issued = run.prefetch_issued;
    r.prefetch_used = counters.prefetch_used;
    r.prefetch_wasted = counters.prefetch_wasted;
    r.tbt_ms = total_ms / double(t.n_tokens());
    r.bytes_moved = run.bytes_moved;
    r.evictions = counters.evictions;
    r.refused_transfers = run.refused_transfers;
    r.transient_copies = run.transient_copies;
    return r;
}

}  // namespace tandem::sim
