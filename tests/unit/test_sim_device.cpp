// The sim device: work runs in stream order, events order streams, the copy engines take their
// modelled time and overlap across directions but not within one, errors come back at
// synchronize(); its memory is reached by copies, memsets and its own kernels only, and a host
// read of it dies. CI also runs this under ThreadSanitizer (tools/test.sh), which checks that the
// events really create the happens-before edges the executor will rely on.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/error.h"
#include "kernels/sim_device.h"
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
    Buffer host = allocate(Device::cpu(), bytes), device = allocate(kSim, bytes),
           back = allocate(Device::cpu(), bytes);
    std::memset(host.data(), 0x5a, bytes);
    std::memset(back.data(), 0, bytes);
    auto stream = make_stream(kSim);
    const auto start = Clock::now();
    stream->copy_async(device.data(), host.data(), bytes, CopyDirection::HostToDevice);
    stream->synchronize();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    EXPECT_GE(seconds, sim_copy_seconds(sim_options(), bytes, CopyDirection::HostToDevice));
    stream->copy_async(back.data(), device.data(), bytes, CopyDirection::DeviceToHost);
    stream->synchronize();
    EXPECT_EQ(std::memcmp(host.data(), back.data(), bytes), 0);
}

// Device-to-device copies and memsets, at offsets inside allocations, land where they should.
TEST_F(SimDevice, MemsetAndDeviceCopiesWorkInsideAllocations) {
    const size_t n = 10000;  // not a whole number of pages
    Buffer a = allocate(kSim, n), b = allocate(kSim, n);
    std::vector<unsigned char> host(n), back(n, 0);
    for (size_t i = 0; i < n; ++i)
        host[i] = static_cast<unsigned char>(i * 7);
    auto stream = make_stream(kSim);
    stream->copy_async(a.data(), host.data(), n, CopyDirection::HostToDevice);
    stream->memset_async(b.data(), 0x11, n);
    stream->copy_async(static_cast<char*>(b.data()) + 100, static_cast<char*>(a.data()) + 200, 300,
                       CopyDirection::DeviceToDevice);
    stream->copy_async(back.data(), b.data(), n, CopyDirection::DeviceToHost);
    stream->synchronize();
    for (size_t i = 0; i < n; ++i) {
        const unsigned char want = i >= 100 && i < 400 ? host[i + 100] : 0x11;
        ASSERT_EQ(back[i], want) << "byte " << i;
    }
}

// A stream that does not override memset_async: the default, an upload of a filled host buffer
// (what a backend without a native memset gets), sets the bytes too.
class ForwardingStream final : public Stream {
  public:
    explicit ForwardingStream(Stream& inner) : inner_(inner) {}
    Device device() const override { return inner_.device(); }
    void launch_host(std::function<void()> work) override { inner_.launch_host(std::move(work)); }
    void copy_async(void* dst, const void* src, size_t bytes, CopyDirection direction) override {
        inner_.copy_async(dst, src, bytes, direction);
    }
    std::shared_ptr<Event> record() override { return inner_.record(); }
    void wait(const std::shared_ptr<Event>& event) override { inner_.wait(event); }
    void synchronize() override { inner_.synchronize(); }

  private:
    Stream& inner_;
};

TEST_F(SimDevice, TheDefaultMemsetIsAnUpload) {
    const size_t n = 5000;
    Buffer device = allocate(kSim, n);
    std::vector<unsigned char> back(n, 0);
    auto sim = make_stream(kSim);
    ForwardingStream stream(*sim);
    stream.memset_async(device.data(), 0xab, n);
    stream.copy_async(back.data(), device.data(), n, CopyDirection::DeviceToHost);
    stream.synchronize();
    EXPECT_EQ(std::count(back.begin(), back.end(), 0xab), ptrdiff_t(n));
}

// Sim memory is not host memory: the host reading it dies, as it would on a GPU.
TEST(SimDeviceDeathTest, AHostReadOfDeviceMemoryDies) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    Buffer device = allocate(kSim, 4096);
    auto stream = make_stream(kSim);
    stream->memset_async(device.data(), 1, 4096);
    stream->synchronize();
    EXPECT_DEATH(
        {
            volatile const unsigned char* p = static_cast<const unsigned char*>(device.data());
            std::printf("%d\n", int(p[10]));
        },
        "");
}

// The sim device's kernels reach its memory through sim_kernel_address, on a stream's worker
// only; copies name their device side correctly or are refused where they are queued.
TEST_F(SimDevice, OnlyStreamWorkAndCopiesReachDeviceMemory) {
    Buffer device = allocate(kSim, 256);
    std::vector<char> host(256, 3);
    EXPECT_TRUE(is_sim_address(device.data(), 256));
    EXPECT_FALSE(is_sim_address(device.data(), 257));
    EXPECT_FALSE(is_sim_address(host.data(), 1));
    EXPECT_THROW(sim_kernel_address(device.data(), 16), Error);  // the host is not the device
    auto stream = make_stream(kSim);
    stream->memset_async(device.data(), 7, 256);
    int seen = 0;
    stream->launch_host([&] { seen = *static_cast<char*>(sim_kernel_address(device.data(), 1)); });
    stream->synchronize();
    EXPECT_EQ(seen, 7);
    // Host memory named as the device side, device memory as the host side, a range past the
    // end of an allocation: each refused at once.
    EXPECT_THROW(stream->copy_async(host.data(), host.data() + 8, 8, CopyDirection::HostToDevice),
                 Error);
    EXPECT_THROW(stream->copy_async(device.data(), device.data(), 8, CopyDirection::DeviceToHost),
                 Error);
    EXPECT_THROW(stream->copy_async(device.data(), host.data(), 257, CopyDirection::HostToDevice),
                 Error);
    EXPECT_THROW(stream->memset_async(host.data(), 0, 8), Error);
    stream->synchronize();
}

// Intervals [start, end) of two copies enqueued at once on two streams.
std::pair<double, double> overlap_of(CopyDirection a, CopyDirection b) {
    set_sim_options({.host_to_device_bytes_per_second = 1e9,
                     .device_to_host_bytes_per_second = 1e9,
                     .copy_latency_seconds = 40e-3});
    auto s1 = make_stream(kSim), s2 = make_stream(kSim);
    std::vector<char> host(64);
    Buffer device = allocate(kSim, 64);
    Clock::time_point start[2], end[2];
    const auto t0 = Clock::now();
    int i = 0;
    for (auto* s : {s1.get(), s2.get()}) {
        const int k = i++;
        s->launch_host([&start, k] { start[k] = Clock::now(); });
        const CopyDirection d = k == 0 ? a : b;
        char* on_device = static_cast<char*>(device.data()) + 32 * k;
        char* on_host = host.data() + 32 * k;
        if (d == CopyDirection::HostToDevice)
            s->copy_async(on_device, on_host, 32, d);
        else
            s->copy_async(on_host, on_device, 32, d);
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
