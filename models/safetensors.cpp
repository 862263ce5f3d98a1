#include "models/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace tandem {

namespace {

using Json = nlohmann::json;

// Headers of real checkpoints are a few hundred KB at most; the reference implementation
// refuses headers over 100 MB, and so do we, before allocating anything for them.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

// Element sizes of every dtype the safetensors format defines.
std::optional<uint64_t> safetensors_element_bytes(const std::string& dtype) {
    static const std::map<std::string, uint64_t, std::less<>> sizes = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
        {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
        {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
    auto it = sizes.find(dtype);
    if (it == sizes.end()) return std::nullopt;
    return it->second;
}

uint64_t read_u64_le(const std::byte* p) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i)
        value = (value << 8) | uint64_t(p[i]);
    return value;
}

uint64_t json_u64(const Json& value, const char* what) {
    if (!value.is_number_unsigned()) {
        if (value.is_number_integer() && value.get<int64_t>() >= 0) return value.get<uint64_t>();
        fail(what, " must be a non-negative integer, found ", value.dump());
    }
    return value.get<uint64_t>();
}

SafetensorsEntry parse_entry(const std::string& name, const Json& info, uint64_t data_bytes) {
    if (!info.is_object()) fail("must be an object, found ", info.type_name());
    for (const auto& [key, unused] : info.items())
        if (key != "dtype" && key != "shape" && key != "data_offsets")
            fail("unexpected field '", key, "'");
    SafetensorsEntry entry;
    entry.name = name;

    const auto dtype = info.find("dtype");
    if (dtype == info.end() || !dtype->is_string()) fail("dtype missing or not a string");
    entry.dtype_name = dtype->get<std::string>();
    const auto element_bytes = safetensors_element_bytes(entry.dtype_name);
    if (!element_bytes) fail("unknown dtype '", entry.dtype_name, "'");
    entry.dtype = dtype_from_safetensors(entry.dtype_name);

    const auto shape = info.find("shape");
    if (shape == info.end() || !shape->is_array()) fail("shape missing or not an array");
    uint64_t n_bytes = *element_bytes;
    for (const Json& dim : *shape) {
        const uint64_t d = json_u64(dim, "shape entry");
        if (d > (uint64_t(1) << 48)) fail("shape entry ", d, " is implausibly large");
        if (__builtin_mul_overflow(n_bytes, d, &n_bytes)) fail("shape overflows 64 bits");
        entry.shape.push_back(int64_t(d));
    }

    const auto offsets = info.find("data_offsets");
    if (offsets == info.end() || !offsets->is_array() || offsets->size() != 2)
        fail("data_offsets missing or not a pair");
    entry.begin = json_u64((*offsets)[0], "data_offsets[0]");
    entry.end = json_u64((*offsets)[1], "data_offsets[1]");
    if (entry.begin > entry.end) fail("data_offsets [", entry.begin, ", ", entry.end, ") reversed");
    if (entry.end > data_bytes)
        fail("data_offsets [", entry.begin, ", ", entry.end, ") run past the ", data_bytes,
             " bytes of data");
    if (entry.end - entry.begin != n_bytes)
        fail("shape ", Json(entry.shape).dump(), " of ", entry.dtype_name, " needs ", n_bytes,
             " bytes but data_offsets span ", entry.end - entry.begin);
    return entry;
}

}  // namespace

SafetensorsContents parse_safetensors(std::span<const std::byte> file, const std::string& origin) {
    return with_context(origin, [&] {
        if (file.size() < 8) fail("file of ", file.size(), " bytes is too small for a header");
        const uint64_t header_bytes = read_u64_le(file.data());
        if (header_bytes > kMaxHeaderBytes)
            fail("header length ", header_bytes, " exceeds the limit of ", kMaxHeaderBytes);
        if (header_bytes > file.size() - 8)
            fail("header length ", header_bytes, " runs past the end of the file (", file.size(),
                 " bytes)");
        const auto* header_begin = reinterpret_cast<const char*>(file.data() + 8);
        Json header;
        try {
            header = Json::parse(header_begin, header_begin + header_bytes);
        } catch (const Json::exception& e) {
            fail("header is not valid JSON: ", e.what());
        }
        if (!header.is_object()) fail("header must be a JSON object, found ", header.type_name());

        const std::byte* data = file.data() + 8 + header_bytes;
        const uint64_t data_bytes = file.size() - 8 - header_bytes;
        SafetensorsContents contents;
        for (const auto& item : header.items()) {
            const std::string& name = item.key();
            const Json& info = item.value();
            if (name == "__metadata__") {
                if (!info.is_object()) fail("__metadata__ must be an object of strings");
                for (const auto& [key, value] : info.items()) {
                    if (!value.is_string()) fail("__metadata__.", key, " must be a string");
                    contents.metadata[key] = value.get<std::string>();
                }
                continue;
            }
            SafetensorsEntry entry = with_context(
                cat("tensor ", name), [&] { return parse_entry(name, info, data_bytes); });
            entry.data = data + entry.begin;
            contents.tensors.push_back(std::move(entry));
        }
        std::sort(contents.tensors.begin(), contents.tensors.end(),
                  [](const auto& a, const auto& b) { return a.begin < b.begin; });
        for (size_t i = 1; i < contents.tensors.size(); ++i) {
            const auto& previous = contents.tensors[i - 1];
            const auto& current = contents.tensors[i];
            if (current.begin < previous.end && current.end > current.begin)
                fail("tensors ", previous.name, " and ", current.name, " overlap");
        }
        return contents;
    });
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
    SafetensorsFile file;
    file.file_ = MappedFile::open(path);
    file.contents_ = parse_safetensors(file.file_.bytes(), path);
    for (size_t i = 0; i < file.contents_.tensors.size(); ++i)
        file.index_.emplace(file.contents_.tensors[i].name, i);
    return file;
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &contents_.tensors[it->second];
}

void write_safetensors(const std::string& path, std::span<const SafetensorsWriteEntry> tensors,
                       const std::map<std::string, std::string>& metadata) {
    Json header = Json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const auto& t : tensors) {
        Shape shape = Shape::from(t.shape);
        const uint64_t expected = uint64_t(Tensor(nullptr, t.dtype, shape).bytes());
        if (t.data.size() != expected)
            fail(path, ": tensor ", t.name, ": ", t.data.size(), " bytes given, shape ",
                 shape.str(), " ", dtype_name(t.dtype), " needs ", expected);
        header[t.name] = {{"dtype", std::string(dtype_safetensors_name(t.dtype))},
                          {"shape", t.shape},
                          {"data_offsets", {offset, offset + expected}}};
        offset += expected;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // keep the data 8-byte aligned
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, ": cannot open for writing");
    const uint64_t header_bytes = text.size();
    char length[8];
    for (int i = 0; i < 8; ++i)
        length[i] = char((header_bytes >> (8 * i)) & 0xff);
    out.write(length, 8);
    out.write(text.data(), std::streamsize(text.size()));
    for (const auto& t : tensors)
        out.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size()));
    if (!out.flush()) fail(path, ": write failed");
}

}  // namespace tandem
