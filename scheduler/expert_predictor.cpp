#include "scheduler/expert_predictor.h"

#include <algorithm>
#include <numeric>

#include "kernels/error.h"

namespace tandem {
namespace {

constexpr int kMaxDistance = 3;

class OraclePredictor final : public ExpertPredictor {
  public:
    OraclePredictor(const RoutingTrace& t, int64_t n_experts, double accuracy, uint64_t seed)
        : t_(t), n_experts_(n_experts), accuracy_(accuracy), rng_(seed) {}

    void predict(int64_t token, int64_t, int64_t target, std::vector<int32_t>& out) override {
        const int32_t* truth = t_.experts_at(token, target);
        out.assign(truth, truth + t_.top_k);
        std::uniform_real_distribution<double> u(0.0, 1.0);
        for (auto& e : out) {
            if (u(rng_) < accuracy_) continue;
            // A random expert outside the true set and the predictions so far.
            for (;;) {
                const auto other = int32_t(rng_() % uint64_t(n_experts_));
                if (std::find(truth, truth + t_.top_k, other) == truth + t_.top_k &&
                    std::find(out.begin(), out.end(), other) == out.end()) {
                    e = other;
                    break;
                }
            }
        }
    }

  private:
    const RoutingTrace& t_;
    int64_t n_experts_;
    double accuracy_;
    std::mt19937_64 rng_;
};

class HistoryPredictor final : public ExpertPredictor {
  public:
    HistoryPredictor(const RoutingTrace& t, int64_t n_experts)
        : t_(t),
          n_(n_experts),
          pair_(size_t(t.n_layers * kMaxDistance * n_experts * n_experts), 0.0f),
          single_(size_t(t.n_layers * n_experts), 0.0f),
          score_(size_t(n_experts)),
          order_(size_t(n_experts)) {}

    void predict(int64_t token, int64_t from, int64_t target, std::vector<int32_t>& out) override {
        const int64_t d = target - from;
        if (d < 1 || d > kMaxDistance) fail("history predictor: distance ", d, " not in 1..3");
        std::fill(score_.begin(), score_.end(), 0.0f);
        // P(e' at target | e at from), summed over the current layer's experts.
        const int32_t* now = t_.experts_at(token, from);
        for (int64_t i = 0; i < t_.top_k; ++i) {
            const float seen = single_[size_t(from * n_ + now[i])];
            if (seen <= 0.0f) continue;
            const float* row = pair_.data() + pair_index(from, d, now[i], 0);
            for (int64_t e = 0; e < n_; ++e)
                score_[size_t(e)] += row[e] / seen;
        }
        // The previous token of the same sequence at the target layer: worth about one certain
        // co-occurrence, enough to break ties and to carry the start of the trace. Only once that
        // token has completed: in a step of several rows, the row before is still in flight.
        if (token > 0 && last_observed_ == token - 1 &&
            t_.seq[size_t(token - 1)] == t_.seq[size_t(token)]) {
            const int32_t* prev = t_.experts_at(token - 1, target);
            for (int64_t i = 0; i < t_.top_k; ++i)
                score_[size_t(prev[i])] += 0.5f;
        }
        std::iota(order_.begin(), order_.end(), 0);
        std::partial_sort(order_.begin(), order_.begin() + t_.top_k, order_.end(),
                          [&](int32_t a, int32_t b) {
                              return score_[size_t(a)] != score_[size_t(b)]
                                         ? score_[size_t(a)] > score_[size_t(b)]
                                         : a < b;
                          });
        out.assign(order_.begin(), order_.begin() + t_.top_k);
    }

    void observe(int64_t token) override {
        last_observed_ = token;
        for (int64_t l = 0; l < t_.n_layers; ++l) {
            const int32_t* a = t_.experts_at(token, l);
            for (int64_t i = 0; i < t_.top_k; ++i)
                single_[size_t(l * n_ + a[i])] += 1.0f;
            for (int64_t d = 1; d <= kMaxDistance && l + d < t_.n_layers; ++d) {
                const int32_t* b = t_.experts_at(token, l + d);
                for (int64_t i = 0; i < t_.top_k; ++i)
                    for (int64_t j = 0; j < t_.top_k; ++j)
                        pair_[pair_index(l, d, a[i], b[j])] += 1.0f;
            }
        }
    }

  private:
    size_t pair_index(int64_t layer, int64_t d, int64_t from_e, int64_t to_e) const {
        return size_t(((layer * kMaxDistance + (d - 1)) * n_ + from_e) * n_ + to_e);
    }

    const RoutingTrace& t_;
    int64_t n_;
    std::vector<float> pair_;    // [n_layers, 3, n_experts, n_experts] co-occurrence counts
    std::vector<float> single_;  // [n_layers, n_experts] activation counts
    int64_t last_observed_ = -1;
    std::vector<float> score_;
    std::vector<int32_t> order_;
};

}  // namespace

// The gate lookahead the recorder wrote: what layer `target`'s router chose from layer `from`'s
// input, for distances the trace recorded.
class LookaheadPredictor final : public ExpertPredictor {
  public:
    explicit LookaheadPredictor(const RoutingTrace& trace) : t_(trace) {}
    void predict(int64_t token, int64_t from, int64_t target, std::vector<int32_t>& out) override {
        out.clear();
        const int64_t d = target - from;
        if (d < 1 || d > t_.lookahead_depth) return;
        const int32_t* ids = t_.lookahead_at(token, from, d);
        for (int64_t i = 0; i < t_.top_k; ++i)
            if (ids[i] >= 0) out.push_back(ids[i]);
    }

  private:
    const RoutingTrace& t_;
};

std::unique_ptr<ExpertPredictor> make_expert_predictor(const std::string& spec,
                                                       const RoutingTrace& trace, int64_t n_experts,
                                                       uint64_t seed) {
    if (spec == "history") return std::make_unique<HistoryPredictor>(trace, n_experts);
    if (spec == "lookahead") {
        if (trace.lookahead_depth == 0)
            fail("predictor 'lookahead': ", trace.source,
                 " has no recorded gate lookahead (record with the lookahead on)");
        return std::make_unique<LookaheadPredictor>(trace);
    }
    if (spec == "oracle" || spec.rfind("oracle:", 0) == 0) {
        double acc = 0.8;
        if (spec.size() > 7) {
            size_t used = 0;
            try {
                acc = std::stod(spec.substr(7), &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != spec.size() - 7 || !(acc >= 0.0 && acc <= 1.0))
                fail("predictor '", spec, "': ACC must be a number in [0, 1]");
        }
        if (n_experts <= trace.top_k)
            fail("predictor '", spec, "': needs more experts than top-k to replace one");
        return std::make_unique<OraclePredictor>(trace, n_experts, acc, seed);
    }
    fail("predictor '", spec, "': expected oracle:ACC, oracle, history or lookahead");
}

}  // namespace tandem
