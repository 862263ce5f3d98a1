// cuda::Graph: work recorded once from a context's stream and replayed with one launch (CUDA
// graphs), for decode steps whose dozens of small kernels would otherwise cost more to launch
// than to run.
//
//   cuda::Graph graph = cuda::Graph::capture(ctx, [&] { run_step(ctx); });  // runs nothing
//   graph.launch(ctx);                                                        // runs it
//
// What is captured must be capture-safe: kernel launches and cuBLAS calls on ctx's stream, with
// no host synchronisation, no allocation and no copy from pageable host memory (run the work once
// outside capture first so every scratch buffer has its size). A replay reads and writes the same
// device addresses as the capture; inputs change between replays by writing those addresses.
// Plain C++ header: only CUDA builds define it.
#pragma once

#include <functional>

#include "kernels/cuda/context.h"

namespace tandem::cuda {

class Graph {
  public:
    Graph() = default;
    Graph(Graph&& other) noexcept;
    Graph& operator=(Graph&& other) noexcept;
    Graph(const Graph&) = delete;
    Graph& operator=(const Graph&) = delete;
    ~Graph();

    // Records what `record` launches on ctx's stream and instantiates it. If `record` throws, or
    // the capture fails (an operation that is not capture-safe), the capture is ended and the
    // error rethrown; the stream is usable again.
    static Graph capture(Context& ctx, const std::function<void()>& record);

    void launch(Context& ctx) const;  // one launch on ctx's stream; returns at once
    bool empty() const { return exec_ == nullptr; }

  private:
    void* exec_ = nullptr;  // cudaGraphExec_t
};

// fn(data) on the host in ctx's stream order (cudaLaunchHostFunc): in a capture, a host node that
// runs at every replay with the same data pointer, which must outlive the graph. fn must not
// call CUDA and must not throw.
void host_call(Context& ctx, void (*fn)(void*), void* data);

// A second stream's branch of the work on a context's stream, captured or not: fork() makes the
// side stream wait for what the main stream has queued so far, join() makes the main stream wait
// for what the side stream has queued since. In a capture the side stream's work joins the graph
// (every fork must be joined before the capture ends). The events are made once, here.
class Branch {
  public:
    explicit Branch(Stream& side);
    Branch(const Branch&) = delete;
    Branch& operator=(const Branch&) = delete;
    ~Branch();

    void fork(Context& main);
    void join(Context& main);
    void* side_stream() const;  // cudaStream_t

  private:
    Stream& side_;
    void* forked_ = nullptr;  // cudaEvent_t
    void* joined_ = nullptr;
};

}  // namespace tandem::cuda
