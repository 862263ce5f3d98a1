// tandem-run --prompts-file: every prompt of a JSON-lines file through the engine at once (the
// scheduler batches them), each line one of
//   {"id": "story/3", "domain": "story", "prompt": "Once upon a time"}
//   {"id": "chat/1", "domain": "chat", "messages": [{"role": "user", "content": "Hi"}]}
// ("id" defaults to the line number, "domain" to ""). With a RoutingRecorder, each sequence's
// routing is written under its id.
#pragma once

#include <string>

#include <tandem/engine.h>

#include "tools/routing_recorder.h"

namespace tandem {

struct PromptsSummary {
    int64_t requests = 0;
    int64_t prompt_tokens = 0;
    int64_t generated_tokens = 0;
    double seconds = 0;
};

PromptsSummary run_prompts_file(Engine& engine, const SamplingParams& params,
                                const std::string& path, RoutingRecorder* recorder);

}  // namespace tandem
