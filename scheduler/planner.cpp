#include "scheduler/planner.h"

#include <algorithm>
#include <tuple>
#include <vector>

#include "kernels/error.h"

namespace tandem {
namespace {

void check_input(const PlanInput& in) {
    if (in.tokens.size() != in.resident.size())
        fail("planner: ", in.tokens.size(), " token counts but ", in.resident.size(),
             " residency flags");
    if (!in.ready_ms.empty() && in.ready_ms.size() != in.tokens.size())
        fail("planner: ", in.ready_ms.size(), " ready times for ", in.tokens.size(), " experts");
}

double ready_of(const PlanInput& in, int32_t e) {
    return in.ready_ms.empty() ? 0.0 : in.ready_ms[size_t(e)];
}

struct Job {
    int32_t expert;
    int32_t tokens;
    double ready;
};

// Reused storage: planning runs once per layer and step (and many times per step in the
// prefetcher), where allocations were a third of the time. thread_local keeps the functions
// reentrant for callers on several threads; nothing here starts one.
struct Scratch {
    std::vector<Job> miss, res, cpu, gpu, copies;
    std::vector<uint8_t> done;
    std::vector<int32_t> active;
    std::vector<size_t> group_begin, on_cpu;
    std::vector<ExpertPlacement> where;
    LayerPlan other, candidate;
};
thread_local Scratch scratch;

// The greedy of HybriMoE (see planner.h). Fills `where` for the active experts.
void hybrimoe_assign(const PlanInput& in, std::vector<ExpertPlacement>& where) {
    const CostModel& c = in.cost;
    std::vector<Job>& miss = scratch.miss;  // ascending by load
    std::vector<Job>& res = scratch.res;    // descending by load
    miss.clear();
    res.clear();
    for (size_t e = 0; e < in.tokens.size(); ++e) {
        if (in.tokens[e] <= 0) continue;
        const Job j{int32_t(e), in.tokens[e], ready_of(in, int32_t(e))};
        (in.resident[e] ? res : miss).push_back(j);
    }
    std::sort(miss.begin(), miss.end(), [](const Job& a, const Job& b) {
        return a.tokens != b.tokens ? a.tokens < b.tokens : a.expert < b.expert;
    });
    std::sort(res.begin(), res.end(), [](const Job& a, const Job& b) {
        return a.tokens != b.tokens ? a.tokens > b.tokens : a.expert < b.expert;
    });
    // Half-open windows [lo, hi) of what is still unassigned in each list.
    size_t miss_lo = 0, miss_hi = miss.size(), res_lo = 0, res_hi = res.size();
    double t_cpu = 0.0, t_gpu = in.gpu_start_ms, t_pcie = in.pcie_free_ms;
    bool cpu_started = false;
    while (miss_lo < miss_hi || res_lo < res_hi) {
        const bool cpu_takes_miss = miss_lo < miss_hi;
        const Job& cj = cpu_takes_miss ? miss[miss_lo] : res[res_hi - 1];
        const double f_cpu = t_cpu + (cpu_started ? 0.0 : c.cpu_first_ms) + c.cpu_ms(cj.tokens);

        const bool gpu_takes_resident = res_lo < res_hi;
        const Job& gj = gpu_takes_resident ? res[res_lo] : miss[miss_hi - 1];
        const double arrival = gpu_takes_resident ? gj.ready : t_pcie + c.transfer_ms;
        const double f_gpu = std::max(t_gpu, arrival) + c.gpu_ms(gj.tokens);

        // Ties go to the GPU: it pays no warm-up and leaves the CPU free for misses.
        if (f_gpu <= f_cpu) {
            t_gpu = f_gpu;
            if (gpu_takes_resident) {
                where[size_t(gj.expert)] = ExpertPlacement::Gpu;
                ++res_lo;
            } else {
                where[size_t(gj.expert)] = ExpertPlacement::Transfer;
                t_pcie = arrival;
                --miss_hi;
            }
        } else {
            t_cpu = f_cpu;
            cpu_started = true;
            where[size_t(cj.expert)] = ExpertPlacement::Cpu;
            if (cpu_takes_miss)
                ++miss_lo;
            else
                --res_hi;
        }
    }
}

// On the device: a GPU job when resident (or arriving), a copy first otherwise.
ExpertPlacement on_device(const PlanInput& in, int32_t e) {
    return in.resident[size_t(e)] ? ExpertPlacement::Gpu : ExpertPlacement::Transfer;
}

// Local search over placements from a start: move one expert to the other side, or two (a swap,
// or both the same way), while that shortens the makespan by more than `kGain`
// (a relative margin, so rounding cannot cycle). The greedy's rules order the timelines well but
// choose the split myopically (an in-flight copy that lands late, a CPU that should take a light
// resident while the copy engine handles the misses); the search repairs the split under the
// same timeline semantics, so the plan stays explainable by the rules.
// Past kMaxSearchExperts activated experts (prefill of wide models) one schedule costs
// microseconds and a round of moves hundreds of them, against a bound of 20 us per layer
// (bench/planner_bench.cpp): the start is kept as it is.
constexpr size_t kMaxSearchExperts = 16;

void improve(const PlanInput& in, std::vector<ExpertPlacement>& where, LayerPlan& out) {
    constexpr double kGain = 1e-9;
    std::vector<int32_t>& active = scratch.active;
    active.clear();
    for (size_t e = 0; e < in.tokens.size(); ++e)
        if (in.tokens[e] > 0) active.push_back(int32_t(e));
    if (active.size() > kMaxSearchExperts) return;
    LayerPlan& trial = scratch.other;
    const auto flip = [&](int32_t e) {
        return where[size_t(e)] == ExpertPlacement::Cpu ? on_device(in, e) : ExpertPlacement::Cpu;
    };
    const int max_rounds = int(active.size()) + 2;
    for (int round = 0; round < max_rounds; ++round) {
        bool better = false;
        for (int32_t e : active) {
            const ExpertPlacement was = where[size_t(e)];
            where[size_t(e)] = flip(e);
            schedule_assignment(in, where, trial);
            if (trial.makespan_ms() < out.makespan_ms() * (1.0 - kGain)) {
                std::swap(out, trial);
                better = true;
            } else {
                where[size_t(e)] = was;
            }
        }
        if (!better) {
            for (size_t i = 0; i < active.size(); ++i) {
                for (size_t j = i + 1; j < active.size(); ++j) {
                    const int32_t a = active[i], b = active[j];
                    const ExpertPlacement was_a = where[size_t(a)], was_b = where[size_t(b)];
                    where[size_t(a)] = flip(a);
                    where[size_t(b)] = flip(b);
                    schedule_assignment(in, where, trial);
                    if (trial.makespan_ms() < out.makespan_ms() * (1.0 - kGain)) {
                        std::swap(out, trial);
                        better = true;
                    } else {
                        where[size_t(a)] = was_a;
                        where[size_t(b)] = was_b;
                    }
                }
            }
        }
        if (!better) break;
    }
}

// Exact search when it is small: activated experts with the same load, residency and arrival
// are interchangeable, so a split is a count per such group (how many of it the CPU takes, the
// lowest ids first) and there are prod(group size + 1) splits, 2^n at most. Decode layers have
// two or three groups (one token each; resident, arriving, missing): a few dozen schedules.
// Up to kMaxExhaustiveSplits every split is scheduled and the shortest kept, the optimum of these
// timelines by construction. Returns false when there are more.
bool exhaustive_assign(const PlanInput& in, std::vector<ExpertPlacement>& where, LayerPlan& out) {
    constexpr int64_t kMaxExhaustiveSplits = 256;
    std::vector<int32_t>& active = scratch.active;
    active.clear();
    for (size_t e = 0; e < in.tokens.size(); ++e)
        if (in.tokens[e] > 0) active.push_back(int32_t(e));
    const auto key = [&](int32_t e) {
        return std::tuple(in.tokens[size_t(e)], in.resident[size_t(e)], ready_of(in, e));
    };
    std::sort(active.begin(), active.end(),
              [&](int32_t a, int32_t b) { return key(a) != key(b) ? key(a) < key(b) : a < b; });
    std::vector<size_t>& group_begin = scratch.group_begin;  // into active; one past the end last
    group_begin.clear();
    int64_t splits = 1;
    for (size_t i = 0; i < active.size(); ++i) {
        if (i == 0 || key(active[i]) != key(active[i - 1])) group_begin.push_back(i);
        const size_t size = i + 1 - group_begin.back();
        // prod(size + 1) grows by (size + 1) / size with each member of a group.
        splits = splits / int64_t(size) * int64_t(size + 1);
        if (splits > kMaxExhaustiveSplits) return false;
    }
    group_begin.push_back(active.size());
    const size_t n_groups = group_begin.size() - 1;
    std::vector<size_t>& on_cpu = scratch.on_cpu;  // per group: how many the CPU takes
    on_cpu.assign(n_groups, 0);
    for (int32_t e : active)
        where[size_t(e)] = on_device(in, e);
    LayerPlan& trial = scratch.other;
    bool first = true;
    while (true) {
        schedule_assignment(in, where, first ? out : trial);
        if (!first && trial.makespan_ms() < out.makespan_ms()) std::swap(out, trial);
        first = false;
        // Next split, mixed radix over the groups: one more CPU expert in the first group that
        // has room, every group before it back to none.
        size_t g = 0;
        for (; g < n_groups; ++g) {
            const size_t size = group_begin[g + 1] - group_begin[g];
            if (on_cpu[g] < size) {
                where[size_t(active[group_begin[g] + on_cpu[g]])] = ExpertPlacement::Cpu;
                ++on_cpu[g];
                break;
            }
            for (size_t i = group_begin[g]; i < group_begin[g + 1]; ++i)
                where[size_t(active[i])] = on_device(in, active[i]);
            on_cpu[g] = 0;
        }
        if (g == n_groups) break;
    }
    return true;
}

void baseline_assign(PlannerKind kind, const PlanInput& in, std::vector<ExpertPlacement>& where) {
    const CostModel& c = in.cost;
    for (size_t e = 0; e < in.tokens.size(); ++e) {
        if (in.tokens[e] <= 0) continue;
        const bool res = in.resident[e] != 0;
        ExpertPlacement p = ExpertPlacement::Cpu;
        switch (kind) {
            case PlannerKind::Static: p = res ? ExpertPlacement::Gpu : ExpertPlacement::Cpu; break;
            case PlannerKind::GpuStream:
                p = res ? ExpertPlacement::Gpu : ExpertPlacement::Transfer;
                break;
            case PlannerKind::Fiddler:
                if (res)
                    p = ExpertPlacement::Gpu;
                else if (c.transfer_ms + c.gpu_ms(in.tokens[e]) < c.cpu_ms(in.tokens[e]))
                    p = ExpertPlacement::Transfer;
                break;
            case PlannerKind::CpuOnly:
            case PlannerKind::HybriMoe: break;
        }
        where[e] = p;
    }
}

}  // namespace

PlannerKind parse_planner(std::string_view name) {
    if (name == "hybrimoe") return PlannerKind::HybriMoe;
    if (name == "static") return PlannerKind::Static;
    if (name == "fiddler") return PlannerKind::Fiddler;
    if (name == "gpu-stream") return PlannerKind::GpuStream;
    if (name == "cpu-only") return PlannerKind::CpuOnly;
    fail("planner '", name, "': expected hybrimoe, static, fiddler, gpu-stream or cpu-only");
}

std::string_view planner_name(PlannerKind kind) {
    switch (kind) {
        case PlannerKind::HybriMoe: return "hybrimoe";
        case PlannerKind::Static: return "static";
        case PlannerKind::Fiddler: return "fiddler";
        case PlannerKind::GpuStream: return "gpu-stream";
        case PlannerKind::CpuOnly: return "cpu-only";
    }
    return "?";
}

void schedule_assignment(const PlanInput& in, std::span<const ExpertPlacement> placement,
                         LayerPlan& out) {
    check_input(in);
    if (placement.size() != in.tokens.size())
        fail("planner: ", placement.size(), " placements for ", in.tokens.size(), " experts");
    const CostModel& c = in.cost;
    out.placement.assign(placement.begin(), placement.end());
    out.cpu_jobs.clear();
    out.gpu_jobs.clear();
    out.transfers.clear();

    std::vector<Job>& cpu = scratch.cpu;
    std::vector<Job>& gpu = scratch.gpu;
    std::vector<Job>& copies = scratch.copies;
    cpu.clear();
    gpu.clear();
    copies.clear();
    for (size_t e = 0; e < placement.size(); ++e) {
        if (in.tokens[e] <= 0) continue;
        const Job j{int32_t(e), in.tokens[e], ready_of(in, int32_t(e))};
        ExpertPlacement p = placement[e];
        // A resident expert needs no copy: a Transfer of one is a GPU job.
        if (p == ExpertPlacement::Transfer && in.resident[e]) {
            p = ExpertPlacement::Gpu;
            out.placement[e] = p;
        }
        if (p == ExpertPlacement::Gpu && !in.resident[e])
            fail("planner: expert ", e,
                 " placed on the device without its weights there or a copy");
        if (p == ExpertPlacement::Cpu)
            cpu.push_back(j);
        else if (p == ExpertPlacement::Gpu)
            gpu.push_back(j);
        else
            copies.push_back(j);
    }

    // CPU: misses before residents (residents are what it steals when idle), lowest load first.
    std::sort(cpu.begin(), cpu.end(), [&](const Job& a, const Job& b) {
        const bool ra = in.resident[size_t(a.expert)], rb = in.resident[size_t(b.expert)];
        if (ra != rb) return rb;
        return a.tokens != b.tokens ? a.tokens < b.tokens : a.expert < b.expert;
    });
    double t = 0.0;
    for (size_t i = 0; i < cpu.size(); ++i) {
        const double start = t;
        t += (i == 0 ? c.cpu_first_ms : 0.0) + c.cpu_ms(cpu[i].tokens);
        out.cpu_jobs.push_back({cpu[i].expert, cpu[i].tokens, start, t});
    }
    out.cpu_finish_ms = t;

    // Copy engine: highest load first, so the experts that gain most from the GPU land first.
    std::sort(copies.begin(), copies.end(), [](const Job& a, const Job& b) {
        return a.tokens != b.tokens ? a.tokens > b.tokens : a.expert < b.expert;
    });
    t = in.pcie_free_ms;
    for (Job& j : copies) {
        const double start = t;
        t += c.transfer_ms;
        j.ready = t;
        out.transfers.push_back({j.expert, j.tokens, start, t});
        gpu.push_back(j);
    }
    out.pcie_finish_ms = copies.empty() ? in.pcie_free_ms : t;

    // GPU: the highest-load job whose weights are there; when none is, wait for the next.
    std::sort(gpu.begin(), gpu.end(), [](const Job& a, const Job& b) {
        if (a.tokens != b.tokens) return a.tokens > b.tokens;
        return a.ready != b.ready ? a.ready < b.ready : a.expert < b.expert;
    });
    std::vector<uint8_t>& done = scratch.done;
    done.assign(gpu.size(), 0);
    t = in.gpu_start_ms;
    size_t first_open = 0;
    for (size_t n_done = 0; n_done < gpu.size(); ++n_done) {
        while (done[first_open])
            ++first_open;
        size_t pick = gpu.size();
        size_t earliest = first_open;
        for (size_t i = first_open; i < gpu.size(); ++i) {
            if (done[i]) continue;
            if (gpu[i].ready <= t) {
                pick = i;
                break;
            }
            if (gpu[i].ready < gpu[earliest].ready) earliest = i;
        }
        if (pick == gpu.size()) {
            pick = earliest;
            t = gpu[pick].ready;
        }
        done[pick] = 1;
        const double start = t;
        t += c.gpu_ms(gpu[pick].tokens);
        out.gpu_jobs.push_back({gpu[pick].expert, gpu[pick].tokens, start, t});
    }
    out.gpu_finish_ms = gpu.empty() ? (in.gpu_start_ms) : t;
}

void plan_layer(PlannerKind kind, const PlanInput& in, LayerPlan& out) {
    check_input(in);
    std::vector<ExpertPlacement>& where = scratch.where;
    where.assign(in.tokens.size(), ExpertPlacement::Cpu);
    if (kind != PlannerKind::HybriMoe) {
        baseline_assign(kind, in, where);
        schedule_assignment(in, where, out);
        return;
    }
    if (exhaustive_assign(in, where, out)) return;
    // The greedy is myopic; the baselines are cheap starts too. Each start is improved by local
    // search and the best result kept: one start's local optimum is often another's bad start.
    hybrimoe_assign(in, where);
    schedule_assignment(in, where, out);
    improve(in, where, out);
    LayerPlan& candidate = scratch.candidate;
    // Without the search (many experts) fiddler's and gpu-stream's splits rarely beat the
    // greedy and cost a schedule each; static and CPU-only bound it.
    const bool searched = scratch.active.size() <= kMaxSearchExperts;
    for (PlannerKind start : {PlannerKind::Static, PlannerKind::CpuOnly, PlannerKind::Fiddler,
                              PlannerKind::GpuStream}) {
        if (!searched && (start == PlannerKind::Fiddler || start == PlannerKind::GpuStream))
            continue;
        std::fill(where.begin(), where.end(), ExpertPlacement::Cpu);
        baseline_assign(start, in, where);
        schedule_assignment(in, where, candidate);
        improve(in, where, candidate);
        if (candidate.makespan_ms() < out.makespan_ms()) std::swap(out, candidate);
    }
}

LayerPlan plan_layer(PlannerKind kind, const PlanInput& input) {
    LayerPlan plan;
    plan_layer(kind, input, plan);
    return plan;
}

}  // namespace tandem
