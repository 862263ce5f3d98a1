// tandem::Error, the one exception type of the library.
//
// Errors are thrown at the boundaries (loading files, parsing configs, validating requests,
// allocating) and carry their whole context in the message, outermost first:
//   "tests/data/m/model.safetensors: tensor model.norm.weight: expected [64] bf16, found [32] bf16"
// The library never exits or aborts on bad input.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tandem {

class Error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Concatenates anything streamable into one string.
template <class... Parts>
std::string cat(const Parts&... parts) {
    std::ostringstream out;
    (out << ... << parts);
    return out.str();
}

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    throw Error(cat(parts...));
}

// Runs fn and prefixes the message of any tandem::Error it throws with "context: ".
template <class Fn>
decltype(auto) with_context(const std::string& context, Fn&& fn) {
    try {
        return fn();
    } catch (const Error& e) {
        throw Error(context + ": " + e.what());
    }
}

}  // namespace tandem
