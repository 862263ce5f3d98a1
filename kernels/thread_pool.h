// ThreadPool: a fixed set of worker threads, one per physical core by default, pinned with hwloc.
//
// run(n_tasks, fn) calls fn(task) for every task in [0, n_tasks), distributing tasks
// dynamically (an atomic counter, so uneven tasks balance), and returns when all are done. The
// calling thread works as well; it is not pinned, since an embedding program owns its threads.
// Workers spin briefly after a job before sleeping, because a decode step issues many small jobs
// back to back. An exception thrown by a task is rethrown by run() after all tasks finished.
// run() must not be called from inside a task (no nesting); a task may run another pool's job.
// run_on_each_thread() is the other kind of job: exactly one call per thread, with the thread's
// index, for work that must happen on a given thread (NumaPools: node k's job on the thread
// pinned to node k).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem {

struct ThreadPoolOptions {
    int n_threads = 0;  // 0: one per physical core (per hardware thread with hyperthreads)
    bool pin = true;    // pin worker i to physical core i (hyperthreads unused)
    // Use the cores' second (third...) hardware threads too: thread i goes to core i % cores,
    // hardware thread i / cores, so every core gets its first thread before any gets a second.
    // Off by default: the kernels are bandwidth- or FMA-bound and two threads per core mostly
    // add contention; ask for it where a measurement says otherwise.
    bool hyperthreads = false;
    // With pin: worker i goes to cores[i % size] (hwloc logical core indices) instead of core i,
    // e.g. the cores of one NUMA node.
    std::vector<int> cores = {};
};

class ThreadPool {
  public:
    explicit ThreadPool(ThreadPoolOptions options = {});
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }  // workers + the calling thread
    void run(int64_t n_tasks, const std::function<void(int64_t)>& fn);
    // fn(i) once on each thread i in [0, size()): the caller is thread 0, worker i is thread i.
    void run_on_each_thread(const std::function<void(int)>& fn);

    // Splits [0, n) into about size() * 4 chunks of at least `grain` items; fn(begin, end).
    void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  private:
    void worker_loop(int worker);
    void work_on_current_job(int thread);
    void dispatch(const std::function<void(int64_t)>* job, int64_t n_tasks, bool per_thread);

    int n_threads_ = 1;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable done_;
    std::atomic<uint64_t> generation_{0};
    bool stopping_ = false;

    // The current job; written by run() before generation_ is bumped.
    const std::function<void(int64_t)>* job_ = nullptr;
    int64_t job_tasks_ = 0;
    bool per_thread_ = false;  // run_on_each_thread(): task = the worker's index
    std::atomic<int64_t> next_task_{0};
    std::atomic<int64_t> finished_tasks_{0};
    std::atomic<int> busy_workers_{0};
    std::exception_ptr error_;
};

// Physical cores of this machine (hwloc); at least 1.
int physical_core_count();
// Hardware threads of those cores (hwloc PUs); at least physical_core_count().
int hardware_thread_count();

}  // namespace tandem
