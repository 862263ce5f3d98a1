// cuda::Context: what every CUDA op of one stream shares — the stream, a cuBLAS handle bound to
// it, and scratch memory that grows to the largest request and is then reused, so a forward step
// makes no cudaMalloc calls once warm.
//
//   auto stream = make_stream(Device{DeviceKind::Cuda, 0});
//   cuda::Context ctx(*stream);
//   cuda::linear(ctx, x, w, bias, y);
//   stream->synchronize();
//
// A Context is used by one host thread at a time, like the stream it wraps. Scratch slots are
// handed out by name (ScratchSlot): an op owns its slots for the duration of its own launches
// only, so two ops never hold the same slot at once. Growing a slot frees the old buffer after
// synchronizing the stream (work queued earlier may still read it).
//
// Only CUDA builds define these; the header needs no CUDA headers.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

#include "kernels/buffer.h"
#include "kernels/stream.h"

namespace tandem::cuda {

enum class ScratchSlot : int {
    ActivationBf16,  // x converted to bf16 for a tensor-core GEMM
    ActivationQ8,    // x quantized to int8 blocks for the quantized GEMV (quant_dot.h)
    WeightBf16,      // weights dequantized to bf16 for a tensor-core GEMM
    Tables,          // small index tables uploaded for one launch (routing, pointers)
    ExpertRows,      // per-slot rows of the grouped expert kernels
    ExpertHidden,    // per-slot intermediate (ffn_dim) rows of the grouped expert kernels
    GatheredRows,    // rows of x gathered per expert for the GEMM path
    Attention,       // split-K partial results of decode attention
    Count
};

class Context {
  public:
    explicit Context(Stream& stream);  // the stream must be on a cuda:N device
    ~Context();
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    // Makes the context's device the calling thread's current CUDA device (kernel launches go to
    // the current device): call it first on a thread that did not create the context.
    void make_current() const;

    Stream& stream() const { return stream_; }
    Device device() const { return stream_.device(); }
    void* native_stream() const;  // cudaStream_t
    void* cublas_handle() const;  // cublasHandle_t, bound to the stream
    int multiprocessors() const { return multiprocessors_; }

    // Device memory of at least `bytes` for `slot`, 256-byte aligned.
    void* scratch(ScratchSlot slot, size_t bytes);

    // Counts the scratch reallocations: a CUDA graph captured at one generation holds scratch
    // addresses that a later generation may have freed, and must be captured again.
    uint64_t scratch_generation() const { return scratch_generation_; }

    // Copies `bytes` of host data into device scratch `slot` in stream order and returns the
    // device pointer. The caller's memory may change as soon as this returns: a copy from
    // pageable memory returns only once the driver has staged the source.
    void* upload(ScratchSlot slot, const void* host, size_t bytes);

  private:
    Stream& stream_;
    void* cublas_ = nullptr;
    int multiprocessors_ = 0;
    std::array<Buffer, size_t(ScratchSlot::Count)> scratch_;
    uint64_t scratch_generation_ = 0;
};

}  // namespace tandem::cuda
