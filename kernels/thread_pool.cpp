#include "kernels/thread_pool.h"

#include <hwloc.h>

#include <algorithm>

#include "kernels/error.h"
#include "kernels/log.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TANDEM_CPU_RELAX() _mm_pause()
#else
#define TANDEM_CPU_RELAX() ((void)0)
#endif

namespace tandem {

namespace {

// About a tenth of a millisecond of polling before a worker sleeps: long enough to catch the
// next job of a decode step, short enough not to steal a core from serial work for long.
constexpr int kSpinIterations = 4000;

// hwloc's view of the machine, loaded once. Never destroyed: workers of pools that live in
// static storage may still use it at exit.
struct Topology {
    hwloc_topology_t handle = nullptr;
    int n_cores = 0;

    Topology() {
        if (hwloc_topology_init(&handle) != 0 || hwloc_topology_load(handle) != 0) {
            handle = nullptr;
            return;
        }
        n_cores = hwloc_get_nbobjs_by_type(handle, HWLOC_OBJ_CORE);
    }
};

Topology& topology() {
    static Topology* instance = new Topology();
    return *instance;
}

void pin_current_thread_to_core(int core) {
    Topology& topo = topology();
    if (topo.handle == nullptr || topo.n_cores <= 0) return;
    hwloc_obj_t obj =
        hwloc_get_obj_by_type(topo.handle, HWLOC_OBJ_CORE, unsigned(core % topo.n_cores));
    if (obj == nullptr || obj->cpuset == nullptr) return;
    hwloc_bitmap_t set = hwloc_bitmap_dup(obj->cpuset);
    hwloc_bitmap_singlify(set);  // one hardware thread of the core: hyperthreads stay unused
    if (hwloc_set_cpubind(topo.handle, set, HWLOC_CPUBIND_THREAD) != 0)
        log_debug("thread pool: could not pin a worker to core ", core);
    hwloc_bitmap_free(set);
}

}  // namespace

int physical_core_count() {
    const int n = topology().n_cores;
    if (n > 0) return n;
    return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(ThreadPoolOptions options) {
    if (options.n_threads < 0) fail("thread pool: n_threads must be >= 0, got ", options.n_threads);
    n_threads_ = options.n_threads == 0 ? physical_core_count() : options.n_threads;
    workers_.reserve(size_t(n_threads_ - 1));
    // The caller counts as thread 0 and keeps core 0 free of pinned workers.
    for (int w = 1; w < n_threads_; ++w) {
        workers_.emplace_back([this, w, pin = options.pin] {
            if (pin) pin_current_thread_to_core(w);
            worker_loop(w);
        });
    }
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (auto& worker : workers_)
        worker.join();
}

void ThreadPool::worker_loop(int) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t current = generation_.load(std::memory_order_acquire);
        for (int spin = 0; current == seen && spin < kSpinIterations; ++spin) {
            TANDEM_CPU_RELAX();
            current = generation_.load(std::memory_order_acquire);
        }
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            if (stopping_) return;
            current = generation_.load(std::memory_order_acquire);
        }
        seen = current;
        work_on_current_job();
        if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard lock(mutex_);
            done_.notify_one();
        }
    }
}

void ThreadPool::work_on_current_job() {
    for (;;) {
        const int64_t task = next_task_.fetch_add(1, std::memory_order_relaxed);
        if (task >= job_tasks_) return;
        try {
            (*job_)(task);
        } catch (...) {
            std::lock_guard lock(mutex_);
            if (!error_) error_ = std::current_exception();
        }
    }
}

void ThreadPool::run(int64_t n_tasks, const std::function<void(int64_t)>& fn) {
    if (n_tasks <= 0) return;
    if (workers_.empty() || n_tasks == 1) {
        for (int64_t task = 0; task < n_tasks; ++task)
            fn(task);
        return;
    }
    {
        std::lock_guard lock(mutex_);
        job_ = &fn;
        job_tasks_ = n_tasks;
        next_task_.store(0, std::memory_order_relaxed);
        error_ = nullptr;
        busy_workers_.store(int(workers_.size()), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work_on_current_job();
    // Every worker must check out before fn (on the caller's stack) goes out of scope.
    for (int spin = 0; busy_workers_.load(std::memory_order_acquire) != 0 && spin < kSpinIterations;
         ++spin)
        TANDEM_CPU_RELAX();
    std::exception_ptr error;
    {
        std::unique_lock lock(mutex_);
        done_.wait(lock, [&] { return busy_workers_.load(std::memory_order_acquire) == 0; });
        job_ = nullptr;
        error = error_;
    }
    if (error) std::rethrow_exception(error);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    grain = std::max<int64_t>(grain, 1);
    const int64_t chunks = std::clamp<int64_t>(n / grain, 1, int64_t(n_threads_) * 4);
    const int64_t chunk = (n + chunks - 1) / chunks;
    run((n + chunk - 1) / chunk, [&](int64_t c) { fn(c * chunk, std::min(n, (c + 1) * chunk)); });
}

}  // namespace tandem
