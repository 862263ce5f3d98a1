// The normalizers that real tokenizer.json files use, each the same operation as in HF
// `tokenizers` (normalizers/*.rs). Prepend only prepends to non-empty text, as HF does.
#include "models/tokenizer/normalizers.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "kernels/error.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/regex.h"
#include "models/tokenizer/utf8.h"

namespace tandem {

std::string unicode_normalize(const std::string& text, const char* form) {
    bool ascii = true;
    for (const char c : text)
        if ((unsigned char)c >= 0x80) {
            ascii = false;
            break;
        }
    if (ascii) return text;  // every normal form of ASCII is itself
    const std::string f = form;
    int options = UTF8PROC_STABLE;
    if (f == "NFC") options |= UTF8PROC_COMPOSE;
    if (f == "NFD") options |= UTF8PROC_DECOMPOSE;
    if (f == "NFKC") options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    if (f == "NFKD") options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     utf8proc_ssize_t(text.size()), &out, utf8proc_option_t(options));
    if (n < 0) fail(form, " normalization: ", utf8proc_errmsg(n));
    std::string result(reinterpret_cast<char*>(out), size_t(n));
    std::free(out);
    return result;
}

namespace {

class UnicodeForm : public Normalizer {
  public:
    explicit UnicodeForm(const char* form) : form_(form) {}
    std::string normalize(std::string text) const override {
        return unicode_normalize(text, form_);
    }

  private:
    const char* form_;
};

class Lowercase : public Normalizer {
  public:
    std::string normalize(std::string text) const override {
        std::string out;
        out.reserve(text.size());
        size_t i = 0;
        while (i < text.size())
            utf8::append_code_point(
                out, char32_t(utf8proc_tolower(utf8proc_int32_t(utf8::next_code_point(text, i)))));
        return out;
    }
};

class Prepend : public Normalizer {
  public:
    explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
    std::string normalize(std::string text) const override {
        return text.empty() ? text : prefix_ + text;
    }

  private:
    std::string prefix_;
};

class Strip : public Normalizer {
  public:
    Strip(bool left, bool right) : left_(left), right_(right) {}
    std::string normalize(std::string text) const override {
        size_t b = 0, e = text.size();
        auto is_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
        if (left_)
            while (b < e && is_space(text[b]))
                ++b;
        if (right_)
            while (e > b && is_space(text[e - 1]))
                --e;
        return text.substr(b, e - b);
    }

  private:
    bool left_, right_;
};

class Sequence : public Normalizer {
  public:
    explicit Sequence(std::vector<std::unique_ptr<Normalizer>> parts) : parts_(std::move(parts)) {}
    std::string normalize(std::string text) const override {
        for (const auto& p : parts_)
            text = p->normalize(std::move(text));
        return text;
    }

  private:
    std::vector<std::unique_ptr<Normalizer>> parts_;
};

class Replace : public Normalizer {
  public:
    explicit Replace(const nlohmann::json& json) : replacer_(json) {}
    std::string normalize(std::string text) const override { return replacer_.apply(text); }

  private:
    Replacer replacer_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& json) {
    if (json.is_null()) return nullptr;
    const std::string type = json_string(json, "type");
    if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD")
        return std::make_unique<UnicodeForm>(type == "NFC"    ? "NFC"
                                             : type == "NFD"  ? "NFD"
                                             : type == "NFKC" ? "NFKC"
                                                              : "NFKD");
    if (type == "Lowercase") return std::make_unique<Lowercase>();
    if (type == "Prepend") return std::make_unique<Prepend>(json_string(json, "prepend"));
    if (type == "Strip")
        return std::make_unique<Strip>(json_bool(json, "strip_left", true),
                                       json_bool(json, "strip_right", true));
    if (type == "Replace") return std::make_unique<Replace>(json);
    if (type == "Sequence") {
        std::vector<std::unique_ptr<Normalizer>> parts;
        for (const auto& p : json_array(json, "normalizers"))
            if (auto n = make_normalizer(p)) parts.push_back(std::move(n));
        return std::make_unique<Sequence>(std::move(parts));
    }
    fail("normalizer: unsupported type '", type, "'");
}

}  // namespace tandem
