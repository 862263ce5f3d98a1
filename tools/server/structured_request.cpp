#include "tools/server/structured_request.h"

#include <string_view>

#include "tools/server/api_error.h"

namespace tandem::server {

namespace {

using nlohmann::json;

std::string string_field(const json& value, const std::string& param) {
    if (!value.is_string() || value.get<std::string>().empty())
        throw ApiError(400, "'" + param + "' must be a non-empty string", param);
    return value.get<std::string>();
}

// A schema as an object, or as a string holding one (vLLM accepts both for guided_json).
std::string schema_text(const json& value, const std::string& param) {
    if (value.is_object()) return value.dump();
    if (value.is_string()) {
        json parsed = json::parse(value.get<std::string>(), nullptr, /*allow_exceptions=*/false);
        if (parsed.is_object()) return parsed.dump();
    }
    throw ApiError(400, "'" + param + "' must be a JSON schema (an object)", param);
}

GrammarSpec response_format(const json& format) {
    if (!format.is_object() || !format.contains("type") || !format["type"].is_string())
        throw ApiError(400, "'response_format' must be an object with a 'type'", "response_format");
    const std::string type = format["type"];
    if (type == "json_object") {
        // llama.cpp's server also takes a schema here.
        if (const auto it = format.find("schema"); it != format.end() && !it->is_null())
            return {.kind = GrammarSpec::Kind::JsonSchema,
                    .text = schema_text(*it, "response_format.schema")};
        return {.kind = GrammarSpec::Kind::JsonObject};
    }
    if (type == "json_schema") {
        const auto it = format.find("json_schema");
        if (it == format.end() || !it->is_object())
            throw ApiError(400, "'response_format.json_schema' must be an object",
                           "response_format.json_schema");
        const auto schema = it->find("schema");
        if (schema == it->end())
            throw ApiError(400, "'response_format.json_schema.schema' is required",
                           "response_format.json_schema.schema");
        // strict or not, the schema is enforced: a client asking for a schema wants it kept.
        if (const auto strict = it->find("strict");
            strict != it->end() && !strict->is_null() && !strict->is_boolean())
            throw ApiError(400, "'response_format.json_schema.strict' must be a boolean",
                           "response_format.json_schema.strict");
        return {.kind = GrammarSpec::Kind::JsonSchema,
                .text = schema_text(*schema, "response_format.json_schema.schema")};
    }
    throw ApiError(400,
                   "'response_format.type' must be \"text\", \"json_object\" or "
                   "\"json_schema\", got \"" +
                       type + "\"",
                   "response_format.type");
}

std::vector<std::string> choices(const json& value, const std::string& param) {
    if (!value.is_array() || value.empty())
        throw ApiError(400, "'" + param + "' must be a non-empty list of strings", param);
    std::vector<std::string> out;
    for (const json& c : value)
        out.push_back(string_field(c, param));
    return out;
}

// One of vLLM's guided decoding fields (guided_x, or structured_outputs.x) by its short name.
std::optional<GrammarSpec> guided(std::string_view name, const json& value,
                                  const std::string& param) {
    if (name == "json")
        return GrammarSpec{.kind = GrammarSpec::Kind::JsonSchema,
                           .text = schema_text(value, param)};
    if (name == "regex")
        return GrammarSpec{.kind = GrammarSpec::Kind::Regex, .text = string_field(value, param)};
    if (name == "choice")
        return GrammarSpec{.kind = GrammarSpec::Kind::Regex,
                           .text = choice_regex(choices(value, param))};
    if (name == "grammar")
        return GrammarSpec{.kind = GrammarSpec::Kind::Ebnf, .text = string_field(value, param)};
    if (name == "json_object") {
        if (!value.is_boolean()) throw ApiError(400, "'" + param + "' must be a boolean", param);
        if (value.get<bool>()) return GrammarSpec{.kind = GrammarSpec::Kind::JsonObject};
        return std::nullopt;
    }
    return std::nullopt;
}

}  // namespace

std::string choice_regex(const std::vector<std::string>& options) {
    std::string regex;
    for (const std::string& option : options) {
        if (!regex.empty()) regex += '|';
        regex += '(';
        for (char c : option) {
            if (std::string_view("\\^$.|?*+()[]{}/").find(c) != std::string_view::npos)
                regex += '\\';
            regex += c;
        }
        regex += ')';
    }
    return regex;
}

std::optional<GrammarSpec> read_structured_output(const json& body) {
    std::optional<GrammarSpec> spec;
    std::string from;
    auto set = [&](std::optional<GrammarSpec> s, const std::string& param) {
        if (!s) return;
        if (spec)
            throw ApiError(400,
                           "'" + param + "' and '" + from +
                               "' both constrain the output: "
                               "send one of them",
                           param);
        spec = std::move(s);
        from = param;
    };
    if (const auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
        if (!(it->is_object() && it->value("type", "") == "text"))
            set(response_format(*it), "response_format");
    }
    for (const char* name : {"json", "regex", "choice", "grammar"}) {
        const std::string key = std::string("guided_") + name;
        if (const auto it = body.find(key); it != body.end() && !it->is_null())
            set(guided(name, *it, key), key);
    }
    if (const auto it = body.find("structured_outputs"); it != body.end() && !it->is_null()) {
        if (!it->is_object())
            throw ApiError(400, "'structured_outputs' must be an object", "structured_outputs");
        for (const auto& [key, value] : it->items()) {
            if (value.is_null()) continue;
            const std::string param = "structured_outputs." + key;
            if (key == "json" || key == "regex" || key == "choice" || key == "grammar" ||
                key == "json_object")
                set(guided(key, value, param), param);
            else if (key != "disable_any_whitespace" && key != "whitespace_pattern")
                throw ApiError(400, "'" + param + "' is not supported by this server", param);
        }
    }
    return spec;  // JSON in the compact form (GrammarSpec::any_whitespace false)
}

}  // namespace tandem::server
