// infer_schema_types: untyped subschemas get the type their keywords constrain, everywhere a
// subschema may sit; typed, referenced, const and enum subschemas are left as they are.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/src/json_schema_types.h"

namespace tandem {
namespace {

using nlohmann::json;

json inferred(const char* text) {
    json schema = json::parse(text);
    infer_schema_types(schema);
    return schema;
}

TEST(JsonSchemaTypes, KeywordsNameTheirType) {
    EXPECT_EQ(inferred(R"({"maximum": 300})"),
              json::parse(R"({"maximum": 300, "type": "number"})"));
    EXPECT_EQ(inferred(R"({"maxLength": 3})")["type"], "string");
    EXPECT_EQ(inferred(R"({"minItems": 1})")["type"], "array");
    EXPECT_EQ(inferred(R"({"required": ["a"]})")["type"], "object");
    // Keywords of two types: either.
    EXPECT_EQ(inferred(R"({"maxLength": 3, "minimum": 1})")["type"],
              json::parse(R"(["number", "string"])"));
}

TEST(JsonSchemaTypes, LeavesWhatSaysItsOwnType) {
    for (const char* text :
         {R"({"type": "integer", "maxLength": 2})", R"({"$ref": "#/$defs/a", "maximum": 1})",
          R"({"const": 3, "maximum": 4})", R"({"enum": [1, 2], "minimum": 0})", R"({})",
          R"({"description": "anything"})", "true"})
        EXPECT_EQ(inferred(text), json::parse(text)) << text;
}

TEST(JsonSchemaTypes, RecursesIntoEverySubschemaPosition) {
    const json out = inferred(R"({
        "properties": {"a": {"maximum": 1}},
        "patternProperties": {"^x": {"minLength": 1}},
        "additionalProperties": {"minItems": 1},
        "$defs": {"d": {"maximum": 2}},
        "definitions": {"e": {"maxItems": 2}},
        "prefixItems": [{"minimum": 0}],
        "items": {"maxLength": 4},
        "anyOf": [{"maximum": 5}], "oneOf": [{"maxLength": 5}], "allOf": [{"minItems": 5}],
        "contains": {"minimum": 6}, "propertyNames": {"maxLength": 7}
    })");
    EXPECT_EQ(out["type"], json::parse(R"(["array", "object"])"));
    EXPECT_EQ(out["properties"]["a"]["type"], "number");
    EXPECT_EQ(out["patternProperties"]["^x"]["type"], "string");
    EXPECT_EQ(out["additionalProperties"]["type"], "array");
    EXPECT_EQ(out["$defs"]["d"]["type"], "number");
    EXPECT_EQ(out["definitions"]["e"]["type"], "array");
    EXPECT_EQ(out["prefixItems"][0]["type"], "number");
    EXPECT_EQ(out["items"]["type"], "string");
    EXPECT_EQ(out["anyOf"][0]["type"], "number");
    EXPECT_EQ(out["oneOf"][0]["type"], "string");
    EXPECT_EQ(out["allOf"][0]["type"], "array");
    EXPECT_EQ(out["contains"]["type"], "number");
    EXPECT_EQ(out["propertyNames"]["type"], "string");
    // Draft 7's array-form items.
    EXPECT_EQ(inferred(R"({"items": [{"maximum": 1}]})")["items"][0]["type"], "number");
}

}  // namespace
}  // namespace tandem
