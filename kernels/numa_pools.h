// NumaPools: one ThreadPool per NUMA node, each pinned to that node's physical cores, and a way
// to run one job per node with all nodes at once (kTransformers' WorkerPool of per-node subpools;
// ../shared/reference/cpu-kernels.md section 1.5).
//
// run_on_nodes(fn) calls fn(node, pool) for every node concurrently: node 0 on the calling
// thread, node k on a "leader" thread pinned to node k's first core, which is thread 0 of node
// k's pool (so it works in that pool's jobs like any caller). Threads: n_threads in all (0: every
// physical core), shared among the nodes in proportion to their cores, at least one each.
// On a synthetic topology (tests) nothing is pinned and node memory is ordinary memory: the code
// paths run, the placement does not. Not reentrant: one run_on_nodes() at a time.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "kernels/cpu_topology.h"
#include "kernels/thread_pool.h"

namespace tandem {

struct NumaPoolsOptions {
    std::shared_ptr<const CpuTopology> topology = nullptr;  // nullptr: this machine
    int n_threads = 0;                                      // 0: one per physical core
    bool pin = true;
};

class NumaPools {
  public:
    explicit NumaPools(NumaPoolsOptions options = {});
    ~NumaPools();
    NumaPools(const NumaPools&) = delete;
    NumaPools& operator=(const NumaPools&) = delete;

    int n_nodes() const { return int(pools_.size()); }
    ThreadPool& pool(int node) { return *pools_[size_t(node)]; }
    std::vector<int> threads_per_node() const;
    const CpuTopology& topology() const { return *topology_; }

    // fn(node, that node's pool) on every node at once; returns when all are done and rethrows
    // the first exception.
    void run_on_nodes(const std::function<void(int node, ThreadPool& pool)>& fn);

    // Memory of `node` (CpuTopology::allocate_on_node).
    NodeMemory allocate(int node, size_t bytes) const {
        return topology_->allocate_on_node(node, bytes);
    }

  private:
    std::shared_ptr<const CpuTopology> topology_;
    std::unique_ptr<ThreadPool> leaders_;  // thread k: node k's leader; thread 0 is the caller
    std::vector<std::unique_ptr<ThreadPool>> pools_;
};

// n_threads (0: the cores) shared among nodes with `cores[k]` cores each, in proportion, at
// least one per node.
std::vector<int> share_threads(int n_threads, const std::vector<int>& cores);

}  // namespace tandem
