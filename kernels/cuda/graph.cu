#include "kernels/cuda/graph.h"

#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace tandem::cuda {

Graph::Graph(Graph&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}

Graph& Graph::operator=(Graph&& other) noexcept {
    if (this != &other) {
        if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
        exec_ = std::exchange(other.exec_, nullptr);
    }
    return *this;
}

Graph::~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
}

Graph Graph::capture(Context& ctx, const std::function<void()>& record) {
    const cudaStream_t stream = native_stream(ctx.stream());
    // Thread-local mode: other host threads' CUDA calls (a CPU expert pool, a copy thread) do not
    // invalidate this capture.
    TANDEM_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
        record();
    } catch (...) {
        cudaStreamEndCapture(stream, &graph);
        if (graph != nullptr) cudaGraphDestroy(graph);
        cudaGetLastError();  // clear the invalidated capture's error
        throw;
    }
    TANDEM_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check_status(status, "cudaGraphInstantiate", __FILE__, __LINE__);
    Graph out;
    out.exec_ = exec;
    return out;
}

void Graph::launch(Context& ctx) const {
    if (exec_ == nullptr) fail("cuda::Graph::launch: the graph is empty");
    TANDEM_CUDA_CHECK(
        cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), native_stream(ctx.stream())));
}

void host_call(Context& ctx, void (*fn)(void*), void* data) {
    TANDEM_CUDA_CHECK(cudaLaunchHostFunc(native_stream(ctx.stream()), fn, data));
}

Branch::Branch(Stream& side) : side_(side) {
    cudaEvent_t forked = nullptr, joined = nullptr;
    TANDEM_CUDA_CHECK(cudaEventCreateWithFlags(&forked, cudaEventDisableTiming));
    const cudaError_t status = cudaEventCreateWithFlags(&joined, cudaEventDisableTiming);
    if (status != cudaSuccess) cudaEventDestroy(forked);
    check_status(status, "cudaEventCreateWithFlags", __FILE__, __LINE__);
    forked_ = forked;
    joined_ = joined;
}

Branch::~Branch() {
    cudaEventDestroy(static_cast<cudaEvent_t>(forked_));
    cudaEventDestroy(static_cast<cudaEvent_t>(joined_));
}

void* Branch::side_stream() const {
    return native_stream(side_);
}

void Branch::fork(Context& main) {
    const auto event = static_cast<cudaEvent_t>(forked_);
    TANDEM_CUDA_CHECK(cudaEventRecord(event, native_stream(main.stream())));
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(native_stream(side_), event, 0));
}

void Branch::join(Context& main) {
    const auto event = static_cast<cudaEvent_t>(joined_);
    TANDEM_CUDA_CHECK(cudaEventRecord(event, native_stream(side_)));
    TANDEM_CUDA_CHECK(cudaStreamWaitEvent(native_stream(main.stream()), event, 0));
}

}  // namespace tandem::cuda
