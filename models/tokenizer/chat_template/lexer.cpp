// Cuts a template into text and tags and applies Jinja's whitespace control: `{%-`/`-%}` (and
// the same on {{ }} and {# #}) strip all whitespace on that side; with lstrip_blocks the spaces
// and tabs before a block or comment tag at the start of a line are removed (unless `{%+`);
// with trim_blocks the first newline after a block or comment tag is removed (unless `+%}`).
#include "kernels/error.h"
#include "models/tokenizer/chat_template/ast.h"

namespace tandem::jinja {

std::string source_position(const std::string& source, size_t offset) {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < offset && i < source.size(); ++i) {
        if (source[i] == '\n') {
            ++line;
            column = 1;
        } else if (((unsigned char)source[i] & 0xC0) != 0x80) {
            ++column;
        }
    }
    return cat("line ", line, ", column ", column);
}

namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

struct RawTag {
    char type;  // '{' expression, '%' statement, '#' comment
    std::string inside;
    size_t inside_offset;
    bool strip_before, keep_before, strip_after, keep_after;
};

}  // namespace

std::vector<Piece> lex(const std::string& source_in) {
    std::string source = source_in;
    if (!source.empty() && source.back() == '\n') source.pop_back();  // keep_trailing_newline=False
    if (!source.empty() && source.back() == '\r') source.pop_back();

    // First pass: alternate texts and tags.
    std::vector<std::string> texts;  // texts[k] precedes tags[k]; one more text than tags
    std::vector<size_t> text_offsets;
    std::vector<RawTag> tags;
    size_t pos = 0;
    while (true) {
        size_t open = pos;
        while (true) {
            open = source.find('{', open);
            if (open == std::string::npos || open + 1 >= source.size()) {
                open = std::string::npos;
                break;
            }
            const char t = source[open + 1];
            if (t == '{' || t == '%' || t == '#') break;
            ++open;
        }
        texts.push_back(
            source.substr(pos, open == std::string::npos ? std::string::npos : open - pos));
        text_offsets.push_back(pos);
        if (open == std::string::npos) break;
        RawTag tag{};
        tag.type = source[open + 1];
        size_t inner = open + 2;
        if (inner < source.size() && (source[inner] == '-' || source[inner] == '+')) {
            (source[inner] == '-' ? tag.strip_before : tag.keep_before) = true;
            ++inner;
        }
        const std::string closer = tag.type == '{' ? "}}" : tag.type == '%' ? "%}" : "#}";
        size_t close = inner;
        if (tag.type == '#') {
            close = source.find(closer, inner);
        } else {
            // Skip over string literals so that "}}" inside quotes does not close the tag.
            char quote = 0;
            for (; close + 1 < source.size(); ++close) {
                const char c = source[close];
                if (quote) {
                    if (c == '\\')
                        ++close;
                    else if (c == quote)
                        quote = 0;
                } else if (c == '\'' || c == '"') {
                    quote = c;
                } else if (source.compare(close, 2, closer) == 0) {
                    break;
                }
            }
            if (close + 1 >= source.size()) close = std::string::npos;
        }
        if (close == std::string::npos)
            fail("chat template: ", source_position(source, open), ": unclosed '{",
                 tag.type == '{' ? '{' : tag.type, "'");
        size_t inner_end = close;
        if (inner_end > inner && (source[inner_end - 1] == '-' || source[inner_end - 1] == '+')) {
            (source[inner_end - 1] == '-' ? tag.strip_after : tag.keep_after) = true;
            --inner_end;
        }
        tag.inside = source.substr(inner, inner_end - inner);
        tag.inside_offset = inner;
        tags.push_back(std::move(tag));
        pos = close + 2;
    }

    // Second pass: whitespace control on the texts around each tag. line_starting: the text
    // before tag k begins a line (template start, or the previous tag ate a newline), as in
    // Jinja's lexer.
    bool line_starting = true;
    for (size_t k = 0; k < tags.size(); ++k) {
        const RawTag& tag = tags[k];
        const bool block = tag.type != '{';
        std::string& before = texts[k];
        if (tag.strip_before) {
            while (!before.empty() && is_space(before.back()))
                before.pop_back();
        } else if (block && !tag.keep_before) {
            const size_t newline = before.rfind('\n');
            const size_t line = newline == std::string::npos ? 0 : newline + 1;
            bool blank = line < before.size();
            for (size_t i = line; i < before.size(); ++i)
                blank = blank && is_space(before[i]);
            if (blank && (line > 0 || line_starting)) before.resize(line);
        }
        std::string& after = texts[k + 1];
        line_starting = false;
        if (tag.strip_after) {
            size_t n = 0;
            while (n < after.size() && is_space(after[n]))
                ++n;
            line_starting = n > 0 && after[n - 1] == '\n';
            after.erase(0, n);
            text_offsets[k + 1] += n;
        } else if (block && !tag.keep_after && !after.empty() && after[0] == '\n') {
            after.erase(0, 1);
            text_offsets[k + 1] += 1;
            line_starting = true;
        }
    }

    std::vector<Piece> pieces;
    for (size_t k = 0; k < texts.size(); ++k) {
        if (!texts[k].empty())
            pieces.push_back({Piece::Kind::Text, std::move(texts[k]), text_offsets[k]});
        if (k < tags.size() && tags[k].type != '#')
            pieces.push_back(
                {tags[k].type == '{' ? Piece::Kind::Expression : Piece::Kind::Statement,
                 tags[k].inside, tags[k].inside_offset});
    }
    return pieces;
}

}  // namespace tandem::jinja
