// Field access for tokenizer.json with errors that name the key.
#include "models/tokenizer/json_util.h"

#include "kernels/error.h"
#include "models/tokenizer/regex.h"

namespace tandem {

const nlohmann::json& json_field(const nlohmann::json& json, const char* key) {
    if (!json.is_object()) fail("expected an object holding '", key, "'");
    const auto it = json.find(key);
    if (it == json.end()) fail("missing key '", key, "'");
    return *it;
}

std::string json_string(const nlohmann::json& json, const char* key) {
    const auto& v = json_field(json, key);
    if (!v.is_string()) fail("'", key, "': expected a string");
    return v.get<std::string>();
}

bool json_bool(const nlohmann::json& json, const char* key, bool fallback) {
    if (!json.is_object()) return fallback;
    const auto it = json.find(key);
    if (it == json.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) fail("'", key, "': expected true or false");
    return it->get<bool>();
}

int64_t json_int(const nlohmann::json& json, const char* key) {
    const auto& v = json_field(json, key);
    if (!v.is_number_integer()) fail("'", key, "': expected an integer");
    return v.get<int64_t>();
}

const nlohmann::json& json_array(const nlohmann::json& json, const char* key) {
    const auto& v = json_field(json, key);
    if (!v.is_array()) fail("'", key, "': expected an array");
    return v;
}

namespace {

std::string escape_regex(const std::string& s) {
    std::string out;
    for (const char c : s) {
        if (std::string_view("\\^$.|?*+()[]{}-/#").find(c) != std::string_view::npos) out += '\\';
        out += c;
    }
    return out;
}

}  // namespace

std::string pattern_to_regex(const nlohmann::json& pattern) {
    if (pattern.is_object() && pattern.contains("String")) {
        if (!pattern["String"].is_string()) fail("'pattern': String must be a string");
        return escape_regex(pattern["String"].get<std::string>());
    }
    if (pattern.is_object() && pattern.contains("Regex")) {
        if (!pattern["Regex"].is_string()) fail("'pattern': Regex must be a string");
        return pattern["Regex"].get<std::string>();
    }
    fail("'pattern': expected {\"String\": ...} or {\"Regex\": ...}");
}

Replacer::Replacer(const nlohmann::json& json) : content_(json_string(json, "content")) {
    const auto& pattern = json_field(json, "pattern");
    if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string())
        literal_ = pattern["String"].get<std::string>();
    else
        regex_ = std::make_unique<Regex>(pattern_to_regex(pattern));
}

Replacer::~Replacer() = default;

std::string Replacer::apply(const std::string& text) const {
    std::string out;
    if (!regex_) {
        if (literal_.empty()) return text;
        size_t pos = 0;
        while (true) {
            const size_t hit = text.find(literal_, pos);
            if (hit == std::string::npos) break;
            out.append(text, pos, hit - pos);
            out += content_;
            pos = hit + literal_.size();
        }
        out.append(text, pos, std::string::npos);
        return out;
    }
    size_t pos = 0;
    for (const auto& [b, e] : regex_->find_all(text)) {
        out.append(text, pos, b - pos);
        out += content_;
        pos = e;
    }
    out.append(text, pos, std::string::npos);
    return out;
}

}  // namespace tandem
