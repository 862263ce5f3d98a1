// The builtins that chat templates use, with the semantics of Jinja2 and Python (and of
// transformers for tojson, raise_exception and strftime_now).
#include "models/tokenizer/chat_template/builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>

#include "kernels/error.h"
#include "models/tokenizer/utf8.h"

namespace tandem::jinja {

namespace {

bool is_py_space(char32_t c) {
    return (c >= 0x9 && c <= 0xD) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

std::vector<char32_t> code_points(const std::string& s) {
    std::vector<char32_t> out;
    size_t i = 0;
    while (i < s.size())
        out.push_back(utf8::next_code_point(s, i));
    return out;
}

std::string from_code_points(const std::vector<char32_t>& cps, size_t b, size_t e) {
    std::string out;
    for (size_t k = b; k < e; ++k)
        utf8::append_code_point(out, cps[k]);
    return out;
}

// By value: a reference to the default argument would dangle.
Value arg(Args& args, size_t index, const char* name, const Value& fallback = Value()) {
    for (const auto& [n, v] : args.named)
        if (n == name) return v;
    if (index < args.positional.size()) return args.positional[index];
    return fallback;
}

const std::string& need_string(const Value& v, const char* what) {
    if (!v.is_string()) fail(what, ": expected a string, got ", v.type_name());
    return v.as_string();
}

std::string ascii_case(std::string s, bool upper) {
    for (char& c : s)
        c = char(upper ? std::toupper((unsigned char)c) : std::tolower((unsigned char)c));
    return s;
}

Value length(const Value& v) {
    if (v.is_string()) return Value(int64_t(code_points(v.as_string()).size()));
    if (v.is_list()) return Value(int64_t(v.as_list().size()));
    if (v.is_mapping()) return Value(int64_t(v.as_dict().size()));
    if (v.is_undefined()) return Value(int64_t(0));
    fail("length: ", v.type_name(), " has no length");
}

std::vector<std::string> python_split(const std::string& s, const Value& sep, int64_t maxsplit) {
    std::vector<std::string> out;
    if (sep.is_undefined() || sep.is_none()) {
        const auto cps = code_points(s);
        size_t k = 0;
        while (k < cps.size()) {
            while (k < cps.size() && is_py_space(cps[k]))
                ++k;
            if (k >= cps.size()) break;
            size_t e = k;
            if (maxsplit >= 0 && int64_t(out.size()) == maxsplit) {
                e = cps.size();
                while (e > k && is_py_space(cps[e - 1]))
                    --e;
            } else {
                while (e < cps.size() && !is_py_space(cps[e]))
                    ++e;
            }
            out.push_back(from_code_points(cps, k, e));
            k = e;
        }
        return out;
    }
    const std::string& d = need_string(sep, "split");
    if (d.empty()) fail("split: empty separator");
    size_t pos = 0;
    while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
        const size_t hit = s.find(d, pos);
        if (hit == std::string::npos) break;
        out.push_back(s.substr(pos, hit - pos));
        pos = hit + d.size();
    }
    out.push_back(s.substr(pos));
    return out;
}

Value string_list(const std::vector<std::string>& parts) {
    List list;
    for (const auto& p : parts)
        list.emplace_back(p);
    return Value(std::move(list));
}

Value attribute_of(const Value& v, const std::string& path) {
    Value cur = v;
    size_t pos = 0;
    while (pos <= path.size()) {
        const size_t dot = path.find('.', pos);
        const std::string key =
            path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
        cur = cur.get(key);
        if (dot == std::string::npos) break;
        pos = dot + 1;
    }
    return cur;
}

}  // namespace

std::string python_strip(const std::string& s, const std::string& chars, bool left, bool right) {
    const auto cps = code_points(s);
    const auto strip_set = code_points(chars);
    auto strip = [&](char32_t c) {
        return chars.empty() ? is_py_space(c)
                             : std::find(strip_set.begin(), strip_set.end(), c) != strip_set.end();
    };
    size_t b = 0, e = cps.size();
    if (left)
        while (b < e && strip(cps[b]))
            ++b;
    if (right)
        while (e > b && strip(cps[e - 1]))
            --e;
    return from_code_points(cps, b, e);
}

List iterate(const Value& v) {
    if (v.is_list()) return v.as_list();
    if (v.is_undefined() || v.is_none()) {
        if (v.is_none()) fail("'NoneType' object is not iterable");
        return {};
    }
    if (v.is_mapping()) {
        List keys;
        for (const auto& [k, _] : v.as_dict())
            keys.emplace_back(k);
        return keys;
    }
    if (v.is_string()) {
        List chars;
        for (const char32_t c : code_points(v.as_string())) {
            std::string s;
            utf8::append_code_point(s, c);
            chars.emplace_back(std::move(s));
        }
        return chars;
    }
    fail("'", v.type_name(), "' object is not iterable");
}

Value apply_filter(const std::string& name, Args& args) {
    const Value& v = args.positional[0];
    auto a = [&](size_t i, const char* n, const Value& fallback = Value()) -> Value {
        return arg(args, i, n, fallback);
    };
    if (name == "length" || name == "count") return length(v);
    if (name == "trim")
        return Value(python_strip(
            v.str(), a(1, "chars").is_string() ? a(1, "chars").as_string() : "", true, true));
    if (name == "tojson") {
        const Value& indent = a(1, "indent");
        return Value(v.to_json(indent.is_number() ? int(indent.as_int()) : -1));
    }
    if (name == "string") return Value(v.str());
    if (name == "safe" || name == "e" || name == "escape") {
        if (name == "safe") return v;
        std::string out;
        for (const char c : v.str()) {
            switch (c) {
                case '&': out += "&amp;"; break;
                case '<': out += "&lt;"; break;
                case '>': out += "&gt;"; break;
                case '"': out += "&#34;"; break;
                case '\'': out += "&#39;"; break;
                default: out += c;
            }
        }
        return Value(out);
    }
    if (name == "lower" || name == "upper") return Value(ascii_case(v.str(), name == "upper"));
    if (name == "capitalize") {
        std::string s = ascii_case(v.str(), false);
        if (!s.empty()) s[0] = char(std::toupper((unsigned char)s[0]));
        return Value(s);
    }
    if (name == "title") {
        std::string s = v.str();
        bool start = true;
        for (char& c : s) {
            const bool alpha = std::isalpha((unsigned char)c);
            c = char(start ? std::toupper((unsigned char)c) : std::tolower((unsigned char)c));
            start = !alpha;
        }
        return Value(s);
    }
    if (name == "int") {
        if (v.kind() == Value::Kind::Int) return v;
        if (v.kind() == Value::Kind::Float) {
            // Converting NaN or a float past int64 is undefined behaviour in C++; Python raises.
            const double f = v.as_float();
            if (!(f > -9.2e18 && f < 9.2e18))
                fail("int(): ", f, " cannot be converted to an integer");
            return Value(int64_t(f));
        }
        if (v.is_string()) {
            try {
                return Value(int64_t(std::stoll(v.as_string())));
            } catch (const std::exception&) {
            }
        }
        return a(1, "default", Value(int64_t(0)));
    }
    if (name == "float") {
        if (v.is_number()) return Value(v.as_float());
        if (v.is_string()) {
            try {
                return Value(std::stod(v.as_string()));
            } catch (const std::exception&) {
            }
        }
        return Value(0.0);
    }
    if (name == "abs") {
        if (v.kind() == Value::Kind::Int) return Value(int64_t(std::llabs(v.as_int())));
        return Value(std::fabs(v.as_float()));
    }
    if (name == "round") {
        const int64_t digits = a(1, "precision").is_number() ? a(1, "precision").as_int() : 0;
        const double scale = std::pow(10.0, double(digits));
        return Value(std::round(v.as_float() * scale) / scale);
    }
    if (name == "first" || name == "last") {
        const List items = iterate(v);
        if (items.empty()) return Value();
        return name == "first" ? items.front() : items.back();
    }
    if (name == "list") return Value(iterate(v));
    if (name == "reverse") {
        if (v.is_string()) {
            auto cps = code_points(v.as_string());
            std::reverse(cps.begin(), cps.end());
            return Value(from_code_points(cps, 0, cps.size()));
        }
        List items = iterate(v);
        std::reverse(items.begin(), items.end());
        return Value(std::move(items));
    }
    if (name == "join") {
        const std::string sep = a(1, "d", Value("")).str();
        const Value& attribute = a(2, "attribute");
        std::string out;
        bool first = true;
        for (const Value& item : iterate(v)) {
            out += (first ? "" : sep) +
                   (attribute.is_string() ? attribute_of(item, attribute.as_string()) : item).str();
            first = false;
        }
        return Value(out);
    }
    if (name == "default" || name == "d") {
        const bool boolean = a(2, "boolean").truthy();
        if (v.is_undefined() || (boolean && !v.truthy())) return a(1, "default_value", Value(""));
        return v;
    }
    if (name == "items") {
        if (!v.is_mapping()) fail("items: expected a mapping, got ", v.type_name());
        List pairs;
        for (const auto& [k, val] : v.as_dict())
            pairs.emplace_back(List{Value(k), val});
        return Value(std::move(pairs));
    }
    if (name == "replace") {
        std::string s = v.str();
        const std::string& from = need_string(a(1, "old"), "replace");
        const std::string to = a(2, "new").str();
        Args method_args{{a(1, "old"), Value(to)}, {}};
        if (a(3, "count").is_number()) method_args.positional.push_back(a(3, "count"));
        (void)from;
        return call_method(Value(s), "replace", method_args);
    }
    if (name == "indent") {
        const Value& w = a(1, "width", Value(int64_t(4)));
        const std::string pad =
            w.is_string() ? w.as_string() : std::string(size_t(w.as_int()), ' ');
        const bool first = a(2, "first").truthy(), blank = a(3, "blank").truthy();
        const std::string s = v.str();
        std::string out;
        size_t pos = 0, line = 0;
        while (pos <= s.size()) {
            const size_t nl = s.find('\n', pos);
            const std::string text =
                s.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
            if ((line > 0 || first) && (blank || !text.empty())) out += pad;
            out += text;
            if (nl == std::string::npos) break;
            out += '\n';
            pos = nl + 1;
            ++line;
        }
        return Value(out);
    }
    if (name == "map" || name == "selectattr" || name == "rejectattr" || name == "select" ||
        name == "reject") {
        List out;
        for (const Value& item : iterate(v)) {
            if (name == "map") {
                const Value& attribute = a(1, "attribute");
                if (args.positional.size() > 1 && args.named.empty()) {
                    Args inner{{item}, {}};
                    for (size_t k = 2; k < args.positional.size(); ++k)
                        inner.positional.push_back(args.positional[k]);
                    out.push_back(apply_filter(need_string(args.positional[1], "map"), inner));
                } else if (attribute.is_string()) {
                    Value x = attribute_of(item, attribute.as_string());
                    out.push_back(x.is_undefined() ? a(99, "default") : x);
                } else {
                    fail("map: expected a filter name or attribute=");
                }
                continue;
            }
            const bool by_attr = name.ends_with("attr");
            const size_t test_at = by_attr ? 2 : 1;
            Value subject =
                by_attr ? attribute_of(item, need_string(a(1, "attribute"), name.c_str())) : item;
            bool keep;
            if (test_at < args.positional.size()) {
                Args inner{{subject}, {}};
                for (size_t k = test_at + 1; k < args.positional.size(); ++k)
                    inner.positional.push_back(args.positional[k]);
                keep = apply_test(need_string(args.positional[test_at], name.c_str()), inner);
            } else {
                keep = subject.truthy();
            }
            if (keep == (name == "select" || name == "selectattr")) out.push_back(item);
        }
        return Value(std::move(out));
    }
    if (name == "unique") {
        List out;
        for (const Value& item : iterate(v))
            if (std::none_of(out.begin(), out.end(),
                             [&](const Value& o) { return equal(o, item); }))
                out.push_back(item);
        return Value(std::move(out));
    }
    if (name == "sum") {
        double total = 0;
        bool is_float = false;
        for (const Value& item : iterate(v)) {
            is_float = is_float || item.kind() == Value::Kind::Float;
            total += item.as_float();
        }
        return is_float ? Value(total) : Value(int64_t(total));
    }
    fail("unsupported filter '", name, "'");
}

bool apply_test(const std::string& name, Args& args) {
    const Value& v = args.positional[0];
    const Value other = args.positional.size() > 1 ? args.positional[1] : Value();
    using K = Value::Kind;
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "string") return v.is_string();
    if (name == "number") return v.is_number();
    if (name == "integer") return v.kind() == K::Int;
    if (name == "float") return v.kind() == K::Float;
    if (name == "boolean") return v.kind() == K::Bool;
    if (name == "true") return v.kind() == K::Bool && v.as_bool();
    if (name == "false") return v.kind() == K::Bool && !v.as_bool();
    if (name == "mapping") return v.is_mapping();
    if (name == "sequence") return v.is_list() || v.is_string() || v.is_mapping();
    if (name == "iterable") return v.is_list() || v.is_string() || v.is_mapping();
    if (name == "callable") return v.kind() == K::Callable;
    if (name == "even" || name == "odd") {
        if (v.kind() != K::Int) fail("test '", name, "': expected an integer");
        return (v.as_int() % 2 == 0) == (name == "even");
    }
    if (name == "divisibleby") return other.as_int() != 0 && v.as_int() % other.as_int() == 0;
    if (name == "eq" || name == "equalto" || name == "==") return equal(v, other);
    if (name == "ne" || name == "!=") return !equal(v, other);
    if (name == "sameas") return equal(v, other) && v.kind() == other.kind();
    if (name == "lower") return v.is_string() && ascii_case(v.as_string(), false) == v.as_string();
    if (name == "upper") return v.is_string() && ascii_case(v.as_string(), true) == v.as_string();
    if (name == "in") {
        if (other.is_string())
            return v.is_string() && other.as_string().find(v.as_string()) != std::string::npos;
        for (const Value& item : iterate(other))
            if (equal(item, v)) return true;
        return false;
    }
    fail("unsupported test '", name, "'");
}

Value call_method(const Value& obj, const std::string& name, Args& args) {
    auto a = [&](size_t i, const char* n, const Value& fallback = Value()) -> Value {
        return arg(args, i, n, fallback);
    };
    if (obj.is_string()) {
        const std::string& s = obj.as_string();
        if (name == "strip" || name == "lstrip" || name == "rstrip") {
            const Value& chars = a(0, "chars");
            return Value(python_strip(s, chars.is_string() ? chars.as_string() : "",
                                      name != "rstrip", name != "lstrip"));
        }
        if (name == "split" || name == "rsplit") {
            const Value& maxsplit = a(1, "maxsplit");
            if (name == "rsplit" && maxsplit.is_number() && maxsplit.as_int() >= 0)
                fail("unsupported: rsplit with maxsplit");
            return string_list(
                python_split(s, a(0, "sep"), maxsplit.is_number() ? maxsplit.as_int() : -1));
        }
        if (name == "startswith" || name == "endswith") {
            const Value& p = a(0, "prefix");
            List options = p.is_list() ? p.as_list() : List{p};
            for (const Value& o : options) {
                const std::string& t = need_string(o, name.c_str());
                if (name == "startswith" ? s.starts_with(t) : s.ends_with(t)) return Value(true);
            }
            return Value(false);
        }
        if (name == "upper" || name == "lower") return Value(ascii_case(s, name == "upper"));
        if (name == "title" || name == "capitalize") {
            Args inner{{obj}, {}};
            return apply_filter(name, inner);
        }
        if (name == "replace") {
            const std::string& from = need_string(a(0, "old"), "replace");
            const std::string to = need_string(a(1, "new"), "replace");
            int64_t count = a(2, "count").is_number() ? a(2, "count").as_int() : -1;
            std::string out;
            size_t pos = 0;
            if (from.empty()) fail("unsupported: replace of an empty string");
            while (count != 0) {
                const size_t hit = s.find(from, pos);
                if (hit == std::string::npos) break;
                out += s.substr(pos, hit - pos) + to;
                pos = hit + from.size();
                --count;
            }
            return Value(out + s.substr(pos));
        }
        if (name == "find") {
            const size_t hit = s.find(need_string(a(0, "sub"), "find"));
            if (hit == std::string::npos) return Value(int64_t(-1));
            return Value(int64_t(code_points(s.substr(0, hit)).size()));
        }
        if (name == "count") {
            const std::string& sub = need_string(a(0, "sub"), "count");
            int64_t n = 0;
            for (size_t pos = s.find(sub); pos != std::string::npos && !sub.empty();
                 pos = s.find(sub, pos + sub.size()))
                ++n;
            return Value(n);
        }
        if (name == "isdigit" || name == "isalpha" || name == "isspace" || name == "isalnum") {
            if (s.empty()) return Value(false);
            for (const char32_t c : code_points(s)) {
                const bool ok = name == "isspace"   ? is_py_space(c)
                                : name == "isdigit" ? (c >= '0' && c <= '9')
                                : name == "isalpha" ? std::isalpha(int(c < 128 ? c : 0)) != 0
                                                    : std::isalnum(int(c < 128 ? c : 0)) != 0;
                if (!ok) return Value(false);
            }
            return Value(true);
        }
        if (name == "join") {
            std::string out;
            bool first = true;
            for (const Value& item : iterate(a(0, "iterable"))) {
                out += (first ? "" : s) + need_string(item, "join");
                first = false;
            }
            return Value(out);
        }
    }
    if (obj.is_mapping()) {
        if (name == "items") {
            Args inner{{obj}, {}};
            return apply_filter("items", inner);
        }
        if (name == "keys") return Value(iterate(obj));
        if (name == "values") {
            List values;
            for (const auto& [_, v] : obj.as_dict())
                values.push_back(v);
            return Value(std::move(values));
        }
        if (name == "get") {
            const Value v = obj.get(need_string(a(0, "key"), "get"));
            return v.is_undefined() ? a(1, "default", Value::none()) : v;
        }
    }
    if (obj.is_list()) {
        if (name == "index") {
            const List& l = obj.as_list();
            for (size_t k = 0; k < l.size(); ++k)
                if (equal(l[k], a(0, "value"))) return Value(int64_t(k));
            fail("list.index: value not in list");
        }
        if (name == "count") {
            int64_t n = 0;
            for (const Value& item : obj.as_list())
                n += equal(item, a(0, "value"));
            return Value(n);
        }
        if (name == "append" || name == "pop" || name == "insert" || name == "extend")
            fail("unsupported: list.", name, " (templates are immutable, as in transformers)");
    }
    fail("unsupported method '", name, "' of ", obj.type_name());
}

Value global_function(const std::string& name) {
    if (name == "range")
        return Value(Function([](Args& args) {
            int64_t start = 0, stop = 0, step = 1;
            const auto& p = args.positional;
            if (p.size() == 1)
                stop = p[0].as_int();
            else if (p.size() >= 2)
                start = p[0].as_int(), stop = p[1].as_int();
            if (p.size() >= 3) step = p[2].as_int();
            if (step == 0) fail("range: step must not be zero");
            List out;
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
                out.emplace_back(i);
            return Value(std::move(out));
        }));
    if (name == "namespace" || name == "dict")
        return Value(Function([is_namespace = name == "namespace"](Args& args) {
            Dict d;
            if (!args.positional.empty() && args.positional[0].is_mapping())
                d = args.positional[0].as_dict();
            for (auto& [k, v] : args.named)
                d.emplace_back(k, v);
            return Value(std::move(d), is_namespace);
        }));
    if (name == "raise_exception")
        return Value(Function([](Args& args) -> Value {
            fail("raise_exception: ", args.positional.empty() ? "" : args.positional[0].str());
        }));
    if (name == "strftime_now")
        return Value(Function([](Args& args) {
            const std::time_t now = std::time(nullptr);
            std::tm local{};
            localtime_r(&now, &local);
            char buf[256];
            const std::string& format = need_string(arg(args, 0, "format"), "strftime_now");
            const size_t n = std::strftime(buf, sizeof buf, format.c_str(), &local);
            return Value(std::string(buf, n));
        }));
    return Value();
}

}  // namespace tandem::jinja
