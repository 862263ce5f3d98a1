// tandem-server: an OpenAI-compatible HTTP server over one Tandem engine.
//
//   tandem-server [--model path/to/model] [--port 8000] [--api-key KEY]
//
// It listens at once and loads the model in the background: /health answers 503 until the
// model is ready, and if it fails to load the server exits (status 3) with the load error.
// SIGTERM or SIGINT stop it gracefully (README "tandem-server": stop accepting, let requests in
// progress finish up to --shutdown-timeout, end the rest); a second signal exits at once.
//
// Exit status: 0 stopped by a signal with every request finished; 1 bad configuration or
// cannot listen (CLI11's own 100-127 for a bad command line); 3 the model failed to load;
// 4 stopped by a signal, requests still running at --shutdown-timeout were ended;
// 128 + the signal number: a second signal.
#include <CLI/CLI.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include <tandem/engine.h>

#include "kernels/log.h"
#include "tools/engine_flags.h"
#include "tools/load_progress.h"
#include "tools/server/server.h"

namespace {

constexpr int kExitConfig = 1;
constexpr int kExitLoadFailed = 3;
constexpr int kExitShutdownTimedOut = 4;

// How the serving ended, set by the first signal's shutdown.
struct Stop {
    std::mutex mutex;
    std::condition_variable changed;
    bool started = false;   // a signal started shutdown()
    bool finished = false;  // shutdown() returned
    bool clean = true;      // every request finished in time
};

// After shutdown() the connections are closed or cut; should a handler still hold one (a
// request stuck in the engine), the process ends anyway this much later.
constexpr auto kExitGrace = std::chrono::seconds(5);

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"OpenAI-compatible HTTP server for a Tandem model"};
    tandem::EngineConfig config;
    tandem::server::ServerOptions options;
    std::string log_level = "info";
    double shutdown_timeout = 30;
    int64_t request_timeout = options.http.request_timeout.count();
    // The demo model trained for Tandem (models/demo/) unless told otherwise.
    config.model_dir = TANDEM_DEFAULT_MODEL;
    app.set_version_flag("--version", tandem::version_line("tandem-server"));
    app.add_option("--model", config.model_dir, "Hugging Face model directory or .gguf file")
        ->capture_default_str();
    app.add_option("--host", options.host, "address to bind")->capture_default_str();
    app.add_option("--port", options.port, "port, 0 = any free one")->capture_default_str();
    app.add_option("--api-key", options.api_key,
                   "require Authorization: Bearer KEY (also on /metrics)");
    app.add_flag("--public-metrics", options.public_metrics, "serve /metrics without the API key");
    app.add_flag("!--no-chat-page", options.chat_page, "do not serve the chat page at /");
    app.add_option("--tool-call-format", options.tool_call_format,
                   "syntax of the model's tool calls (default: from its chat template)")
        ->check(CLI::IsMember({"hermes", "llama3_json", "mistral", "deepseek_v3", "glm45"}));
    app.add_option("--admin-key", options.admin_key, "key of POST /v1/load_weights");
    app.add_option("--weights-dir", options.weights_dir,
                   "directory load_weights may read checkpoints from");
    app.add_option("--served-model-name", options.served_model_name,
                   "model id in the API (default: the directory name)");
    app.add_option("--max-body-bytes", options.max_body_bytes, "larger bodies get 413")
        ->capture_default_str();
    app.add_option("--max-connections", options.http.max_connections,
                   "open connections at most; more are answered 503 and closed")
        ->capture_default_str()
        ->check(CLI::Range(1, 100000));
    app.add_option("--max-client-connections", options.http.max_client_connections,
                   "open connections per client address; more are answered 429 (0: no cap)")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    app.add_option("--request-timeout", request_timeout,
                   "seconds from a request's first byte to its last (headers and body)")
        ->capture_default_str()
        ->check(CLI::Range(int64_t(1), int64_t(3600)));
    app.add_option("--shutdown-timeout", shutdown_timeout,
                   "seconds that requests in progress get to finish after SIGTERM")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 86400.0));
    add_engine_flags(app, config);
    app.add_option("--log-level", log_level, "error, warn, info or debug")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    options.http.request_timeout = std::chrono::seconds(request_timeout);

    Stop stop;
    try {
        tandem::set_log_level(tandem::parse_log_level(log_level));
        // A bad config fails here, before the server listens (the model itself loads later).
        tandem::finish_engine_flags(config);
        // SIGINT/SIGTERM are taken by a thread of their own (sigwait), never by a handler
        // interrupting arbitrary code; every thread started below inherits the mask.
        sigset_t stop_signals;
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGINT);
        sigaddset(&stop_signals, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
        std::signal(SIGPIPE, SIG_IGN);  // a closed connection is an error return, not a signal
        tandem::server::Server server(options);
        const int port = server.bind();
        std::printf("tandem-server listening on http://%s:%d\n", options.host.c_str(), port);
        std::fflush(stdout);
        std::thread http([&] { server.serve(); });
        const auto timeout = std::chrono::milliseconds(int64_t(shutdown_timeout * 1000));
        auto shut_down = [&] {
            const bool clean = server.shutdown(timeout);
            {
                // Notified under the lock: main may destroy `stop` as soon as it is released.
                std::lock_guard lock(stop.mutex);
                stop.clean = clean;
                stop.finished = true;
                stop.changed.notify_all();
            }
            std::this_thread::sleep_for(kExitGrace);
            tandem::log_warn("shutdown: a connection is still open; exiting");
            std::_Exit(clean ? 0 : kExitShutdownTimedOut);
        };
        std::thread signals([&] {
            int signal = 0;
            sigwait(&stop_signals, &signal);
            tandem::log_info("signal ", signal, ": stopping (a second signal exits at once)");
            {
                std::lock_guard lock(stop.mutex);
                stop.started = true;
            }
            std::thread(shut_down).detach();
            sigwait(&stop_signals, &signal);
            tandem::log_warn("signal ", signal, " again: exiting at once");
            std::_Exit(128 + signal);
        });
        signals.detach();  // the process ends with main
        std::optional<tandem::Engine> engine;
        try {
            config.on_load_progress = tandem::terminal_load_progress("tandem-server");
            engine.emplace(tandem::Engine::open(config));
            server.set_engine(&*engine);
            tandem::log_info("serving ", config.model_dir);
        } catch (const std::exception& e) {
            // Supervisors must see this: the server goes away instead of answering 503.
            std::fprintf(stderr, "tandem-server: cannot load %s: %s\n", config.model_dir.c_str(),
                         e.what());
            server.set_load_error(e.what());
            server.shutdown(std::chrono::milliseconds(0));
            http.join();
            std::unique_lock lock(stop.mutex);  // a signal's shutdown may be running too
            stop.changed.wait(lock, [&] { return !stop.started || stop.finished; });
            return kExitLoadFailed;
        }
        http.join();  // returns once the shutdown has closed every connection
        std::unique_lock lock(stop.mutex);
        stop.changed.wait(lock, [&] { return stop.finished; });
        server.set_engine(nullptr);
        return stop.clean ? 0 : kExitShutdownTimedOut;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-server: %s\n", e.what());
        return kExitConfig;
    }
}
