// ChatTemplate: renders a Hugging Face `chat_template` (a Jinja2 subset) as
// transformers.apply_chat_template(tokenize=False) does: Jinja with trim_blocks and
// lstrip_blocks, transformers' tojson (ensure_ascii=False, keys in given order),
// raise_exception and strftime_now, immutable lists and dicts, namespace() objects.
//
//   ChatTemplate tmpl(tokenizer.chat_template());
//   std::string prompt = tmpl.render({.messages = messages, .add_generation_prompt = true,
//                                     .variables = special_tokens_of(tokenizer)});
//
// Supported: expressions (literals, lists, dicts, attributes, subscripts, slices, calls, the
// arithmetic/comparison/logic operators, `~`, `in`, conditional expressions), filters, tests,
// if/elif/else, for (unpacking, `if` filter, else, loop.*), break/continue, set (incl.
// namespace attributes and block set), macros, string/dict/list methods. Anything else (e.g.
// `{% include %}`, an unknown filter) is an error naming it; a syntax error gives the line and
// column. The template is parsed once at construction.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace tandem {

class Tokenizer;

struct ChatTemplateInputs {
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    nlohmann::ordered_json tools;  // null when none (the template sees `tools` = none)
    bool add_generation_prompt = false;
    // Further variables, e.g. {"enable_thinking": false} and the special tokens
    // ("bos_token", "eos_token", ...).
    nlohmann::ordered_json variables = nlohmann::ordered_json::object();
};

class ChatTemplate {
  public:
    explicit ChatTemplate(std::string source);  // throws tandem::Error with line and column
    ChatTemplate(ChatTemplate&&) noexcept;
    ChatTemplate& operator=(ChatTemplate&&) noexcept;
    ~ChatTemplate();

    std::string render(const ChatTemplateInputs& inputs) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The special tokens of tokenizer_config.json as template variables (bos_token, eos_token, ...).
nlohmann::ordered_json special_token_variables(const Tokenizer& tokenizer);

// Renders the tokenizer's own chat template; throws when tokenizer_config.json has none.
std::string apply_chat_template(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                bool add_generation_prompt,
                                const nlohmann::ordered_json& tools = nullptr);

}  // namespace tandem
