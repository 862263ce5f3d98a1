#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/thread_pool.h"

namespace tandem {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
    for (int threads : {1, 2, 3, 5}) {
        ThreadPool pool({.n_threads = threads, .pin = false});
        for (int64_t n : {0, 1, 2, 7, 1000}) {
            std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
            for (int repeat = 0; repeat < 20; ++repeat)
                pool.run(n, [&](int64_t i) { hits[size_t(i)]++; });
            for (int64_t i = 0; i < n; ++i)
                ASSERT_EQ(hits[size_t(i)].load(), 20) << threads << " " << i;
        }
    }
}

TEST(ThreadPool, ParallelForCoversTheRange) {
    ThreadPool pool({.n_threads = 3, .pin = false});
    for (int64_t n : {1, 5, 64, 1001}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, 4, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
                hits[size_t(i)]++;
        });
        for (int64_t i = 0; i < n; ++i)
            ASSERT_EQ(hits[size_t(i)].load(), 1);
    }
}

TEST(ThreadPool, RethrowsTaskErrorsAndStaysUsable) {
    ThreadPool pool({.n_threads = 2, .pin = false});
    EXPECT_THROW(pool.run(10,
                          [](int64_t i) {
                              if (i == 7) throw std::runtime_error("task 7");
                          }),
                 std::runtime_error);
    std::atomic<int> count{0};
    pool.run(10, [&](int64_t) { count++; });
    EXPECT_EQ(count.load(), 10);
}

// run_on_each_thread: one call per thread, each on a different thread, the caller's being 0;
// jobs of both kinds interleave, and errors come back.
TEST(ThreadPool, RunsOnEachThreadOnce) {
    for (int n : {1, 2, 5}) {
        ThreadPool pool({.n_threads = n, .pin = true, .cores = {1, 0}});  // pins to cores 0 and 1
        for (int round = 0; round < 50; ++round) {
            std::vector<std::thread::id> ids(static_cast<size_t>(n));
            std::vector<int> calls(static_cast<size_t>(n), 0);
            pool.run_on_each_thread([&](int thread) {
                calls[size_t(thread)]++;
                ids[size_t(thread)] = std::this_thread::get_id();
            });
            ASSERT_EQ(calls, std::vector<int>(size_t(n), 1));
            ASSERT_EQ(ids[0], std::this_thread::get_id());
            ASSERT_EQ(std::set<std::thread::id>(ids.begin(), ids.end()).size(), size_t(n));
            std::atomic<int> count{0};
            pool.run(17, [&](int64_t) { count++; });
            ASSERT_EQ(count.load(), 17);
        }
        EXPECT_THROW(pool.run_on_each_thread([&](int thread) {
            if (thread == n - 1) throw std::runtime_error("last thread");
        }),
                     std::runtime_error);
    }
}

TEST(ThreadPool, DefaultsToPhysicalCores) {
    ThreadPool pool;
    EXPECT_EQ(pool.size(), physical_core_count());
    EXPECT_GE(pool.size(), 1);
}

// With hyperthreads the default is one thread per hardware thread, each pinned to its core's
// i-th thread (modulo what the core has), and the pool works as any other.
TEST(ThreadPool, HyperthreadsTakeEveryHardwareThread) {
    EXPECT_GE(hardware_thread_count(), physical_core_count());
    ThreadPool pool({.hyperthreads = true});
    EXPECT_EQ(pool.size(), hardware_thread_count());
    ThreadPool wider({.n_threads = 2 * physical_core_count() + 1, .hyperthreads = true});
    std::vector<std::atomic<int>> hits(1000);
    wider.run(int64_t(hits.size()), [&](int64_t i) { hits[size_t(i)]++; });
    for (const auto& h : hits)
        EXPECT_EQ(h.load(), 1);
}

}  // namespace
}  // namespace tandem
