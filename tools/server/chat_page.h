// The chat page tandem-server serves at / (tools/server/chat_page.html, compiled in by
// embed_file.cmake): one static HTML file that streams replies from /v1/chat/completions.
#pragma once

#include <string_view>

namespace tandem::server {

std::string_view chat_page_html();

}  // namespace tandem::server
