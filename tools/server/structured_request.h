// Structured output in requests: OpenAI's response_format (json_object, json_schema) and the
// extension fields of vLLM (guided_json, guided_regex, guided_choice, guided_grammar, and their
// successor structured_outputs) -> the GrammarSpec of SamplingParams. At most one of them per
// request; the grammar itself is compiled (and refused with a 400 if it cannot be) by the engine.
#pragma once

#include <optional>

#include <tandem/sampling.h>
#include <nlohmann/json.hpp>

namespace tandem::server {

std::optional<GrammarSpec> read_structured_output(const nlohmann::json& body);

// A regular expression matching exactly one of `choices` (guided_choice).
std::string choice_regex(const std::vector<std::string>& choices);

}  // namespace tandem::server
