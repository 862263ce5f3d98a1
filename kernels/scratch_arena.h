// ScratchArena: the host memory of one step's temporaries, allocated once and handed out by
// bumping an offset, so that a forward step allocates nothing (as ggml-alloc's measured graph
// buffer and calm's preallocated activations do).
//
// Its owner sizes it at load for the largest step it will run (Decoder::reserve_scratch,
// moe_experts_scratch_bytes) and between steps only. A step opens a Frame; take() hands out
// 64-byte-aligned memory until the frame closes, when all of it is free again. Frames nest on
// one thread (a layer's temporaries are freed at the layer's end, the step's at the step's).
//
// Two failures are errors, never silent: a take() beyond the capacity (the sizing at load was
// wrong) and a frame opened while another thread holds the arena (two steps at once on one
// arena would hand both the same memory). Workers of a ThreadPool may use what the owning
// thread took, but take() only on the thread that holds the frame.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <thread>

#include "kernels/tensor.h"

namespace tandem {

class ScratchArena {
  public:
    static constexpr size_t kAlignment = 64;

    ScratchArena() = default;
    explicit ScratchArena(size_t capacity) { reserve(capacity); }
    ScratchArena(const ScratchArena&) = delete;
    ScratchArena& operator=(const ScratchArena&) = delete;

    // Grows the capacity to at least `bytes` (never shrinks). Throws while a frame is open: the
    // memory handed out would move.
    void reserve(size_t bytes);

    size_t capacity() const { return capacity_; }
    size_t used() const { return used_; }
    size_t high_water() const { return high_water_; }       // the most bytes ever in use at once
    int64_t reservations() const { return reservations_; }  // times the memory was (re)allocated

    // The bytes take() uses for `bytes`: rounded up to the alignment. Sizing functions sum these.
    static constexpr size_t rounded(size_t bytes) {
        return (bytes + kAlignment - 1) / kAlignment * kAlignment;
    }

    // A step's (or a layer's) hold on the arena: what is taken under it is freed when it closes.
    class Frame {
      public:
        explicit Frame(ScratchArena& arena);
        ~Frame();
        Frame(const Frame&) = delete;
        Frame& operator=(const Frame&) = delete;

      private:
        ScratchArena& arena_;
        size_t mark_;
    };

    // n elements of T, uninitialized; `what` names them in the error of an undersized arena.
    template <class T>
    T* take(int64_t n, std::string_view what) {
        return static_cast<T*>(take_bytes(size_t(n) * sizeof(T), what));
    }
    void* take_bytes(size_t bytes, std::string_view what);
    // A dense tensor of the arena's memory.
    Tensor take_tensor(DType dtype, Shape shape, std::string_view what);

  private:
    struct Free {
        void operator()(std::byte* p) const;
    };

    std::unique_ptr<std::byte, Free> memory_;
    size_t capacity_ = 0;
    size_t used_ = 0;
    size_t high_water_ = 0;
    int64_t reservations_ = 0;
    int depth_ = 0;                         // open frames, all on owner_
    std::atomic<std::thread::id> owner_{};  // the thread holding the frames; none: id()
};

}  // namespace tandem
