// Eviction policies of the GPU expert cache: who leaves when a slot is needed.
//
// Each policy turns what it has observed (accesses, router scores) into a priority per
// (layer, expert); the cache evicts the unpinned resident expert with the lowest priority, ties
// going to the least recently touched one. Policies see every expert of every layer, resident or
// not, because a score or a frequency must exist before the expert is admitted to be worth
// anything when it is.
//   mrs     moving average of the top-p router scores (HybriMoE): per layer and step,
//           S[e] = alpha*s[e] + (1-alpha)*S[e] for the top-p experts of the step, S[e] *= 1-alpha
//           for the others; p = 2 x experts per token. Scores are scattered by expert id (the
//           published code wrote them in score order onto id-ordered experts).
//   lru     last access.
//   lfu     number of accesses since start (resident or not), ties by recency.
//   static  a fixed set (from an activation-frequency profile, as kTransformers chooses it): the
//           set is never evicted and nothing else is admitted.
// Non-goals: no memory is touched here; the cache and its policies are bookkeeping.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

namespace tandem {

struct ExpertKey {
    int32_t layer = 0;
    int32_t expert = 0;
    bool operator==(const ExpertKey&) const = default;
};

enum class CachePolicyKind : uint8_t { Mrs, Lru, Lfu, Static };

// "mrs", "lru", "lfu", "static"; throws naming the accepted names otherwise.
CachePolicyKind parse_cache_policy(std::string_view name);
std::string_view cache_policy_name(CachePolicyKind kind);

struct CachePolicyConfig {
    CachePolicyKind kind = CachePolicyKind::Mrs;
    int64_t n_layers = 0;
    int64_t n_experts = 0;         // routed experts per layer
    int64_t n_experts_active = 0;  // top-k; sets the MRS default p = 2k
    double mrs_alpha = 0.5;
    int64_t mrs_top_p = 0;                   // 0: 2 * n_experts_active
    std::vector<ExpertKey> static_set = {};  // the fixed set of `static`
};

class CachePolicy {
  public:
    virtual ~CachePolicy() = default;
    // One activation of (layer, expert) at logical time `step`.
    virtual void on_access(ExpertKey key, int64_t step) {}
    // Router scores of one layer for one step: experts `ids` with scores `scores` (distinct ids;
    // experts not listed scored 0 this step).
    virtual void on_scores(int32_t layer, std::span<const int32_t> ids,
                           std::span<const float> scores) {}
    // Lower is evicted first.
    virtual double priority(ExpertKey key) const = 0;
    // Whether the expert may enter the cache at all.
    virtual bool admits(ExpertKey key) const { return true; }
};

std::unique_ptr<CachePolicy> make_cache_policy(const CachePolicyConfig& config);

}  // namespace tandem
