// A JSON schema with the type of every untyped subschema made explicit from its keywords, before
// xgrammar compiles it. In JSON Schema a keyword constrains only instances of its own type:
// {"maximum": 300} accepts any string, object or number up to 300. xgrammar 0.2.9 generates
// such a subschema as "any JSON value" and drops the keyword, so a number above 300 could come
// out. Naming the type the keywords speak of ({"type": "number", "maximum": 300}) keeps the
// keyword; it narrows what may be generated, never what the schema accepts, so every output
// still validates. Subschemas with a type, $ref, const, enum or no type-specific keyword are
// left alone.
#pragma once

#include <nlohmann/json.hpp>

namespace tandem {

// Rewrites `schema` in place, recursing into every subschema position of draft 2020-12 (and
// draft 7's definitions and array-form items).
void infer_schema_types(nlohmann::json& schema);

}  // namespace tandem
