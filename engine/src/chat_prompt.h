// A chat Prompt -> the text of the tokenizer's chat template, as transformers and vLLM render
// it: messages in OpenAI's shape (an assistant's tool_calls, a tool message's tool_call_id and
// name) and the `tools` list.
//
// Tool-call arguments arrive as JSON text (OpenAI's wire form). Templates differ in what they
// take: Llama 3.1's writes `arguments | tojson` and needs an object (a string would come out
// quoted twice), DeepSeek-V3's concatenates `arguments` into the prompt and needs the text;
// Qwen's take either; GLM-4.5's iterates its items() and needs an object. The text is parsed
// into an object only for a template that writes it with tojson and has no `arguments is
// string` branch, or that writes GLM's <arg_key> pairs.
//
// A template with no mention of `tools` cannot show them: they go into a system message
// (appended to the first one, or a new first one) in the Hermes form that Qwen's template
// uses, with the instruction to answer calls in <tool_call> tags, as llama.cpp's server does
// for templates without tool support.
#pragma once

#include <string>

#include <tandem/request.h>
#include <nlohmann/json.hpp>

namespace tandem {

class Tokenizer;

// Throws tandem::Error naming what is wrong (tools that are not a JSON list, arguments that
// are not JSON, a template error).
std::string render_chat_prompt(const Tokenizer& tokenizer, const Prompt& prompt);

// Whether the template reads the `tools` variable.
bool template_takes_tools(const std::string& chat_template);

// The system text that describes `tools` (a JSON list) to a model whose template cannot.
std::string tools_system_text(const nlohmann::ordered_json& tools);

}  // namespace tandem
