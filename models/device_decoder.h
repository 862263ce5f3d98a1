// The decoder on a CUDA device: every weight copied once into device memory, the KV cache in
// device memory, and the whole forward step — embeddings, RMSNorm, attention over the paged
// cache, dense FFNs, routed and shared experts, the lm_head — run by the CUDA kernels of
// kernels/cuda/ on one stream. The router's logits come back to the host, where the same
// tandem::route as the CPU path picks the experts (so both devices route identically and the
// step can report its routing); the grouped expert kernels then run on the device.
//
// It is the CPU decoder's math on another device, not another model: it wraps a loaded Decoder
// (which keeps the mapped checkpoint) and reads its bound weights. Activations stay f32 between
// kernels, as on the CPU, so logits agree with the CPU engine to about 1e-3.
//
// Multi-head latent attention (DeepSeek) runs in DeviceMla (device_mla.h). Not yet on the device:
// a hybrid expert runner (the routed experts on the CPU while the rest runs here: issue 19),
// refused with a message.
// Engine::reload_weights builds the new device model before the old one goes, so a reload needs
// room for two copies of the weights on the GPU for a moment.
#pragma once
#include <memory>

#include "kernels/device.h"
#include "models/model.h"

namespace tandem {

struct DeviceModelOptions {
    // Decode steps (every sequence one token, at most 8) captured once per batch size and
    // context bucket and replayed as CUDA graphs (device_decode_graph.h); other steps, and
    // models with latent attention, run eagerly. EngineConfig.cuda_graphs.
    bool cuda_graphs = false;
    // The routed experts stay in host memory (not uploaded): a hybrid expert runner
    // (set_expert_runner, EngineConfig.expert_device) places them per layer between the CPU and
    // its own device cache. Each MoE layer then routes on the host, hands the runner its input
    // rows and adds the runner's sum on the device. Without a runner such a model refuses steps.
    bool routed_experts_on_host = false;
    // Bytes of weights copied to the device so far and in all, as the upload goes (at start-up
    // and at every reload or quantization).
    WeightProgress upload_progress;
};

// Moves `model` (a tandem::Decoder, as load_model returns for every architecture) onto `device`
// (cuda:N). Throws tandem::Error when the build has no CUDA backend, the device is missing, or
// the model uses what the device path does not run yet.
// In a CUDA build the core's make_device_model (device_decoder_loader.cpp) loads the CUDA plugin
// (kernels/cuda_backend.h) and calls this, its factory there (models/cuda_plugin.cpp); the GPU
// tests link the device decoder itself.
std::unique_ptr<Model> make_device_model(std::unique_ptr<Model> model, Device device,
                                         const DeviceModelOptions& options = {});

}  // namespace tandem

// make_device_model of the CUDA plugin, exported unmangled for dlsym.
extern "C" std::unique_ptr<tandem::Model> tandem_cuda_make_device_model(
    std::unique_ptr<tandem::Model> model, tandem::Device device,
    const tandem::DeviceModelOptions& options);
