// UTF-8 validation and lossy conversion, following the Unicode "maximal subpart" rule as Rust's
// String::from_utf8_lossy does.
#include "models/tokenizer/utf8.h"

#include "kernels/error.h"

namespace tandem::utf8 {

namespace {

// The number of bytes of a maximal subpart starting at s[i] (>= 1) when it is invalid, or the
// full sequence length when valid; `valid` tells which.
size_t scan(std::string_view s, size_t i, bool& valid) {
    const auto b0 = (unsigned char)s[i];
    valid = false;
    if (b0 < 0x80) {
        valid = true;
        return 1;
    }
    size_t need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
    } else if (b0 == 0xE0) {
        need = 2, lo = 0xA0;
    } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
        need = 2;
    } else if (b0 == 0xED) {
        need = 2, hi = 0x9F;
    } else if (b0 == 0xF0) {
        need = 3, lo = 0x90;
    } else if (b0 >= 0xF1 && b0 <= 0xF3) {
        need = 3;
    } else if (b0 == 0xF4) {
        need = 3, hi = 0x8F;
    } else {
        return 1;
    }
    size_t k = 1;
    for (; k <= need; ++k) {
        if (i + k >= s.size()) return k;
        const auto b = (unsigned char)s[i + k];
        const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) return k;
    }
    valid = true;
    return need + 1;
}

}  // namespace

size_t valid_length(std::string_view s, size_t i) {
    bool valid = false;
    const size_t n = scan(s, i, valid);
    return valid ? n : 0;
}

size_t find_invalid(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        if ((unsigned char)s[i] < 0x80) {
            ++i;
            continue;
        }
        bool valid = false;
        const size_t n = scan(s, i, valid);
        if (!valid) return i;
        i += n;
    }
    return std::string_view::npos;
}

void check_utf8(std::string_view s, std::string_view what) {
    const size_t bad = find_invalid(s);
    if (bad != std::string_view::npos) fail(what, ": invalid UTF-8 at byte ", bad);
}

std::string lossy_utf8(std::string_view s) {
    if (find_invalid(s) == std::string_view::npos) return std::string(s);
    std::string out;
    out.reserve(s.size() + 8);
    size_t i = 0;
    while (i < s.size()) {
        bool valid = false;
        const size_t n = scan(s, i, valid);
        if (valid)
            out.append(s.substr(i, n));
        else
            out += "\xEF\xBF\xBD";
        i += n;
    }
    return out;
}

char32_t next_code_point(std::string_view s, size_t& i) {
    const auto b0 = (unsigned char)s[i];
    const size_t n = sequence_length(b0);
    char32_t cp = n == 1 ? b0 : n == 2 ? (b0 & 0x1F) : n == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (size_t k = 1; k < n && i + k < s.size(); ++k)
        cp = (cp << 6) | ((unsigned char)s[i + k] & 0x3F);
    i += n;
    return cp;
}

void append_code_point(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xC0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += char(0xE0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    } else {
        out += char(0xF0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3F));
        out += char(0x80 | ((cp >> 6) & 0x3F));
        out += char(0x80 | (cp & 0x3F));
    }
}

}  // namespace tandem::utf8
