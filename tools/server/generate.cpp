// POST /v1/completions and /v1/chat/completions: one engine request per prompt (each with n
// samples), answered as one JSON object or streamed as server-sent events.
//
// The handler thread waits for the engine and for its client at once (Connection::wait): a
// client that hangs up aborts the request at once, so the engine drops its sequences at the
// next step; a shutdown past its timeout ends the response (an error event and [DONE] for a
// stream, a 503 otherwise).
#include <httplib.h>

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

#include "tools/server/api_error.h"
#include "tools/server/openai.h"
#include "tools/server/server.h"

namespace tandem::server {

namespace {

using nlohmann::json;

int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A prompt as the engine will see it, with the text `echo` repeats.
struct PreparedPrompt {
    std::vector<int32_t> ids;
    std::string text;
};

// The events of one streamed response: engine callbacks push, the HTTP writer pops.
struct EventQueue {
    std::mutex mutex;
    Wakeup ready;
    std::deque<std::string> events;
    bool closed = false;

    void push(std::string event) {
        {
            std::lock_guard lock(mutex);
            if (closed) return;  // ended early (shutdown): nothing may follow [DONE]
            events.push_back(std::move(event));
        }
        ready.signal();
    }
    void close() {
        {
            std::lock_guard lock(mutex);
            closed = true;
        }
        ready.signal();
    }
};

// Counts the samples of a non-streaming response still running; wakes its handler at zero.
struct Countdown {
    std::atomic<int64_t> remaining{0};
    Wakeup done;
};

// A wait re-checks its condition at least this often, should a wake-up ever be missed.
constexpr int kRecheckMs = 1000;

std::string sse(const json& chunk) {
    return "data: " + dump(chunk) + "\n\n";
}

// Waits until `finished()`, the client hangs up, or the server's shutdown timeout ends the
// request; `wake` is signalled whenever `finished()` may have turned true.
Connection::Event wait_for(Wakeup& wake, const std::function<bool()>& finished) {
    Connection* connection = HttpServer::current();
    for (;;) {
        wake.clear();
        if (finished()) return Connection::Event::Woken;
        // Outside a connection (a handler called directly): the engine alone can end the wait.
        const Connection::Event event =
            connection ? connection->wait(wake, kRecheckMs) : Connection::Event::Woken;
        if (event != Connection::Event::Woken) return event;
        if (!connection) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

}  // namespace

void Server::generate(const std::string& text, httplib::Response& res, bool chat) {
    Engine& engine = *engine_.load();
    const json body = parse_json_body(text);
    GenerationRequest g = parse_generation_request(body, chat, engine.vocab_size());
    const std::string name = model_name();
    if (!g.model.empty() && !serves_model(g.model))
        throw ApiError(
            404, "the model '" + g.model + "' does not exist; this server serves '" + name + "'",
            "model");

    std::vector<PreparedPrompt> prompts;
    for (const Prompt& p : g.prompts) {
        PreparedPrompt prepared;
        prepared.ids = engine.tokenize(p);
        if (prepared.ids.empty()) throw ApiError(400, "the prompt is empty", "prompt");
        const auto len = int64_t(prepared.ids.size());
        if (len >= engine.context_length())
            throw ApiError(400,
                           "the prompt has " + std::to_string(len) +
                               " tokens but the context length is " +
                               std::to_string(engine.context_length()),
                           chat ? "messages" : "prompt");
        if (g.max_tokens_given && len + g.params.max_tokens > engine.context_length())
            throw ApiError(400,
                           "this model's context length is " +
                               std::to_string(engine.context_length()) + " tokens; you asked for " +
                               std::to_string(len + g.params.max_tokens) + " (" +
                               std::to_string(len) + " in the prompt, " +
                               std::to_string(g.params.max_tokens) + " to generate)",
                           g.max_tokens_key);
        if (g.echo)
            prepared.text = p.token_ids.empty() && p.messages.empty()
                                ? p.text
                                : engine.detokenize(prepared.ids);
        prompts.push_back(std::move(prepared));
    }
    // Tools: the calls are parsed out of the text, special tokens included (some formats
    // mark calls with them); "required" and a named function are enforced by a grammar.
    std::optional<ToolCallFormat> tool_format;
    if (chat && g.tools && g.tools->active()) {
        tool_format = options_.tool_call_format.empty()
                          ? detect_tool_call_format(engine.chat_template())
                          : *tool_call_format_by_name(options_.tool_call_format);
        if (g.tools->choice == ToolRequest::Choice::Required ||
            g.tools->choice == ToolRequest::Choice::Named) {
            if (g.params.grammar)
                throw ApiError(400,
                               "'tool_choice' \"required\" or a named function cannot be "
                               "combined with a response format or guided decoding",
                               "tool_choice");
            g.params.grammar = tool_call_grammar(*tool_format, *g.tools);
        }
        g.params.skip_special_tokens = false;
    }
    const auto tools = g.tools ? std::make_shared<const ToolRequest>(*g.tools) : nullptr;
    const std::string id = request_id(chat ? "chatcmpl-" : "cmpl-");
    const int64_t created = unix_now();
    const int32_t n = g.params.n;
    auto params_for = [&](const PreparedPrompt& p) {
        SamplingParams params = g.params;
        if (chat && !g.max_tokens_given)
            params.max_tokens = int32_t(engine.context_length() - int64_t(p.ids.size()));
        return params;
    };
    // By value: streaming callbacks outlive this handler.
    auto logprobs_json = [chat, top = g.top_logprobs, legacy = g.legacy_logprobs, engine = &engine](
                             const std::vector<TokenLogprob>& lps, size_t offset) -> json {
        if (chat) return top >= 0 ? chat_logprobs(*engine, lps) : json(nullptr);
        return legacy >= 0 ? completion_logprobs(*engine, lps, offset) : json(nullptr);
    };

    if (!g.stream) {
        auto countdown = std::make_shared<Countdown>();
        countdown->remaining = int64_t(prompts.size()) * n;
        auto on_delta = [countdown](const StreamDelta& d) {
            if (d.finish_reason && --countdown->remaining == 0) countdown->done.signal();
        };
        std::vector<RequestHandle> handles;
        try {
            for (const PreparedPrompt& p : prompts)
                handles.push_back(engine.submit(Prompt::tokens(p.ids), params_for(p), on_delta));
        } catch (...) {
            for (RequestHandle& h : handles)
                h.abort();
            throw;
        }
        const Connection::Event event = wait_for(countdown->done, [&] {
            return countdown->remaining <= 0 ||
                   std::all_of(handles.begin(), handles.end(),
                               [](const RequestHandle& h) { return h.finished(); });
        });
        if (event != Connection::Event::Woken) {
            // Nobody will read the answer (the client hung up), or shutdown ends it: the
            // engine drops the sequences at its next step.
            for (RequestHandle& h : handles)
                h.abort();
            for (RequestHandle& h : handles)
                metrics_.observe_generation(h.wait());
            metrics_.count_abort(event == Connection::Event::ClientGone ? "client_gone"
                                                                        : "shutdown");
            if (event == Connection::Event::ClientGone) {
                HttpServer::current()->close_after_response();
                throw ApiError(499, "the client closed the connection");
            }
            throw ApiError(503, "the server is shutting down");
        }
        json choices = json::array();
        int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
        for (size_t i = 0; i < handles.size(); ++i) {
            const RequestOutput& out = handles[i].wait();
            metrics_.observe_generation(out);
            if (!out.error.empty()) throw std::runtime_error("generation failed: " + out.error);
            prompt_tokens += out.prompt_tokens;
            cached_tokens += out.cached_prompt_tokens;
            completion_tokens += out.completion_tokens;
            for (const Completion& c : out.completions) {
                json choice = {{"index", int64_t(i) * n + c.index},
                               {"finish_reason", finish_reason_json(c.finish_reason)}};
                if (chat) {
                    choice["message"] = {{"role", "assistant"}, {"content", c.text}};
                    if (tool_format && c.finish_reason == FinishReason::Stop) {
                        ParsedOutput parsed = parse_tool_calls(*tool_format, c.text, *tools);
                        if (!parsed.calls.empty()) {
                            json calls = json::array();
                            for (const ToolCall& call : parsed.calls)
                                calls.push_back(tool_call_json(call));
                            choice["message"] = {
                                {"role", "assistant"},
                                {"content",
                                 parsed.content.empty() ? json(nullptr) : json(parsed.content)},
                                {"tool_calls", calls}};
                            choice["finish_reason"] = "tool_calls";
                        }
                    }
                    choice["logprobs"] = logprobs_json(c.logprobs, 0);
                } else {
                    const std::string& echo = prompts[i].text;
                    choice["text"] = echo + c.text;
                    if (g.prompt_logprobs >= 0)
                        choice["prompt_logprobs"] =
                            prompt_logprobs_json(engine, out.prompt_logprobs, g.prompt_logprobs);
                    if (g.legacy_logprobs >= 0) {
                        std::vector<TokenLogprob> lps;
                        if (g.echo) lps = out.prompt_logprobs;
                        // The engine computed max(logprobs, prompt_logprobs) alternatives.
                        for (TokenLogprob& lp : lps)
                            lp.top.resize(std::min(lp.top.size(), size_t(g.legacy_logprobs)));
                        lps.insert(lps.end(), c.logprobs.begin(), c.logprobs.end());
                        choice["logprobs"] = completion_logprobs(
                            engine, lps, 0,
                            g.echo ? std::optional<int32_t>(out.prompt_token_ids[0])
                                   : std::nullopt);
                    } else {
                        choice["logprobs"] = nullptr;
                    }
                }
                if (g.params.return_routed_experts) {
                    const RoutedExperts& r = c.routed_experts;
                    choice["routed_experts"] = {
                        {"layers", r.layers}, {"top_k", r.top_k}, {"experts", r.experts}};
                }
                choices.push_back(choice);
            }
        }
        json response = {{"id", id},
                         {"object", chat ? "chat.completion" : "text_completion"},
                         {"created", created},
                         {"model", name},
                         {"choices", choices},
                         {"usage", usage_json(prompt_tokens, completion_tokens, cached_tokens)}};
        // vLLM: one list for the (single) prompt of a chat, beside the choices.
        if (chat && g.prompt_logprobs >= 0)
            response["prompt_logprobs"] =
                prompt_logprobs_json(engine, handles[0].wait().prompt_logprobs, g.prompt_logprobs);
        res.status = 200;
        res.set_content(dump(response), "application/json");
        return;
    }

    // Streaming: chunks are built in the engine's callbacks and written by httplib's thread.
    auto queue = std::make_shared<EventQueue>();
    auto handles = std::make_shared<std::vector<RequestHandle>>();
    struct Progress {
        std::mutex mutex;
        int64_t finished = 0, completion_tokens = 0, cached_tokens = 0;
        std::vector<size_t> text_offset;
        std::vector<ToolCallStream> tool_streams;  // per choice, with tools
        std::shared_ptr<const ToolRequest> tools;  // theirs: outlives this handler
    };
    auto progress = std::make_shared<Progress>();
    const int64_t total_choices = int64_t(prompts.size()) * n;
    progress->text_offset.assign(size_t(total_choices), 0);
    progress->tools = tools;
    if (tool_format)
        progress->tool_streams.assign(size_t(total_choices),
                                      ToolCallStream(*tool_format, tools.get()));
    int64_t prompt_tokens = 0;
    for (const PreparedPrompt& p : prompts)
        prompt_tokens += int64_t(p.ids.size());
    const bool include_usage = g.include_usage;
    auto chunk = [=](int64_t index, json fields) {
        json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
        choice.update(fields);
        return json{{"id", id},
                    {"object", chat ? "chat.completion.chunk" : "text_completion"},
                    {"created", created},
                    {"model", name},
                    {"choices", json::array({choice})}};
    };
    // The first chunk of each choice: the assistant role (chat) or the echoed prompt.
    for (size_t i = 0; i < prompts.size(); ++i)
        for (int32_t j = 0; j < n; ++j) {
            const int64_t index = int64_t(i) * n + j;
            if (chat)
                queue->push(
                    sse(chunk(index, {{"delta", {{"role", "assistant"}, {"content", ""}}}})));
            else if (g.echo)
                queue->push(sse(chunk(index, {{"text", prompts[i].text}})));
        }
    try {
        for (size_t i = 0; i < prompts.size(); ++i) {
            const int64_t base = int64_t(i) * n;
            handles->push_back(engine.submit(
                Prompt::tokens(prompts[i].ids), params_for(prompts[i]), [=](const StreamDelta& d) {
                    const int64_t index = base + d.index;
                    json fields;
                    size_t offset = 0;
                    std::string content = d.text;
                    std::vector<ToolCall> calls;
                    {
                        std::lock_guard lock(progress->mutex);
                        progress->completion_tokens += int64_t(d.token_ids.size());
                        // Once per prompt (every sample of it reports the same count).
                        if (d.finish_reason && d.index == 0)
                            progress->cached_tokens += d.cached_prompt_tokens;
                        offset = progress->text_offset[size_t(index)];
                        progress->text_offset[size_t(index)] += d.text.size();
                        if (!progress->tool_streams.empty()) {
                            ToolCallStream& tool_stream = progress->tool_streams[size_t(index)];
                            content = tool_stream.push(d.text);
                            if (d.finish_reason == FinishReason::Stop) {
                                ParsedOutput parsed = tool_stream.finish();
                                content += parsed.content;
                                calls = std::move(parsed.calls);
                            } else if (d.finish_reason) {
                                content += tool_stream.flush();
                            }
                        }
                    }
                    if (!calls.empty()) {
                        // The content before the calls, then the calls, then the end.
                        if (!content.empty())
                            queue->push(sse(chunk(index, {{"delta", {{"content", content}}}})));
                        json deltas = json::array();
                        for (size_t c = 0; c < calls.size(); ++c)
                            deltas.push_back(tool_call_json(calls[c], int64_t(c)));
                        queue->push(sse(chunk(index, {{"delta", {{"tool_calls", deltas}}}})));
                        content.clear();
                    }
                    if (chat)
                        fields["delta"] = content.empty() && (d.finish_reason || !calls.empty())
                                              ? json::object()
                                              : json{{"content", content}};
                    else
                        fields["text"] = content;
                    if (!d.logprobs.empty()) fields["logprobs"] = logprobs_json(d.logprobs, offset);
                    if (d.finish_reason) {
                        if (*d.finish_reason == FinishReason::Error) {
                            queue->push(sse(error_body(500, "generation failed")));
                        }
                        fields["finish_reason"] =
                            calls.empty() ? finish_reason_json(d.finish_reason) : "tool_calls";
                    }
                    if (d.token_ids.empty() && d.text.empty() && !d.finish_reason) return;
                    queue->push(sse(chunk(index, fields)));
                    if (!d.finish_reason) return;
                    std::lock_guard lock(progress->mutex);
                    if (++progress->finished < total_choices) return;
                    if (include_usage)
                        queue->push(
                            sse({{"id", id},
                                 {"object", chat ? "chat.completion.chunk" : "text_completion"},
                                 {"created", created},
                                 {"model", name},
                                 {"choices", json::array()},
                                 {"usage", usage_json(prompt_tokens, progress->completion_tokens,
                                                      progress->cached_tokens)}}));
                    queue->push("data: [DONE]\n\n");
                    queue->close();
                }));
        }
    } catch (...) {
        for (RequestHandle& h : *handles)
            h.abort();
        throw;
    }
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, queue, handles](size_t, httplib::DataSink& sink) {
            Connection* connection = HttpServer::current();
            std::unique_lock lock(queue->mutex);
            while (queue->events.empty() && !queue->closed) {
                lock.unlock();
                const Connection::Event event = connection
                                                    ? connection->wait(queue->ready, kRecheckMs)
                                                    : Connection::Event::Woken;
                if (!connection) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                if (event == Connection::Event::ClientGone) return false;  // aborts below
                if (event == Connection::Event::Cancelled) {
                    // Shutdown past its timeout: the client learns why its stream ends.
                    queue->push(sse(error_body(503, "the server is shutting down")));
                    queue->push("data: [DONE]\n\n");
                    queue->close();
                    for (RequestHandle& h : *handles)
                        h.abort();
                    metrics_.count_abort("shutdown");
                }
                queue->ready.clear();
                lock.lock();
            }
            while (!queue->events.empty()) {
                const std::string event = std::move(queue->events.front());
                queue->events.pop_front();
                lock.unlock();
                if (!sink.write(event.data(), event.size())) return false;  // client gone
                lock.lock();
            }
            if (queue->closed) sink.done();
            return true;
        },
        [this, handles](bool success) {
            // Normal end or a broken connection: either way nothing may keep running.
            if (!success) {
                for (RequestHandle& h : *handles)
                    h.abort();
                metrics_.count_abort("client_gone");
            }
            for (RequestHandle& h : *handles)
                metrics_.observe_generation(h.wait());
        });
}

}  // namespace tandem::server
