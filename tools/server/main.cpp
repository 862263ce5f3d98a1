// tandem-server: an OpenAI-compatible HTTP server over one Tandem engine.
//
//   tandem-server [--model path/to/model] [--port 8000] [--api-key KEY]
//
// It listens at once and loads the model in the background: /health answers 503 until the
// model is ready. SIGINT or SIGTERM stop it.
#include <CLI/CLI.hpp>

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include <tandem/engine.h>

#include "kernels/log.h"
#include "tools/engine_flags.h"
#include "tools/server/server.h"

int main(int argc, char** argv) {
    CLI::App app{"OpenAI-compatible HTTP server for a Tandem model"};
    tandem::EngineConfig config;
    tandem::server::ServerOptions options;
    std::string log_level = "info";
    // The demo model trained for Tandem (models/demo/) unless told otherwise.
    config.model_dir = TANDEM_DEFAULT_MODEL;
    app.set_version_flag("--version", tandem::version_line("tandem-server"));
    app.add_option("--model", config.model_dir, "Hugging Face model directory or .gguf file")
        ->capture_default_str();
    app.add_option("--host", options.host, "address to bind")->capture_default_str();
    app.add_option("--port", options.port, "port, 0 = any free one")->capture_default_str();
    app.add_option("--api-key", options.api_key, "require Authorization: Bearer KEY");
    app.add_option("--admin-key", options.admin_key, "key of POST /v1/load_weights");
    app.add_option("--weights-dir", options.weights_dir,
                   "directory load_weights may read checkpoints from");
    app.add_option("--served-model-name", options.served_model_name,
                   "model id in the API (default: the directory name)");
    app.add_option("--max-body-bytes", options.max_body_bytes, "larger bodies get 413")
        ->capture_default_str();
    app.add_option("--http-threads", options.http_threads, "concurrent connections")
        ->capture_default_str();
    add_engine_flags(app, config);
    app.add_option("--log-level", log_level, "error, warn, info or debug")->capture_default_str();
    CLI11_PARSE(app, argc, argv);

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
        std::thread signals([&] {
            int signal = 0;
            sigwait(&stop_signals, &signal);
            tandem::log_info("signal ", signal, ": stopping");
            server.stop();
        });
        signals.detach();  // the process ends with main
        std::optional<tandem::Engine> engine;
        try {
            engine.emplace(tandem::Engine::open(config));
            server.set_engine(&*engine);
            tandem::log_info("serving ", config.model_dir);
        } catch (const std::exception& e) {
            tandem::log_error("cannot load ", config.model_dir, ": ", e.what());
            server.set_load_error(e.what());
        }
        http.join();
        server.set_engine(nullptr);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-server: %s\n", e.what());
        return 1;
    }
    return 0;
}
