// The GGUF format of llama.cpp (versions 2 and 3, and the first version's 32-bit counts): a header,
// typed metadata key-value pairs, tensor infos, then the tensor data, each tensor aligned to
// general.alignment (32 by default). Little-endian only; layout and type ids in
// ../shared/reference/gguf.md.
//
// parse_gguf() validates a whole file held in memory and trusts nothing in it: magic and version,
// every count and string length within the file, nesting depth of arrays, known value and tensor
// type ids, dimensions that are whole blocks of their type, tensor data aligned and inside the
// file, no duplicate names. It is the function the fuzzer drives (tests/fuzz/fuzz_gguf.cpp).
// Semantics (which keys an architecture needs) live in gguf_loader, not here.
//
// Shapes: GGUF lists dimensions innermost first (ne0 = the contiguous, input dimension); Tandem's
// are outermost first, so GgufTensor::shape is the reverse of the file's list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "models/mapped_file.h"

namespace tandem {

enum class GgufValueType : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType type);  // "u32", "string", "array", ...

// One metadata value. Integers are held widened (signed ones in `i`, unsigned in `u`), floats in
// `f`; arrays keep their element type and elements (which may be arrays themselves).
struct GgufValue {
    GgufValueType type = GgufValueType::U8;
    uint64_t u = 0;
    int64_t i = 0;
    double f = 0;
    bool b = false;
    std::string str;
    GgufValueType element_type = GgufValueType::U8;  // arrays only
    std::vector<GgufValue> array;

    bool is_integer() const;
    bool is_unsigned() const;
};

// ggml's tensor type ids, and what Tandem computes with (nullopt: a valid type it cannot use).
std::optional<DType> dtype_from_ggml_type(uint32_t type);
uint32_t ggml_type_from_dtype(DType dtype);  // throws for a dtype GGUF has no id for
std::string ggml_type_name(uint32_t type);   // "q4_k", "iq2_xs", "type 99"

struct GgufTensor {
    std::string name;
    uint32_t ggml_type = 0;
    std::optional<DType> dtype;  // nullopt: known to GGUF, unsupported by Tandem's kernels
    std::vector<int64_t> shape;  // outermost first
    uint64_t offset = 0;         // from the start of the data section
    uint64_t bytes = 0;
    const std::byte* data = nullptr;
};

struct GgufContents {
    uint32_t version = 0;
    uint64_t alignment = 32;
    std::map<std::string, GgufValue, std::less<>> metadata;
    std::vector<GgufTensor> tensors;  // in file order
};

// Parses and validates `file` (the whole file's bytes); `origin` names it in errors.
GgufContents parse_gguf(std::span<const std::byte> file, const std::string& origin);

// An opened, mapped and validated .gguf file.
class GgufFile {
  public:
    static GgufFile open(const std::string& path);

    const std::string& path() const { return file_.path(); }
    const GgufContents& contents() const { return contents_; }
    const GgufTensor* find(std::string_view name) const;
    const GgufValue* value(std::string_view key) const;

  private:
    MappedFile file_;
    GgufContents contents_;
    std::map<std::string, size_t, std::less<>> index_;
};

// A model stored as one .gguf or as split files "<name>-00001-of-0000N.gguf" (any of them may be
// named; all are opened). Metadata comes from the first split, tensors from all of them.
class GgufModelFiles {
  public:
    static GgufModelFiles open(const std::string& path);

    const std::string& path() const { return path_; }  // as given
    const GgufFile& first() const { return *files_.front(); }
    const GgufValue* value(std::string_view key) const { return first().value(key); }
    // The tensor and the file that holds it; nullptr when absent.
    const GgufTensor* find(std::string_view name, const GgufFile** file = nullptr) const;
    std::vector<const GgufTensor*> tensors() const;

    // Typed metadata access; errors name the file and the key.
    bool has(std::string_view key) const { return value(key) != nullptr; }
    uint64_t get_uint(std::string_view key) const;
    std::optional<uint64_t> get_uint_opt(std::string_view key) const;
    double get_float(std::string_view key) const;
    std::optional<double> get_float_opt(std::string_view key) const;
    std::optional<bool> get_bool_opt(std::string_view key) const;
    std::string get_string(std::string_view key) const;
    std::optional<std::string> get_string_opt(std::string_view key) const;
    const GgufValue& get_array(std::string_view key, GgufValueType element_type) const;

  private:
    std::string path_;
    std::vector<std::unique_ptr<GgufFile>> files_;
    std::map<std::string, std::pair<const GgufFile*, const GgufTensor*>, std::less<>> index_;
};

// True when `path` names a GGUF file by its extension.
bool is_gguf_path(const std::string& path);

}  // namespace tandem
