// Levelled logging to stderr. The level is set by the tools from their flags (--log-level); the
// library itself reads no environment variables.
#pragma once

#include <string>

#include "kernels/error.h"

namespace tandem {

enum class LogLevel : int { Error = 0, Warn = 1, Info = 2, Debug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
LogLevel parse_log_level(const std::string& text);  // "error", "warn", "info", "debug"
void log_message(LogLevel level, const std::string& message);

template <class... Parts>
void log_error(const Parts&... parts) {
    if (log_level() >= LogLevel::Error) log_message(LogLevel::Error, cat(parts...));
}
template <class... Parts>
void log_warn(const Parts&... parts) {
    if (log_level() >= LogLevel::Warn) log_message(LogLevel::Warn, cat(parts...));
}
template <class... Parts>
void log_info(const Parts&... parts) {
    if (log_level() >= LogLevel::Info) log_message(LogLevel::Info, cat(parts...));
}
template <class... Parts>
void log_debug(const Parts&... parts) {
    if (log_level() >= LogLevel::Debug) log_message(LogLevel::Debug, cat(parts...));
}

}  // namespace tandem
