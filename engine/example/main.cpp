// tandem-example MODEL_DIR "prompt": prints the model's shape, streams a greedy continuation of
// the prompt, then prints the usage. The smallest complete use of the embedded API.
#include <tandem/engine.h>

#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s MODEL_DIR PROMPT\n", argv[0]);
        return 2;
    }
    try {
        tandem::Engine engine = tandem::Engine::open({.model_dir = argv[1], .n_threads = 2});
        const tandem::ModelConfig& model = engine.model_config();
        std::printf("[%s: %lld layers, hidden_dim %lld, %lld experts of which %lld active]\n",
                    model.architecture.c_str(), static_cast<long long>(model.n_layers),
                    static_cast<long long>(model.hidden_dim),
                    static_cast<long long>(model.n_experts),
                    static_cast<long long>(model.n_experts_active));
        tandem::RequestHandle request = engine.submit(
            tandem::Prompt::chat({{"user", argv[2]}}), {.temperature = 0, .max_tokens = 24},
            [](const tandem::StreamDelta& delta) {
                std::fputs(delta.text.c_str(), stdout);  // on the engine's thread, as it comes
                std::fflush(stdout);
            });
        const tandem::RequestOutput& out = request.wait();
        std::printf(
            "\n[%lld prompt tokens, %lld generated, finish reason %s]\n",
            static_cast<long long>(out.prompt_tokens),
            static_cast<long long>(out.completion_tokens),
            std::string(tandem::finish_reason_name(*out.completions[0].finish_reason)).c_str());
        return out.completions[0].token_ids.empty() ? 1 : 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tandem-example: %s\n", e.what());
        return 1;
    }
}
