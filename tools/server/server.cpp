#include "tools/server/server.h"

#include <httplib.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "kernels/log.h"
#include "models/config.h"
#include "tools/server/api_error.h"
#include "tools/server/chat_page.h"
#include "tools/server/openai.h"

namespace tandem::server {

namespace {

using nlohmann::json;

void send_json(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(dump(body), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& param = "") {
    send_json(res, status, error_body(status, message, param));
    if (status == 503) res.set_header("Retry-After", "1");
}

std::string bearer_token(const httplib::Request& req) {
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    return auth.rfind(prefix, 0) == 0 ? auth.substr(prefix.size()) : "";
}

// The whole body of a POST, whatever its Content-Type: `curl -d` sends JSON as
// application/x-www-form-urlencoded, which httplib would otherwise parse as a form (and refuse
// above 8 KiB). False when it cannot be read (res.status says why: 413 over the limit).
bool read_body(const httplib::Request& req, httplib::Response& res,
               const httplib::ContentReader& reader, std::string& body) {
    auto append = [&](const char* data, size_t size) {
        body.append(data, size);
        return true;
    };
    if (req.is_multipart_form_data()) {
        // Read (to keep the connection in step) and refuse: the API takes JSON only.
        const bool ok = reader([](const httplib::MultipartFormData&) { return true; },
                               [](const char*, size_t) { return true; });
        if (ok) throw ApiError(400, "the request body must be JSON, not multipart/form-data");
        return false;
    }
    return reader(append);
}

}  // namespace

Server::Server(ServerOptions options)
    : options_(std::move(options)), http_(std::make_unique<HttpServer>(options_.http)) {
    std::random_device entropy;
    std::seed_seq seed{entropy(), entropy(), entropy(), entropy(), entropy(), entropy()};
    ids_.seed(seed);
    http_->set_payload_max_length(options_.max_body_bytes);
    // httplib answers some errors itself (404 no route, 413 body too large, 400 a malformed
    // request line) with an empty body; give them the OpenAI envelope. Our own error responses
    // already have one.
    http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return;
        const std::string message = res.status == 413
                                        ? "the request body exceeds the limit of " +
                                              std::to_string(options_.max_body_bytes) + " bytes"
                                    : res.status == 404 ? "no route " + req.method + " " + req.path
                                    : res.status == 400 ? "malformed HTTP request"
                                                        : "request failed";
        send_error(res, res.status, message);
        metrics_.count_request(req.path, res.status);
    });
    // An exception out of httplib's own code (ours are all caught in route()): no raw text.
    http_->set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr error) {
            try {
                std::rethrow_exception(error);
            } catch (const std::exception& e) {
                log_error("server: ", req.method, " ", req.path, ": ", e.what());
            } catch (...) {
            }
            send_error(res, 500, "internal error");
        });
    routes();
}

Server::~Server() = default;

int Server::bind() {
    return http_->bind(options_.host, options_.port);
}

void Server::serve() {
    http_->serve();
}

bool Server::shutdown(std::chrono::milliseconds timeout) {
    using Clock = std::chrono::steady_clock;
    http_->stop_accepting();
    if (http_->wait_idle(Clock::now() + timeout)) return true;
    log_warn("shutdown: requests still running after ", timeout.count(), " ms: ending them");
    // Streams write their error event and [DONE], waiting requests answer 503; a client that
    // does not read its stream is cut off a little later.
    http_->cancel_requests();
    if (!http_->wait_idle(Clock::now() + std::chrono::seconds(2))) {
        http_->cut_connections();
        http_->wait_idle(Clock::now() + std::chrono::seconds(1));
    }
    return false;
}

std::string Server::request_id(const char* prefix) {
    uint64_t a, b;
    {
        std::lock_guard lock(ids_mutex_);
        a = ids_();
        b = ids_();
    }
    char hex[33];
    std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(a),
                  static_cast<unsigned long long>(b));
    return prefix + std::string(hex);
}

void Server::set_engine(Engine* engine) {
    engine_ = engine;
}

void Server::set_load_error(const std::string& message) {
    load_error_ = message;
    load_failed_ = true;
}

std::string Server::model_name() const {
    if (!options_.served_model_name.empty()) return options_.served_model_name;
    Engine* engine = engine_.load();
    return engine ? engine->model_name() : "";
}

bool Server::serves_model(const std::string& name) const {
    return name == model_name() || name == engine_.load()->model_name();
}

void Server::route(const std::string& method, const std::string& path, Handler handler,
                   bool needs_engine, Access access) {
    auto guarded = [=, this](const httplib::Request& req, httplib::Response& res,
                             const httplib::ContentReader* reader) {
        bool body_read = reader == nullptr;
        if (HttpServer::current()) HttpServer::current()->mark_handling();
        try {
            if (access == Access::Key && !options_.api_key.empty() &&
                bearer_token(req) != options_.api_key)
                throw ApiError(401, "invalid or missing API key (Authorization: Bearer ...)");
            std::string body;
            if (reader) {
                if (!read_body(req, res, *reader, body)) {
                    if (res.status == 413)
                        throw ApiError(413, "the request body exceeds the limit of " +
                                                std::to_string(options_.max_body_bytes) + " bytes");
                    throw ApiError(400, "the request body could not be read");
                }
                body_read = true;
            }
            if (needs_engine && engine_.load() == nullptr)
                throw ApiError(503, load_failed_ ? "the model failed to load: " + load_error_
                                                 : "the model is loading");
            (this->*handler)(req, body, res);
        } catch (const ApiError& e) {
            send_error(res, e.status(), e.what(), e.param());
        } catch (const RequestError& e) {
            send_error(res, 400, e.what());
        } catch (const QueueFullError& e) {
            send_error(res, 503, e.what());
        } catch (const json::exception& e) {
            // Every field is read with a type check (openai.cpp); this is a missed one.
            log_warn("server: ", req.method, " ", req.path, ": ", e.what());
            send_error(res, 400, "a field of the request has the wrong type");
        } catch (const std::exception& e) {
            log_error("server: ", req.method, " ", req.path, ": ", e.what());
            send_error(res, 500, e.what());
        }
        // A body left (partly) unread would be taken for the next request: close instead.
        if (!body_read && HttpServer::current()) HttpServer::current()->close_after_response();
        metrics_.count_request(path, res.status);
    };
    if (method == "GET")
        http_->Get(path, [guarded](const httplib::Request& req, httplib::Response& res) {
            guarded(req, res, nullptr);
        });
    else
        http_->Post(
            path, [guarded](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& reader) { guarded(req, res, &reader); });
}

void Server::routes() {
    const Access metrics_access = options_.public_metrics ? Access::Public : Access::Key;
    // The page holds no secret and works while the model loads; its API calls carry the key.
    if (options_.chat_page) route("GET", "/", &Server::chat_page, false, Access::Public);
    route("GET", "/health", &Server::health, false, Access::Public);
    route("GET", "/v1/health", &Server::health, false, Access::Public);
    route("GET", "/metrics", &Server::metrics, false, metrics_access);
    route("GET", "/v1/models", &Server::models, true, Access::Key);
    route("GET", "/v1/models/(.+)", &Server::model, true, Access::Key);
    route("POST", "/v1/completions", &Server::completions, true, Access::Key);
    route("POST", "/v1/chat/completions", &Server::chat_completions, true, Access::Key);
    route("POST", "/tokenize", &Server::tokenize, true, Access::Key);
    route("POST", "/detokenize", &Server::detokenize, true, Access::Key);
    route("POST", "/v1/load_weights", &Server::load_weights, true, Access::Public);
}

void Server::health(const httplib::Request&, const std::string&, httplib::Response& res) {
    if (http_->stopping()) throw ApiError(503, "the server is shutting down");
    if (engine_.load() == nullptr)
        throw ApiError(503, load_failed_ ? "the model failed to load: " + load_error_
                                         : "the model is loading");
    send_json(res, 200, {{"status", "ok"}});
}

void Server::chat_page(const httplib::Request&, const std::string&, httplib::Response& res) {
    // Inline script and style only, requests to this origin only: a page that a reply could
    // never make load or send anything elsewhere (replies are inserted as text anyway).
    res.set_header("Content-Security-Policy",
                   "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                   "connect-src 'self'; base-uri 'none'; form-action 'none'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Cache-Control", "no-cache");
    res.status = 200;
    res.set_content(std::string(chat_page_html()), "text/html; charset=utf-8");
}

json Server::model_card() const {
    Engine& engine = *engine_.load();
    const auto created = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    return {{"id", model_name()},          {"object", "model"},
            {"created", created},          {"owned_by", "tandem"},
            {"root", engine.model_name()}, {"max_model_len", engine.context_length()}};
}

void Server::models(const httplib::Request&, const std::string&, httplib::Response& res) {
    send_json(res, 200, {{"object", "list"}, {"data", json::array({model_card()})}});
}

void Server::model(const httplib::Request& req, const std::string&, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (!serves_model(id))
        throw ApiError(
            404, "the model '" + id + "' does not exist; this server serves '" + model_name() + "'",
            "model");
    send_json(res, 200, model_card());
}

void Server::chat_completions(const httplib::Request&, const std::string& body,
                              httplib::Response& res) {
    generate(body, res, true);
}

void Server::completions(const httplib::Request&, const std::string& body, httplib::Response& res) {
    generate(body, res, false);
}

void Server::tokenize(const httplib::Request&, const std::string& raw, httplib::Response& res) {
    Engine& engine = *engine_.load();
    const json body = parse_json_body(raw);
    if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
    Prompt prompt;
    if (body.contains("messages")) {
        json chat = body;
        prompt = parse_generation_request(chat, true, engine.vocab_size()).prompts.at(0);
    } else {
        const json text = body.contains("prompt") ? body["prompt"] : body.value("content", json());
        if (!text.is_string()) throw ApiError(400, "'prompt' must be a string", "prompt");
        prompt = Prompt::from_text(text.get<std::string>());
        const auto special = body.find("add_special_tokens");
        if (special != body.end() && !special->is_boolean())
            throw ApiError(400, "'add_special_tokens' must be a boolean", "add_special_tokens");
        prompt.add_special_tokens = special == body.end() || special->get<bool>();
    }
    const auto want_strs = body.find("return_token_strs");
    if (want_strs != body.end() && !want_strs->is_null() && !want_strs->is_boolean())
        throw ApiError(400, "'return_token_strs' must be a boolean", "return_token_strs");
    const std::vector<int32_t> ids = engine.tokenize(prompt);
    json out = {{"count", ids.size()}, {"max_model_len", engine.context_length()}, {"tokens", ids}};
    if (want_strs != body.end() && want_strs->is_boolean() && want_strs->get<bool>()) {
        json strs = json::array();
        for (int32_t id : ids)
            strs.push_back(engine.token_text(id));
        out["token_strs"] = strs;
    }
    send_json(res, 200, out);
}

void Server::detokenize(const httplib::Request&, const std::string& text, httplib::Response& res) {
    Engine& engine = *engine_.load();
    const json body = parse_json_body(text);
    if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array())
        throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
    // Compared as the JSON number they are: a cast to int32 first would wrap 2^32 + 5 to 5.
    std::vector<int32_t> ids;
    for (const json& id : body["tokens"]) {
        const bool in_vocab = id.is_number_unsigned()
                                  ? id.get<uint64_t>() < uint64_t(engine.vocab_size())
                                  : id.is_number_integer() && id.get<int64_t>() >= 0 &&
                                        id.get<int64_t>() < engine.vocab_size();
        if (!in_vocab)
            throw ApiError(400,
                           "'tokens' must hold token ids in [0, " +
                               std::to_string(engine.vocab_size()) + "), got " + dump(id),
                           "tokens");
        ids.push_back(int32_t(id.get<int64_t>()));
    }
    send_json(res, 200, {{"prompt", engine.detokenize(ids)}});
}

void Server::metrics(const httplib::Request&, const std::string&, httplib::Response& res) {
    Engine* engine = engine_.load();
    const EngineStats stats = engine ? engine->stats() : EngineStats{};
    std::string text = metrics_.render(engine ? &stats : nullptr);
    http_->render_metrics(text);
    res.set_content(text, "text/plain; version=0.0.4");
}

void Server::load_weights(const httplib::Request& req, const std::string& text,
                          httplib::Response& res) {
    namespace fs = std::filesystem;
    if (options_.admin_key.empty() || options_.weights_dir.empty())
        throw ApiError(403,
                       "load_weights is disabled: start the server with --admin-key and "
                       "--weights-dir");
    if (bearer_token(req) != options_.admin_key) throw ApiError(401, "invalid admin key");
    const json body = parse_json_body(text);
    if (!body.is_object() || !body.contains("path") || !body["path"].is_string())
        throw ApiError(400, "'path' must be a string", "path");
    const fs::path root = fs::weakly_canonical(options_.weights_dir);
    fs::path path = body["path"].get<std::string>();
    if (path.is_relative()) path = root / path;
    path = fs::weakly_canonical(path);
    const auto rel = path.lexically_relative(root);
    if (rel.empty() || *rel.begin() == "..")
        throw ApiError(403, "'path' must be inside the weights directory " + root.string(), "path");
    try {
        engine_.load()->reload_weights(path.string());
    } catch (const RequestError&) {
        throw;
    } catch (const std::exception& e) {
        throw ApiError(400, std::string("cannot load the weights: ") + e.what(), "path");
    }
    send_json(res, 200, {{"status", "ok"}, {"path", path.string()}});
}

}  // namespace tandem::server
