// PinnedExperts (engine/src/pinned_experts.h) on the CPU: the page ranges it registers cover every
// expert byte, once, in whole pages, never overlapping; on a device other than cuda:N it pins
// nothing and copies come from the model's own weights.
#include <gtest/gtest.h>

#include <random>

#include "engine/src/pinned_experts.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

TEST(PinnedExperts, PageRangesCoverEveryByteOnceInWholePages) {
    TANDEM_SEEDED(seed);
    std::mt19937_64 rng(seed);
    for (int trial = 0; trial < 500; ++trial) {
        const size_t page = size_t(1) << (12 + rng() % 3);
        std::vector<ByteRange> ranges;
        const int n = 1 + int(rng() % 40);
        for (int i = 0; i < n; ++i) {
            const uintptr_t begin = 0x100000 + rng() % (64 * page);
            ranges.push_back({begin, begin + rng() % (3 * page)});  // may be empty
        }
        const std::vector<ByteRange> merged = page_ranges(ranges, page);
        for (size_t i = 0; i < merged.size(); ++i) {
            EXPECT_EQ(merged[i].begin % page, 0u);
            EXPECT_EQ(merged[i].end % page, 0u);
            EXPECT_LT(merged[i].begin, merged[i].end);
            if (i > 0) EXPECT_LT(merged[i - 1].end, merged[i].begin) << "touching or overlapping";
        }
        for (const ByteRange& r : ranges)
            for (uintptr_t at : {r.begin, r.end - 1}) {
                if (r.end <= r.begin) continue;
                int covering = 0;
                for (const ByteRange& m : merged)
                    covering += at >= m.begin && at < m.end ? 1 : 0;
                EXPECT_EQ(covering, 1) << "byte " << at;
            }
        // Nothing beyond the pages the ranges touch.
        for (const ByteRange& m : merged) {
            bool touched = false;
            for (const ByteRange& r : ranges)
                touched =
                    touched || (r.end > r.begin && r.begin < m.begin + page && r.end > m.begin);
            EXPECT_TRUE(touched) << "a merged range starts on a page no expert touches";
        }
    }
}

TEST(PinnedExperts, OffCudaTheSourceIsTheModelsOwnWeights) {
    std::vector<float> data(3 * 8 * 4);
    MoeWeights layer;
    for (int e = 0; e < 3; ++e) {
        float* base = data.data() + e * 32;
        layer.experts.push_back({.gate = Tensor(base, DType::F32, {2, 4}),
                                 .up = Tensor(base + 8, DType::F32, {2, 4}),
                                 .down = Tensor(base + 16, DType::F32, {4, 2})});
    }
    const MoeWeights* layers[] = {&layer};
    PinnedExperts pinned;
    pinned.bind({DeviceKind::Sim, 0}, layers);
    EXPECT_FALSE(pinned.registered());
    EXPECT_FALSE(pinned.copied());
    for (size_t e = 0; e < 3; ++e)
        EXPECT_EQ(pinned.source(0, e).up.data(), layer.experts[e].up.data());
}

}  // namespace
}  // namespace tandem
