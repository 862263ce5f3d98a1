#include "tools/server/server.h"

#include <httplib.h>

#include <chrono>
#include <filesystem>

#include "kernels/log.h"
#include "models/config.h"
#include "tools/server/api_error.h"
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

json parse_body(const httplib::Request& req) {
    try {
        return json::parse(req.body);
    } catch (const json::parse_error& e) {
        throw ApiError(400, std::string("the request body is not valid JSON: ") + e.what());
    }
}

}  // namespace

Server::Server(ServerOptions options)
    : options_(std::move(options)), http_(std::make_unique<httplib::Server>()) {
    const int threads = options_.http_threads;
    http_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
    http_->set_payload_max_length(options_.max_body_bytes);
    http_->set_read_timeout(60, 0);
    http_->set_write_timeout(60, 0);
    // Clients keep connections open across many requests (the openai client pools them);
    // closing after httplib's default of 5 requests races with a client reusing the socket, and
    // so does closing idle ones before the client does (httpx drops them after 5 s). Shutting
    // down waits for idle connections, so this is also the longest a stop takes.
    http_->set_keep_alive_max_count(100000);
    http_->set_keep_alive_timeout(10);
    // httplib answers some errors itself (404 no route, 413 body too large) with an empty body;
    // give them the OpenAI envelope. Our own error responses already have one.
    http_->set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return;
        const std::string message = res.status == 413
                                        ? "the request body exceeds the limit of " +
                                              std::to_string(options_.max_body_bytes) + " bytes"
                                    : res.status == 404 ? "no route " + req.method + " " + req.path
                                                        : "request failed";
        send_error(res, res.status, message);
        metrics_.count_request(req.path, res.status);
    });
    routes();
}

Server::~Server() = default;

int Server::bind() {
    const int port = options_.port == 0
                         ? http_->bind_to_any_port(options_.host)
                         : (http_->bind_to_port(options_.host, options_.port) ? options_.port : -1);
    if (port < 0)
        throw std::runtime_error("cannot listen on " + options_.host + ":" +
                                 std::to_string(options_.port));
    return port;
}

void Server::serve() {
    http_->listen_after_bind();
}

void Server::stop() {
    http_->stop();
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

void Server::route(const std::string& method, const std::string& path, Handler handler,
                   bool needs_engine, bool needs_key) {
    auto wrapped = [=, this](const httplib::Request& req, httplib::Response& res) {
        try {
            if (needs_key && !options_.api_key.empty() && bearer_token(req) != options_.api_key)
                throw ApiError(401, "invalid or missing API key (Authorization: Bearer ...)");
            if (needs_engine && engine_.load() == nullptr)
                throw ApiError(503, load_failed_ ? "the model failed to load: " + load_error_
                                                 : "the model is loading");
            (this->*handler)(req, res);
        } catch (const ApiError& e) {
            send_error(res, e.status(), e.what(), e.param());
        } catch (const RequestError& e) {
            send_error(res, 400, e.what());
        } catch (const QueueFullError& e) {
            send_error(res, 503, e.what());
        } catch (const json::exception& e) {
            send_error(res, 400, std::string("bad request: ") + e.what());
        } catch (const std::exception& e) {
            log_error("server: ", req.method, " ", req.path, ": ", e.what());
            send_error(res, 500, e.what());
        }
        metrics_.count_request(path, res.status);
    };
    if (method == "GET")
        http_->Get(path, wrapped);
    else
        http_->Post(path, wrapped);
}

void Server::routes() {
    route("GET", "/health", &Server::health, false, false);
    route("GET", "/v1/health", &Server::health, false, false);
    route("GET", "/metrics", &Server::metrics, false, false);
    route("GET", "/v1/models", &Server::models);
    route("POST", "/v1/completions", &Server::completions);
    route("POST", "/v1/chat/completions", &Server::chat_completions);
    route("POST", "/tokenize", &Server::tokenize);
    route("POST", "/detokenize", &Server::detokenize);
    route("POST", "/v1/load_weights", &Server::load_weights, true, false);
}

void Server::health(const httplib::Request&, httplib::Response& res) {
    if (engine_.load() == nullptr)
        throw ApiError(503, load_failed_ ? "the model failed to load: " + load_error_
                                         : "the model is loading");
    send_json(res, 200, {{"status", "ok"}});
}

void Server::models(const httplib::Request&, httplib::Response& res) {
    Engine& engine = *engine_.load();
    const auto created = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
    send_json(res, 200,
              {{"object", "list"},
               {"data",
                {{{"id", model_name()},
                  {"object", "model"},
                  {"created", created},
                  {"owned_by", "tandem"},
                  {"root", engine.model_name()},
                  {"max_model_len", engine.context_length()}}}}});
}

void Server::chat_completions(const httplib::Request& req, httplib::Response& res) {
    generate(req, res, true);
}

void Server::completions(const httplib::Request& req, httplib::Response& res) {
    generate(req, res, false);
}

void Server::tokenize(const httplib::Request& req, httplib::Response& res) {
    Engine& engine = *engine_.load();
    const json body = parse_body(req);
    if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");
    Prompt prompt;
    if (body.contains("messages")) {
        json chat = body;
        prompt = parse_generation_request(chat, true).prompts.at(0);
    } else {
        const json text = body.contains("prompt") ? body["prompt"] : body.value("content", json());
        if (!text.is_string()) throw ApiError(400, "'prompt' must be a string", "prompt");
        prompt = Prompt::from_text(text.get<std::string>());
        const auto special = body.find("add_special_tokens");
        if (special != body.end() && !special->is_boolean())
            throw ApiError(400, "'add_special_tokens' must be a boolean", "add_special_tokens");
        prompt.add_special_tokens = special == body.end() || special->get<bool>();
    }
    const std::vector<int32_t> ids = engine.tokenize(prompt);
    json out = {{"count", ids.size()}, {"max_model_len", engine.context_length()}, {"tokens", ids}};
    if (body.value("return_token_strs", false)) {
        json strs = json::array();
        for (int32_t id : ids)
            strs.push_back(engine.token_text(id));
        out["token_strs"] = strs;
    }
    send_json(res, 200, out);
}

void Server::detokenize(const httplib::Request& req, httplib::Response& res) {
    Engine& engine = *engine_.load();
    const json body = parse_body(req);
    if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array())
        throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
    std::vector<int32_t> ids;
    for (const json& id : body["tokens"]) {
        if (!id.is_number_integer())
            throw ApiError(400, "'tokens' must be a list of token ids", "tokens");
        ids.push_back(int32_t(id.get<int64_t>()));
    }
    send_json(res, 200, {{"prompt", engine.detokenize(ids)}});
}

void Server::metrics(const httplib::Request&, httplib::Response& res) {
    Engine* engine = engine_.load();
    const EngineStats stats = engine ? engine->stats() : EngineStats{};
    res.set_content(metrics_.render(engine ? &stats : nullptr), "text/plain; version=0.0.4");
}

void Server::load_weights(const httplib::Request& req, httplib::Response& res) {
    namespace fs = std::filesystem;
    if (options_.admin_key.empty() || options_.weights_dir.empty())
        throw ApiError(403,
                       "load_weights is disabled: start the server with --admin-key and "
                       "--weights-dir");
    if (bearer_token(req) != options_.admin_key) throw ApiError(401, "invalid admin key");
    const json body = parse_body(req);
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
