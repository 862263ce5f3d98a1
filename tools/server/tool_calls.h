// Tool calling: OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`, and the syntax in
// which each model family writes its calls, parsed back into `tool_calls`:
//
//   hermes       Qwen2.5 / Qwen3 (and templates without tool support, which get the Hermes
//                instructions in a system message, engine/src/chat_prompt.h):
//                <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>, one per call
//   llama3_json  Llama 3.1 / 3.2: [<|python_tag|>]{"name": ..., "parameters": {...}}, calls
//                separated by "; "
//   mistral      [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...] (and the newer
//                [TOOL_CALLS]name[ARGS]{...})
//   deepseek_v3  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>name\n```json\n
//                {...}\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>
//   glm45        GLM-4.5 / 4.6: <tool_call>name\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>\n
//                ...</tool_call>, one per call; v is raw text where the parameter's type is
//                "string", else JSON (text that does not parse as JSON stays a string)
//
// The format is detected from the chat template (or named with --tool-call-format). With
// tool_choice "required" or a named function, the grammar engine holds the model to the
// format's syntax and to each function's parameter schema (GrammarSpec::Kind::ToolCalls), so
// the call is always valid JSON for the schema (glm45, whose values are not one JSON document,
// gets a grammar of its own that holds the syntax, the names and the simple types: see
// tool_call_grammar); with "auto" the model may answer in text or
// call, and what it writes in the format's syntax is parsed.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <tandem/request.h>
#include <tandem/sampling.h>
#include <nlohmann/json.hpp>

namespace tandem::server {

enum class ToolCallFormat { Hermes, Llama3Json, Mistral, DeepSeekV3, Glm45 };

std::optional<ToolCallFormat> tool_call_format_by_name(const std::string& name);
const char* tool_call_format_name(ToolCallFormat format);
// From the template's own tool-call syntax; Hermes where it shows none.
ToolCallFormat detect_tool_call_format(const std::string& chat_template);

struct ToolRequest {
    enum class Choice { None, Auto, Required, Named };
    nlohmann::json tools;  // OpenAI's list, checked
    Choice choice = Choice::Auto;
    std::string named;  // Choice::Named: the function
    bool parallel = true;
    bool active() const { return choice != Choice::None; }
};

// `tools`, `tool_choice`, `parallel_tool_calls` of a chat request (400s naming the field);
// nullopt without tools.
std::optional<ToolRequest> read_tool_request(const nlohmann::json& body);

// The grammar of tool_choice "required" or a named function in `format`. glm45's is EBNF
// (GrammarSpec::Kind::Ebnf): each parameter's value follows its type, enum or const, integer
// ranges of up to 1024 values and string lengths; other keywords of its schema (patterns,
// number bounds, nested objects' properties) are not enforced, and raw string values cannot
// hold "</" (which would end the value).
GrammarSpec tool_call_grammar(ToolCallFormat format, const ToolRequest& request);

struct ParsedOutput {
    std::string content;          // the text before the calls (trimmed)
    std::vector<ToolCall> calls;  // empty: the output is plain content
};

// Splits a whole output into content and calls. Output whose calls do not parse (malformed
// JSON, an unknown function) is all content: nothing is dropped. With parallel false, only the
// first call is kept.
ParsedOutput parse_tool_calls(ToolCallFormat format, const std::string& text,
                              const ToolRequest& request);

// Streaming: the content of an output may be sent as it grows until a call may have begun;
// from there the text is held back until the end, when finish() parses it.
class ToolCallStream {
  public:
    ToolCallStream(ToolCallFormat format, const ToolRequest* request);
    // Appends generated text; returns the content that can be streamed now.
    std::string push(const std::string& text);
    // At the end of the output: the content not yet streamed and the calls.
    ParsedOutput finish();
    // At an end without calls (max_tokens, an abort): all the text not yet streamed.
    std::string flush();

  private:
    ToolCallFormat format_;
    const ToolRequest* request_;
    std::string text_;
    size_t streamed_ = 0;
};

// An OpenAI tool_calls entry; `index` for stream deltas (-1: none).
nlohmann::json tool_call_json(const ToolCall& call, int64_t index = -1);

}  // namespace tandem::server
