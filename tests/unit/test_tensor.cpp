#include <gtest/gtest.h>

#include "kernels/error.h"
#include "kernels/tensor.h"

namespace tandem {
namespace {

TEST(Tensor, ViewsSlicesAndReshapes) {
    OwnedTensor t = make_tensor(DType::F32, {3, 4});
    for (int i = 0; i < 12; ++i)
        t.view.data_as<float>()[i] = float(i);
    EXPECT_EQ(t.view.numel(), 12);
    EXPECT_EQ(t.view.bytes(), 48);
    EXPECT_TRUE(t.view.is_contiguous());
    EXPECT_EQ(t.view[1].data_as<float>()[0], 4.0f);
    EXPECT_EQ(t.view[2].rank(), 1);
    const Tensor rows = t.view.slice_rows(1, 3);
    EXPECT_EQ(rows.dim(0), 2);
    EXPECT_EQ(rows.data_as<float>()[0], 4.0f);
    const Tensor flat = t.view.reshape({12});
    EXPECT_EQ(flat.dim(0), 12);
    EXPECT_EQ(t.view.describe(), "[3, 4] f32");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.view.data()) % 64, 0u);
}

TEST(Tensor, RejectsOutOfRange) {
    OwnedTensor t = make_tensor(DType::BF16, {2, 5});
    EXPECT_THROW(t.view[2], Error);
    EXPECT_THROW(t.view.slice_rows(1, 3), Error);
    EXPECT_THROW(t.view.reshape({3, 3}), Error);
    EXPECT_THROW(Shape({1, 2, 3, 4, 5}), Error);
}

TEST(Device, ParsesNames) {
    EXPECT_EQ(parse_device("cpu"), Device::cpu());
    EXPECT_EQ(parse_device("cuda:1").index, 1);
    EXPECT_EQ(parse_device("sim").kind, DeviceKind::Sim);
    EXPECT_THROW(parse_device("tpu"), Error);
    EXPECT_THROW(parse_device("cuda:x"), Error);
    EXPECT_THROW(allocate(parse_device("cuda:0"), 16), Error);
}

}  // namespace
}  // namespace tandem
