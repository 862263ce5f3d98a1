#include "models/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace tandem {

namespace fs = std::filesystem;

namespace {

// Shard names come from a file we do not trust: plain file names only, no paths.
void check_shard_name(const std::string& name, const std::string& index_path) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
        fail(index_path, ": weight_map names shard '", name, "', which is not a plain file name");
}

std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
    std::ifstream in(index_path);
    if (!in) fail(index_path, ": cannot open");
    nlohmann::json index;
    try {
        index = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
        fail(index_path, ": not valid JSON: ", e.what());
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        fail(index_path, ": missing the weight_map object");
    std::map<std::string, std::string> weight_map;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
        if (!shard.is_string()) fail(index_path, ": weight_map.", tensor, " must be a string");
        check_shard_name(shard.get<std::string>(), index_path);
        weight_map[tensor] = shard.get<std::string>();
    }
    return weight_map;
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& dir) {
    Checkpoint checkpoint;
    checkpoint.dir_ = dir;
    const fs::path root(dir);
    const fs::path index_path = root / "model.safetensors.index.json";
    const fs::path single_path = root / "model.safetensors";

    std::map<std::string, std::string> weight_map;
    std::vector<std::string> shards;
    if (fs::exists(index_path)) {
        weight_map = read_weight_map(index_path.string());
        std::set<std::string> unique;
        for (const auto& [tensor, shard] : weight_map)
            unique.insert(shard);
        shards.assign(unique.begin(), unique.end());
    } else if (fs::exists(single_path)) {
        shards.push_back("model.safetensors");
    } else {
        fail(dir, ": no model.safetensors or model.safetensors.index.json");
    }

    std::map<std::string, const SafetensorsFile*> by_shard, in_shard;
    for (const auto& shard : shards) {
        auto file =
            std::make_unique<SafetensorsFile>(SafetensorsFile::open((root / shard).string()));
        by_shard[shard] = file.get();
        for (const auto& entry : file->contents().tensors) {
            View view{.origin = cat(file->path(), ": tensor ", entry.name),
                      .dtype = entry.dtype,
                      .dtype_name = entry.dtype_name,
                      .shape = entry.shape,
                      .data = entry.data};
            auto [it, inserted] = checkpoint.index_.emplace(entry.name, std::move(view));
            if (!inserted)
                fail(dir, ": tensor ", entry.name, " appears in both ",
                     it->second.origin.substr(0, it->second.origin.find(": tensor ")), " and ",
                     file->path());
            in_shard[entry.name] = file.get();
        }
        checkpoint.files_.push_back(std::move(file));
    }
    for (const auto& [tensor, shard] : weight_map) {
        auto it = checkpoint.index_.find(tensor);
        if (it == checkpoint.index_.end() || in_shard[tensor] != by_shard[shard])
            fail(index_path.string(), ": lists tensor ", tensor, " in ", shard,
                 ", which does not contain it");
    }
    return checkpoint;
}

Checkpoint Checkpoint::from_views(std::string origin, std::map<std::string, View> views,
                                  std::shared_ptr<const void> owner) {
    Checkpoint checkpoint;
    checkpoint.dir_ = std::move(origin);
    checkpoint.index_ = std::move(views);
    checkpoint.owner_ = std::move(owner);
    return checkpoint;
}

Tensor Checkpoint::bind_optional(const std::string& name, const Shape& shape) const {
    if (!contains(name)) return Tensor();
    return bind(name, shape);
}

Tensor Checkpoint::bind(const std::string& name, const Shape& shape) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail(dir_, ": missing tensor ", name, " (expected ", shape.str(), ")");
    const View& entry = it->second;
    const std::string& context = entry.origin;
    const Shape found = with_context(context, [&] { return Shape::from(entry.shape); });
    // Block-quantized types are rows of blocks: matrices only (never norms or biases).
    const bool usable =
        entry.dtype && (is_float_weight_type(*entry.dtype) ||
                        (is_quantized_weight_type(*entry.dtype) && shape.rank >= 2));
    if (!usable)
        fail(context, ": expected ", shape.str(),
             shape.rank >= 2 ? " of a float or block-quantized weight type" : " f32, f16 or bf16",
             ", found ", found.str(), " ", entry.dtype_name, " (unsupported dtype)");
    if (!(found == shape))
        fail(context, ": expected ", shape.str(), " ", dtype_name(*entry.dtype), ", found ",
             found.str(), " ", dtype_name(*entry.dtype));
    bound_.insert(name);
    void* data = const_cast<std::byte*>(entry.data);
    // Quantized blocks need the alignment of their f16 scales (MXFP4's scale is a byte);
    // scalars that of their element.
    const auto alignment =
        uintptr_t(*entry.dtype == DType::MXFP4             ? 1
                  : is_quantized_weight_type(*entry.dtype) ? 2
                                                           : dtype_block_bytes(*entry.dtype));
    if (reinterpret_cast<uintptr_t>(data) % alignment != 0) {
        const Tensor t(nullptr, *entry.dtype, found);
        Buffer copy = allocate(Device::cpu(), size_t(t.bytes()));
        std::memcpy(copy.data(), data, copy.bytes());
        data = copy.data();
        aligned_copies_.push_back(std::move(copy));
    }
    return Tensor(data, *entry.dtype, found);
}

const Checkpoint::View* Checkpoint::stored(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &it->second;
}

std::vector<std::string> Checkpoint::names() const {
    std::vector<std::string> out;
    for (const auto& [name, location] : index_)
        out.push_back(name);
    return out;
}

std::vector<std::string> Checkpoint::unbound_names() const {
    std::vector<std::string> out;
    for (const auto& [name, location] : index_)
        if (!bound_.count(name)) out.push_back(name);
    return out;
}

}  // namespace tandem
