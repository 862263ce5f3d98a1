// Value: the dynamic value of the chat-template language (a Jinja2 subset), with Python's
// semantics where templates can observe them: truthiness, equality, str() of None/True/lists,
// float repr, and transformers' `tojson` (json.dumps with ensure_ascii=False).
//
// Lists and dicts are shared by reference, as in Python; dicts keep insertion order (tojson of
// a tool schema must print its keys as given). Only namespace() objects are mutable from a
// template, as in transformers' ImmutableSandboxedEnvironment.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem::jinja {

class Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;
struct Args {
    std::vector<Value> positional;
    std::vector<std::pair<std::string, Value>> named;
};
using Function = std::function<Value(Args&)>;

class Value {
  public:
    enum class Kind { Undefined, None, Bool, Int, Float, String, Array, Map, Namespace, Callable };

    Value() = default;  // undefined
    static Value none();
    Value(bool b);
    Value(int64_t i);
    Value(int i) : Value(int64_t(i)) {}
    Value(double f);
    Value(std::string s);
    Value(const char* s) : Value(std::string(s)) {}
    Value(List list);
    Value(Dict dict, bool is_namespace = false);
    Value(Function fn);
    static Value from_json(const nlohmann::ordered_json& json);

    Kind kind() const { return kind_; }
    bool is_undefined() const { return kind_ == Kind::Undefined; }
    bool is_none() const { return kind_ == Kind::None; }
    bool is_string() const { return kind_ == Kind::String; }
    bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float; }
    bool is_list() const { return kind_ == Kind::Array; }
    bool is_mapping() const { return kind_ == Kind::Map || kind_ == Kind::Namespace; }

    bool as_bool() const { return b_; }
    int64_t as_int() const { return i_; }
    double as_float() const { return kind_ == Kind::Int ? double(i_) : f_; }
    const std::string& as_string() const { return *s_; }
    const List& as_list() const { return *list_; }
    Dict& as_dict() const { return *dict_; }
    const Function& as_function() const { return *fn_; }

    // Member of a dict or namespace, undefined when absent or not a mapping.
    Value get(const std::string& key) const;
    void set(const std::string& key, Value v) const;  // dicts and namespaces

    bool truthy() const;
    std::string str() const;   // Python str()
    std::string repr() const;  // Python repr()
    // json.dumps(v, ensure_ascii=False, indent=indent) with Python's separators.
    std::string to_json(int indent = -1, int depth = 0) const;
    const char* type_name() const;

  private:
    Kind kind_ = Kind::Undefined;
    bool b_ = false;
    int64_t i_ = 0;
    double f_ = 0;
    std::shared_ptr<const std::string> s_;
    std::shared_ptr<const List> list_;
    std::shared_ptr<Dict> dict_;
    std::shared_ptr<const Function> fn_;
};

bool equal(const Value& a, const Value& b);
std::string python_float(double f);  // Python's repr of a float

}  // namespace tandem::jinja
