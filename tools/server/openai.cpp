#include "tools/server/openai.h"

#include <algorithm>
#include <limits>
#include <string_view>

#include "tools/server/api_error.h"
#include "tools/server/structured_request.h"

namespace tandem::server {

namespace {

using nlohmann::json;

// Typed readers: absent or null -> the default; a wrong type -> 400 naming the field.
template <typename T>
T read_int(const json& body, const char* key, T fallback, T lo, T hi) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) return fallback;
    if (!it->is_number_integer())
        throw ApiError(400, std::string("'") + key + "' must be an integer", key);
    // nlohmann stores non-negative integers as unsigned: compare in the type it holds.
    const bool in_range =
        it->is_number_unsigned()
            ? it->get<uint64_t>() <= uint64_t(hi) &&
                  (lo <= 0 || it->get<uint64_t>() >= uint64_t(lo))
            : it->get<int64_t>() >= int64_t(lo) && it->get<int64_t>() <= int64_t(hi);
    if (!in_range)
        throw ApiError(400,
                       std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "], got " + it->dump(),
                       key);
    return T(it->get<int64_t>());
}

float read_float(const json& body, const char* key, float fallback, float lo, float hi) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) return fallback;
    if (!it->is_number()) throw ApiError(400, std::string("'") + key + "' must be a number", key);
    const double v = it->get<double>();
    if (!(v >= lo && v <= hi))
        throw ApiError(400,
                       std::string("'") + key + "' must be in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "], got " + it->dump(),
                       key);
    return float(v);
}

bool read_bool(const json& body, const char* key, bool fallback) {
    const auto it = body.find(key);
    if (it == body.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) throw ApiError(400, std::string("'") + key + "' must be a boolean", key);
    return it->get<bool>();
}

std::vector<int32_t> read_ids(const json& value, const char* key) {
    std::vector<int32_t> ids;
    for (const json& id : value) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
            id.get<int64_t>() > std::numeric_limits<int32_t>::max())
            throw ApiError(400, std::string("'") + key + "' must hold token ids (integers >= 0)",
                           key);
        ids.push_back(int32_t(id.get<int64_t>()));
    }
    return ids;
}

std::vector<std::string> read_stop(const json& body) {
    const auto it = body.find("stop");
    if (it == body.end() || it->is_null()) return {};
    if (it->is_string()) return {it->get<std::string>()};
    if (!it->is_array())
        throw ApiError(400, "'stop' must be a string or a list of strings", "stop");
    std::vector<std::string> stops;
    for (const json& s : *it) {
        if (!s.is_string() || s.get<std::string>().empty())
            throw ApiError(400, "'stop' must hold non-empty strings", "stop");
        stops.push_back(s.get<std::string>());
    }
    return stops;
}

std::string message_content(const json& m, size_t i) {
    const std::string param = "messages[" + std::to_string(i) + "].content";
    const auto it = m.find("content");
    if (it == m.end() || it->is_null()) return "";
    if (it->is_string()) return it->get<std::string>();
    if (!it->is_array())
        throw ApiError(400, "'" + param + "' must be a string or a list of parts", param);
    std::string text;
    for (const json& part : *it) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
            throw ApiError(400, "'" + param + "': only text parts are supported", param);
        text += part["text"].get<std::string>();
    }
    return text;
}

// A message with OpenAI's tool fields: an assistant's tool_calls (content may be null), a tool
// result's tool_call_id and name.
ChatMessage message_of(const json& m, size_t i) {
    const std::string param = "messages[" + std::to_string(i) + "]";
    ChatMessage message{.role = m["role"].get<std::string>(), .content = message_content(m, i)};
    if (const auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
        if (!calls->is_array())
            throw ApiError(400, "'" + param + ".tool_calls' must be a list", param + ".tool_calls");
        for (size_t j = 0; j < calls->size(); ++j) {
            const json& call = (*calls)[j];
            const std::string call_param = param + ".tool_calls[" + std::to_string(j) + "]";
            const json* f =
                call.is_object() && call.contains("function") ? &call["function"] : nullptr;
            if (f == nullptr || !f->is_object() || !f->contains("name") ||
                !(*f)["name"].is_string())
                throw ApiError(400, "'" + call_param + "' must have a function with a name",
                               call_param);
            const json arguments = f->value("arguments", json("{}"));
            if (!arguments.is_string() ||
                json::parse(arguments.get<std::string>(), nullptr, false).is_discarded())
                throw ApiError(400, "'" + call_param + ".function.arguments' must be JSON text",
                               call_param + ".function.arguments");
            message.tool_calls.push_back({.id = call.value("id", ""),
                                          .name = (*f)["name"].get<std::string>(),
                                          .arguments = arguments.get<std::string>()});
        }
    }
    for (auto [key, field] : {std::pair{"tool_call_id", &ChatMessage::tool_call_id},
                              std::pair{"name", &ChatMessage::name}}) {
        const auto it = m.find(key);
        if (it == m.end() || it->is_null()) continue;
        if (!it->is_string())
            throw ApiError(400, "'" + param + "." + key + "' must be a string", param + "." + key);
        message.*field = it->get<std::string>();
    }
    return message;
}

Prompt chat_prompt(const json& body) {
    const auto it = body.find("messages");
    if (it == body.end() || !it->is_array())
        throw ApiError(400, "'messages' must be a list of messages", "messages");
    if (it->empty()) throw ApiError(400, "'messages' must not be empty", "messages");
    std::vector<ChatMessage> messages;
    for (size_t i = 0; i < it->size(); ++i) {
        const json& m = (*it)[i];
        const std::string param = "messages[" + std::to_string(i) + "]";
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
            m["role"].get<std::string>().empty())
            throw ApiError(400, "'" + param + "' must be an object with a 'role' string", param);
        messages.push_back(message_of(m, i));
    }
    Prompt prompt = Prompt::chat(std::move(messages));
    prompt.add_generation_prompt = read_bool(body, "add_generation_prompt", true);
    return prompt;
}

std::vector<Prompt> completion_prompts(const json& body) {
    const auto it = body.find("prompt");
    if (it == body.end() || it->is_null()) throw ApiError(400, "'prompt' is required", "prompt");
    const char* shape =
        "'prompt' must be a string, a list of strings, a list of token ids or a "
        "list of lists of token ids";
    if (it->is_string()) return {Prompt::from_text(it->get<std::string>())};
    if (!it->is_array() || it->empty()) throw ApiError(400, shape, "prompt");
    if ((*it)[0].is_number_integer()) return {Prompt::tokens(read_ids(*it, "prompt"))};
    std::vector<Prompt> prompts;
    for (const json& p : *it) {
        if (p.is_string())
            prompts.push_back(Prompt::from_text(p.get<std::string>()));
        else if (p.is_array() && !p.empty())
            prompts.push_back(Prompt::tokens(read_ids(p, "prompt")));
        else
            throw ApiError(400, shape, "prompt");
    }
    return prompts;
}

// OpenAI and vLLM fields whose effect Tandem does not implement: refused unless absent, null
// or their no-op value, so that no request is answered as if they had been honoured.
struct Unsupported {
    const char* field;
    bool (*no_op)(const json&);
};

bool is_false(const json& v) {
    return v.is_boolean() && !v.get<bool>();
}

const Unsupported kUnsupported[] = {
    {"functions", [](const json& v) { return v.is_array() && v.empty(); }},
    {"function_call", [](const json& v) { return v == "none"; }},
    {"use_beam_search", is_false},
    {"length_penalty", [](const json& v) { return v == 1 || v == 1.0; }},
    {"include_stop_str_in_output", is_false},
    {"allowed_token_ids", nullptr},
    {"bad_words", [](const json& v) { return v.is_array() && v.empty(); }},
    {"truncate_prompt_tokens", nullptr},
    {"continue_final_message", is_false},
    {"chat_template", nullptr},
    {"chat_template_kwargs", nullptr},
    {"audio", nullptr},
    {"modalities", [](const json& v) { return v == json::array({"text"}); }},
    {"prediction", nullptr},
};

std::vector<std::pair<int32_t, float>> read_logit_bias(const json& body, int64_t vocab_size) {
    const auto it = body.find("logit_bias");
    if (it == body.end() || it->is_null()) return {};
    if (!it->is_object())
        throw ApiError(400, "'logit_bias' must map token ids to biases", "logit_bias");
    std::vector<std::pair<int32_t, float>> bias;
    for (const auto& [key, value] : it->items()) {
        // A token id in decimal, as OpenAI's tokenizer ids are written.
        const bool digits = !key.empty() && key.size() <= 10 &&
                            key.find_first_not_of("0123456789") == std::string::npos;
        if (!digits || std::stoll(key) >= vocab_size)
            throw ApiError(400,
                           "'logit_bias' keys must be token ids in [0, " +
                               std::to_string(vocab_size) + "), got \"" + key + "\"",
                           "logit_bias");
        if (!value.is_number() || !(value.get<double>() >= -100.0 && value.get<double>() <= 100.0))
            throw ApiError(
                400, "'logit_bias' values must be numbers in [-100, 100], got " + value.dump(),
                "logit_bias");
        bias.emplace_back(int32_t(std::stoll(key)), float(value.get<double>()));
    }
    return bias;
}

}  // namespace

nlohmann::json parse_json_body(const std::string& body) {
    try {
        return json::parse(body);
    } catch (const json::parse_error& e) {
        // The parser's own text quotes the body and names its internals: say what and where.
        const bool utf8 = std::string_view(e.what()).find("UTF-8") != std::string_view::npos;
        throw ApiError(400, std::string("the request body is not valid JSON (") +
                                (utf8 ? "invalid UTF-8" : "syntax error") + " at byte " +
                                std::to_string(e.byte) + ")");
    }
}

GenerationRequest parse_generation_request(const json& body, bool chat, int64_t vocab_size) {
    if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
    for (const Unsupported& u : kUnsupported) {
        const auto it = body.find(u.field);
        if (it == body.end() || it->is_null() || (u.no_op && u.no_op(*it))) continue;
        throw ApiError(400, std::string("'") + u.field + "' is not supported by this server",
                       u.field);
    }
    GenerationRequest r;
    r.chat = chat;
    if (const auto m = body.find("model"); m != body.end() && !m->is_null()) {
        if (!m->is_string()) throw ApiError(400, "'model' must be a string", "model");
        r.model = m->get<std::string>();
    }
    if (chat) {
        r.prompts = {chat_prompt(body)};
        r.tools = read_tool_request(body);
        if (r.tools) r.prompts[0].tools = r.tools->tools.dump();
    } else if (body.contains("tools") && !body["tools"].is_null()) {
        throw ApiError(400, "'tools' is for /v1/chat/completions", "tools");
    } else
        r.prompts = completion_prompts(body);

    SamplingParams& p = r.params;
    constexpr int32_t kMaxInt = std::numeric_limits<int32_t>::max();
    p.n = read_int<int32_t>(body, "n", 1, 1, 16);
    const int32_t best_of = read_int<int32_t>(body, "best_of", p.n, 1, 16);
    if (best_of != p.n) throw ApiError(400, "'best_of' other than n is not supported", "best_of");
    p.temperature = read_float(body, "temperature", 1.0f, 0.0f, 100.0f);
    p.top_p = read_float(body, "top_p", 1.0f, 0.0f, 1.0f);
    if (p.top_p == 0.0f) throw ApiError(400, "'top_p' must be in (0, 1]", "top_p");
    const int32_t top_k = read_int<int32_t>(body, "top_k", 0, -1, kMaxInt);
    p.top_k = top_k < 0 ? 0 : top_k;  // vLLM: -1 means off
    p.min_p = read_float(body, "min_p", 0.0f, 0.0f, 1.0f);
    if (body.contains("seed") && !body["seed"].is_null())
        p.seed = uint64_t(read_int<int64_t>(body, "seed", 0, std::numeric_limits<int64_t>::min(),
                                            std::numeric_limits<int64_t>::max()));
    const char* max_key =
        chat && body.contains("max_completion_tokens") && !body["max_completion_tokens"].is_null()
            ? "max_completion_tokens"
            : "max_tokens";
    r.max_tokens_given = body.contains(max_key) && !body[max_key].is_null();
    r.max_tokens_key = max_key;
    // A chat answer has at least one token (vLLM); completions take 0 to score the prompt
    // (echo with logprobs).
    p.max_tokens = read_int<int32_t>(body, max_key, chat ? 0 : 16, chat ? 1 : 0, kMaxInt);
    p.min_tokens = read_int<int32_t>(body, "min_tokens", 0, 0, kMaxInt);
    p.stop = read_stop(body);
    if (p.stop.size() > 16) throw ApiError(400, "at most 16 stop strings", "stop");
    if (const auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
        if (!it->is_array())
            throw ApiError(400, "'stop_token_ids' must be a list of token ids", "stop_token_ids");
        p.stop_token_ids = read_ids(*it, "stop_token_ids");
    }
    p.ignore_eos = read_bool(body, "ignore_eos", false);
    p.presence_penalty = read_float(body, "presence_penalty", 0.0f, -2.0f, 2.0f);
    p.frequency_penalty = read_float(body, "frequency_penalty", 0.0f, -2.0f, 2.0f);
    p.repetition_penalty = read_float(body, "repetition_penalty", 1.0f, 0.01f, 100.0f);
    p.skip_special_tokens = read_bool(body, "skip_special_tokens", true);
    p.return_routed_experts = read_bool(body, "return_routed_experts", false);
    p.logit_bias = read_logit_bias(body, vocab_size);
    p.grammar = read_structured_output(body);
    r.stream = read_bool(body, "stream", false);
    if (const auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
        if (!r.stream)
            throw ApiError(400, "'stream_options' is only allowed with 'stream': true",
                           "stream_options");
        if (!it->is_object())
            throw ApiError(400, "'stream_options' must be an object", "stream_options");
        r.include_usage = read_bool(*it, "include_usage", false);
    }
    if (chat) {
        const bool logprobs = read_bool(body, "logprobs", false);
        const int32_t top = read_int<int32_t>(body, "top_logprobs", -1, 0, kMaxLogprobs);
        if (top >= 0 && !logprobs)
            throw ApiError(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs");
        r.top_logprobs = logprobs ? std::max(top, 0) : -1;
        p.logprobs = r.top_logprobs;
    } else {
        r.legacy_logprobs = read_int<int32_t>(body, "logprobs", -1, 0, kMaxLogprobs);
        p.logprobs = r.legacy_logprobs;
        r.echo = read_bool(body, "echo", false);
        if (r.echo && r.legacy_logprobs >= 0) p.prompt_logprobs = r.legacy_logprobs;
        if (body.contains("suffix") && !body["suffix"].is_null())
            throw ApiError(400, "'suffix' is not supported", "suffix");
    }
    // vLLM's -1 (the whole vocabulary) is beyond kMaxLogprobs: refused by the range.
    r.prompt_logprobs = read_int<int32_t>(body, "prompt_logprobs", -1, 0, kMaxLogprobs);
    if (r.prompt_logprobs >= 0 && r.stream)
        throw ApiError(400, "'prompt_logprobs' is not available with 'stream': true",
                       "prompt_logprobs");
    p.prompt_logprobs = std::max(p.prompt_logprobs, r.prompt_logprobs);
    return r;
}

nlohmann::json chat_logprob_entry(const Engine& engine, const TokenLogprob& lp) {
    auto entry = [&](int32_t token, float logprob) {
        const std::string text = engine.token_text(token);
        return json{{"token", text},
                    {"logprob", logprob},
                    {"bytes", std::vector<uint8_t>(text.begin(), text.end())}};
    };
    json out = entry(lp.token, lp.logprob);
    out["top_logprobs"] = json::array();
    for (const auto& [token, logprob] : lp.top)
        out["top_logprobs"].push_back(entry(token, logprob));
    return out;
}

nlohmann::json chat_logprobs(const Engine& engine, const std::vector<TokenLogprob>& lps) {
    json content = json::array();
    for (const TokenLogprob& lp : lps)
        content.push_back(chat_logprob_entry(engine, lp));
    return {{"content", content}};
}

nlohmann::json completion_logprobs(const Engine& engine, const std::vector<TokenLogprob>& lps,
                                   size_t offset, std::optional<int32_t> unscored_first) {
    json tokens = json::array(), token_logprobs = json::array(), top = json::array(),
         offsets = json::array();
    auto add_token = [&](int32_t token) {
        const std::string text = engine.token_text(token);
        tokens.push_back(text);
        offsets.push_back(offset);
        offset += text.size();
    };
    if (unscored_first) {  // the prompt's first token has no context to be scored in
        add_token(*unscored_first);
        token_logprobs.push_back(nullptr);
        top.push_back(nullptr);
    }
    for (const TokenLogprob& lp : lps) {
        add_token(lp.token);
        token_logprobs.push_back(lp.logprob);
        json alternatives = json::object();
        for (const auto& [token, logprob] : lp.top)
            alternatives[engine.token_text(token)] = logprob;
        top.push_back(alternatives);
    }
    return {{"tokens", tokens},
            {"token_logprobs", token_logprobs},
            {"top_logprobs", top},
            {"text_offset", offsets}};
}

nlohmann::json prompt_logprobs_json(const Engine& engine, const std::vector<TokenLogprob>& lps,
                                    int32_t k) {
    auto entry = [&](int32_t token, float logprob, json rank) {
        return json{{"logprob", logprob},
                    {"rank", std::move(rank)},
                    {"decoded_token", engine.token_text(token)}};
    };
    json out = json::array({nullptr});
    for (const TokenLogprob& lp : lps) {
        json position = json::object();
        json own_rank = nullptr;
        const size_t listed = std::min(lp.top.size(), size_t(k));
        for (size_t i = 0; i < listed; ++i) {
            const auto& [token, logprob] = lp.top[i];
            position[std::to_string(token)] = entry(token, logprob, int64_t(i) + 1);
            if (token == lp.token) own_rank = int64_t(i) + 1;
        }
        position[std::to_string(lp.token)] = entry(lp.token, lp.logprob, own_rank);
        out.push_back(std::move(position));
    }
    return out;
}

std::string finish_reason_json(std::optional<FinishReason> reason) {
    return reason ? std::string(finish_reason_name(*reason)) : "";
}

nlohmann::json usage_json(int64_t prompt_tokens, int64_t completion_tokens,
                          std::optional<int64_t> cached_tokens) {
    nlohmann::json usage = {{"prompt_tokens", prompt_tokens},
                            {"completion_tokens", completion_tokens},
                            {"total_tokens", prompt_tokens + completion_tokens}};
    if (cached_tokens) usage["prompt_tokens_details"] = {{"cached_tokens", *cached_tokens}};
    return usage;
}

}  // namespace tandem::server
