#include "kernels/thread_pool.h"

#include <algorithm>

#include "kernels/cpu_topology.h"
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

void pin_current_thread_to_core(int core, int smt) {
    if (!CpuTopology::system()->pin_current_thread(core, smt))
        log_debug("thread pool: could not pin a worker to core ", core, " thread ", smt);
}

}  // namespace

int hardware_thread_count() {
    return std::max(physical_core_count(), CpuTopology::system()->hardware_thread_count());
}

int physical_core_count() {
    const int n = CpuTopology::system()->core_count();
    if (n > 0) return n;
    return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(ThreadPoolOptions options) {
    if (options.n_threads < 0) fail("thread pool: n_threads must be >= 0, got ", options.n_threads);
    n_threads_ = options.n_threads != 0 ? options.n_threads
                 : options.hyperthreads ? hardware_thread_count()
                                        : physical_core_count();
    const int n_cores = options.cores.empty() ? physical_core_count() : int(options.cores.size());
    workers_.reserve(size_t(n_threads_ - 1));
    // The caller counts as thread 0 and keeps core 0 free of pinned workers.
    for (int w = 1; w < n_threads_; ++w) {
        // Core w mod the cores (of the list, or of the machine); with hyperthreads its
        // (w / cores)-th hardware thread, without always its first (a pool larger than the
        // cores wraps around them).
        const int index = w % n_cores;
        const int core = options.cores.empty() ? index : options.cores[size_t(index)];
        const int smt = options.hyperthreads ? w / n_cores : 0;
        workers_.emplace_back([this, w, core, smt, pin = options.pin] {
            if (pin) pin_current_thread_to_core(core, smt);
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

void ThreadPool::worker_loop(int worker) {
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
        work_on_current_job(worker);
        if (busy_workers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard lock(mutex_);
            done_.notify_one();
        }
    }
}

void ThreadPool::work_on_current_job(int thread) {
    if (per_thread_) {
        try {
            (*job_)(thread);
        } catch (...) {
            std::lock_guard lock(mutex_);
            if (!error_) error_ = std::current_exception();
        }
        return;
    }
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
    dispatch(&fn, n_tasks, false);
}

void ThreadPool::run_on_each_thread(const std::function<void(int)>& fn) {
    if (workers_.empty()) {
        fn(0);
        return;
    }
    const std::function<void(int64_t)> job = [&fn](int64_t thread) { fn(int(thread)); };
    dispatch(&job, n_threads_, true);
}

void ThreadPool::dispatch(const std::function<void(int64_t)>* job, int64_t n_tasks,
                          bool per_thread) {
    {
        std::lock_guard lock(mutex_);
        job_ = job;
        job_tasks_ = n_tasks;
        per_thread_ = per_thread;
        next_task_.store(0, std::memory_order_relaxed);
        error_ = nullptr;
        busy_workers_.store(int(workers_.size()), std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work_on_current_job(0);
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
