// CpuTopology: hwloc's view of the machine as Tandem uses it: the physical cores (to pin one
// worker per core, hyperthreads unused) and the NUMA nodes with their cores (to run one thread
// pool per node and place each node's share of the expert weights in its memory).
//
// Either this machine (system(), loaded once) or a synthetic description in hwloc's syntax
// (synthetic("numa:2 core:4 pu:2")) so that multi-node code paths run and are tested on a
// one-node machine. hwloc's binding calls on a synthetic topology return success without
// binding anything (checked with hwloc 2.9), so this class never calls them there:
// pin_current_thread() answers false and allocate_on_node() returns ordinary memory.
// Non-goals: caches, GPUs, memory-only nodes (a node without cores is not listed).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

struct hwloc_topology;

namespace tandem {

struct NumaNodeCores {
    int os_index = 0;        // the node's number as the OS (numactl) writes it
    std::vector<int> cores;  // its physical cores, as hwloc logical core indices
};

// Memory of one NUMA node, freed with the topology that allocated it; move-only.
class NodeMemory {
  public:
    NodeMemory() = default;
    NodeMemory(const NodeMemory&) = delete;
    NodeMemory& operator=(const NodeMemory&) = delete;
    NodeMemory(NodeMemory&& other) noexcept { swap(other); }
    NodeMemory& operator=(NodeMemory&& other) noexcept {
        NodeMemory(std::move(other)).swap(*this);
        return *this;
    }
    ~NodeMemory();

    void* data() const { return data_; }
    size_t bytes() const { return bytes_; }
    bool bound() const { return hwloc_ != nullptr; }  // bound to its node by the OS

  private:
    friend class CpuTopology;
    void swap(NodeMemory& other) noexcept;

    void* data_ = nullptr;
    size_t bytes_ = 0;
    hwloc_topology* hwloc_ = nullptr;  // set when hwloc allocated (and bound) it
};

class CpuTopology {
  public:
    // This machine. Never destroyed: pinned workers of pools in static storage use it at exit.
    static std::shared_ptr<const CpuTopology> system();
    // A made-up machine in hwloc's synthetic syntax; throws tandem::Error naming a bad one.
    static std::shared_ptr<const CpuTopology> synthetic(const std::string& description);

    ~CpuTopology();
    CpuTopology(const CpuTopology&) = delete;
    CpuTopology& operator=(const CpuTopology&) = delete;

    bool is_this_system() const { return this_system_; }
    int core_count() const { return n_cores_; }  // 0 when hwloc failed to load
    // NUMA nodes that have cores, in hwloc's order; one entry holding every core when hwloc
    // lists no NUMA node.
    const std::vector<NumaNodeCores>& nodes() const { return nodes_; }
    std::string describe() const;  // "2 NUMA nodes (synthetic): 0: 4 cores, 1: 4 cores"

    // Hardware threads (PUs) of the physical cores; core_count() without SMT.
    int hardware_thread_count() const { return n_pus_; }

    // Pins the calling thread to hardware thread `smt` (0: the first; taken modulo the core's
    // threads) of physical core `core` (a logical index); false when this is not this system or
    // the OS refused.
    bool pin_current_thread(int core, int smt = 0) const;

    // `bytes` bound to nodes()[node] before first touch (hwloc_alloc_membind), page aligned.
    // On a synthetic topology, or when the OS refuses the binding, ordinary memory instead
    // (bound() == false). Throws tandem::Error when no memory is left.
    NodeMemory allocate_on_node(int node, size_t bytes) const;

  private:
    CpuTopology() = default;
    void load(const std::string& synthetic);

    hwloc_topology* hwloc_ = nullptr;
    bool this_system_ = false;
    int n_cores_ = 0;
    int n_pus_ = 0;
    std::vector<NumaNodeCores> nodes_;
    std::string synthetic_;
};

}  // namespace tandem
