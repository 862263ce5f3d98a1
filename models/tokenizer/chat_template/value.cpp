// Value: Python semantics for the parts templates can observe.
#include "models/tokenizer/chat_template/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "kernels/error.h"

namespace tandem::jinja {

namespace {

// Lists and dicts are shared references, so a template can build one that contains itself
// (`{% set x = [] %}{{ x.append(x) }}`); the recursive walks below (repr, tojson, ==) would then
// recurse until the stack overflows. A depth limit turns that into a template error (found by
// fuzzing). Real templates nest a handful of levels.
constexpr int kMaxNesting = 200;
thread_local int g_nesting = 0;

struct NestingGuard {
    NestingGuard() {
        if (++g_nesting > kMaxNesting) {
            g_nesting = 0;  // the exception unwinds every guard; start the next call clean
            fail("value nested more than ", kMaxNesting,
                 " levels deep (does a list or dict contain itself?)");
        }
    }
    ~NestingGuard() {
        if (g_nesting > 0) --g_nesting;
    }
    NestingGuard(const NestingGuard&) = delete;
    NestingGuard& operator=(const NestingGuard&) = delete;
};

}  // namespace

Value Value::none() {
    Value v;
    v.kind_ = Kind::None;
    return v;
}
Value::Value(bool b) : kind_(Kind::Bool), b_(b) {}
Value::Value(int64_t i) : kind_(Kind::Int), i_(i) {}
Value::Value(double f) : kind_(Kind::Float), f_(f) {}
Value::Value(std::string s)
    : kind_(Kind::String), s_(std::make_shared<const std::string>(std::move(s))) {}
Value::Value(List list)
    : kind_(Kind::Array), list_(std::make_shared<const List>(std::move(list))) {}
Value::Value(Dict dict, bool is_namespace)
    : kind_(is_namespace ? Kind::Namespace : Kind::Map),
      dict_(std::make_shared<Dict>(std::move(dict))) {}
Value::Value(Function fn)
    : kind_(Kind::Callable), fn_(std::make_shared<const Function>(std::move(fn))) {}

Value Value::from_json(const nlohmann::ordered_json& json) {
    const NestingGuard guard;
    switch (json.type()) {
        case nlohmann::ordered_json::value_t::null: return none();
        case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
        case nlohmann::ordered_json::value_t::number_integer:
        case nlohmann::ordered_json::value_t::number_unsigned: return Value(json.get<int64_t>());
        case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
        case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
        case nlohmann::ordered_json::value_t::array: {
            List list;
            for (const auto& item : json)
                list.push_back(from_json(item));
            return Value(std::move(list));
        }
        case nlohmann::ordered_json::value_t::object: {
            Dict dict;
            for (const auto& [k, v] : json.items())
                dict.emplace_back(k, from_json(v));
            return Value(std::move(dict));
        }
        default: fail("unsupported JSON value in the template context");
    }
}

Value Value::get(const std::string& key) const {
    if (!is_mapping()) return Value();
    for (const auto& [k, v] : *dict_)
        if (k == key) return v;
    return Value();
}

namespace {

// Whether `v` is or contains (through lists and dicts) the dict `target`.
bool refers_to(const Value& v, const Dict* target) {
    const NestingGuard guard;
    if ((v.kind() == Value::Kind::Map || v.kind() == Value::Kind::Namespace) &&
        &v.as_dict() == target)
        return true;
    if (v.is_list()) {
        for (const Value& item : v.as_list())
            if (refers_to(item, target)) return true;
    } else if (v.kind() == Value::Kind::Map || v.kind() == Value::Kind::Namespace) {
        for (const auto& [key, item] : v.as_dict())
            if (refers_to(item, target)) return true;
    }
    return false;
}

}  // namespace

void Value::set(const std::string& key, Value v) const {
    // Values share their lists and dicts: storing a namespace (or something holding it) into
    // itself would make a reference cycle that is never freed and never ends when printed.
    if (refers_to(v, dict_.get()))
        fail("cannot store '", key, "': the value contains the namespace itself");
    for (auto& [k, old] : *dict_)
        if (k == key) {
            old = std::move(v);
            return;
        }
    dict_->emplace_back(key, std::move(v));
}

bool Value::truthy() const {
    switch (kind_) {
        case Kind::Undefined:
        case Kind::None: return false;
        case Kind::Bool: return b_;
        case Kind::Int: return i_ != 0;
        case Kind::Float: return f_ != 0;
        case Kind::String: return !s_->empty();
        case Kind::Array: return !list_->empty();
        case Kind::Map: return !dict_->empty();
        default: return true;
    }
}

std::string python_float(double f) {
    if (std::isnan(f)) return "nan";
    if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
    std::string sci(buf, res.ptr);  // e.g. "-1.2345e+02"
    const size_t e = sci.find('e');
    const int exponent = std::stoi(sci.substr(e + 1));
    std::string mantissa = sci.substr(0, e);
    std::string sign;
    if (mantissa[0] == '-') sign = "-", mantissa.erase(0, 1);
    std::string digits;
    for (const char c : mantissa)
        if (c != '.') digits += c;
    if (exponent >= -4 && exponent < 16) {
        std::string out;
        if (exponent < 0) {
            out = "0." + std::string(size_t(-exponent - 1), '0') + digits;
        } else if (size_t(exponent) + 1 >= digits.size()) {
            out = digits + std::string(size_t(exponent) + 1 - digits.size(), '0') + ".0";
        } else {
            out =
                digits.substr(0, size_t(exponent) + 1) + "." + digits.substr(size_t(exponent) + 1);
        }
        return sign + out;
    }
    std::string out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    std::snprintf(buf, sizeof buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return sign + out + buf;
}

namespace {

std::string python_quote(const std::string& s) {
    // repr() of a str: single quotes unless the text has ' and no ".
    const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
    const char q = use_double ? '"' : '\'';
    std::string out(1, q);
    for (const char c : s) {
        if (c == q || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if ((unsigned char)c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", (unsigned char)c);
            out += buf;
        } else {
            out += c;
        }
    }
    return out + q;
}

std::string json_quote(const std::string& s) {
    std::string out = "\"";
    for (const char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default:
                if ((unsigned char)c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", (unsigned char)c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out + "\"";
}

}  // namespace

std::string Value::str() const {
    switch (kind_) {
        case Kind::Undefined: return "";
        case Kind::String: return *s_;
        default: return repr();
    }
}

std::string Value::repr() const {
    const NestingGuard guard;
    switch (kind_) {
        case Kind::Undefined: return "";
        case Kind::None: return "None";
        case Kind::Bool: return b_ ? "True" : "False";
        case Kind::Int: return std::to_string(i_);
        case Kind::Float: return python_float(f_);
        case Kind::String: return python_quote(*s_);
        case Kind::Array: {
            std::string out = "[";
            for (size_t k = 0; k < list_->size(); ++k)
                out += (k ? ", " : "") + (*list_)[k].repr();
            return out + "]";
        }
        case Kind::Map:
        case Kind::Namespace: {
            std::string out = kind_ == Kind::Namespace ? "<Namespace {" : "{";
            for (size_t k = 0; k < dict_->size(); ++k)
                out += (k ? ", " : "") + python_quote((*dict_)[k].first) + ": " +
                       (*dict_)[k].second.repr();
            return out + (kind_ == Kind::Namespace ? "}>" : "}");
        }
        case Kind::Callable: return "<function>";
    }
    return "";
}

std::string Value::to_json(int indent, int depth) const {
    const NestingGuard guard;
    const std::string newline =
        indent >= 0 ? "\n" + std::string(size_t(indent) * size_t(depth + 1), ' ') : "";
    const std::string close =
        indent >= 0 ? "\n" + std::string(size_t(indent) * size_t(depth), ' ') : "";
    const std::string item_sep = indent >= 0 ? "," : ", ";
    switch (kind_) {
        case Kind::Undefined:
        case Kind::None: return "null";
        case Kind::Bool: return b_ ? "true" : "false";
        case Kind::Int: return std::to_string(i_);
        case Kind::Float:
            return std::isnan(f_)   ? "NaN"
                   : std::isinf(f_) ? (f_ > 0 ? "Infinity" : "-Infinity")
                                    : python_float(f_);
        case Kind::String: return json_quote(*s_);
        case Kind::Array: {
            if (list_->empty()) return "[]";
            std::string out = "[";
            for (size_t k = 0; k < list_->size(); ++k)
                out += (k ? item_sep : "") + newline + (*list_)[k].to_json(indent, depth + 1);
            return out + close + "]";
        }
        case Kind::Map:
        case Kind::Namespace: {
            if (dict_->empty()) return "{}";
            std::string out = "{";
            for (size_t k = 0; k < dict_->size(); ++k)
                out += (k ? item_sep : "") + newline + json_quote((*dict_)[k].first) + ": " +
                       (*dict_)[k].second.to_json(indent, depth + 1);
            return out + close + "}";
        }
        case Kind::Callable: fail("tojson: a function is not JSON serializable");
    }
    return "";
}

const char* Value::type_name() const {
    switch (kind_) {
        case Kind::Undefined: return "undefined";
        case Kind::None: return "none";
        case Kind::Bool: return "bool";
        case Kind::Int: return "int";
        case Kind::Float: return "float";
        case Kind::String: return "string";
        case Kind::Array: return "list";
        case Kind::Map: return "dict";
        case Kind::Namespace: return "namespace";
        case Kind::Callable: return "function";
    }
    return "?";
}

bool equal(const Value& a, const Value& b) {
    const NestingGuard guard;
    using K = Value::Kind;
    if (a.is_number() && b.is_number()) {
        if (a.kind() == K::Int && b.kind() == K::Int) return a.as_int() == b.as_int();
        return a.as_float() == b.as_float();
    }
    if (a.kind() == K::Bool && b.is_number()) return double(a.as_bool()) == b.as_float();
    if (b.kind() == K::Bool && a.is_number()) return double(b.as_bool()) == a.as_float();
    if (a.kind() != b.kind()) return false;
    switch (a.kind()) {
        case K::Undefined:
        case K::None: return true;
        case K::Bool: return a.as_bool() == b.as_bool();
        case K::String: return a.as_string() == b.as_string();
        case K::Array: {
            if (a.as_list().size() != b.as_list().size()) return false;
            for (size_t k = 0; k < a.as_list().size(); ++k)
                if (!equal(a.as_list()[k], b.as_list()[k])) return false;
            return true;
        }
        case K::Map:
        case K::Namespace: {
            if (a.as_dict().size() != b.as_dict().size()) return false;
            for (const auto& [k, v] : a.as_dict())
                if (!equal(v, b.get(k)) || b.get(k).is_undefined()) return false;
            return true;
        }
        default: return false;
    }
}

}  // namespace tandem::jinja
