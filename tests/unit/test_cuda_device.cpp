// The CUDA half of the device layer on a real GPU: device memory, copies both ways, host work
// in stream order, events across streams. Skips (CTest's code 77) where no GPU is present, as on
// the development machines; tools/gpu_check.sh runs it on the H200.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/stream.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

const Device kGpu{DeviceKind::Cuda, 0};

class CudaDevice : public ::testing::Test {
  protected:
    void SetUp() override {
        if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device here";
    }
};

TEST_F(CudaDevice, CopiesRoundTripThroughDeviceMemory) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    const size_t n = (1 << 20) + 13;  // not a multiple of anything
    std::vector<uint8_t> host(n), back(n, 0xEE);
    for (uint8_t& b : host)
        b = uint8_t(rng());
    Buffer device = allocate(kGpu, n);
    auto up = make_stream(kGpu), down = make_stream(kGpu);
    up->copy_async(device.data(), host.data(), n, CopyDirection::HostToDevice);
    down->wait(up->record());
    down->copy_async(back.data(), device.data(), n, CopyDirection::DeviceToHost);
    down->synchronize();
    EXPECT_EQ(back, host);
}

TEST_F(CudaDevice, HostWorkRunsInStreamOrderAfterEvents) {
    auto a = make_stream(kGpu), b = make_stream(kGpu);
    std::vector<int> order;
    for (int i = 0; i < 50; ++i)
        a->launch_host([&order, i] { order.push_back(i); });
    b->wait(a->record());
    b->launch_host([&order] { order.push_back(-1); });
    b->synchronize();
    std::vector<int> expected(50);
    std::iota(expected.begin(), expected.end(), 0);
    expected.push_back(-1);
    EXPECT_EQ(order, expected);
}

TEST_F(CudaDevice, EventsFromAnotherDeviceKindAreRefused) {
    auto gpu = make_stream(kGpu);
    auto sim = make_stream(Device{DeviceKind::Sim, 0});
    EXPECT_THROW(gpu->wait(sim->record()), std::exception);
}

}  // namespace
}  // namespace tandem
