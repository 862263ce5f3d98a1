// The sim device: work runs in stream order, events order streams, the copy engines take their
// modelled time and overlap across directions but not within one, errors come back at
// synchronize(). CI also runs this under ThreadSanitizer (tools/test.sh), which checks that the
// events really create the happens-before edges the executor will rely on.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/error.h"
#include "kernels/stream.h"

namespace tandem {
namespace {

using Clock = std::chrono::steady_clock;
const Device kSim{DeviceKind::Sim, 0};

// Restores the default copy-engine model after each test.
class SimDevice : public ::testing::Test {
  protected:
    void SetUp() override { saved_ = sim_options(); }
    void TearDown() override { set_sim_options(saved_); }
    SimOptions saved_;
};

TEST_F(SimDevice, WorkRunsInStreamOrder) {
    auto stream = make_stream(kSim);
    std::vector<int> order;  // touched only by the stream's worker until synchronize()
    for (int i = 0; i < 200; ++i)
        stream->launch_host([&order, i] { order.push_back(i); });
    stream->synchronize();
    std::vector<int> expected(200);
    std::iota(expected.begin(), expected.end(), 0);
    EXPECT_EQ(order, expected);
}

TEST_F(SimDevice, EventsOrderWorkAcrossStreams) {
    auto producer = make_stream(kSim), consumer = make_stream(kSim);
    for (int round = 0; round < 20; ++round) {
        int value = 0;  // plain int: only the event orders the write before the read
        int seen = -1;
        producer->launch_host([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
            value = round + 1;
        });
        const auto ready = producer->record();
        consumer->wait(ready);
        consumer->launch_host([&] { seen = value; });
        consumer->synchronize();
        EXPECT_EQ(seen, round + 1);
        EXPECT_TRUE(ready->done());
    }
}

TEST_F(SimDevice, CopiesMoveTheBytesAfterTheirModelledTime) {
    set_sim_options({.host_to_device_bytes_per_second = 1e9, .copy_latency_seconds = 2e-3});
    const size_t bytes = 8 << 20;  // 8 MiB at 1 GB/s: 8.4 ms + 2 ms
    Buffer host = allocate(Device::cpu(), bytes), device = allocate(kSim, bytes);
    std::memset(host.data(), 0x5a, bytes);
    std::memset(device.data(), 0, bytes);
    auto stream = make_stream(kSim);
    const auto start = Clock::now();
    stream->copy_async(device.data(), host.data(), bytes, CopyDirection::HostToDevice);
    stream->synchronize();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_GE(seconds, sim_copy_seconds(sim_options(), bytes, CopyDirection::HostToDevice));
    EXPECT_EQ(std::memcmp(host.data(), device.data(), bytes), 0);
}

// Intervals [start, end) of two copies enqueued at once on two streams.
std::pair<double, double> overlap_of(CopyDirection a, CopyDirection b) {
    set_sim_options({.host_to_device_bytes_per_second = 1e9,
                     .device_to_host_bytes_per_second = 1e9,
                     .copy_latency_seconds = 40e-3});
    auto s1 = make_stream(kSim), s2 = make_stream(kSim);
    std::vector<char> x(64), y(64);
    Clock::time_point start[2], end[2];
    const auto t0 = Clock::now();
    int i = 0;
    for (auto* s : {s1.get(), s2.get()}) {
        const int k = i++;
        s->launch_host([&start, k] { start[k] = Clock::now(); });
        s->copy_async(y.data() + 32 * k, x.data() + 32 * k, 32, k == 0 ? a : b);
        s->launch_host([&end, k] { end[k] = Clock::now(); });
    }
    s1->synchronize();
    s2->synchronize();
    auto at = [&](Clock::time_point t) { return std::chrono::duration<double>(t - t0).count(); };
    // Time both spent copying at once.
    const double both = std::min(at(end[0]), at(end[1])) - std::max(at(start[0]), at(start[1]));
    return {both, std::max(at(end[0]), at(end[1]))};
}

TEST_F(SimDevice, OppositeDirectionsOverlapOneDirectionQueues) {
    const auto [together, total_opposite] =
        overlap_of(CopyDirection::HostToDevice, CopyDirection::DeviceToHost);
    EXPECT_GT(together, 0.0) << "an upload and a download should run at the same time";
    const auto [unused, total_same] =
        overlap_of(CopyDirection::HostToDevice, CopyDirection::HostToDevice);
    EXPECT_GE(total_same, 2 * 40e-3) << "two uploads share one copy engine";
    (void)unused;
    (void)total_opposite;
}

TEST_F(SimDevice, ErrorsComeBackAtSynchronizeAndTheStreamGoesOn) {
    auto stream = make_stream(kSim);
    stream->launch_host([] { fail("kernel failed"); });
    int after = 0;
    stream->launch_host([&] { after = 1; });
    EXPECT_THROW(stream->synchronize(), Error);
    EXPECT_EQ(after, 1);
    stream->synchronize();  // the error was reported once
}

TEST_F(SimDevice, DestroyingAStreamFinishesItsWork) {
    int done = 0;
    {
        auto stream = make_stream(kSim);
        for (int i = 0; i < 10; ++i)
            stream->launch_host([&] {
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                ++done;
            });
    }
    EXPECT_EQ(done, 10);
}

TEST_F(SimDevice, OtherDevicesAndBadOptionsAreRefused) {
    EXPECT_THROW(make_stream(Device::cpu()), Error);
    if (!cuda_compiled() || cuda_device_count() == 0) {
        EXPECT_THROW(make_stream(Device{DeviceKind::Cuda, 0}), std::exception);
    }
    EXPECT_THROW(set_sim_options({.host_to_device_bytes_per_second = 0}), Error);
    auto stream = make_stream(kSim);
    EXPECT_THROW(stream->wait(nullptr), Error);
}

}  // namespace
}  // namespace tandem
