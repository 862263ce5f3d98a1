#include "models/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>

#include "kernels/error.h"

namespace tandem {

namespace {

// MemAvailable of /proc/meminfo in bytes, or 0 where it cannot be read.
uint64_t available_memory() {
    std::ifstream meminfo("/proc/meminfo");
    for (std::string line; std::getline(meminfo, line);)
        if (line.starts_with("MemAvailable:"))
            return std::strtoull(line.c_str() + 13, nullptr, 10) << 10;
    return 0;
}

// Brings the mapping's pages in now rather than at first use. Without this, the first prefill
// that reaches an expert pays the page faults (and, where the file is not in the page cache, the
// disk reads) for its weights, and a serving process's first requests run slower than the rest;
// llama.cpp populates its mappings too. Where the file would take more than half of the free
// memory only the kernel's read-ahead is asked for: populating would evict the file's first pages
// before its last were read. A failure of either is no error: both are hints, and kernels before
// 5.14 have no MADV_POPULATE_READ.
void prefault(void* data, size_t size) {
    ::madvise(data, size, MADV_WILLNEED);
    const uint64_t available = available_memory();
    if (available != 0 && size <= available / 2) ::madvise(data, size, MADV_POPULATE_READ);
}

}  // namespace

MappedFile MappedFile::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
    struct stat info {};
    if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
        ::close(fd);
        fail(path, ": not a regular file");
    }
    MappedFile file;
    file.path_ = path;
    file.size_ = size_t(info.st_size);
    if (file.size_ > 0) {
        void* data = ::mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) {
            const int error = errno;
            ::close(fd);
            fail(path, ": cannot map: ", std::strerror(error));
        }
        prefault(data, file.size_);
        file.data_ = static_cast<const std::byte*>(data);
    }
    ::close(fd);  // the mapping keeps the file alive
    return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
    if (this != &other) {
        if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
        path_ = std::move(other.path_);
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
    }
    return *this;
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
}

}  // namespace tandem
