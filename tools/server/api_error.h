// ApiError: a request that fails with an HTTP status and the OpenAI error envelope
//   {"error": {"message", "type", "param", "code"}}
// (code is the HTTP status; the official client reads message/type/param/code from it).
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace tandem::server {

class ApiError : public std::runtime_error {
  public:
    ApiError(int status, std::string message, std::string param = "")
        : std::runtime_error(std::move(message)), status_(status), param_(std::move(param)) {}
    int status() const { return status_; }
    const std::string& param() const { return param_; }

  private:
    int status_;
    std::string param_;
};

// "invalid_request_error", "authentication_error", ... for a status.
const char* error_type(int status);
nlohmann::json error_body(int status, const std::string& message, const std::string& param = "");
// Serialises without throwing on invalid UTF-8 (replaced by U+FFFD): token pieces can be
// partial characters.
std::string dump(const nlohmann::json& j);

}  // namespace tandem::server
