#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
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

TEST(ThreadPool, DefaultsToPhysicalCores) {
    ThreadPool pool;
    EXPECT_EQ(pool.size(), physical_core_count());
    EXPECT_GE(pool.size(), 1);
}

}  // namespace
}  // namespace tandem
