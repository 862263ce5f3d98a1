#include "models/quantize_weights.h"

#include "kernels/cpu/linear.h"
#include "kernels/cpu/quant.h"
#include "kernels/error.h"

namespace tandem {

Tensor quantize_weight(const Tensor& w, DType requested, ThreadPool& pool,
                       std::vector<Buffer>& storage) {
    // Already block-quantized (a GGUF file's weights): kept as stored, never requantized.
    if (is_quantized_weight_type(w.dtype())) return w;
    if (w.rank() != 2 || !is_float_weight_type(w.dtype()))
        fail("quantize: expected a [rows, k] float matrix, got ", w.describe());
    const int64_t rows = w.dim(0), k = w.dim(1);
    const DType type = cpu::quant_type_for_row(requested, k);
    if (type == w.dtype()) return w;
    OwnedTensor out = make_tensor(type, {rows, k});
    const int64_t in_row = row_bytes(w.dtype(), k), out_row = row_bytes(type, k);
    pool.parallel_for(rows, 4, [&](int64_t begin, int64_t end) {
        std::vector<float> row(static_cast<size_t>(k));
        for (int64_t r = begin; r < end; ++r) {
            cpu::row_to_f32(static_cast<const std::byte*>(w.data()) + r * in_row, w.dtype(), k,
                            row.data());
            if (is_quantized_weight_type(type)) {
                cpu::quantize_row(type, row.data(), out.view.data_as<std::byte>() + r * out_row, k);
            } else {  // bf16 fallback
                auto* dst =
                    reinterpret_cast<uint16_t*>(out.view.data_as<std::byte>() + r * out_row);
                for (int64_t i = 0; i < k; ++i)
                    dst[i] = f32_to_bf16(row[size_t(i)]);
            }
        }
    });
    storage.push_back(std::move(out.buffer));
    return out.view;
}

}  // namespace tandem
