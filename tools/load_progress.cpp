#include "tools/load_progress.h"

#include <unistd.h>

#include <cstdio>

namespace tandem {

LoadProgressCallback terminal_load_progress(std::string tool, bool force) {
    if (!force && isatty(STDERR_FILENO) == 0) return {};
    return [tool = std::move(tool)](const LoadProgress& p) {
        constexpr int kWidth = 30;
        const double fraction = p.total > 0 ? double(p.done) / double(p.total) : 1.0;
        const int filled = int(kWidth * fraction);
        std::fprintf(stderr, "\r%s: %.*s [%s%s] %3.0f%% %.1f / %.1f GiB", tool.c_str(),
                     int(p.stage.size()), p.stage.data(), std::string(size_t(filled), '#').c_str(),
                     std::string(size_t(kWidth - filled), '.').c_str(), 100 * fraction,
                     double(p.done) / double(1 << 30), double(p.total) / double(1 << 30));
        if (p.done >= p.total) std::fputc('\n', stderr);
        std::fflush(stderr);
    };
}

}  // namespace tandem
