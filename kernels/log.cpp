#include "kernels/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace tandem {

namespace {
std::atomic<int> g_level{int(LogLevel::Warn)};
std::mutex g_mutex;  // keeps lines from different threads whole
}  // namespace

void set_log_level(LogLevel level) {
    g_level.store(int(level), std::memory_order_relaxed);
}

LogLevel log_level() {
    return LogLevel(g_level.load(std::memory_order_relaxed));
}

LogLevel parse_log_level(const std::string& text) {
    if (text == "error") return LogLevel::Error;
    if (text == "warn") return LogLevel::Warn;
    if (text == "info") return LogLevel::Info;
    if (text == "debug") return LogLevel::Debug;
    fail("log level '", text, "': expected error, warn, info or debug");
}

void log_message(LogLevel level, const std::string& message) {
    static constexpr const char* kNames[] = {"error", "warn", "info", "debug"};
    std::lock_guard lock(g_mutex);
    std::fprintf(stderr, "tandem %s: %s\n", kNames[int(level)], message.c_str());
}

}  // namespace tandem
