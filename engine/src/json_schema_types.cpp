#include "engine/src/json_schema_types.h"

#include <array>
#include <string_view>

namespace tandem {

namespace {

using nlohmann::json;

struct TypedKeywords {
    std::string_view type;
    std::array<std::string_view, 8> keywords;
};

// The keywords that apply to one instance type only (draft 2020-12 validation vocabulary).
constexpr TypedKeywords kTypedKeywords[] = {
    {"number", {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}},
    {"string", {"minLength", "maxLength", "pattern", "format"}},
    {"array", {"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"}},
    {"object",
     {"properties", "required", "additionalProperties", "patternProperties", "minProperties",
      "maxProperties", "propertyNames"}},
};

void infer_types(json& schema);

void each_in_map(json& schema, const char* key) {
    if (auto it = schema.find(key); it != schema.end() && it->is_object())
        for (auto& [name, sub] : it->items())
            infer_types(sub);
}

void each_in_list(json& schema, const char* key) {
    if (auto it = schema.find(key); it != schema.end() && it->is_array())
        for (json& sub : *it)
            infer_types(sub);
}

void one(json& schema, const char* key) {
    if (auto it = schema.find(key); it != schema.end()) infer_types(*it);
}

void infer_types(json& schema) {
    if (!schema.is_object()) return;  // true / false schemas, or not a schema at all
    for (const char* key : {"properties", "patternProperties", "$defs", "definitions"})
        each_in_map(schema, key);
    for (const char* key : {"prefixItems", "anyOf", "oneOf", "allOf"})
        each_in_list(schema, key);
    for (const char* key : {"additionalProperties", "contains", "propertyNames"})
        one(schema, key);
    if (auto it = schema.find("items"); it != schema.end()) {
        if (it->is_array())
            each_in_list(schema, "items");
        else
            infer_types(*it);
    }
    for (const char* key : {"type", "$ref", "const", "enum"})
        if (schema.contains(key)) return;
    json types = json::array();
    for (const TypedKeywords& typed : kTypedKeywords)
        for (std::string_view keyword : typed.keywords)
            if (!keyword.empty() && schema.contains(keyword)) {
                types.push_back(typed.type);
                break;
            }
    if (types.empty()) return;
    schema["type"] = types.size() == 1 ? types[0] : types;
}

}  // namespace

void infer_schema_types(json& schema) {
    infer_types(schema);
}

}  // namespace tandem
