#include "cache/expert_cache.h"

#include <cmath>

#include "kernels/error.h"

namespace tandem {

int64_t expert_slots_for_bytes(int64_t budget_bytes, int64_t expert_bytes) {
    if (expert_bytes <= 0) fail("expert cache: expert bytes must be > 0, got ", expert_bytes);
    if (budget_bytes < 0) fail("--gpu-expert-budget: must be >= 0 bytes, got ", budget_bytes);
    return budget_bytes / expert_bytes;
}

int64_t expert_slots_for_ratio(double ratio, int64_t n_layers, int64_t n_experts) {
    if (!(ratio >= 0.0 && ratio <= 1.0)) fail("--gpu-expert-ratio: must be in [0, 1], got ", ratio);
    // The epsilon keeps 0.25 * 1024 at 256 despite binary rounding.
    return int64_t(std::floor(ratio * double(n_layers * n_experts) + 1e-9));
}

CacheCounters& CacheCounters::operator+=(const CacheCounters& o) {
    hits += o.hits;
    misses += o.misses;
    evictions += o.evictions;
    bytes_moved += o.bytes_moved;
    prefetch_inserts += o.prefetch_inserts;
    prefetch_used += o.prefetch_used;
    prefetch_wasted += o.prefetch_wasted;
    return *this;
}

ExpertCache::ExpertCache(const ExpertCacheConfig& config)
    : config_(config), policy_(make_cache_policy(config.policy)) {
    const auto& p = config.policy;
    if (config.capacity < 0) fail("expert cache: capacity must be >= 0, got ", config.capacity);
    if (!config.layer_quota.empty() && int64_t(config.layer_quota.size()) != p.n_layers)
        fail("expert cache: ", config.layer_quota.size(), " layer quotas for ", p.n_layers,
             " layers");
    const size_t n_keys = size_t(p.n_layers * p.n_experts);
    slot_key_.resize(size_t(config.capacity));
    slot_used_.assign(size_t(config.capacity), 0);
    slot_prefetch_.assign(size_t(config.capacity), 0);
    slot_of_.assign(n_keys, -1);
    last_touch_.assign(n_keys, -1);
    pinned_.assign(n_keys, 0);
    layer_count_.assign(size_t(p.n_layers), 0);
    layer_counters_.resize(size_t(p.n_layers));
    // Popped from the back: slot 0 is used first, which keeps reports readable.
    for (int64_t s = config.capacity - 1; s >= 0; --s)
        free_slots_.push_back(s);
}

size_t ExpertCache::index(ExpertKey key) const {
    const auto& p = config_.policy;
    if (key.layer < 0 || key.layer >= p.n_layers || key.expert < 0 || key.expert >= p.n_experts)
        fail("expert cache: expert (layer ", key.layer, ", expert ", key.expert,
             ") outside the model's ", p.n_layers, " layers x ", p.n_experts, " experts");
    return size_t(key.layer) * size_t(p.n_experts) + size_t(key.expert);
}

void ExpertCache::record_access(int32_t layer, std::span<const int32_t> experts) {
    CacheCounters& c = layer_counters_[size_t(layer)];
    for (int32_t e : experts) {
        const ExpertKey key{layer, e};
        const size_t i = index(key);
        const int64_t slot = slot_of_[i];
        if (slot >= 0) {
            ++c.hits;
            if (slot_prefetch_[size_t(slot)]) {
                ++c.prefetch_used;
                slot_prefetch_[size_t(slot)] = 0;
            }
        } else {
            ++c.misses;
        }
        last_touch_[i] = step_;
        policy_->on_access(key, step_);
    }
    ++step_;
}

void ExpertCache::observe_scores(int32_t layer, std::span<const int32_t> ids,
                                 std::span<const float> scores) {
    policy_->on_scores(layer, ids, scores);
}

void ExpertCache::observe_step(int32_t layer, int64_t n_tokens, int64_t k,
                               std::span<const int32_t> experts, std::span<const float> weights) {
    const int64_t n_experts = config_.policy.n_experts;
    if (int64_t(experts.size()) != n_tokens * k || int64_t(weights.size()) != n_tokens * k)
        fail("expert cache: step of ", n_tokens, " tokens x top-", k, " needs ", n_tokens * k,
             " experts and weights, got ", experts.size(), " and ", weights.size());
    mean_scratch_.assign(size_t(n_experts), 0.0f);
    for (size_t i = 0; i < experts.size(); ++i) {
        if (experts[i] < 0 || experts[i] >= n_experts)
            fail("expert cache: expert id ", experts[i], " outside [0, ", n_experts, ")");
        mean_scratch_[size_t(experts[i])] += weights[i];
    }
    id_scratch_.clear();
    std::vector<float> scores;
    for (int64_t e = 0; e < n_experts; ++e) {
        if (mean_scratch_[size_t(e)] > 0.0f) {
            id_scratch_.push_back(int32_t(e));
            scores.push_back(mean_scratch_[size_t(e)] / float(n_tokens));
        }
    }
    policy_->on_scores(layer, id_scratch_, scores);
}

void ExpertCache::set_pinned(std::span<const ExpertKey> keys) {
    for (ExpertKey key : pinned_list_)
        pinned_[index(key)] = 0;
    pinned_list_.assign(keys.begin(), keys.end());
    for (ExpertKey key : pinned_list_)
        pinned_[index(key)] = 1;
}

std::optional<int64_t> ExpertCache::victim_slot(int32_t layer_restricted) const {
    // A linear scan: pools hold hundreds to a few thousand slots and insertions are rare next
    // to accesses, so a heap that every score decay would have to reorder does not pay.
    std::optional<int64_t> best;
    double best_priority = 0.0;
    int64_t best_touch = 0;
    for (size_t s = 0; s < slot_key_.size(); ++s) {
        if (!slot_used_[s]) continue;
        const ExpertKey key = slot_key_[s];
        if (layer_restricted >= 0 && key.layer != layer_restricted) continue;
        const size_t i = size_t(key.layer) * size_t(config_.policy.n_experts) + size_t(key.expert);
        if (pinned_[i]) continue;
        const double pr = policy_->priority(key);
        const int64_t touch = last_touch_[i];
        if (!best || pr < best_priority || (pr == best_priority && touch < best_touch)) {
            best = int64_t(s);
            best_priority = pr;
            best_touch = touch;
        }
    }
    return best;
}

std::optional<ExpertKey> ExpertCache::victim_for(ExpertKey key) const {
    const bool layer_full =
        !config_.layer_quota.empty() &&
        layer_count_[size_t(key.layer)] >= config_.layer_quota[size_t(key.layer)];
    if (!layer_full && occupancy_ < config_.capacity) return std::nullopt;
    const std::optional<int64_t> slot = victim_slot(layer_full ? key.layer : -1);
    if (!slot) return std::nullopt;
    return slot_key_[size_t(*slot)];
}

bool ExpertCache::admits_now(ExpertKey key) const {
    if (resident(key) || !policy_->admits(key)) return false;
    const bool layer_full =
        !config_.layer_quota.empty() &&
        layer_count_[size_t(key.layer)] >= config_.layer_quota[size_t(key.layer)];
    if (!layer_full && occupancy_ < config_.capacity) return true;
    const std::optional<int64_t> victim = victim_slot(layer_full ? key.layer : -1);
    return victim && outranks(key, slot_key_[size_t(*victim)]);
}

bool ExpertCache::outranks(ExpertKey newcomer, ExpertKey victim) const {
    // The order victims are chosen in: priority, then the more recent touch.
    const double pn = policy_->priority(newcomer), pv = policy_->priority(victim);
    return pn > pv || (pn == pv && last_touch_[index(newcomer)] > last_touch_[index(victim)]);
}

InsertResult ExpertCache::insert(ExpertKey key, InsertReason reason) {
    const size_t i = index(key);
    InsertResult result;
    if (slot_of_[i] >= 0 || !policy_->admits(key)) return result;
    const bool layer_full =
        !config_.layer_quota.empty() &&
        layer_count_[size_t(key.layer)] >= config_.layer_quota[size_t(key.layer)];
    int64_t slot = -1;
    if (layer_full || occupancy_ >= config_.capacity) {
        const std::optional<int64_t> victim = victim_slot(layer_full ? key.layer : -1);
        if (!victim) return result;  // everything evictable is pinned, or no slots at all
        const ExpertKey old = slot_key_[size_t(*victim)];
        if (reason != InsertReason::Warmup && !outranks(key, old)) {
            result.refused = true;
            return result;
        }
        slot = *victim;
        CacheCounters& oc = layer_counters_[size_t(old.layer)];
        ++oc.evictions;
        if (slot_prefetch_[size_t(slot)]) ++oc.prefetch_wasted;
        slot_of_[size_t(old.layer) * size_t(config_.policy.n_experts) + size_t(old.expert)] = -1;
        --layer_count_[size_t(old.layer)];
        --occupancy_;
        result.evicted = old;
    } else {
        slot = free_slots_.back();
        free_slots_.pop_back();
    }
    slot_key_[size_t(slot)] = key;
    slot_used_[size_t(slot)] = 1;
    slot_prefetch_[size_t(slot)] = reason == InsertReason::Prefetch;
    slot_of_[i] = slot;
    ++layer_count_[size_t(key.layer)];
    ++occupancy_;
    CacheCounters& c = layer_counters_[size_t(key.layer)];
    if (reason != InsertReason::Warmup) c.bytes_moved += config_.expert_bytes;
    if (reason == InsertReason::Prefetch) ++c.prefetch_inserts;
    result.inserted = true;
    result.slot = slot;
    return result;
}

CacheCounters ExpertCache::total() const {
    CacheCounters sum;
    for (const CacheCounters& c : layer_counters_)
        sum += c;
    return sum;
}

std::vector<ExpertKey> ExpertCache::resident_experts() const {
    std::vector<ExpertKey> out;
    for (size_t s = 0; s < slot_key_.size(); ++s)
        if (slot_used_[s]) out.push_back(slot_key_[s]);
    return out;
}

}  // namespace tandem
