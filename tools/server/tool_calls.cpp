#include "tools/server/tool_calls.h"

#include <algorithm>
#include <random>
#include <set>
#include <string_view>

#include "tools/server/api_error.h"

namespace tandem::server {

namespace {

using nlohmann::json;

constexpr std::string_view kHermesBegin = "<tool_call>", kHermesEnd = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kMistralBegin = "[TOOL_CALLS]", kMistralArgs = "[ARGS]";
constexpr std::string_view kDeepSeekBegin = "<｜tool▁calls▁begin｜>",
                           kDeepSeekEnd = "<｜tool▁calls▁end｜>",
                           kDeepSeekCall = "<｜tool▁call▁begin｜>",
                           kDeepSeekCallEnd = "<｜tool▁call▁end｜>",
                           kDeepSeekSep = "<｜tool▁sep｜>";
// GLM-4.5 opens its calls with Hermes' tag, but the body is key / value pairs, not JSON.
constexpr std::string_view kArgKey = "<arg_key>", kArgKeyEnd = "</arg_key>",
                           kArgValue = "<arg_value>", kArgValueEnd = "</arg_value>";

std::string_view trim(std::string_view s) {
    const size_t b = s.find_first_not_of(" \t\r\n");
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::string call_id() {
    thread_local std::mt19937_64 rng(std::random_device{}());
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id = "call_";
    for (int i = 0; i < 24; ++i)
        id += kHex[rng() & 15];
    return id;
}

// The end (one past the closing brace or bracket) of the JSON object or array at `begin`, or
// npos: brackets counted outside strings, escapes skipped.
size_t json_end(std::string_view text, size_t begin) {
    int depth = 0;
    bool in_string = false;
    for (size_t i = begin; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            ++depth;
        } else if (c == '}' || c == ']') {
            if (--depth == 0) return i + 1;
        }
    }
    return std::string_view::npos;
}

std::optional<json> parse(std::string_view text) {
    json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (v.is_discarded()) return std::nullopt;
    return v;
}

// {"name": ..., "<args_key>": {...} | "json text"} -> a call of a known function.
std::optional<ToolCall> call_from(const json& v, const std::set<std::string>& names) {
    if (!v.is_object() || !v.contains("name") || !v["name"].is_string()) return std::nullopt;
    const std::string name = v["name"];
    if (!names.contains(name)) return std::nullopt;
    json arguments = json::object();
    for (const char* key : {"arguments", "parameters"})
        if (v.contains(key)) arguments = v[key];
    if (arguments.is_string()) {
        auto parsed = parse(arguments.get<std::string>());
        if (!parsed) return std::nullopt;
        arguments = *parsed;
    }
    if (!arguments.is_object()) return std::nullopt;
    return ToolCall{.id = call_id(), .name = name, .arguments = arguments.dump()};
}

using Calls = std::optional<std::vector<ToolCall>>;

Calls hermes_calls(std::string_view text, const std::set<std::string>& names) {
    std::vector<ToolCall> calls;
    for (size_t at = text.find(kHermesBegin); at != std::string_view::npos;
         at = text.find(kHermesBegin, at)) {
        at += kHermesBegin.size();
        const size_t end = text.find(kHermesEnd, at);
        auto call = parse(trim(text.substr(at, end == std::string_view::npos ? end : end - at)));
        if (!call) return std::nullopt;
        auto parsed = call_from(*call, names);
        if (!parsed) return std::nullopt;
        calls.push_back(std::move(*parsed));
        if (end == std::string_view::npos) break;
        at = end + kHermesEnd.size();
    }
    return calls;
}

Calls llama3_calls(std::string_view text, const std::set<std::string>& names) {
    std::vector<ToolCall> calls;
    size_t at = 0;
    while (at < text.size()) {
        const size_t end = json_end(text, at);
        if (end == std::string_view::npos) return std::nullopt;
        auto value = parse(text.substr(at, end - at));
        auto call = value ? call_from(*value, names) : std::nullopt;
        if (!call) return std::nullopt;
        calls.push_back(std::move(*call));
        at = text.find_first_not_of(" \t\r\n;", end);
        if (at != std::string_view::npos && text[at] != '{') return std::nullopt;
    }
    return calls;
}

Calls mistral_calls(std::string_view text, const std::set<std::string>& names) {
    std::vector<ToolCall> calls;
    for (size_t at = 0; at < text.size();) {
        if (text.substr(at, kMistralBegin.size()) != kMistralBegin) return std::nullopt;
        at = text.find_first_not_of(" \t\r\n", at + kMistralBegin.size());
        if (at == std::string_view::npos) return std::nullopt;
        if (text[at] == '[') {  // [TOOL_CALLS][{...}, ...]
            const size_t end = json_end(text, at);
            auto list =
                end == std::string_view::npos ? std::nullopt : parse(text.substr(at, end - at));
            if (!list || !list->is_array()) return std::nullopt;
            for (const json& v : *list) {
                auto call = call_from(v, names);
                if (!call) return std::nullopt;
                calls.push_back(std::move(*call));
            }
            at = end;
        } else {  // [TOOL_CALLS]name[ARGS]{...}
            const size_t args = text.find(kMistralArgs, at);
            if (args == std::string_view::npos) return std::nullopt;
            const size_t begin = args + kMistralArgs.size();
            const size_t end = json_end(text, begin);
            auto arguments = end == std::string_view::npos ? std::nullopt
                                                           : parse(text.substr(begin, end - begin));
            if (!arguments) return std::nullopt;
            auto call = call_from(json{{"name", std::string(trim(text.substr(at, args - at)))},
                                       {"arguments", *arguments}},
                                  names);
            if (!call) return std::nullopt;
            calls.push_back(std::move(*call));
            at = end;
        }
        at = text.find_first_not_of(" \t\r\n", at);
        if (at == std::string_view::npos) break;
    }
    return calls;
}

Calls deepseek_calls(std::string_view text, const std::set<std::string>& names) {
    std::vector<ToolCall> calls;
    for (size_t at = text.find(kDeepSeekCall); at != std::string_view::npos;
         at = text.find(kDeepSeekCall, at)) {
        at += kDeepSeekCall.size();
        const size_t sep = text.find(kDeepSeekSep, at);
        if (sep == std::string_view::npos) return std::nullopt;
        const size_t name_begin = sep + kDeepSeekSep.size();
        const size_t newline = text.find('\n', name_begin);
        if (newline == std::string_view::npos) return std::nullopt;
        const std::string_view name = trim(text.substr(name_begin, newline - name_begin));
        size_t end = text.find(kDeepSeekCallEnd, newline);
        std::string_view body = trim(text.substr(
            newline, end == std::string_view::npos ? std::string_view::npos : end - newline));
        // ```json\n{...}\n```
        if (body.starts_with("```json")) body.remove_prefix(7);
        if (body.ends_with("```")) body.remove_suffix(3);
        auto arguments = parse(trim(body));
        if (!arguments) return std::nullopt;
        auto call = call_from(json{{"name", std::string(name)}, {"arguments", *arguments}}, names);
        if (!call) return std::nullopt;
        calls.push_back(std::move(*call));
        if (end == std::string_view::npos) break;
        at = end;
    }
    return calls;
}

// The declared JSON type of a function's parameter ("" when it declares none or several).
std::string parameter_type(const json& tools, std::string_view function, const std::string& key) {
    for (const json& tool : tools) {
        const json& f = tool.at("function");
        if (f.at("name") != function) continue;
        const json* p =
            f.contains("parameters") && f["parameters"].is_object() ? &f["parameters"] : nullptr;
        if (!p || !p->contains("properties") || !(*p)["properties"].is_object()) return "";
        const json& properties = (*p)["properties"];
        if (!properties.contains(key) || !properties[key].is_object()) return "";
        const json& type = properties[key].value("type", json());
        return type.is_string() ? type.get<std::string>() : "";
    }
    return "";
}

// As vLLM's glm45 parser: a parameter typed "string" keeps its text; any other value is JSON
// where it parses as JSON, else the text (a model may leave a string unquoted whatever the
// schema says). Keys and values are trimmed; a repeated key keeps its last value.
Calls glm45_calls(std::string_view text, const json& tools, const std::set<std::string>& names) {
    std::vector<ToolCall> calls;
    for (size_t at = text.find(kHermesBegin); at != std::string_view::npos;
         at = text.find(kHermesBegin, at)) {
        at += kHermesBegin.size();
        const size_t end = text.find(kHermesEnd, at);
        if (end == std::string_view::npos) return std::nullopt;  // cut off: not a call
        const std::string_view body = text.substr(at, end - at);
        // The name runs to the line's end, or to the first key of a model that left out the
        // newline (GLM-4.7 writes its calls so).
        const size_t name_end = std::min(body.find('\n'), body.find(kArgKey));
        const std::string name(trim(body.substr(0, name_end)));
        if (!names.contains(name)) return std::nullopt;
        json arguments = json::object();
        for (size_t p = name_end == std::string_view::npos ? body.size() : name_end;;) {
            p = body.find_first_not_of(" \t\r\n", p);
            if (p == std::string_view::npos) break;
            if (body.substr(p, kArgKey.size()) != kArgKey) return std::nullopt;
            const size_t key_end = body.find(kArgKeyEnd, p);
            if (key_end == std::string_view::npos) return std::nullopt;
            const std::string key(
                trim(body.substr(p + kArgKey.size(), key_end - p - kArgKey.size())));
            p = body.find_first_not_of(" \t\r\n", key_end + kArgKeyEnd.size());
            if (p == std::string_view::npos || body.substr(p, kArgValue.size()) != kArgValue)
                return std::nullopt;
            const size_t value_end = body.find(kArgValueEnd, p);
            if (key.empty() || value_end == std::string_view::npos) return std::nullopt;
            const std::string_view value =
                trim(body.substr(p + kArgValue.size(), value_end - p - kArgValue.size()));
            std::optional<json> parsed;
            if (parameter_type(tools, name, key) != "string") parsed = parse(value);
            arguments[key] = parsed ? *parsed : json(std::string(value));
            p = value_end + kArgValueEnd.size();
        }
        calls.push_back(ToolCall{.id = call_id(), .name = name, .arguments = arguments.dump()});
        at = end + kHermesEnd.size();
    }
    return calls;
}

// Where the calls start in a whole output, or npos.
size_t calls_start(ToolCallFormat format, std::string_view text) {
    switch (format) {
        case ToolCallFormat::Hermes:
        case ToolCallFormat::Glm45: return text.find(kHermesBegin);
        case ToolCallFormat::Mistral: return text.find(kMistralBegin);
        case ToolCallFormat::DeepSeekV3: return text.find(kDeepSeekBegin);
        case ToolCallFormat::Llama3Json: {
            // The whole output is the call: the python tag or a JSON object first.
            if (const size_t tag = text.find(kPythonTag); tag != std::string_view::npos) return tag;
            const size_t first = text.find_first_not_of(" \t\r\n");
            return first != std::string_view::npos && text[first] == '{' ? first
                                                                         : std::string_view::npos;
        }
    }
    return std::string_view::npos;
}

std::string_view start_marker(ToolCallFormat format) {
    switch (format) {
        case ToolCallFormat::Hermes:
        case ToolCallFormat::Glm45: return kHermesBegin;
        case ToolCallFormat::Mistral: return kMistralBegin;
        case ToolCallFormat::DeepSeekV3: return kDeepSeekBegin;
        case ToolCallFormat::Llama3Json: return kPythonTag;
    }
    return {};
}

json function_of(const json& tool) {
    return tool.at("function");
}

json parameters_of(const json& function) {
    const auto it = function.find("parameters");
    return it == function.end() || it->is_null() ? json{{"type", "object"}} : *it;
}

json named_call_schema(const std::string& name, const json& parameters, const char* args_key) {
    return {{"type", "object"},
            {"properties", {{"name", {{"const", name}}}, {args_key, parameters}}},
            {"required", {"name", args_key}},
            {"additionalProperties", false}};
}

// EBNF for GLM-4.5's calls (tool_call_grammar). Rule names are generated (f<i>, f<i>_<j>), as
// function and parameter names need not be identifiers; literals are JSON strings, which
// xgrammar's EBNF reads with JSON's escapes.
constexpr std::string_view kGlmCommonRules = R"(
raw ::= ([^<] | "<" [^/<])*
raw_char ::= [^<]
key ::= [^<]+
json_value ::= json_object | json_array | json_string | json_number | "true" | "false" | "null"
json_object ::= "{" (json_string ": " json_value (", " json_string ": " json_value)*)? "}"
json_array ::= "[" (json_value (", " json_value)*)? "]"
json_string ::= "\"" ([^"\\\r\n\t] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}))* "\""
json_integer ::= "-"? ("0" | [1-9] [0-9]*)
json_number ::= json_integer ("." [0-9]+)? ([eE] [+-]? [0-9]+)?
)";

std::string ebnf_literal(const std::string& text) {
    return json(text).dump();
}

// The grammar of one value of `schema`, as GLM writes it: strings raw, the rest JSON.
std::string glm_value_rule(const json& schema) {
    if (!schema.is_object()) return "json_value";
    auto literal = [](const json& v) {
        return ebnf_literal(v.is_string() ? v.get<std::string>() : v.dump());
    };
    if (schema.contains("const")) return literal(schema["const"]);
    if (schema.contains("enum") && schema["enum"].is_array() && !schema["enum"].empty()) {
        std::string out = "(";
        for (const json& v : schema["enum"])
            out += (out.size() > 1 ? " | " : "") + literal(v);
        return out + ")";
    }
    const json type = schema.value("type", json());
    if (type == "string") {
        // Lengths count characters only without "<": a bounded string is written without it.
        const json min = schema.value("minLength", json(0)),
                   max = schema.value("maxLength", json());
        auto count = [](const json& v) { return v.is_number_integer() && v >= 0; };
        if (!count(min) || !(max.is_null() || count(max)) || (min == 0 && max.is_null()))
            return "raw";
        return "raw_char{" + min.dump() + "," + (max.is_null() ? "" : max.dump()) + "}";
    }
    if (type == "integer") {
        // A small range is listed value by value: exact, and cheap for xgrammar.
        if (schema.contains("minimum") && schema.contains("maximum") &&
            schema["minimum"].is_number_integer() && schema["maximum"].is_number_integer()) {
            const int64_t lo = schema["minimum"], hi = schema["maximum"];
            // The difference taken unsigned: no overflow for any pair of int64 bounds.
            if (lo <= hi && uint64_t(hi) - uint64_t(lo) < 1024) {
                std::string out = "(";
                for (int64_t v = lo; v <= hi; ++v)
                    out += (v > lo ? " | " : "") + ebnf_literal(std::to_string(v));
                return out + ")";
            }
        }
        return "json_integer";
    }
    if (type == "number") return "json_number";
    if (type == "boolean") return "(\"true\" | \"false\")";
    if (type == "null") return "\"null\"";
    return "json_value";
}

// One <arg_key>/<arg_value> pair of the call (each pair ends its line, as GLM writes it).
std::string glm_pair(const std::string& key, const std::string& value_rule) {
    return ebnf_literal(std::string(kArgKey) + key + std::string(kArgKeyEnd) + "\n" +
                        std::string(kArgValue)) +
           " " + value_rule + " " + ebnf_literal(std::string(kArgValueEnd) + "\n");
}

// The rules of a call of `name` with `parameters`, as rule `rule`: the declared properties in
// their order, the required ones always, the others optionally; a schema without properties
// takes any pairs of raw text unless additionalProperties is false.
std::string glm_call_rules(const std::string& rule, const std::string& name,
                           const json& parameters) {
    std::string pairs;
    std::string extra_rules;
    const json properties = parameters.value("properties", json::object());
    if (properties.is_object() && !properties.empty()) {
        const json required = parameters.value("required", json::array());
        int j = 0;
        for (const auto& [key, schema] : properties.items()) {
            const std::string value = rule + "_" + std::to_string(j++);
            extra_rules += value + " ::= " + glm_value_rule(schema) + "\n";
            const bool needed = required.is_array() &&
                                std::find(required.begin(), required.end(), key) != required.end();
            pairs += " " + (needed ? glm_pair(key, value) : "(" + glm_pair(key, value) + ")?");
        }
    } else if (parameters.value("additionalProperties", json(true)) != false) {
        pairs = " (" + ebnf_literal(std::string(kArgKey)) + " key " +
                ebnf_literal(std::string(kArgKeyEnd) + "\n" + std::string(kArgValue)) + " raw " +
                ebnf_literal(std::string(kArgValueEnd) + "\n") + ")*";
    }
    return rule + " ::= " + ebnf_literal(std::string(kHermesBegin) + name + "\n") + pairs + " " +
           ebnf_literal(std::string(kHermesEnd)) + "\n" + extra_rules;
}

}  // namespace

std::optional<ToolCallFormat> tool_call_format_by_name(const std::string& name) {
    for (ToolCallFormat f :
         {ToolCallFormat::Hermes, ToolCallFormat::Llama3Json, ToolCallFormat::Mistral,
          ToolCallFormat::DeepSeekV3, ToolCallFormat::Glm45})
        if (name == tool_call_format_name(f)) return f;
    return std::nullopt;
}

const char* tool_call_format_name(ToolCallFormat format) {
    switch (format) {
        case ToolCallFormat::Hermes: return "hermes";
        case ToolCallFormat::Llama3Json: return "llama3_json";
        case ToolCallFormat::Mistral: return "mistral";
        case ToolCallFormat::DeepSeekV3: return "deepseek_v3";
        case ToolCallFormat::Glm45: return "glm45";
    }
    return "?";
}

ToolCallFormat detect_tool_call_format(const std::string& t) {
    // Before Hermes: GLM's template writes <tool_call> too.
    if (t.find(kArgKey) != std::string::npos) return ToolCallFormat::Glm45;
    if (t.find(kHermesBegin) != std::string::npos) return ToolCallFormat::Hermes;
    if (t.find(kMistralBegin) != std::string::npos) return ToolCallFormat::Mistral;
    if (t.find("tool▁calls▁begin") != std::string::npos) return ToolCallFormat::DeepSeekV3;
    if (t.find(kPythonTag) != std::string::npos || t.find("ipython") != std::string::npos)
        return ToolCallFormat::Llama3Json;
    return ToolCallFormat::Hermes;
}

std::optional<ToolRequest> read_tool_request(const json& body) {
    const auto tools = body.find("tools");
    const auto choice = body.find("tool_choice");
    const bool has_choice = choice != body.end() && !choice->is_null();
    if (tools == body.end() || tools->is_null() || (tools->is_array() && tools->empty())) {
        if (has_choice && *choice != "none")
            throw ApiError(400, "'tool_choice' needs 'tools'", "tool_choice");
        return std::nullopt;
    }
    if (!tools->is_array()) throw ApiError(400, "'tools' must be a list of tools", "tools");
    ToolRequest r;
    std::set<std::string> names;
    for (size_t i = 0; i < tools->size(); ++i) {
        const json& tool = (*tools)[i];
        const std::string param = "tools[" + std::to_string(i) + "]";
        if (!tool.is_object() || tool.value("type", "") != "function" ||
            !tool.contains("function") || !tool["function"].is_object())
            throw ApiError(400,
                           "'" + param + "' must be {\"type\": \"function\", \"function\": {...}}",
                           param);
        const json& f = tool["function"];
        if (!f.contains("name") || !f["name"].is_string() || f["name"].get<std::string>().empty())
            throw ApiError(400, "'" + param + ".function.name' must be a non-empty string",
                           param + ".function.name");
        if (f.contains("parameters") && !f["parameters"].is_null() && !f["parameters"].is_object())
            throw ApiError(400, "'" + param + ".function.parameters' must be a JSON schema",
                           param + ".function.parameters");
        if (!names.insert(f["name"].get<std::string>()).second)
            throw ApiError(
                400, "'" + param + "': the function name " + f["name"].dump() + " appears twice",
                param);
    }
    r.tools = *tools;
    if (has_choice) {
        if (*choice == "none")
            r.choice = ToolRequest::Choice::None;
        else if (*choice == "auto")
            r.choice = ToolRequest::Choice::Auto;
        else if (*choice == "required")
            r.choice = ToolRequest::Choice::Required;
        else if (choice->is_object() && choice->value("type", "") == "function" &&
                 choice->contains("function") && (*choice)["function"].is_object() &&
                 (*choice)["function"].contains("name") &&
                 (*choice)["function"]["name"].is_string()) {
            r.choice = ToolRequest::Choice::Named;
            r.named = (*choice)["function"]["name"];
            if (!names.contains(r.named))
                throw ApiError(
                    400,
                    "'tool_choice' names the function \"" + r.named + "\", which is not in 'tools'",
                    "tool_choice");
        } else {
            throw ApiError(400,
                           "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}",
                           "tool_choice");
        }
    }
    if (const auto p = body.find("parallel_tool_calls"); p != body.end() && !p->is_null()) {
        if (!p->is_boolean())
            throw ApiError(400, "'parallel_tool_calls' must be a boolean", "parallel_tool_calls");
        r.parallel = p->get<bool>();
    }
    return r;
}

GrammarSpec tool_call_grammar(ToolCallFormat format, const ToolRequest& request) {
    const bool one = !request.parallel || request.choice == ToolRequest::Choice::Named;
    if (format == ToolCallFormat::Glm45) {
        // The values are not one JSON document, so the JSON-schema alternatives of
        // Kind::ToolCalls do not fit: the whole grammar is EBNF. Calls are joined by "\n", up
        // to 8 as in the other formats.
        std::string rules, call = "call ::=";
        int i = 0;
        for (const json& tool : request.tools) {
            const json f = function_of(tool);
            const std::string name = f["name"];
            if (request.choice == ToolRequest::Choice::Named && name != request.named) continue;
            const std::string rule = "f" + std::to_string(i++);
            rules += glm_call_rules(rule, name, parameters_of(f));
            call += (i > 1 ? " | " : " ") + rule;
        }
        const std::string root = one ? "root ::= call\n" : "root ::= call (\"\\n\" call){0,7}\n";
        return {.kind = GrammarSpec::Kind::Ebnf,
                .text = root + call + "\n" + rules + std::string(kGlmCommonRules)};
    }
    json alternatives = json::array();
    for (const json& tool : request.tools) {
        const json f = function_of(tool);
        const std::string name = f["name"];
        if (request.choice == ToolRequest::Choice::Named && name != request.named) continue;
        const json parameters = parameters_of(f);
        switch (format) {
            case ToolCallFormat::Hermes:
                alternatives.push_back(
                    {{"begin", std::string(kHermesBegin) + "\n"},
                     {"schema", named_call_schema(name, parameters, "arguments")},
                     {"end", std::string("\n").append(kHermesEnd)}});
                break;
            case ToolCallFormat::Llama3Json:
                alternatives.push_back(
                    {{"schema", named_call_schema(name, parameters, "parameters")}});
                break;
            case ToolCallFormat::Mistral:
                alternatives.push_back(
                    {{"schema", named_call_schema(name, parameters, "arguments")}});
                break;
            case ToolCallFormat::Glm45: break;  // above
            case ToolCallFormat::DeepSeekV3: {
                std::string begin(kDeepSeekCall);
                begin.append("function").append(kDeepSeekSep).append(name).append("\n```json\n");
                std::string end("\n```");
                end.append(kDeepSeekCallEnd);
                alternatives.push_back({{"begin", begin}, {"schema", parameters}, {"end", end}});
                break;
            }
        }
    }
    json spec = {{"alternatives", alternatives}, {"max_calls", one ? 1 : 8}};
    switch (format) {
        case ToolCallFormat::Hermes: spec["separator"] = "\n"; break;
        case ToolCallFormat::Llama3Json: spec["separator"] = "; "; break;
        case ToolCallFormat::Mistral:
            spec["prefix"] = std::string(kMistralBegin) + "[";
            spec["separator"] = ", ";
            spec["suffix"] = "]";
            break;
        case ToolCallFormat::DeepSeekV3:
            spec["prefix"] = std::string(kDeepSeekBegin);
            spec["suffix"] = std::string(kDeepSeekEnd);
            break;
        case ToolCallFormat::Glm45: break;  // above
    }
    return {.kind = GrammarSpec::Kind::ToolCalls, .text = spec.dump()};
}

ParsedOutput parse_tool_calls(ToolCallFormat format, const std::string& text,
                              const ToolRequest& request) {
    const size_t start = calls_start(format, text);
    if (start == std::string::npos) return {.content = text};
    std::set<std::string> names;
    for (const json& tool : request.tools)
        names.insert(function_of(tool)["name"]);
    std::string_view calls_text = std::string_view(text).substr(start);
    Calls calls;
    switch (format) {
        case ToolCallFormat::Hermes: calls = hermes_calls(calls_text, names); break;
        case ToolCallFormat::Mistral: calls = mistral_calls(calls_text, names); break;
        case ToolCallFormat::DeepSeekV3: calls = deepseek_calls(calls_text, names); break;
        case ToolCallFormat::Glm45: calls = glm45_calls(calls_text, request.tools, names); break;
        case ToolCallFormat::Llama3Json:
            if (calls_text.starts_with(kPythonTag)) calls_text.remove_prefix(kPythonTag.size());
            calls = llama3_calls(trim(calls_text), names);
            break;
    }
    if (!calls || calls->empty()) return {.content = text};
    if (!request.parallel) calls->resize(1);
    return {.content = std::string(trim(std::string_view(text).substr(0, start))),
            .calls = std::move(*calls)};
}

ToolCallStream::ToolCallStream(ToolCallFormat format, const ToolRequest* request)
    : format_(format), request_(request) {}

std::string ToolCallStream::push(const std::string& text) {
    text_ += text;
    size_t safe = calls_start(format_, text_);
    if (safe == std::string::npos) {
        safe = text_.size();
        // Hold back an end that may grow into the start marker.
        const std::string_view marker = start_marker(format_);
        for (size_t len = std::min(marker.size() - 1, text_.size()); len > 0; --len)
            if (text_.compare(text_.size() - len, len, marker, 0, len) == 0) {
                safe = text_.size() - len;
                break;
            }
    }
    // White space may precede a call, which the content leaves out: it waits for what follows.
    while (safe > streamed_ &&
           std::string_view(" \t\r\n").find(text_[safe - 1]) != std::string_view::npos)
        --safe;
    if (safe <= streamed_) return "";
    std::string out = text_.substr(streamed_, safe - streamed_);
    streamed_ = safe;
    return out;
}

ParsedOutput ToolCallStream::finish() {
    ParsedOutput parsed = parse_tool_calls(format_, text_, *request_);
    const size_t end = parsed.calls.empty() ? text_.size() : calls_start(format_, text_);
    // The content not streamed yet: up to the calls, without the white space before them.
    std::string_view rest = std::string_view(text_).substr(0, end);
    if (!parsed.calls.empty()) rest = rest.substr(0, rest.find_last_not_of(" \t\r\n") + 1);
    parsed.content = streamed_ < rest.size() ? std::string(rest.substr(streamed_)) : "";
    streamed_ = text_.size();
    return parsed;
}

std::string ToolCallStream::flush() {
    std::string rest = text_.substr(std::min(streamed_, text_.size()));
    streamed_ = text_.size();
    return rest;
}

json tool_call_json(const ToolCall& call, int64_t index) {
    json out = {{"id", call.id},
                {"type", "function"},
                {"function", {{"name", call.name}, {"arguments", call.arguments}}}};
    if (index >= 0) out["index"] = index;
    return out;
}

}  // namespace tandem::server
