// tandem-server's HTTP surface: the OpenAI-compatible routes over one Engine, on cpp-httplib
// (thread per connection from a pool; streaming responses are chunked server-sent events).
//
// Every error is the OpenAI envelope with the right status: 400 bad parameters, 401 bad key,
// 404 unknown model or route, 413 body over the limit, 503 (with Retry-After) while loading or
// when the queue is full, 500 only for faults of the engine itself. A client that goes away
// mid-stream aborts its request, which frees its KV blocks at the next step.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include <tandem/engine.h>

#include "tools/server/metrics.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace tandem::server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8000;          // 0: any free port (printed at start)
    std::string api_key;      // "": no authentication
    std::string admin_key;    // "": /v1/load_weights is disabled
    std::string weights_dir;  // load_weights may only read checkpoints under it
    size_t max_body_bytes = 16 << 20;
    std::string served_model_name;  // "": the model directory's name
    int http_threads = 128;         // concurrent connections (a stream holds one)
};

class Server {
  public:
    explicit Server(ServerOptions options);
    ~Server();

    // Binds the socket; returns the port (useful with port 0). Throws on failure.
    int bind();
    // Serves until stop(); call after bind(), from its own thread.
    void serve();
    void stop();

    // The engine once it is loaded; until then /health and generation answer 503.
    void set_engine(Engine* engine);
    void set_load_error(const std::string& message);

  private:
    void routes();
    using Handler = void (Server::*)(const httplib::Request&, httplib::Response&);
    void route(const std::string& method, const std::string& path, Handler handler,
               bool needs_engine = true, bool needs_key = true);

    void health(const httplib::Request&, httplib::Response&);
    void models(const httplib::Request&, httplib::Response&);
    void chat_completions(const httplib::Request&, httplib::Response&);
    void completions(const httplib::Request&, httplib::Response&);
    void generate(const httplib::Request&, httplib::Response&, bool chat);
    void tokenize(const httplib::Request&, httplib::Response&);
    void detokenize(const httplib::Request&, httplib::Response&);
    void metrics(const httplib::Request&, httplib::Response&);
    void load_weights(const httplib::Request&, httplib::Response&);

    std::string model_name() const;

    ServerOptions options_;
    std::unique_ptr<httplib::Server> http_;
    std::atomic<Engine*> engine_{nullptr};
    std::string load_error_;
    std::atomic<bool> load_failed_{false};
    Metrics metrics_;
    std::atomic<uint64_t> next_id_{1};
};

}  // namespace tandem::server
