// Checkpoint: the tensors of a Hugging Face model directory, from one model.safetensors or the
// shards listed in model.safetensors.index.json, all memory-mapped.
//
// bind() is how model code obtains weights: by name, with the shape it expects, and a check
// that the stored dtype is one it can compute with. A mismatch names the file, the tensor, what
// was expected and what was found.
#pragma once

#include <map>
#include <memory>
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

    const std::string& dir() const { return dir_; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }

    // The tensor `name`, which must have exactly `shape` and a floating weight type.
    Tensor bind(const std::string& name, const Shape& shape) const;
    // Like bind(), or an empty Tensor when the checkpoint has no such tensor.
    Tensor bind_optional(const std::string& name, const Shape& shape) const;

    std::vector<std::string> names() const;
    // Names of tensors never bound, e.g. to warn about weights a loader ignored.
    std::vector<std::string> unbound_names() const;

  private:
    struct Location {
        const SafetensorsFile* file;
        const SafetensorsEntry* entry;
    };

    std::string dir_;
    std::vector<std::unique_ptr<SafetensorsFile>> files_;
    std::map<std::string, Location> index_;
    mutable std::set<std::string> bound_;
    // Aligned copies of tensors whose data in the file is not aligned to their element size
    // (valid safetensors, but reading them in place would be undefined behaviour).
    mutable std::vector<Buffer> aligned_copies_;
};

}  // namespace tandem
