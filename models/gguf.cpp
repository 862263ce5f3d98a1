#include "models/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <regex>

#include "kernels/error.h"

namespace tandem {

namespace {

constexpr uint32_t kMagic = 0x46554747;         // "GGUF" read as a little-endian u32
constexpr uint32_t kMagicSwapped = 0x47475546;  // the same bytes written by a big-endian writer
constexpr int kMaxArrayDepth = 8;  // real files nest at most 1 level; this bounds the recursion
constexpr uint64_t kMaxDims = 4;   // GGML_MAX_DIMS
constexpr uint64_t kMaxNameBytes = 64 * 1024;  // llama.cpp writes <= 64; keep a generous bound

struct GgmlTypeInfo {
    uint32_t id;
    const char* name;
    int64_t block_size;
    int64_t block_bytes;
    std::optional<DType> dtype;
};

// Every tensor type id of ggml (ggml.h; sizes from ggml-common.h). Ids 4, 5 and 31-33, 36-38
// were removed from the format and are rejected, as are ids past the end.
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "f32", 1, 4, DType::F32},
    {1, "f16", 1, 2, DType::F16},
    {2, "q4_0", 32, 18, DType::Q4_0},
    {3, "q4_1", 32, 20, std::nullopt},
    {6, "q5_0", 32, 22, DType::Q5_0},
    {7, "q5_1", 32, 24, std::nullopt},
    {8, "q8_0", 32, 34, DType::Q8_0},
    {9, "q8_1", 32, 36, std::nullopt},
    {10, "q2_k", 256, 84, std::nullopt},
    {11, "q3_k", 256, 110, std::nullopt},
    {12, "q4_k", 256, 144, DType::Q4_K},
    {13, "q5_k", 256, 176, DType::Q5_K},
    {14, "q6_k", 256, 210, DType::Q6_K},
    {15, "q8_k", 256, 292, std::nullopt},
    {16, "iq2_xxs", 256, 66, {}},
    {17, "iq2_xs", 256, 74, {}},
    {18, "iq3_xxs", 256, 98, {}},
    {19, "iq1_s", 256, 50, {}},
    {20, "iq4_nl", 32, 18, {}},
    {21, "iq3_s", 256, 110, {}},
    {22, "iq2_s", 256, 82, {}},
    {23, "iq4_xs", 256, 136, {}},
    {24, "i8", 1, 1, {}},
    {25, "i16", 1, 2, {}},
    {26, "i32", 1, 4, DType::I32},
    {27, "i64", 1, 8, DType::I64},
    {28, "f64", 1, 8, {}},
    {29, "iq1_m", 256, 56, {}},
    {30, "bf16", 1, 2, DType::BF16},
    {34, "tq1_0", 256, 54, {}},
    {35, "tq2_0", 256, 66, {}},
    {39, "mxfp4", 32, 17, DType::MXFP4},
    {40, "nvfp4", 64, 36, {}},
    {41, "q1_0", 128, 18, {}},
};

const GgmlTypeInfo* ggml_type_info(uint32_t id) {
    for (const GgmlTypeInfo& t : kGgmlTypes)
        if (t.id == id) return &t;
    return nullptr;
}

// A bounds-checked little-endian reader over the file's bytes. Every read checks the remaining
// length first, so no value the file claims can move it outside the span.
class Cursor {
  public:
    explicit Cursor(std::span<const std::byte> bytes) : bytes_(bytes) {}

    // GGUF v1 wrote counts, lengths and dimensions as u32; v2 and v3 as u64.
    void set_narrow_counts(bool narrow) { narrow_ = narrow; }
    uint64_t read_count(const char* what) {
        return narrow_ ? read<uint32_t>(what) : read<uint64_t>(what);
    }

    uint64_t position() const { return pos_; }
    uint64_t remaining() const { return bytes_.size() - pos_; }

    template <class T>
    T read(const char* what) {
        need(sizeof(T), what);
        T value;
        std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
        pos_ += sizeof(T);
        return value;
    }

    std::string read_string(const char* what) {
        const auto length = read_count(what);
        if (length > remaining())
            fail(what, ": string length ", length, " runs past the end of the file (", remaining(),
                 " bytes left)");
        std::string out(reinterpret_cast<const char*>(bytes_.data() + pos_), size_t(length));
        pos_ += length;
        return out;
    }

  private:
    void need(uint64_t n, const char* what) const {
        if (n > remaining())
            fail(what, ": needs ", n, " bytes at offset ", pos_, ", the file ends ", remaining(),
                 " bytes later (truncated?)");
    }

    std::span<const std::byte> bytes_;
    uint64_t pos_ = 0;
    bool narrow_ = false;
};

// The fewest bytes one element of `type` takes in the file: bounds array counts before anything
// is allocated for them.
uint64_t min_element_bytes(GgufValueType type) {
    switch (type) {
        case GgufValueType::U8:
        case GgufValueType::I8:
        case GgufValueType::Bool: return 1;
        case GgufValueType::U16:
        case GgufValueType::I16: return 2;
        case GgufValueType::U32:
        case GgufValueType::I32:
        case GgufValueType::F32: return 4;
        case GgufValueType::String: return 4;  // its length (u32 in version 1)
        case GgufValueType::U64:
        case GgufValueType::I64:
        case GgufValueType::F64: return 8;
        case GgufValueType::Array: return 8;  // u32 type + count (u32 in version 1)
    }
    return 1;
}

GgufValueType read_value_type(Cursor& in, const char* what) {
    const auto type = in.read<uint32_t>(what);
    if (type > uint32_t(GgufValueType::F64)) fail(what, ": unknown value type ", type);
    return GgufValueType(type);
}

GgufValue read_value(Cursor& in, GgufValueType type, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
        case GgufValueType::U8: v.u = in.read<uint8_t>("u8"); break;
        case GgufValueType::I8: v.i = in.read<int8_t>("i8"); break;
        case GgufValueType::U16: v.u = in.read<uint16_t>("u16"); break;
        case GgufValueType::I16: v.i = in.read<int16_t>("i16"); break;
        case GgufValueType::U32: v.u = in.read<uint32_t>("u32"); break;
        case GgufValueType::I32: v.i = in.read<int32_t>("i32"); break;
        case GgufValueType::U64: v.u = in.read<uint64_t>("u64"); break;
        case GgufValueType::I64: v.i = in.read<int64_t>("i64"); break;
        case GgufValueType::F32: v.f = in.read<float>("f32"); break;
        case GgufValueType::F64: v.f = in.read<double>("f64"); break;
        case GgufValueType::Bool: {
            const auto byte = in.read<uint8_t>("bool");
            if (byte > 1) fail("bool value ", int(byte), " is neither 0 nor 1");
            v.b = byte == 1;
            break;
        }
        case GgufValueType::String: v.str = in.read_string("string"); break;
        case GgufValueType::Array: {
            if (depth >= kMaxArrayDepth)
                fail("arrays nested deeper than ", kMaxArrayDepth, " levels");
            v.element_type = read_value_type(in, "array element type");
            const auto count = in.read_count("array length");
            if (count > in.remaining() / min_element_bytes(v.element_type))
                fail("array of ", count, " ", gguf_value_type_name(v.element_type),
                     " runs past the end of the file (", in.remaining(), " bytes left)");
            v.array.reserve(size_t(count));
            for (uint64_t i = 0; i < count; ++i)
                v.array.push_back(with_context(
                    cat("element ", i), [&] { return read_value(in, v.element_type, depth + 1); }));
            break;
        }
    }
    return v;
}

GgufTensor read_tensor_info(Cursor& in) {
    GgufTensor t;
    const auto n_dims = in.read<uint32_t>("n_dims");
    if (n_dims > kMaxDims) fail(n_dims, " dimensions (at most ", kMaxDims, ")");
    std::vector<int64_t> ne;
    for (uint32_t d = 0; d < n_dims; ++d) {
        const auto dim = in.read_count("dimension");
        if (dim > (uint64_t(1) << 48)) fail("dimension ", dim, " is implausibly large");
        ne.push_back(int64_t(dim));
    }
    t.ggml_type = in.read<uint32_t>("type");
    const GgmlTypeInfo* type = ggml_type_info(t.ggml_type);
    if (type == nullptr) fail("unknown tensor type id ", t.ggml_type);
    t.dtype = type->dtype;
    t.offset = in.read<uint64_t>("data offset");
    const int64_t ne0 = ne.empty() ? 1 : ne[0];
    if (ne0 % type->block_size != 0)
        fail("first dimension ", ne0, " is not a multiple of the ", type->name, " block size ",
             type->block_size);
    uint64_t bytes = uint64_t(ne0 / type->block_size) * uint64_t(type->block_bytes);
    for (size_t d = 1; d < ne.size(); ++d)
        if (__builtin_mul_overflow(bytes, uint64_t(ne[d]), &bytes)) fail("size overflows 64 bits");
    t.bytes = bytes;
    t.shape.assign(ne.rbegin(), ne.rend());
    return t;
}

}  // namespace

bool GgufValue::is_integer() const {
    switch (type) {
        case GgufValueType::U8:
        case GgufValueType::I8:
        case GgufValueType::U16:
        case GgufValueType::I16:
        case GgufValueType::U32:
        case GgufValueType::I32:
        case GgufValueType::U64:
        case GgufValueType::I64: return true;
        default: return false;
    }
}

bool GgufValue::is_unsigned() const {
    return type == GgufValueType::U8 || type == GgufValueType::U16 || type == GgufValueType::U32 ||
           type == GgufValueType::U64;
}

std::string_view gguf_value_type_name(GgufValueType type) {
    static constexpr std::string_view names[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                 "i32", "f32", "bool", "string", "array",
                                                 "u64", "i64", "f64"};
    const auto index = size_t(type);
    return index < std::size(names) ? names[index] : "unknown";
}

std::optional<DType> dtype_from_ggml_type(uint32_t type) {
    const GgmlTypeInfo* info = ggml_type_info(type);
    return info == nullptr ? std::nullopt : info->dtype;
}

uint32_t ggml_type_from_dtype(DType dtype) {
    for (const GgmlTypeInfo& t : kGgmlTypes)
        if (t.dtype == dtype) return t.id;
    fail(dtype_name(dtype), " has no GGUF type id");
}

std::string ggml_type_name(uint32_t type) {
    const GgmlTypeInfo* info = ggml_type_info(type);
    return info == nullptr ? cat("type ", type) : std::string(info->name);
}

GgufContents parse_gguf(std::span<const std::byte> file, const std::string& origin) {
    return with_context(origin, [&] {
        Cursor in(file);
        const auto magic = in.read<uint32_t>("magic");
        if (magic == kMagicSwapped) fail("big-endian GGUF files are not supported");
        if (magic != kMagic) fail("not a GGUF file (magic 0x", std::hex, magic, ")");
        GgufContents contents;
        contents.version = in.read<uint32_t>("version");
        if (contents.version < 1 || contents.version > 3)
            fail("unknown GGUF version ", contents.version, " (supported: 1, 2, 3)");
        in.set_narrow_counts(contents.version == 1);
        const auto n_tensors = in.read_count("tensor count");
        const auto n_kv = in.read_count("metadata count");
        // Each key-value pair takes at least 9 bytes and each tensor info 20 (with version 1's
        // narrow counts): bound the counts by the file size before looping on them.
        if (n_kv > in.remaining() / 9) fail("metadata count ", n_kv, " does not fit in the file");
        if (n_tensors > in.remaining() / 20)
            fail("tensor count ", n_tensors, " does not fit in the file");

        for (uint64_t k = 0; k < n_kv; ++k) {
            std::string key =
                with_context(cat("metadata entry ", k), [&] { return in.read_string("key"); });
            with_context(cat("metadata ", key), [&] {
                const GgufValueType type = read_value_type(in, "value type");
                GgufValue value = read_value(in, type, 0);
                if (!contents.metadata.emplace(key, std::move(value)).second)
                    fail("key appears twice");
            });
        }
        if (auto it = contents.metadata.find("general.alignment"); it != contents.metadata.end()) {
            const GgufValue& a = it->second;
            if (a.type != GgufValueType::U32)
                fail("metadata general.alignment: expected u32, found ",
                     gguf_value_type_name(a.type));
            if (a.u == 0 || (a.u & (a.u - 1)) != 0)
                fail("metadata general.alignment: ", a.u, " is not a power of two");
            contents.alignment = a.u;
        }

        std::map<std::string, size_t, std::less<>> names;
        for (uint64_t t = 0; t < n_tensors; ++t) {
            std::string name =
                with_context(cat("tensor info ", t), [&] { return in.read_string("name"); });
            with_context(cat("tensor ", name), [&] {
                if (name.size() > kMaxNameBytes) fail("name of ", name.size(), " bytes");
                GgufTensor tensor = read_tensor_info(in);
                tensor.name = name;
                if (!names.emplace(name, size_t(t)).second) fail("name appears twice");
                contents.tensors.push_back(std::move(tensor));
            });
        }

        // The data section starts at the next multiple of the alignment after the infos.
        const uint64_t align = contents.alignment;
        const uint64_t data_start = (in.position() + align - 1) / align * align;
        if (contents.tensors.empty()) return contents;
        if (data_start > file.size())
            fail("data section at offset ", data_start, " starts past the end of the file (",
                 file.size(), " bytes)");
        const uint64_t data_bytes = file.size() - data_start;
        for (GgufTensor& t : contents.tensors) {
            with_context(cat("tensor ", t.name), [&] {
                if (t.offset % align != 0)
                    fail("data offset ", t.offset, " is not a multiple of the alignment ", align);
                if (t.offset > data_bytes || t.bytes > data_bytes - t.offset)
                    fail("data [", t.offset, ", ", t.offset + t.bytes, ") runs past the ",
                         data_bytes, " bytes of the data section (truncated file?)");
            });
            t.data = file.data() + data_start + t.offset;
        }
        std::vector<const GgufTensor*> by_offset;
        for (const GgufTensor& t : contents.tensors)
            by_offset.push_back(&t);
        std::sort(by_offset.begin(), by_offset.end(),
                  [](const auto* a, const auto* b) { return a->offset < b->offset; });
        for (size_t i = 1; i < by_offset.size(); ++i)
            if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->bytes &&
                by_offset[i]->bytes > 0)
                fail("tensors ", by_offset[i - 1]->name, " and ", by_offset[i]->name, " overlap");
        return contents;
    });
}

GgufFile GgufFile::open(const std::string& path) {
    GgufFile file;
    file.file_ = MappedFile::open(path);
    file.contents_ = parse_gguf(file.file_.bytes(), path);
    for (size_t i = 0; i < file.contents_.tensors.size(); ++i)
        file.index_.emplace(file.contents_.tensors[i].name, i);
    return file;
}

const GgufTensor* GgufFile::find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &contents_.tensors[it->second];
}

const GgufValue* GgufFile::value(std::string_view key) const {
    auto it = contents_.metadata.find(key);
    return it == contents_.metadata.end() ? nullptr : &it->second;
}

namespace {

// The split.* counters, written as u16 by llama.cpp's gguf-split; nullopt if absent or not an
// unsigned integer.
std::optional<uint64_t> split_uint(const GgufValue* v) {
    if (v == nullptr || !v->is_integer()) return std::nullopt;
    if (!v->is_unsigned() && v->i < 0) return std::nullopt;
    return v->is_unsigned() ? v->u : uint64_t(v->i);
}

}  // namespace

bool is_gguf_path(const std::string& path) {
    return path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

GgufModelFiles GgufModelFiles::open(const std::string& path) {
    GgufModelFiles model;
    model.path_ = path;
    // "<prefix>-00002-of-00005.gguf": open all five, in order, whichever one was named.
    static const std::regex split_name(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
    std::smatch match;
    std::vector<std::string> paths;
    if (std::regex_match(path, match, split_name)) {
        const int count = std::stoi(match[3].str());
        if (count < 1) fail(path, ": split count 0 in the file name");
        for (int i = 1; i <= count; ++i) {
            char suffix[32];
            std::snprintf(suffix, sizeof(suffix), "-%05d-of-%05d.gguf", i, count);
            paths.push_back(match[1].str() + suffix);
        }
    } else {
        paths.push_back(path);
    }
    for (size_t i = 0; i < paths.size(); ++i) {
        auto file = std::make_unique<GgufFile>(GgufFile::open(paths[i]));
        if (paths.size() > 1) {
            if (split_uint(file->value("split.no")) != i)
                fail(paths[i], ": metadata split.no missing or not ", i);
            if (split_uint(file->value("split.count")) != paths.size())
                fail(paths[i], ": metadata split.count missing or not ", paths.size());
        }
        for (const GgufTensor& t : file->contents().tensors) {
            auto [it, inserted] = model.index_.emplace(t.name, std::pair{file.get(), &t});
            if (!inserted)
                fail(path, ": tensor ", t.name, " appears in both ", it->second.first->path(),
                     " and ", file->path());
        }
        model.files_.push_back(std::move(file));
    }
    if (auto total = split_uint(model.first().value("split.tensors.count"));
        total && *total != model.index_.size())
        fail(path, ": metadata split.tensors.count says ", *total, " tensors, the ", paths.size(),
             " files hold ", model.index_.size());
    return model;
}

const GgufTensor* GgufModelFiles::find(std::string_view name, const GgufFile** file) const {
    auto it = index_.find(name);
    if (it == index_.end()) return nullptr;
    if (file != nullptr) *file = it->second.first;
    return it->second.second;
}

std::vector<const GgufTensor*> GgufModelFiles::tensors() const {
    std::vector<const GgufTensor*> out;
    for (const auto& [name, location] : index_)
        out.push_back(location.second);
    return out;
}

namespace {

[[noreturn]] void fail_type(const std::string& path, std::string_view key, const char* expected,
                            const GgufValue& v) {
    fail(path, ": metadata ", key, ": expected ", expected, ", found ",
         gguf_value_type_name(v.type));
}

}  // namespace

std::optional<uint64_t> GgufModelFiles::get_uint_opt(std::string_view key) const {
    const GgufValue* v = value(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_integer()) fail_type(path_, key, "an integer", *v);
    if (!v->is_unsigned() && v->i < 0) fail(path_, ": metadata ", key, ": negative (", v->i, ")");
    return v->is_unsigned() ? v->u : uint64_t(v->i);
}

uint64_t GgufModelFiles::get_uint(std::string_view key) const {
    auto v = get_uint_opt(key);
    if (!v) fail(path_, ": metadata ", key, ": missing");
    return *v;
}

std::optional<double> GgufModelFiles::get_float_opt(std::string_view key) const {
    const GgufValue* v = value(key);
    if (v == nullptr) return std::nullopt;
    if (v->type == GgufValueType::F32 || v->type == GgufValueType::F64) return v->f;
    if (v->is_integer()) return v->is_unsigned() ? double(v->u) : double(v->i);
    fail_type(path_, key, "a number", *v);
}

double GgufModelFiles::get_float(std::string_view key) const {
    auto v = get_float_opt(key);
    if (!v) fail(path_, ": metadata ", key, ": missing");
    return *v;
}

std::optional<bool> GgufModelFiles::get_bool_opt(std::string_view key) const {
    const GgufValue* v = value(key);
    if (v == nullptr) return std::nullopt;
    if (v->type != GgufValueType::Bool) fail_type(path_, key, "a bool", *v);
    return v->b;
}

std::optional<std::string> GgufModelFiles::get_string_opt(std::string_view key) const {
    const GgufValue* v = value(key);
    if (v == nullptr) return std::nullopt;
    if (v->type != GgufValueType::String) fail_type(path_, key, "a string", *v);
    return v->str;
}

std::string GgufModelFiles::get_string(std::string_view key) const {
    auto v = get_string_opt(key);
    if (!v) fail(path_, ": metadata ", key, ": missing");
    return *v;
}

const GgufValue& GgufModelFiles::get_array(std::string_view key, GgufValueType element_type) const {
    const GgufValue* v = value(key);
    if (v == nullptr) fail(path_, ": metadata ", key, ": missing");
    if (v->type != GgufValueType::Array) fail_type(path_, key, "an array", *v);
    if (v->element_type != element_type)
        fail(path_, ": metadata ", key, ": expected an array of ",
             gguf_value_type_name(element_type), ", found an array of ",
             gguf_value_type_name(v->element_type));
    return *v;
}

}  // namespace tandem
