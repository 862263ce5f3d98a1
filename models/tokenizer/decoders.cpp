// The decoders that real tokenizer.json files use, each as in HF `tokenizers` (decoders/*.rs).
// Invalid UTF-8 produced by byte tokens becomes U+FFFD exactly where HF puts it: ByteLevel
// converts the bytes of all tokens at once (from_utf8_lossy); ByteFallback replaces each byte
// token of an invalid run by one U+FFFD.
#include "models/tokenizer/decoders.h"

#include "kernels/error.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/utf8.h"

namespace tandem {

namespace {

class ByteLevel : public TokenDecoder {
  public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string bytes;
        for (const auto& t : tokens) {
            if (auto b = byte_level::to_bytes(t))
                bytes += *b;
            else
                bytes += t;
        }
        tokens.assign(1, utf8::lossy_utf8(bytes));
    }
};

class Metaspace : public TokenDecoder {
  public:
    Metaspace(std::string replacement, bool prepend)
        : replacement_(std::move(replacement)), prepend_(prepend) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (size_t k = 0; k < tokens.size(); ++k) {
            std::string out;
            const std::string& t = tokens[k];
            for (size_t i = 0; i < t.size();) {
                if (t.compare(i, replacement_.size(), replacement_) == 0) {
                    out += ' ';
                    i += replacement_.size();
                } else {
                    out += t[i++];
                }
            }
            if (k == 0 && prepend_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
            tokens[k] = std::move(out);
        }
    }

  private:
    std::string replacement_;
    bool prepend_;
};

class Replace : public TokenDecoder {
  public:
    explicit Replace(const nlohmann::json& json) : replacer_(json) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens)
            t = replacer_.apply(t);
    }

  private:
    Replacer replacer_;
};

int byte_token(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int value = 0;
    for (size_t i = 3; i < 5; ++i) {
        const char c = t[i];
        const int d = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
        if (d < 0) return -1;
        value = value * 16 + d;
    }
    return value;
}

class ByteFallback : public TokenDecoder {
  public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::vector<std::string> out;
        std::string bytes;
        size_t n_bytes = 0;
        auto flush = [&] {
            if (n_bytes == 0) return;
            if (utf8::find_invalid(bytes) == std::string::npos)
                out.push_back(bytes);
            else
                for (size_t k = 0; k < n_bytes; ++k)
                    out.emplace_back("\xEF\xBF\xBD");
            bytes.clear();
            n_bytes = 0;
        };
        for (auto& t : tokens) {
            const int b = byte_token(t);
            if (b >= 0) {
                bytes += char(b);
                ++n_bytes;
            } else {
                flush();
                out.push_back(std::move(t));
            }
        }
        flush();
        tokens.swap(out);
    }
};

class Fuse : public TokenDecoder {
  public:
    void decode_chain(std::vector<std::string>& tokens) const override {
        std::string all;
        for (const auto& t : tokens)
            all += t;
        tokens.assign(1, std::move(all));
    }
};

class Strip : public TokenDecoder {
  public:
    Strip(std::string content, size_t start, size_t stop)
        : content_(std::move(content)), start_(start), stop_(stop) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (auto& t : tokens) {
            size_t b = 0, e = t.size();
            for (size_t k = 0; k < start_ && t.compare(b, content_.size(), content_) == 0; ++k)
                b += content_.size();
            for (size_t k = 0; k < stop_ && e >= b + content_.size() &&
                               t.compare(e - content_.size(), content_.size(), content_) == 0;
                 ++k)
                e -= content_.size();
            t = t.substr(b, e - b);
        }
    }

  private:
    std::string content_;
    size_t start_, stop_;
};

class Sequence : public TokenDecoder {
  public:
    explicit Sequence(std::vector<std::unique_ptr<TokenDecoder>> parts)
        : parts_(std::move(parts)) {}
    void decode_chain(std::vector<std::string>& tokens) const override {
        for (const auto& p : parts_)
            p->decode_chain(tokens);
    }

  private:
    std::vector<std::unique_ptr<TokenDecoder>> parts_;
};

}  // namespace

std::unique_ptr<TokenDecoder> make_decoder(const nlohmann::json& json) {
    if (json.is_null()) return nullptr;
    const std::string type = json_string(json, "type");
    if (type == "ByteLevel") return std::make_unique<ByteLevel>();
    if (type == "Metaspace") {
        bool prepend = true;
        if (json.contains("prepend_scheme") && json["prepend_scheme"].is_string())
            prepend = json["prepend_scheme"].get<std::string>() != "never";
        else
            prepend = json_bool(json, "add_prefix_space", true);
        return std::make_unique<Metaspace>(json_string(json, "replacement"), prepend);
    }
    if (type == "Replace") return std::make_unique<Replace>(json);
    if (type == "ByteFallback") return std::make_unique<ByteFallback>();
    if (type == "Fuse") return std::make_unique<Fuse>();
    if (type == "Strip") {
        const int64_t start = json_int(json, "start"), stop = json_int(json, "stop");
        if (start < 0 || stop < 0) fail("Strip: 'start' and 'stop' must be >= 0");
        return std::make_unique<Strip>(json_string(json, "content"), size_t(start), size_t(stop));
    }
    if (type == "Sequence") {
        std::vector<std::unique_ptr<TokenDecoder>> parts;
        for (const auto& p : json_array(json, "decoders"))
            if (auto d = make_decoder(p)) parts.push_back(std::move(d));
        return std::make_unique<Sequence>(std::move(parts));
    }
    fail("decoder: unsupported type '", type, "'");
}

}  // namespace tandem
