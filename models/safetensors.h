// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON mapping each
// tensor name to {dtype, shape, data_offsets: [begin, end)} (offsets relative to the data that
// follows the header), an optional "__metadata__" string map, then the raw data.
//
// parse_safetensors() validates a whole file held in memory and trusts nothing in it: header
// length within the file and below a sane limit, JSON well-formed, every entry's fields typed as
// the format says, offsets inside the data, shape x dtype size = byte length, no two tensors
// overlapping. It is the function the fuzzer drives (tests/fuzz/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/tensor.h"
#include "models/mapped_file.h"

namespace tandem {

struct SafetensorsEntry {
    std::string name;
    std::string dtype_name;      // as written in the file, e.g. "BF16"
    std::optional<DType> dtype;  // nullopt: a valid safetensors dtype Tandem cannot compute with
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte range within the data section
    const std::byte* data = nullptr;
};

struct SafetensorsContents {
    std::vector<SafetensorsEntry> tensors;  // in file order of data offsets
    std::map<std::string, std::string> metadata;
};

// Parses and validates `file` (the whole file's bytes); `origin` names it in errors.
SafetensorsContents parse_safetensors(std::span<const std::byte> file, const std::string& origin);

// An opened, mapped and validated .safetensors file.
class SafetensorsFile {
  public:
    static SafetensorsFile open(const std::string& path);

    const std::string& path() const { return file_.path(); }
    const SafetensorsContents& contents() const { return contents_; }
    const SafetensorsEntry* find(const std::string& name) const;

  private:
    MappedFile file_;
    SafetensorsContents contents_;
    std::map<std::string, size_t, std::less<>> index_;
};

// A tensor to write: name, dtype, shape and its contiguous bytes.
struct SafetensorsWriteEntry {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    std::span<const std::byte> data;
};

// Writes a safetensors file; throws tandem::Error on I/O errors or a data size that disagrees
// with shape and dtype.
void write_safetensors(const std::string& path, std::span<const SafetensorsWriteEntry> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace tandem
