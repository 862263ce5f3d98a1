// route() on the GPU (router.h): one thread per token runs route_token (router_math.h) with its
// scores in per-thread arrays.
#include "kernels/cuda/router.h"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/tensor_checks.h"

namespace tandem::cuda {

namespace {

constexpr int kThreads = 64;

__global__ void route_kernel(RouterParams p, const float* logits, const float* bias,
                             int64_t n_tokens, int32_t* ids, float* weights) {
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= n_tokens) return;
    float scores[kMaxRouterExperts], choice[kMaxRouterExperts];
    route_token(p, logits + t * p.n_experts, bias, scores, choice, ids + t * p.k,
                weights + t * p.k);
}

void check_options(const RouterParams& o) {
    const int64_t n = o.n_experts, k = o.k;
    if (n <= 0 || n > kMaxRouterExperts)
        fail("route: ", n, " experts, CUDA routing takes 1 to ", kMaxRouterExperts);
    if (k <= 0 || k > n) fail("route: top-k ", k, " outside [1, ", n, "]");
    if (o.topk == RouterTopkKind::Greedy) return;
    if (o.n_groups <= 0 || o.n_groups > kMaxRouterGroups || n % o.n_groups != 0)
        fail("route: ", n, " experts do not split into ", o.n_groups, " groups (at most ",
             kMaxRouterGroups, ")");
    const int64_t group_size = n / o.n_groups;
    if (o.topk_groups <= 0 || o.topk_groups > o.n_groups || k > o.topk_groups * group_size)
        fail("route: top-k ", k, " from ", o.topk_groups, " of ", o.n_groups, " groups of ",
             group_size, " experts");
    if (o.topk == RouterTopkKind::NoauxTc && group_size < 2)
        fail("route: noaux_tc ranks groups by their top-2 experts; groups have ", group_size);
}

}  // namespace

void route(Context& ctx, const RouterParams& options, const RouteArgs& a) {
    check_options(options);
    require_f32(a.logits, 2, ctx.device(), "route", "logits [n_tokens, n_experts]");
    const int64_t n_tokens = a.logits.dim(0);
    if (a.logits.dim(1) != options.n_experts)
        fail("route: logits ", a.logits.describe(), " for ", options.n_experts, " experts");
    if (!a.bias.empty()) {
        require_on(a.bias, ctx.device(), "route", "bias");
        if (a.bias.dtype() != DType::F32 || a.bias.numel() != options.n_experts)
            fail("route: bias ", a.bias.describe(), ", expected [", options.n_experts, "] f32");
    }
    require_on(a.ids, ctx.device(), "route", "ids");
    require_f32(a.weights, 2, ctx.device(), "route", "weights [n_tokens, k]");
    if (a.ids.dtype() != DType::I32 || !a.ids.is_contiguous() ||
        !(a.ids.shape() == Shape{n_tokens, options.k}) ||
        !(a.weights.shape() == Shape{n_tokens, options.k}))
        fail("route: ids ", a.ids.describe(), " and weights ", a.weights.describe(), ", expected [",
             n_tokens, ", ", options.k, "] i32 and f32");
    if (n_tokens == 0) return;
    route_kernel<<<blocks_for(n_tokens, kThreads), kThreads, 0, native_stream(ctx.stream())>>>(
        options, a.logits.data_as<const float>(),
        a.bias.empty() ? nullptr : a.bias.data_as<const float>(), n_tokens,
        a.ids.data_as<int32_t>(), a.weights.data_as<float>());
    TANDEM_CUDA_CHECK_LAUNCH("route_kernel");
}

}  // namespace tandem::cuda
