// Rendering a parsed template with its global variables (internal).
#pragma once

#include <string>

#include "models/tokenizer/chat_template/ast.h"

namespace tandem::jinja {

std::string render(const std::string& source, const Body& body, Dict globals);

}  // namespace tandem::jinja
