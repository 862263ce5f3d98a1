// Checkpoint: the tensors of a Hugging Face model directory, from one model.safetensors or the
// shards listed in model.safetensors.index.json, all memory-mapped; or tensors of another format
// (GGUF, models/gguf_loader.cpp) presented under the Hugging Face names the architectures bind.
//
// bind() is how model code obtains weights: by name, with the shape it expects, and a check
// that the stored dtype is one it can compute with (float types, and for matrices the
// block-quantized types too). A mismatch names the file, the tensor, what was expected and what
// was found.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "kernels/tensor.h"
#include "models/safetensors.h"

namespace tandem {

class Checkpoint {
  public:
    // Opens `dir`; throws tandem::Error naming the missing or malformed file.
    static Checkpoint open(const std::string& dir);

    // A tensor held elsewhere: `origin` names it in errors ("m.gguf: tensor blk.0.attn_q.weight").
    struct View {
        std::string origin;
        std::optional<DType> dtype;  // nullopt: a type Tandem cannot compute with
        std::string dtype_name;
        std::vector<int64_t> shape;
        const std::byte* data = nullptr;
    };
    // A checkpoint of views named `name -> view`; `owner` keeps their memory alive as long as
    // the checkpoint (or a moved-to copy) lives.
    static Checkpoint from_views(std::string origin, std::map<std::string, View> views,
                                 std::shared_ptr<const void> owner);

    const std::string& dir() const { return dir_; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }

    // The tensor `name`, which must have exactly `shape` and a floating weight type.
    Tensor bind(const std::string& name, const Shape& shape) const;
    // Like bind(), or an empty Tensor when the checkpoint has no such tensor.
    Tensor bind_optional(const std::string& name, const Shape& shape) const;

    // The tensor `name` as stored, whatever its dtype (nullptr when absent): for loaders that
    // repack tensors before binding (gpt-oss's fused experts). Does not count as bound.
    const View* stored(const std::string& name) const;

    std::vector<std::string> names() const;
    // Names of tensors never bound, e.g. to warn about weights a loader ignored.
    std::vector<std::string> unbound_names() const;

  private:
    std::string dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::shared_ptr<const void> owner_;
    std::map<std::string, View> index_;
    mutable std::set<std::string> bound_;
    // Aligned copies of tensors whose data in the file is not aligned to their element size
    // (valid safetensors, but reading them in place would be undefined behaviour).
    mutable std::vector<Buffer> aligned_copies_;
};

}  // namespace tandem
