// Evaluates a parsed template: scopes (a for body and a macro call get their own, `if` does
// not, as in Jinja), loop.* variables, loop controls, macros, and Python's operators.
// Errors carry the position of the statement or expression at fault.
#include <charconv>
#include <cmath>
#include <unordered_map>

#include "kernels/error.h"
#include "models/tokenizer/chat_template/ast.h"
#include "models/tokenizer/chat_template/builtins.h"
#include "models/tokenizer/chat_template/eval.h"

namespace tandem::jinja {

namespace {

enum class Flow { Normal, Break, Continue };

class Evaluator {
  public:
    Evaluator(const std::string& source, Dict globals) : source_(source) {
        scopes_.emplace_back();
        for (auto& [k, v] : globals)
            scopes_.back()[k] = std::move(v);
    }

    void run(const Body& body, std::string& out) { exec(body, out); }

  private:
    template <class Fn>
    decltype(auto) at(size_t offset, Fn&& fn) {
        try {
            return fn();
        } catch (const Error& e) {
            const std::string what = e.what();
            if (what.starts_with("chat template: ")) throw;
            fail("chat template: ", source_position(source_, offset), ": ", what);
        }
    }

    Value lookup(const std::string& name) const {
        for (size_t k = scopes_.size(); k-- > 0;) {
            const auto it = scopes_[k].find(name);
            if (it != scopes_[k].end()) return it->second;
        }
        return global_function(name);
    }

    Flow exec(const Body& body, std::string& out) {
        for (const auto& s : body) {
            const Flow f = exec(*s, out);
            if (f != Flow::Normal) return f;
        }
        return Flow::Normal;
    }

    Flow exec(const Stmt& s, std::string& out) {
        switch (s.kind) {
            case Stmt::Kind::Text: out += s.text; return Flow::Normal;
            case Stmt::Kind::Output: out += eval(*s.exprs[0]).str(); return Flow::Normal;
            case Stmt::Kind::If:
                for (size_t k = 0; k < s.exprs.size(); ++k)
                    if (eval(*s.exprs[k]).truthy()) return exec(s.bodies[k], out);
                if (s.bodies.size() > s.exprs.size()) return exec(s.bodies.back(), out);
                return Flow::Normal;
            case Stmt::Kind::For: return exec_for(s, out);
            case Stmt::Kind::Set: {
                Value v;
                if (s.exprs.empty()) {
                    std::string text;
                    exec(s.bodies[0], text);
                    v = Value(text);
                } else {
                    v = eval(*s.exprs[0]);
                }
                if (s.names.size() == 2) {
                    const Value ns = lookup(s.names[0]);
                    if (ns.kind() != Value::Kind::Namespace)
                        at(s.offset, [&]() -> int {
                            fail("cannot set an attribute of '", s.names[0], "' (", ns.type_name(),
                                 "): only namespace() objects are mutable");
                        });
                    ns.set(s.names[1], std::move(v));
                } else {
                    scopes_.back()[s.names[0]] = std::move(v);
                }
                return Flow::Normal;
            }
            case Stmt::Kind::Macro: scopes_.back()[s.names[0]] = make_macro(s); return Flow::Normal;
            case Stmt::Kind::Break: return Flow::Break;
            case Stmt::Kind::Continue: return Flow::Continue;
            case Stmt::Kind::Block: return exec(s.bodies[0], out);
        }
        return Flow::Normal;
    }

    Flow exec_for(const Stmt& s, std::string& out) {
        const Value iterable = eval(*s.exprs[0]);
        List items = at(s.offset, [&] { return iterate(iterable); });
        auto bind = [&](const Value& item) {
            if (s.names.size() == 1) {
                scopes_.back()[s.names[0]] = item;
                return;
            }
            const List parts = iterate(item);
            if (parts.size() != s.names.size())
                at(s.offset, [&]() -> int {
                    fail("for: cannot unpack ", parts.size(), " values into ", s.names.size());
                });
            for (size_t k = 0; k < parts.size(); ++k)
                scopes_.back()[s.names[k]] = parts[k];
        };
        if (s.exprs.size() > 1) {  // `for x in xs if cond`
            List kept;
            scopes_.emplace_back();
            for (const Value& item : items) {
                bind(item);
                if (eval(*s.exprs[1]).truthy()) kept.push_back(item);
            }
            scopes_.pop_back();
            items = std::move(kept);
        }
        if (items.empty()) {
            if (s.bodies.size() > 1) return exec(s.bodies[1], out);
            return Flow::Normal;
        }
        const auto n = int64_t(items.size());
        for (int64_t i = 0; i < n; ++i) {
            scopes_.emplace_back();
            bind(items[size_t(i)]);
            Dict loop{{"index", Value(i + 1)},
                      {"index0", Value(i)},
                      {"revindex", Value(n - i)},
                      {"revindex0", Value(n - i - 1)},
                      {"first", Value(i == 0)},
                      {"last", Value(i == n - 1)},
                      {"length", Value(n)},
                      {"previtem", i > 0 ? items[size_t(i - 1)] : Value()},
                      {"nextitem", i + 1 < n ? items[size_t(i + 1)] : Value()}};
            scopes_.back()["loop"] = Value(std::move(loop));
            const Flow f = exec(s.bodies[0], out);
            scopes_.pop_back();
            if (f == Flow::Break) break;
        }
        return Flow::Normal;
    }

    static constexpr int kMaxMacroDepth = 100;
    int macro_depth_ = 0;

    Value make_macro(const Stmt& s) {
        return Value(Function([this, &s](Args& args) {
            // A macro that calls itself would recurse until the stack overflows.
            if (macro_depth_ >= kMaxMacroDepth)
                fail("macro '", s.names[0], "' nested more than ", kMaxMacroDepth, " calls deep");
            ++macro_depth_;
            struct Leave {
                int& depth;
                ~Leave() { --depth; }
            } leave{macro_depth_};
            scopes_.emplace_back();
            for (size_t k = 1; k < s.names.size(); ++k) {
                Value v;
                if (k - 1 < args.positional.size())
                    v = args.positional[k - 1];
                else if (s.exprs[k - 1])
                    v = eval(*s.exprs[k - 1]);
                for (const auto& [n, named] : args.named)
                    if (n == s.names[k]) v = named;
                scopes_.back()[s.names[k]] = v;
            }
            std::string text;
            exec(s.bodies[0], text);
            scopes_.pop_back();
            return Value(text);
        }));
    }

    Args eval_args(const Expr& e, size_t first) {
        Args args;
        for (size_t k = first; k < e.children.size(); ++k) {
            Value v = eval(*e.children[k]);
            if (e.arg_names[k].empty())
                args.positional.push_back(std::move(v));
            else
                args.named.emplace_back(e.arg_names[k], std::move(v));
        }
        return args;
    }

    Value eval(const Expr& e) {
        return at(e.offset, [&] { return eval_inner(e); });
    }

    static int64_t index_of(int64_t i, size_t size) { return i < 0 ? i + int64_t(size) : i; }

    Value eval_inner(const Expr& e) {
        switch (e.kind) {
            case Expr::Kind::Literal: return e.literal;
            case Expr::Kind::Name: return lookup(e.name);
            case Expr::Kind::ListLiteral: {
                List list;
                for (const auto& c : e.children)
                    list.push_back(eval(*c));
                return Value(std::move(list));
            }
            case Expr::Kind::DictLiteral: {
                Dict dict;
                for (size_t k = 0; k + 1 < e.children.size(); k += 2) {
                    const Value key = eval(*e.children[k]);
                    if (!key.is_string()) fail("dict keys must be strings");
                    dict.emplace_back(key.as_string(), eval(*e.children[k + 1]));
                }
                return Value(std::move(dict));
            }
            case Expr::Kind::Attr: {
                const Value obj = eval(*e.children[0]);
                if (obj.is_undefined()) fail("undefined value has no attribute '", e.name, "'");
                if (obj.is_list() && !e.name.empty() && std::isdigit((unsigned char)e.name[0])) {
                    int64_t index = 0;
                    const auto [end, ec] =
                        std::from_chars(e.name.data(), e.name.data() + e.name.size(), index);
                    if (ec != std::errc() || end != e.name.data() + e.name.size())
                        fail("list index '", e.name, "' is not a valid integer");
                    return subscript(obj, Value(index));
                }
                return obj.get(e.name);
            }
            case Expr::Kind::Index: return subscript(eval(*e.children[0]), eval(*e.children[1]));
            case Expr::Kind::Slice: return slice(e);
            case Expr::Kind::Call: return call(e);
            case Expr::Kind::Filter: {
                Args args = eval_args(e, 1);
                args.positional.insert(args.positional.begin(), eval(*e.children[0]));
                return apply_filter(e.name, args);
            }
            case Expr::Kind::Test: {
                Args args = eval_args(e, 1);
                args.positional.insert(args.positional.begin(), eval(*e.children[0]));
                return Value(apply_test(e.name, args) != e.negated);
            }
            case Expr::Kind::Unary: {
                const Value v = eval(*e.children[0]);
                if (e.name == "not") return Value(!v.truthy());
                if (v.kind() == Value::Kind::Int)
                    return Value(e.name == "-" ? -v.as_int() : v.as_int());
                if (v.kind() == Value::Kind::Float)
                    return Value(e.name == "-" ? -v.as_float() : v.as_float());
                fail("bad operand type for unary ", e.name, ": ", v.type_name());
            }
            case Expr::Kind::Binary: return binary(e);
            case Expr::Kind::Cond:
                if (eval(*e.children[1]).truthy()) return eval(*e.children[0]);
                return e.children[2] ? eval(*e.children[2]) : Value();
        }
        return Value();
    }

    Value subscript(const Value& obj, const Value& index) {
        if (obj.is_list() && index.kind() == Value::Kind::Int) {
            const int64_t i = index_of(index.as_int(), obj.as_list().size());
            if (i < 0 || i >= int64_t(obj.as_list().size())) return Value();
            return obj.as_list()[size_t(i)];
        }
        if (obj.is_mapping() && index.is_string()) return obj.get(index.as_string());
        if (obj.is_string() && index.kind() == Value::Kind::Int) {
            const List chars = iterate(obj);
            const int64_t i = index_of(index.as_int(), chars.size());
            if (i < 0 || i >= int64_t(chars.size())) return Value();
            return chars[size_t(i)];
        }
        if (obj.is_undefined()) fail("undefined value is not subscriptable");
        return Value();
    }

    Value slice(const Expr& e) {
        const Value obj = eval(*e.children[0]);
        const List items = iterate(obj);
        const auto n = int64_t(items.size());
        auto bound = [&](size_t k) -> std::optional<int64_t> {
            if (!e.children[k]) return std::nullopt;
            const Value v = eval(*e.children[k]);
            if (v.is_none()) return std::nullopt;
            if (v.kind() != Value::Kind::Int) fail("slice indices must be integers");
            return v.as_int();
        };
        const int64_t step = bound(3).value_or(1);
        if (step == 0) fail("slice step cannot be zero");
        auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
            if (!v) return fallback;
            int64_t i = *v < 0 ? *v + n : *v;
            if (step > 0) return std::clamp<int64_t>(i, 0, n);
            return std::clamp<int64_t>(i, -1, n - 1);
        };
        const int64_t start = clamp(bound(1), step > 0 ? 0 : n - 1);
        const int64_t stop = clamp(bound(2), step > 0 ? n : -1);
        List out;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step)
            out.push_back(items[size_t(i)]);
        if (obj.is_string()) {
            std::string s;
            for (const Value& c : out)
                s += c.as_string();
            return Value(s);
        }
        return Value(std::move(out));
    }

    Value call(const Expr& e) {
        const Expr& callee = *e.children[0];
        Args args = eval_args(e, 1);
        if (callee.kind == Expr::Kind::Attr) {
            const Value obj = eval(*callee.children[0]);
            const Value member = obj.get(callee.name);
            if (member.kind() == Value::Kind::Callable) return member.as_function()(args);
            if (obj.is_undefined()) fail("undefined value has no method '", callee.name, "'");
            return call_method(obj, callee.name, args);
        }
        const Value fn = eval(callee);
        if (fn.kind() != Value::Kind::Callable) {
            if (callee.kind == Expr::Kind::Name) fail("unknown function '", callee.name, "'");
            fail("'", fn.type_name(), "' object is not callable");
        }
        return fn.as_function()(args);
    }

    Value binary(const Expr& e) {
        const std::string& op = e.name;
        const Value a = eval(*e.children[0]);
        if (op == "and") return a.truthy() ? eval(*e.children[1]) : a;
        if (op == "or") return a.truthy() ? a : eval(*e.children[1]);
        const Value b = eval(*e.children[1]);
        using K = Value::Kind;
        if (op == "==") return Value(equal(a, b));
        if (op == "!=") return Value(!equal(a, b));
        if (op == "in" || op == "not in") {
            Args args{{a, b}, {}};
            return Value(apply_test("in", args) == (op == "in"));
        }
        if (op == "~") return Value(a.str() + b.str());
        if (a.is_undefined() || b.is_undefined()) fail("undefined value in '", op, "'");
        if (op == "+" && a.is_string() && b.is_string())
            return Value(a.as_string() + b.as_string());
        if (op == "+" && a.is_list() && b.is_list()) {
            List out = a.as_list();
            out.insert(out.end(), b.as_list().begin(), b.as_list().end());
            return Value(std::move(out));
        }
        if (op == "*" && a.is_string() && b.kind() == K::Int) {
            std::string out;
            for (int64_t k = 0; k < b.as_int(); ++k)
                out += a.as_string();
            return Value(out);
        }
        if (op == "<" || op == ">" || op == "<=" || op == ">=") {
            int cmp;
            if (a.is_string() && b.is_string())
                cmp = a.as_string().compare(b.as_string());
            else if (a.is_number() && b.is_number())
                cmp = a.as_float() < b.as_float() ? -1 : a.as_float() > b.as_float() ? 1 : 0;
            else
                fail("'", op, "' not supported between ", a.type_name(), " and ", b.type_name());
            return Value(op == "<"    ? cmp < 0
                         : op == ">"  ? cmp > 0
                         : op == "<=" ? cmp <= 0
                                      : cmp >= 0);
        }
        const bool numbers =
            (a.is_number() || a.kind() == K::Bool) && (b.is_number() || b.kind() == K::Bool);
        if (!numbers)
            fail("unsupported operand types for ", op, ": ", a.type_name(), " and ", b.type_name());
        const bool ints = a.kind() != K::Float && b.kind() != K::Float;
        const auto as_i = [](const Value& v) {
            return v.kind() == K::Bool ? int64_t(v.as_bool()) : v.as_int();
        };
        const auto as_f = [](const Value& v) {
            return v.kind() == K::Bool ? double(v.as_bool()) : v.as_float();
        };
        if (op == "+") return ints ? Value(as_i(a) + as_i(b)) : Value(as_f(a) + as_f(b));
        if (op == "-") return ints ? Value(as_i(a) - as_i(b)) : Value(as_f(a) - as_f(b));
        if (op == "*") return ints ? Value(as_i(a) * as_i(b)) : Value(as_f(a) * as_f(b));
        if (op == "/") {
            if (as_f(b) == 0) fail("division by zero");
            return Value(as_f(a) / as_f(b));
        }
        if (op == "//" || op == "%") {
            if (as_f(b) == 0) fail("division by zero");
            if (ints) {
                const int64_t x = as_i(a), y = as_i(b);
                int64_t q = x / y;
                if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
                return op == "//" ? Value(q) : Value(x - q * y);
            }
            const double q = std::floor(as_f(a) / as_f(b));
            return op == "//" ? Value(q) : Value(as_f(a) - q * as_f(b));
        }
        if (op == "**")
            return ints && as_i(b) >= 0 ? Value(int64_t(std::llround(std::pow(as_f(a), as_f(b)))))
                                        : Value(std::pow(as_f(a), as_f(b)));
        fail("unsupported operator '", op, "'");
    }

    const std::string& source_;
    std::vector<std::unordered_map<std::string, Value>> scopes_;
};

}  // namespace

std::string render(const std::string& source, const Body& body, Dict globals) {
    Evaluator evaluator(source, std::move(globals));
    std::string out;
    evaluator.run(body, out);
    return out;
}

}  // namespace tandem::jinja
