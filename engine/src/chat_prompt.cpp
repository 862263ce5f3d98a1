#include "engine/src/chat_prompt.h"

#include <regex>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace tandem {

namespace {

using ojson = nlohmann::ordered_json;

bool arguments_as_object(const std::string& tmpl) {
    // GLM-4.5's template walks the arguments' items() into <arg_key>/<arg_value> pairs (through
    // an alias, so no pattern on `arguments` sees it): a string has no items.
    if (tmpl.find("<arg_key>") != std::string::npos) return true;
    static const std::regex tojson(R"(arguments\s*\|\s*tojson)");
    return std::regex_search(tmpl, tojson) && tmpl.find("arguments is string") == std::string::npos;
}

ojson message_json(const ChatMessage& m, bool object_arguments) {
    ojson out = {{"role", m.role}, {"content", m.content}};
    if (!m.tool_calls.empty()) {
        ojson calls = ojson::array();
        for (const ToolCall& call : m.tool_calls) {
            ojson arguments = call.arguments;
            if (object_arguments) {
                arguments = ojson::parse(call.arguments, nullptr, /*allow_exceptions=*/false);
                if (arguments.is_discarded())
                    fail("the arguments of tool call ", call.name,
                         " are not JSON: ", call.arguments);
            }
            ojson entry = {{"type", "function"},
                           {"function", {{"name", call.name}, {"arguments", arguments}}}};
            if (!call.id.empty()) entry["id"] = call.id;
            calls.push_back(std::move(entry));
        }
        out["tool_calls"] = std::move(calls);
    }
    if (!m.tool_call_id.empty()) out["tool_call_id"] = m.tool_call_id;
    if (!m.name.empty()) out["name"] = m.name;
    return out;
}

}  // namespace

bool template_takes_tools(const std::string& chat_template) {
    static const std::regex tools(R"(\btools\b)");
    return std::regex_search(chat_template, tools);
}

std::string tools_system_text(const ojson& tools) {
    std::string text =
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
    for (const ojson& tool : tools)
        text += "\n" + tool.dump();
    text +=
        "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
        "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>";
    return text;
}

std::string render_chat_prompt(const Tokenizer& tokenizer, const Prompt& prompt) {
    const std::string& tmpl = tokenizer.chat_template();
    const bool object_arguments = arguments_as_object(tmpl);
    ojson messages = ojson::array();
    for (const ChatMessage& m : prompt.messages)
        messages.push_back(message_json(m, object_arguments));
    ojson tools = nullptr;
    if (!prompt.tools.empty()) {
        tools = ojson::parse(prompt.tools, nullptr, /*allow_exceptions=*/false);
        if (!tools.is_array()) fail("tools must be a JSON list, got: ", prompt.tools);
        if (tools.empty()) tools = nullptr;
    }
    if (tools.is_array() && !template_takes_tools(tmpl)) {
        const std::string described = tools_system_text(tools);
        if (!messages.empty() && messages[0]["role"] == "system")
            messages[0]["content"] = messages[0]["content"].get<std::string>() + "\n\n" + described;
        else
            messages.insert(messages.begin(), ojson{{"role", "system"}, {"content", described}});
        tools = nullptr;
    }
    return apply_chat_template(tokenizer, messages, prompt.add_generation_prompt, tools);
}

}  // namespace tandem
