// Multi-head latent attention (DeepSeek-V2/V3) of the device decoder (device_decoder.h): the
// CUDA counterpart of models/blocks/mla_attention_block.h, the same absorbed form and cache rows
// [rope(k_pe) | rms_norm(c)], so a cache written on either device reads the same.
//
// The projections (q or q_a/q_b, kv_a, o) are the device decoder's uploaded weights, read in
// their stored type by cuda::linear. The key/value up-projections are not read in place: at
// upload they are unpacked, from Hugging Face's kv_b or GGUF's k_b/v_b alike, into per-head f32
// matrices W_UKᵀ [H, R, nope] and W_UV [H, V, R] for two batched f32 GEMMs per layer (MlaShape in
// kernels/cuda/mla.h). The cost is their f32 size: 2 x H x R x (nope + V) x 4 bytes per layer
// (8 MiB for DeepSeek-V2-Lite, 64 MiB for V3), logged at upload.
#pragma once

#include <span>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cuda/context.h"
#include "kernels/kv_rows.h"
#include "models/blocks/step.h"
#include "models/config.h"
#include "models/decoder.h"
#include "models/device_step_arena.h"

namespace tandem {

class DeviceMla {
  public:
    // Unpacks every layer's W_UK and W_UV from the host weights into device memory.
    DeviceMla(const ModelConfig& config, const DecoderWeights& host, Stream& stream);

    // One layer's attention: x [n_tokens, hidden] f32 (normalised) to out [n_tokens, hidden],
    // writing the step's new cache rows. `w` holds device views of the layer's projections;
    // `keys` the sequences' latent cache rows of this layer, block tables in device memory.
    void attention(cuda::Context& ctx, DeviceStepArena& arena, const MlaWeights& w, int layer,
                   std::span<const double> inv_freq, const StepLayout& step,
                   std::span<const KvRows> keys, const Tensor& x, const Tensor& out) const;

    // Floats of the widest per-token activation of attention(), for sizing the step arena.
    int64_t widest_row() const;

  private:
    ModelConfig config_;
    Buffer memory_;
    std::vector<Tensor> uk_, uv_;  // per layer: [H, R, nope] and [H, V, R] f32 on the device
};

}  // namespace tandem
