#include "cache/cache_policy.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "kernels/error.h"

namespace tandem {
namespace {

size_t index_of(const CachePolicyConfig& c, ExpertKey key) {
    return size_t(key.layer) * size_t(c.n_experts) + size_t(key.expert);
}

class MrsPolicy final : public CachePolicy {
  public:
    explicit MrsPolicy(const CachePolicyConfig& c)
        : c_(c),
          top_p_(c.mrs_top_p > 0 ? c.mrs_top_p : 2 * c.n_experts_active),
          score_(size_t(c.n_layers * c.n_experts), 0.0) {
        if (!(c.mrs_alpha > 0.0 && c.mrs_alpha <= 1.0))
            fail("cache policy mrs: alpha must be in (0, 1], got ", c.mrs_alpha);
    }

    void on_scores(int32_t layer, std::span<const int32_t> ids,
                   std::span<const float> scores) override {
        if (ids.size() != scores.size())
            fail("cache policy mrs: ", ids.size(), " expert ids but ", scores.size(), " scores");
        // Top-p of this step, by score; the rest of the layer only decays.
        order_.resize(ids.size());
        std::iota(order_.begin(), order_.end(), size_t(0));
        const size_t p = std::min(order_.size(), size_t(top_p_));
        std::partial_sort(order_.begin(), order_.begin() + ptrdiff_t(p), order_.end(),
                          [&](size_t a, size_t b) { return scores[a] > scores[b]; });
        const double alpha = c_.mrs_alpha;
        double* s = score_.data() + size_t(layer) * size_t(c_.n_experts);
        for (int64_t e = 0; e < c_.n_experts; ++e)
            s[e] *= 1.0 - alpha;
        for (size_t i = 0; i < p; ++i) {
            const int32_t id = ids[order_[i]];
            if (id < 0 || id >= c_.n_experts)
                fail("cache policy mrs: expert id ", id, " outside [0, ", c_.n_experts, ")");
            s[id] += alpha * double(scores[order_[i]]);
        }
    }

    double priority(ExpertKey key) const override { return score_[index_of(c_, key)]; }

  private:
    CachePolicyConfig c_;
    int64_t top_p_;
    std::vector<double> score_;  // [n_layers, n_experts]
    std::vector<size_t> order_;
};

class LruPolicy final : public CachePolicy {
  public:
    explicit LruPolicy(const CachePolicyConfig& c)
        : c_(c), last_(size_t(c.n_layers * c.n_experts), -1) {}
    void on_access(ExpertKey key, int64_t step) override { last_[index_of(c_, key)] = step; }
    double priority(ExpertKey key) const override { return double(last_[index_of(c_, key)]); }

  private:
    CachePolicyConfig c_;
    std::vector<int64_t> last_;
};

class LfuPolicy final : public CachePolicy {
  public:
    explicit LfuPolicy(const CachePolicyConfig& c)
        : c_(c), count_(size_t(c.n_layers * c.n_experts), 0) {}
    void on_access(ExpertKey key, int64_t) override { ++count_[index_of(c_, key)]; }
    double priority(ExpertKey key) const override { return double(count_[index_of(c_, key)]); }

  private:
    CachePolicyConfig c_;
    std::vector<int64_t> count_;
};

class StaticPolicy final : public CachePolicy {
  public:
    explicit StaticPolicy(const CachePolicyConfig& c)
        : c_(c), in_set_(size_t(c.n_layers * c.n_experts), 0) {
        for (ExpertKey key : c.static_set) {
            if (key.layer < 0 || key.layer >= c.n_layers || key.expert < 0 ||
                key.expert >= c.n_experts)
                fail("cache policy static: expert (", key.layer, ", ", key.expert,
                     ") outside the model's ", c.n_layers, " layers x ", c.n_experts, " experts");
            in_set_[index_of(c_, key)] = 1;
        }
    }
    double priority(ExpertKey key) const override {
        return in_set_[index_of(c_, key)] ? std::numeric_limits<double>::infinity()
                                          : -std::numeric_limits<double>::infinity();
    }
    bool admits(ExpertKey key) const override { return in_set_[index_of(c_, key)] != 0; }

  private:
    CachePolicyConfig c_;
    std::vector<uint8_t> in_set_;
};

}  // namespace

CachePolicyKind parse_cache_policy(std::string_view name) {
    if (name == "mrs") return CachePolicyKind::Mrs;
    if (name == "lru") return CachePolicyKind::Lru;
    if (name == "lfu") return CachePolicyKind::Lfu;
    if (name == "static") return CachePolicyKind::Static;
    fail("cache policy '", name, "': expected mrs, lru, lfu or static");
}

std::string_view cache_policy_name(CachePolicyKind kind) {
    switch (kind) {
        case CachePolicyKind::Mrs: return "mrs";
        case CachePolicyKind::Lru: return "lru";
        case CachePolicyKind::Lfu: return "lfu";
        case CachePolicyKind::Static: return "static";
    }
    return "?";
}

std::unique_ptr<CachePolicy> make_cache_policy(const CachePolicyConfig& config) {
    if (config.n_layers <= 0 || config.n_experts <= 0)
        fail("cache policy: need n_layers and n_experts > 0, got ", config.n_layers, " and ",
             config.n_experts);
    switch (config.kind) {
        case CachePolicyKind::Mrs: return std::make_unique<MrsPolicy>(config);
        case CachePolicyKind::Lru: return std::make_unique<LruPolicy>(config);
        case CachePolicyKind::Lfu: return std::make_unique<LfuPolicy>(config);
        case CachePolicyKind::Static: return std::make_unique<StaticPolicy>(config);
    }
    fail("cache policy: unknown kind");
}

}  // namespace tandem
