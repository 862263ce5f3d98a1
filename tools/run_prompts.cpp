#include "tools/run_prompts.h"

#include <chrono>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace tandem {

namespace {

struct Entry {
    std::string id, domain;
    Prompt prompt;
};

std::vector<Entry> read_prompts(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, ": cannot open");
    std::vector<Entry> entries;
    std::string line;
    for (int64_t number = 1; std::getline(in, line); ++number) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        const std::string where = path + ":" + std::to_string(number);
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
            fail(where, ": invalid JSON: ", e.what());
        }
        Entry e{.id = j.value("id", std::to_string(number)), .domain = j.value("domain", "")};
        if (j.contains("messages")) {
            std::vector<ChatMessage> messages;
            for (const auto& m : j.at("messages"))
                messages.push_back(
                    {m.at("role").get<std::string>(), m.at("content").get<std::string>()});
            e.prompt = Prompt::chat(std::move(messages));
        } else if (j.contains("prompt") && j["prompt"].is_string()) {
            e.prompt = Prompt::from_text(j["prompt"].get<std::string>());
        } else {
            fail(where, ": a line needs \"prompt\" (a string) or \"messages\"");
        }
        entries.push_back(std::move(e));
    }
    if (entries.empty()) fail(path, ": no prompts");
    return entries;
}

}  // namespace

PromptsSummary run_prompts_file(Engine& engine, const SamplingParams& params,
                                const std::string& path, RoutingRecorder* recorder) {
    const std::vector<Entry> entries = read_prompts(path);
    const auto start = std::chrono::steady_clock::now();
    std::vector<RequestHandle> handles;
    for (const Entry& e : entries)
        handles.push_back(engine.submit(e.prompt, params));
    PromptsSummary summary;
    for (size_t i = 0; i < handles.size(); ++i) {
        const RequestOutput& out = handles[i].wait();
        if (!out.error.empty()) fail(entries[i].id, ": ", out.error);
        summary.prompt_tokens += out.prompt_tokens;
        summary.generated_tokens += out.completion_tokens;
        if (recorder != nullptr)
            for (int32_t s = 0; s < int32_t(out.completions.size()); ++s)
                recorder->write(out.completions.size() > 1 ? entries[i].id + "#" + std::to_string(s)
                                                           : entries[i].id,
                                entries[i].domain, out, s);
    }
    summary.requests = int64_t(handles.size());
    summary.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return summary;
}

}  // namespace tandem
