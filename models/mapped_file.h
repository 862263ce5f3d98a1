// MappedFile: a whole file memory-mapped read-only, unmapped on destruction. Weights are used in
// place from the mapping, so loading a checkpoint costs page faults, not copies; they are taken at
// open (the pages populated) where the file fits in half of the free memory, so that no step
// pays them later.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace tandem {

class MappedFile {
  public:
    // Throws tandem::Error naming the path if it cannot be opened or mapped.
    static MappedFile open(const std::string& path);

    MappedFile() = default;
    MappedFile(MappedFile&& other) noexcept;
    MappedFile& operator=(MappedFile&& other) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile();

    std::span<const std::byte> bytes() const { return {data_, size_}; }
    const std::string& path() const { return path_; }

  private:
    std::string path_;
    const std::byte* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace tandem
