#include "kernels/numa_pools.h"

#include <numeric>

#include "kernels/error.h"
#include "kernels/log.h"

namespace tandem {

std::vector<int> share_threads(int n_threads, const std::vector<int>& cores) {
    const int total = std::accumulate(cores.begin(), cores.end(), 0);
    std::vector<int> share(cores.size(), 1);
    if (n_threads == 0 || total == 0) {
        for (size_t k = 0; k < cores.size(); ++k)
            share[k] = std::max(1, cores[k]);
        return share;
    }
    int64_t before = 0;  // cores of the nodes before k
    for (size_t k = 0; k < cores.size(); ++k) {
        const int64_t begin = int64_t(n_threads) * before / total;
        before += cores[k];
        share[k] = std::max<int>(1, int(int64_t(n_threads) * before / total - begin));
    }
    return share;
}

NumaPools::NumaPools(NumaPoolsOptions options)
    : topology_(options.topology ? std::move(options.topology) : CpuTopology::system()) {
    if (options.n_threads < 0) fail("NUMA pools: n_threads must be >= 0, got ", options.n_threads);
    const std::vector<NumaNodeCores>& nodes = topology_->nodes();
    if (nodes.empty()) fail("NUMA pools: hwloc lists no cores on this machine");
    std::vector<int> cores;
    for (const NumaNodeCores& node : nodes)
        cores.push_back(int(node.cores.size()));
    const std::vector<int> share = share_threads(options.n_threads, cores);
    // Pinning means something only on this machine; a synthetic topology's cores are made up.
    const bool pin = options.pin && topology_->is_this_system();
    std::vector<int> first_cores;
    for (size_t k = 0; k < nodes.size(); ++k) {
        // The node's first core is its leader's (thread 0); workers take the next ones.
        pools_.push_back(std::make_unique<ThreadPool>(
            ThreadPoolOptions{.n_threads = share[k], .pin = pin, .cores = nodes[k].cores}));
        first_cores.push_back(nodes[k].cores.front());
    }
    leaders_ = std::make_unique<ThreadPool>(
        ThreadPoolOptions{.n_threads = int(nodes.size()), .pin = pin, .cores = first_cores});
    std::string threads;
    for (int n : share)
        threads += cat(" ", n);
    log_info("NUMA: ", topology_->describe(), "; expert threads per node:", threads,
             pin ? "" : " (not pinned)");
}

NumaPools::~NumaPools() = default;

std::vector<int> NumaPools::threads_per_node() const {
    std::vector<int> n;
    for (const auto& pool : pools_)
        n.push_back(pool->size());
    return n;
}

void NumaPools::run_on_nodes(const std::function<void(int, ThreadPool&)>& fn) {
    leaders_->run_on_each_thread([&](int node) { fn(node, *pools_[size_t(node)]); });
}

}  // namespace tandem
