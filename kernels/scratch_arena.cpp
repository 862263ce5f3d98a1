#include "kernels/scratch_arena.h"

#include <algorithm>
#include <new>

#include "kernels/error.h"

namespace tandem {

void ScratchArena::Free::operator()(std::byte* p) const {
    ::operator delete(p, std::align_val_t(kAlignment));
}

void ScratchArena::reserve(size_t bytes) {
    bytes = rounded(bytes);
    if (bytes <= capacity_) return;
    if (depth_ > 0)
        fail("scratch arena: cannot grow to ", bytes, " bytes while a step holds it (", used_,
             " of ", capacity_, " bytes in use)");
    memory_.reset();  // the old memory goes first: the peak is the new size, not both
    capacity_ = 0;
    memory_.reset(static_cast<std::byte*>(::operator new(bytes, std::align_val_t(kAlignment))));
    capacity_ = bytes;
    ++reservations_;
}

ScratchArena::Frame::Frame(ScratchArena& arena) : arena_(arena), mark_(0) {
    const std::thread::id self = std::this_thread::get_id();
    std::thread::id none;
    // The first frame claims the arena for this thread; nested frames find it already theirs.
    if (!arena.owner_.compare_exchange_strong(none, self) && none != self)
        fail(
            "scratch arena: two steps at once: a thread opened a frame while another holds the "
            "arena (each concurrent step needs its own arena)");
    mark_ = arena.used_;  // read only once the arena is this thread's
    ++arena.depth_;
}

ScratchArena::Frame::~Frame() {
    arena_.used_ = mark_;
    if (--arena_.depth_ == 0) arena_.owner_.store(std::thread::id());
}

void* ScratchArena::take_bytes(size_t bytes, std::string_view what) {
    // (The owner first: another thread must not read depth_.)
    if (owner_.load() != std::this_thread::get_id() || depth_ == 0)
        fail("scratch arena: ", what, " taken outside a frame of this thread");
    const size_t need = rounded(bytes);
    if (need > capacity_ - used_)
        fail("scratch arena: ", what, " needs ", need, " bytes but ", capacity_ - used_, " of ",
             capacity_, " are free: the arena was sized too small for this step");
    std::byte* p = memory_.get() + used_;
    used_ += need;
    high_water_ = std::max(high_water_, used_);
    return p;
}

Tensor ScratchArena::take_tensor(DType dtype, Shape shape, std::string_view what) {
    const int64_t rows = shape.rank == 0 ? 1 : shape.numel() / shape[shape.rank - 1];
    const int64_t bytes = rows * row_bytes(dtype, shape.rank == 0 ? 1 : shape[shape.rank - 1]);
    return Tensor(take_bytes(size_t(bytes), what), dtype, shape);
}

}  // namespace tandem
