#include "kernels/cpu/expert_ffn.h"

#include <vector>

#include "kernels/cpu/activation.h"
#include "kernels/cpu/linear.h"
#include "kernels/error.h"

namespace tandem::cpu {

void swiglu_ffn(const Tensor& x, const ExpertWeights& w, const Tensor& out, ThreadPool& pool) {
    const int64_t n = x.dim(0), ffn_dim = w.gate.dim(0);
    OwnedTensor gate = make_tensor(DType::F32, {n, ffn_dim});
    OwnedTensor up = make_tensor(DType::F32, {n, ffn_dim});
    linear(x, w.gate, Tensor(), gate.view, pool);
    linear(x, w.up, Tensor(), up.view, pool);
    silu_mul(gate.view, up.view, gate.view);
    linear(gate.view, w.down, Tensor(), out, pool);
}

void moe_experts(const MoeExpertsArgs& a, ThreadPool& pool) {
    const int64_t n_experts = int64_t(a.experts.size());
    if (int64_t(a.offsets.size()) != n_experts + 1)
        fail("moe_experts: ", a.offsets.size(), " offsets for ", n_experts, " experts");
    if (!a.skip.empty() && int64_t(a.skip.size()) != n_experts)
        fail("moe_experts: skip mask of ", a.skip.size(), " for ", n_experts, " experts");
    if (a.token_index.size() != a.token_weight.size() ||
        int64_t(a.token_index.size()) != a.offsets.back())
        fail("moe_experts: routing slots disagree with offsets");
    if (!(a.x.shape() == a.out.shape()) || a.x.dtype() != DType::F32 || a.out.dtype() != DType::F32)
        fail("moe_experts: x ", a.x.describe(), " and out ", a.out.describe(), " must match, f32");
    const int64_t hidden = a.x.dim(1), n_tokens = a.x.dim(0);
    const float* x = a.x.data_as<const float>();
    float* out = a.out.data_as<float>();

    std::vector<float> rows, result;
    for (int64_t e = 0; e < n_experts; ++e) {
        const int64_t begin = a.offsets[size_t(e)], end = a.offsets[size_t(e + 1)];
        if (begin == end || (!a.skip.empty() && a.skip[size_t(e)])) continue;
        const int64_t m = end - begin;
        rows.resize(size_t(m * hidden));
        result.resize(size_t(m * hidden));
        for (int64_t s = 0; s < m; ++s) {
            const int32_t token = a.token_index[size_t(begin + s)];
            if (token < 0 || token >= n_tokens)
                fail("moe_experts: token index ", token, " out of range");
            std::copy_n(x + token * hidden, hidden, rows.data() + s * hidden);
        }
        const Tensor in(rows.data(), DType::F32, {m, hidden});
        const Tensor y(result.data(), DType::F32, {m, hidden});
        swiglu_ffn(in, a.experts[size_t(e)], y, pool);
        for (int64_t s = 0; s < m; ++s) {
            const int32_t token = a.token_index[size_t(begin + s)];
            const float weight = a.token_weight[size_t(begin + s)];
            float* o = out + token * hidden;
            const float* r = result.data() + s * hidden;
            for (int64_t i = 0; i < hidden; ++i)
                o[i] += weight * r[i];
        }
    }
}

}  // namespace tandem::cpu
