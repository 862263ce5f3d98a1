// ExpertCache: which routed experts occupy the GPU's expert slots, across all layers.
//
// One pool of `capacity` slots (sized from a byte budget or a ratio of all routed experts) is
// shared by every MoE layer, as the HybriMoE paper describes; optional per-layer quotas cap how
// many slots one layer may hold. When a slot is needed the policy (cache_policy.h) names the
// victim: the unpinned resident expert of lowest priority.
// Invariants: occupancy() <= capacity() at every moment; a pinned expert (one the current or the
// next layer's plan uses) is never evicted; a layer never holds more than its quota.
// Counters per layer and in total: hits, misses, evictions, bytes moved (one expert's bytes per
// insertion after start-up), and for prefetched experts whether they were used before eviction.
// Non-goals: no memory is allocated or copied here (the executor owns the slots' storage and the
// host copies); no threads, no clocks: "steps" are logical.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "cache/cache_policy.h"

namespace tandem {

// Slots that fit in `budget_bytes` (whole experts only).
int64_t expert_slots_for_bytes(int64_t budget_bytes, int64_t expert_bytes);
// Slots for `ratio` (0..1) of all routed experts of the model, rounded down.
int64_t expert_slots_for_ratio(double ratio, int64_t n_layers, int64_t n_experts);

struct ExpertCacheConfig {
    CachePolicyConfig policy = {};          // kind, shape (n_layers, n_experts, top-k), MRS knobs
    int64_t expert_bytes = 0;               // bytes one routed expert occupies in a slot
    int64_t capacity = 0;                   // slots in the pool
    std::vector<int64_t> layer_quota = {};  // [n_layers] max slots per layer; empty = no quotas
};

struct CacheCounters {
    int64_t hits = 0;
    int64_t misses = 0;
    int64_t evictions = 0;
    int64_t bytes_moved = 0;
    int64_t prefetch_inserts = 0;
    int64_t prefetch_used = 0;    // prefetched, then accessed before being evicted
    int64_t prefetch_wasted = 0;  // prefetched, then evicted without an access
    double hit_rate() const { return hits + misses ? double(hits) / double(hits + misses) : 0.0; }
    CacheCounters& operator+=(const CacheCounters& o);
};

enum class InsertReason : uint8_t { Demand, Prefetch, Warmup };

struct InsertResult {
    bool inserted = false;  // false: already resident, not admitted, or every candidate pinned
    bool refused = false;   // a victim was needed and the newcomer's priority was not above it
    int64_t slot = -1;      // where it went, when inserted
    std::optional<ExpertKey> evicted;
};

class ExpertCache {
  public:
    explicit ExpertCache(const ExpertCacheConfig& config);

    int64_t capacity() const { return config_.capacity; }
    int64_t occupancy() const { return occupancy_; }
    int64_t layer_occupancy(int32_t layer) const { return layer_count_[size_t(layer)]; }
    bool resident(ExpertKey key) const { return slot_of_[index(key)] >= 0; }
    // The slot (0..capacity-1) that holds a resident expert, -1 if it is not resident: the
    // executor's index into its device memory.
    int64_t slot(ExpertKey key) const { return slot_of_[index(key)]; }
    bool admits(ExpertKey key) const { return policy_->admits(key); }
    // The policy's current priority of an expert (lower leaves first); for tests and reports.
    double priority(ExpertKey key) const { return policy_->priority(key); }

    // One step of one layer: `experts` are its activated experts (distinct ids). Counts a hit or
    // a miss for each, and advances the logical clock.
    void record_access(int32_t layer, std::span<const int32_t> experts);
    // Router scores of one layer for one step (sparse: distinct ids, their scores).
    void observe_scores(int32_t layer, std::span<const int32_t> ids, std::span<const float> scores);
    // A step of n_tokens routed to top-k each (experts/weights [n_tokens, k]): scores averaged
    // per expert over the step's tokens (a token that did not pick an expert adds 0), as MRS
    // asks in prefill; for one token it equals observe_scores.
    void observe_step(int32_t layer, int64_t n_tokens, int64_t k, std::span<const int32_t> experts,
                      std::span<const float> weights);

    // Experts that must not be evicted until the next call (the current and next layer's plan).
    void set_pinned(std::span<const ExpertKey> keys);
    bool pinned(ExpertKey key) const { return pinned_[index(key)] != 0; }

    // Makes `key` resident, evicting the policy's victim when the pool or the layer's quota is
    // full. Admission: a Demand or Prefetch insertion that needs a victim happens only when the
    // newcomer ranks above the victim in eviction order (higher priority, or equal and touched
    // more recently); otherwise it is refused (`refused`),
    // nothing is evicted and the caller computes the expert where it is, uncached. Without the
    // rule every planned copy evicted a better expert (issue 17: mrs+hybrimoe then hit less
    // often than a frozen set). Warmup insertions (start-up fill) move no counted bytes.
    InsertResult insert(ExpertKey key, InsertReason reason);
    // Whether insert(key, Demand) would make it resident now (admitted, a free slot or an
    // evictable victim it outranks).
    bool admits_now(ExpertKey key) const;
    // Who insert(key) would evict now, if anyone had to go.
    std::optional<ExpertKey> victim_for(ExpertKey key) const;

    const CacheCounters& counters(int32_t layer) const { return layer_counters_[size_t(layer)]; }
    CacheCounters total() const;
    std::vector<ExpertKey> resident_experts() const;

  private:
    size_t index(ExpertKey key) const;
    std::optional<int64_t> victim_slot(int32_t layer_restricted) const;
    // Whether `newcomer` would stay longer than `victim`: admission (see insert()).
    bool outranks(ExpertKey newcomer, ExpertKey victim) const;

    ExpertCacheConfig config_;
    std::unique_ptr<CachePolicy> policy_;
    std::vector<ExpertKey> slot_key_;     // [capacity]
    std::vector<uint8_t> slot_used_;      // [capacity]
    std::vector<uint8_t> slot_prefetch_;  // [capacity] prefetched and not yet accessed
    std::vector<int64_t> slot_of_;        // [n_layers * n_experts], -1 if not resident
    std::vector<int64_t> last_touch_;     // [n_layers * n_experts] tie-break among equal priority
    std::vector<uint8_t> pinned_;         // [n_layers * n_experts]
    std::vector<ExpertKey> pinned_list_;
    std::vector<int64_t> free_slots_;
    std::vector<int64_t> layer_count_;  // [n_layers]
    std::vector<CacheCounters> layer_counters_;
    std::vector<float> mean_scratch_;
    std::vector<int32_t> id_scratch_;
    int64_t occupancy_ = 0;
    int64_t step_ = 0;
};

}  // namespace tandem
