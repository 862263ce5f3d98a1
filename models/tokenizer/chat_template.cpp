// ChatTemplate: parse once, render with the variables transformers passes.
#include "models/tokenizer/chat_template.h"

#include "kernels/error.h"
#include "models/tokenizer/chat_template/eval.h"
#include "models/tokenizer/tokenizer.h"

namespace tandem {

struct ChatTemplate::Impl {
    std::string source;
    jinja::Body body;
};

ChatTemplate::ChatTemplate(std::string source) : impl_(std::make_unique<Impl>()) {
    impl_->source = std::move(source);
    impl_->body = jinja::parse(impl_->source);
}

ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

std::string ChatTemplate::render(const ChatTemplateInputs& inputs) const {
    if (!inputs.messages.is_array()) fail("chat template: messages must be a JSON array");
    jinja::Dict globals;
    if (inputs.variables.is_object())
        for (const auto& [k, v] : inputs.variables.items())
            globals.emplace_back(k, jinja::Value::from_json(v));
    globals.emplace_back("messages", jinja::Value::from_json(inputs.messages));
    globals.emplace_back("tools", jinja::Value::from_json(inputs.tools));
    globals.emplace_back("add_generation_prompt", jinja::Value(inputs.add_generation_prompt));
    return jinja::render(impl_->source, impl_->body, std::move(globals));
}

nlohmann::ordered_json special_token_variables(const Tokenizer& tokenizer) {
    nlohmann::ordered_json vars = nlohmann::ordered_json::object();
    for (const auto& [name, content] : tokenizer.named_special_tokens())
        vars[name] = content;
    return vars;
}

std::string apply_chat_template(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                bool add_generation_prompt, const nlohmann::ordered_json& tools) {
    if (tokenizer.chat_template().empty()) fail("tokenizer_config.json has no chat_template");
    const ChatTemplate tmpl(tokenizer.chat_template());
    return tmpl.render({.messages = messages,
                        .tools = tools,
                        .add_generation_prompt = add_generation_prompt,
                        .variables = special_token_variables(tokenizer)});
}

}  // namespace tandem
