// Typed access to tokenizer.json fields whose errors name the key, and the Replacer shared by
// the Replace normalizer and the Replace decoder ({"pattern": {"String"|"Regex": ...},
// "content": ...}).
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace tandem {

class Regex;

const nlohmann::json& json_field(const nlohmann::json& json, const char* key);
std::string json_string(const nlohmann::json& json, const char* key);
bool json_bool(const nlohmann::json& json, const char* key, bool fallback);
int64_t json_int(const nlohmann::json& json, const char* key);
const nlohmann::json& json_array(const nlohmann::json& json, const char* key);

// {"String": s} or {"Regex": r} -> the regex (a literal string is escaped).
std::string pattern_to_regex(const nlohmann::json& pattern);

class Replacer {
  public:
    explicit Replacer(const nlohmann::json& json);  // {"pattern": ..., "content": ...}
    ~Replacer();
    std::string apply(const std::string& text) const;

  private:
    std::string literal_;  // used when the pattern is a String
    std::unique_ptr<Regex> regex_;
    std::string content_;
};

}  // namespace tandem
