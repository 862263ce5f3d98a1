// Filters, tests, methods and global functions of the chat-template language (internal).
// Each is looked up by name; an unknown name is an error that names it.
#pragma once

#include <string>

#include "models/tokenizer/chat_template/value.h"

namespace tandem::jinja {

// args.positional[0] is the filtered / tested value.
Value apply_filter(const std::string& name, Args& args);
bool apply_test(const std::string& name, Args& args);
// obj.name(args) for strings, lists and dicts.
Value call_method(const Value& obj, const std::string& name, Args& args);
// range, namespace, raise_exception, strftime_now, dict; undefined when not a global.
Value global_function(const std::string& name);

// Python str.strip() and friends; chars empty = whitespace.
std::string python_strip(const std::string& s, const std::string& chars, bool left, bool right);
// Iteration over a value as Jinja does (dict: keys; string: characters).
List iterate(const Value& v);

}  // namespace tandem::jinja
