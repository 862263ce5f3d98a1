#include "kernels/cpu_topology.h"

#include <hwloc.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/error.h"
#include "kernels/log.h"

namespace tandem {

namespace {

constexpr size_t kPageAlign = 4096;

// Plain memory where no binding is possible: page aligned, like hwloc's.
void* aligned_bytes(size_t bytes) {
    void* p = std::aligned_alloc(kPageAlign, (bytes + kPageAlign - 1) / kPageAlign * kPageAlign);
    if (p == nullptr) fail("out of memory allocating ", bytes, " bytes of expert weights");
    return p;
}

}  // namespace

NodeMemory::~NodeMemory() {
    if (data_ == nullptr) return;
    if (hwloc_ != nullptr)
        hwloc_free(hwloc_, data_, bytes_);
    else
        std::free(data_);
}

void NodeMemory::swap(NodeMemory& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(bytes_, other.bytes_);
    std::swap(hwloc_, other.hwloc_);
}

std::shared_ptr<const CpuTopology> CpuTopology::system() {
    static auto* instance = new std::shared_ptr<const CpuTopology>([] {
        std::shared_ptr<CpuTopology> t(new CpuTopology());
        t->load("");
        return t;
    }());
    return *instance;
}

std::shared_ptr<const CpuTopology> CpuTopology::synthetic(const std::string& description) {
    std::shared_ptr<CpuTopology> t(new CpuTopology());
    t->load(description);
    return t;
}

CpuTopology::~CpuTopology() {
    if (hwloc_ != nullptr) hwloc_topology_destroy(hwloc_);
}

void CpuTopology::load(const std::string& synthetic) {
    synthetic_ = synthetic;
    if (hwloc_topology_init(&hwloc_) != 0) {
        hwloc_ = nullptr;
        if (!synthetic.empty()) fail("hwloc: cannot initialise a topology");
        return;
    }
    if (!synthetic.empty() && hwloc_topology_set_synthetic(hwloc_, synthetic.c_str()) != 0) {
        hwloc_topology_destroy(hwloc_);
        hwloc_ = nullptr;
        fail("NUMA topology: '", synthetic,
             "' is not a hwloc synthetic description (e.g. \"numa:2 core:4 pu:1\")");
    }
    if (hwloc_topology_load(hwloc_) != 0) {
        hwloc_topology_destroy(hwloc_);
        hwloc_ = nullptr;
        if (!synthetic.empty()) fail("hwloc: cannot load the synthetic topology '", synthetic, "'");
        return;
    }
    // hwloc honours its own HWLOC_SYNTHETIC / HWLOC_XMLFILE variables; it then says the topology
    // is not this system, and we bind nothing.
    this_system_ = synthetic.empty() && hwloc_topology_is_thissystem(hwloc_) != 0;
    n_cores_ = std::max(0, hwloc_get_nbobjs_by_type(hwloc_, HWLOC_OBJ_CORE));
    n_pus_ = std::max(n_cores_, hwloc_get_nbobjs_by_type(hwloc_, HWLOC_OBJ_PU));
    const int n_nodes = hwloc_get_nbobjs_by_type(hwloc_, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n_nodes; ++i) {
        hwloc_obj_t node = hwloc_get_obj_by_type(hwloc_, HWLOC_OBJ_NUMANODE, unsigned(i));
        if (node == nullptr || node->cpuset == nullptr) continue;
        NumaNodeCores entry{.os_index = int(node->os_index)};
        const int n = hwloc_get_nbobjs_inside_cpuset_by_type(hwloc_, node->cpuset, HWLOC_OBJ_CORE);
        for (int c = 0; c < n; ++c) {
            hwloc_obj_t core =
                hwloc_get_obj_inside_cpuset_by_type(hwloc_, node->cpuset, HWLOC_OBJ_CORE, c);
            if (core != nullptr) entry.cores.push_back(int(core->logical_index));
        }
        if (!entry.cores.empty()) nodes_.push_back(std::move(entry));  // memory-only nodes
    }
    if (nodes_.empty() && n_cores_ > 0) {
        NumaNodeCores all;
        for (int c = 0; c < n_cores_; ++c)
            all.cores.push_back(c);
        nodes_.push_back(std::move(all));
    }
}

std::string CpuTopology::describe() const {
    std::string s = cat(nodes_.size(), nodes_.size() == 1 ? " NUMA node" : " NUMA nodes",
                        synthetic_.empty() ? "" : cat(" (synthetic: ", synthetic_, ")"));
    for (size_t i = 0; i < nodes_.size(); ++i)
        s += cat(i == 0 ? ": " : ", ", nodes_[i].os_index, ": ", nodes_[i].cores.size(), " cores");
    return s;
}

bool CpuTopology::pin_current_thread(int core, int smt) const {
    if (!this_system_ || n_cores_ <= 0) return false;
    hwloc_obj_t obj = hwloc_get_obj_by_type(hwloc_, HWLOC_OBJ_CORE, unsigned(core % n_cores_));
    if (obj == nullptr || obj->cpuset == nullptr) return false;
    const int threads = hwloc_get_nbobjs_inside_cpuset_by_type(hwloc_, obj->cpuset, HWLOC_OBJ_PU);
    if (smt > 0 && threads > 1) {
        obj = hwloc_get_obj_inside_cpuset_by_type(hwloc_, obj->cpuset, HWLOC_OBJ_PU,
                                                  unsigned(smt % threads));
        if (obj == nullptr || obj->cpuset == nullptr) return false;
    }
    hwloc_bitmap_t set = hwloc_bitmap_dup(obj->cpuset);
    hwloc_bitmap_singlify(set);  // one hardware thread of the core (the first unless smt > 0)
    const bool pinned = hwloc_set_cpubind(hwloc_, set, HWLOC_CPUBIND_THREAD) == 0;
    hwloc_bitmap_free(set);
    return pinned;
}

NodeMemory CpuTopology::allocate_on_node(int node, size_t bytes) const {
    NodeMemory m;
    m.bytes_ = bytes;
    if (bytes == 0) return m;
    if (this_system_ && node >= 0 && node < int(nodes_.size())) {
        hwloc_obj_t obj =
            hwloc_get_numanode_obj_by_os_index(hwloc_, unsigned(nodes_[size_t(node)].os_index));
        if (obj != nullptr) {
            // BIND, not STRICT: if the kernel refuses (no mbind in a container), hwloc returns
            // NULL and we fall back below rather than fail the load.
            m.data_ = hwloc_alloc_membind(hwloc_, bytes, obj->nodeset, HWLOC_MEMBIND_BIND,
                                          HWLOC_MEMBIND_BYNODESET);
            if (m.data_ != nullptr) {
                m.hwloc_ = hwloc_;
                return m;
            }
            static std::atomic<bool> warned{false};  // once, not once per layer and node
            if (!warned.exchange(true))
                log_warn("NUMA: could not bind ", bytes, " bytes to node ", obj->os_index, " (",
                         std::strerror(errno), "); node memory lands where first touched");
        }
    }
    m.data_ = aligned_bytes(bytes);
    return m;
}

}  // namespace tandem
