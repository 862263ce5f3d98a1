// tandem-server's HTTP surface: the OpenAI-compatible routes over one Engine, on cpp-httplib
// (HttpServer: a thread per connection, capped in all and per client; streaming responses are
// chunked server-sent events).
//
// Every error is the OpenAI envelope with the right status: 400 bad parameters (and requests
// that can never fit), 401 bad key, 404 unknown model or route, 413 body over the limit, 503
// (with Retry-After) while loading, when the queue is full or while shutting down, 500 only for
// faults of the engine itself. A client that goes away, streaming or not, aborts its request,
// which frees its KV blocks at the next step.
//
// Shutdown (shutdown()): the listener closes and idle connections with it; requests in
// progress run on up to the timeout; then each open stream ends with an error event and
// `data: [DONE]`, each waiting non-streaming request gets a 503, and their sequences abort.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include <tandem/engine.h>
#include <nlohmann/json.hpp>

#include "tools/server/http_server.h"
#include "tools/server/metrics.h"

namespace tandem::server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8000;          // 0: any free port (printed at start)
    std::string api_key;      // "": no authentication
    std::string admin_key;    // "": /v1/load_weights is disabled
    std::string weights_dir;  // load_weights may only read checkpoints under it
    size_t max_body_bytes = 16 << 20;
    std::string served_model_name;  // "": the model directory's name
    bool public_metrics = false;    // /metrics without the API key
    bool chat_page = true;          // the chat page at /
    std::string tool_call_format;   // "": from the chat template (tool_calls.h)
    HttpLimits http;
};

class Server {
  public:
    explicit Server(ServerOptions options);
    ~Server();

    // Binds the socket; returns the port (useful with port 0). Throws on failure.
    int bind();
    // Serves until shutdown() has ended every connection; call after bind(), from its own
    // thread.
    void serve();
    // Stops accepting, lets requests in progress finish for up to `timeout`, then ends the rest
    // (their streams get an error event and [DONE]). True if none had to be ended. Returns once
    // every connection closed, or after a few seconds more if some client does not read.
    bool shutdown(std::chrono::milliseconds timeout);

    // The engine once it is loaded; until then /health and generation answer 503.
    void set_engine(Engine* engine);
    void set_load_error(const std::string& message);

  private:
    void routes();
    // A handler gets the request and its body (POST: read whatever the Content-Type says).
    using Handler = void (Server::*)(const httplib::Request&, const std::string& body,
                                     httplib::Response&);
    enum class Access { Public, Key };
    void route(const std::string& method, const std::string& path, Handler handler,
               bool needs_engine, Access access);

    void health(const httplib::Request&, const std::string&, httplib::Response&);
    void chat_page(const httplib::Request&, const std::string&, httplib::Response&);
    void models(const httplib::Request&, const std::string&, httplib::Response&);
    void model(const httplib::Request&, const std::string&, httplib::Response&);
    void chat_completions(const httplib::Request&, const std::string&, httplib::Response&);
    void completions(const httplib::Request&, const std::string&, httplib::Response&);
    void generate(const std::string& body, httplib::Response&, bool chat);
    void tokenize(const httplib::Request&, const std::string&, httplib::Response&);
    void detokenize(const httplib::Request&, const std::string&, httplib::Response&);
    void metrics(const httplib::Request&, const std::string&, httplib::Response&);
    void load_weights(const httplib::Request&, const std::string&, httplib::Response&);

    std::string model_name() const;
    bool serves_model(const std::string& name) const;
    nlohmann::json model_card() const;
    // "chatcmpl-" + 32 random hex digits: unique across requests and restarts.
    std::string request_id(const char* prefix);

    ServerOptions options_;
    std::unique_ptr<HttpServer> http_;
    std::atomic<Engine*> engine_{nullptr};
    std::string load_error_;
    std::atomic<bool> load_failed_{false};
    Metrics metrics_;
    std::mutex ids_mutex_;
    std::mt19937_64 ids_;
};

}  // namespace tandem::server
