// Loading tokenizer.json / tokenizer_config.json and the encode/decode pipeline.
#include "models/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernels/error.h"
#include "models/tokenizer/bpe.h"
#include "models/tokenizer/decoders.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/normalizers.h"
#include "models/tokenizer/pre_tokenizers.h"
#include "models/tokenizer/utf8.h"

namespace tandem {

namespace {

nlohmann::json read_json(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path.string(), ": cannot open");
    std::stringstream buffer;
    buffer << in.rdbuf();
    try {
        return nlohmann::json::parse(buffer.str());
    } catch (const nlohmann::json::exception& e) {
        fail(path.string(), ": invalid JSON: ", e.what());
    }
}

// A special token of tokenizer_config.json: a string, {"content": ...}, or null.
std::string token_content(const nlohmann::json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_object() && value.contains("content") && value["content"].is_string())
        return value["content"].get<std::string>();
    return "";
}

struct Template {
    std::vector<int32_t> prefix, suffix;
};

// The special tokens a post-processor adds around a single sequence.
Template post_processor_template(const nlohmann::json& json, const Bpe& model,
                                 const AddedTokens& added) {
    Template t;
    if (json.is_null()) return t;
    const std::string type = json_string(json, "type");
    auto id_of = [&](const nlohmann::json& pair, const char* key) {
        const auto& v = json_field(json, key);
        if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
            fail(type, ": '", key, "': expected [token, id]");
        (void)pair;
        return int32_t(v[1].get<int64_t>());
    };
    if (type == "ByteLevel") return t;
    if (type == "TemplateProcessing") {
        const auto& specials = json_field(json, "special_tokens");
        bool after = false;
        for (const auto& item : json_array(json, "single")) {
            if (item.contains("Sequence")) {
                after = true;
            } else if (item.contains("SpecialToken")) {
                const std::string name = json_string(item["SpecialToken"], "id");
                if (!specials.contains(name))
                    fail("TemplateProcessing: special token '", name, "' is not in special_tokens");
                for (const auto& id : json_array(specials[name], "ids")) {
                    if (!id.is_number_integer()) fail("TemplateProcessing: bad id of '", name, "'");
                    (after ? t.suffix : t.prefix).push_back(int32_t(id.get<int64_t>()));
                }
            } else {
                fail("TemplateProcessing: unknown item ", item.dump());
            }
        }
        return t;
    }
    if (type == "BertProcessing" || type == "RobertaProcessing") {
        t.prefix.push_back(id_of(json, "cls"));
        t.suffix.push_back(id_of(json, "sep"));
        return t;
    }
    if (type == "Sequence") {
        for (const auto& p : json_array(json, "processors")) {
            const Template inner = post_processor_template(p, model, added);
            t.prefix.insert(t.prefix.end(), inner.prefix.begin(), inner.prefix.end());
            t.suffix.insert(t.suffix.begin(), inner.suffix.begin(), inner.suffix.end());
        }
        return t;
    }
    fail("post_processor: unsupported type '", type, "'");
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& dir) {
    const std::filesystem::path root(dir);
    const auto file = root / "tokenizer.json";
    if (!std::filesystem::exists(file)) fail(file.string(), ": not found");
    const nlohmann::json tokenizer = read_json(file);
    nlohmann::json config;
    const auto config_file = root / "tokenizer_config.json";
    if (std::filesystem::exists(config_file)) config = read_json(config_file);
    return with_context(root.string(),
                        [&] { return from_json(tokenizer, config, "tokenizer.json"); });
}

Tokenizer Tokenizer::from_json(const nlohmann::json& json, const nlohmann::json& config,
                               const std::string& origin) {
    Tokenizer t;
    with_context(origin, [&] {
        if (!json.is_object()) fail("expected a JSON object");
        const auto& model = json_field(json, "model");
        std::string type = "BPE";
        if (model.is_object() && model.contains("type")) type = json_string(model, "type");
        if (type != "BPE") fail("model: unsupported type '", type, "'");
        with_context("normalizer", [&] {
            t.normalizer_ = make_normalizer(json.value("normalizer", nlohmann::json()));
        });
        with_context("pre_tokenizer", [&] {
            t.pre_tokenizer_ = make_pre_tokenizer(json.value("pre_tokenizer", nlohmann::json()));
        });
        const bool byte_level = t.pre_tokenizer_ && t.pre_tokenizer_->byte_level();
        with_context("model", [&] { t.model_ = std::make_unique<Bpe>(model, byte_level); });
        with_context("decoder",
                     [&] { t.decoder_ = make_decoder(json.value("decoder", nlohmann::json())); });
        t.added_ = std::make_unique<AddedTokens>(json.value("added_tokens", nlohmann::json()));
        nlohmann::json pipeline = nlohmann::json::object();
        for (const char* key : {"normalizer", "pre_tokenizer", "decoder"})
            if (json.contains(key)) pipeline[key] = json[key];
        t.pipeline_json_ = pipeline.dump();
        with_context("post_processor", [&] {
            const Template tp = post_processor_template(
                json.value("post_processor", nlohmann::json()), *t.model_, *t.added_);
            t.prefix_ids_ = tp.prefix;
            t.suffix_ids_ = tp.suffix;
        });
    });
    if (config.is_object()) {
        with_context("tokenizer_config.json", [&] {
            for (const auto& [key, value] : config.items()) {
                if (key.size() > 6 && key.ends_with("_token")) {
                    const std::string content = token_content(value);
                    if (!content.empty()) t.named_special_tokens_.emplace_back(key, content);
                }
            }
            t.bos_token_ = token_content(config.value("bos_token", nlohmann::json()));
            t.eos_token_ = token_content(config.value("eos_token", nlohmann::json()));
            const bool has_bos = config.contains("add_bos_token");
            const bool has_eos = config.contains("add_eos_token");
            if (has_bos || has_eos) {
                t.prefix_ids_.clear();
                t.suffix_ids_.clear();
                auto id_of = [&](const std::string& token, const char* key) {
                    const auto id = t.token_to_id(token);
                    if (!id) fail("'", key, "' '", token, "' is not a token");
                    return *id;
                };
                if (json_bool(config, "add_bos_token", false) && !t.bos_token_.empty())
                    t.prefix_ids_.push_back(id_of(t.bos_token_, "bos_token"));
                if (json_bool(config, "add_eos_token", false) && !t.eos_token_.empty())
                    t.suffix_ids_.push_back(id_of(t.eos_token_, "eos_token"));
            }
            if (config.contains("chat_template")) {
                const auto& ct = config["chat_template"];
                if (ct.is_string()) {
                    t.chat_template_ = ct.get<std::string>();
                } else if (ct.is_array()) {
                    // [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
                    for (const auto& named : ct)
                        if (named.is_object() && named.value("name", "") == "default")
                            t.chat_template_ = json_string(named, "template");
                }
            }
        });
    }
    return t;
}

void Tokenizer::encode_piece(std::string_view text, bool at_start,
                             std::vector<int32_t>& ids) const {
    thread_local std::vector<std::string> pieces;
    pieces.clear();
    pieces.emplace_back(text);
    if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces, at_start);
    for (const auto& word : pieces)
        model_->tokenize(word, ids);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, EncodeOptions options) const {
    utf8::check_utf8(text, "text to encode");
    std::vector<int32_t> ids;
    if (options.add_special_tokens) ids = prefix_ids_;
    std::vector<TextSegment> raw_segments;
    added_->split(text, /*normalized=*/false, raw_segments);
    std::vector<TextSegment> segments;
    for (const TextSegment& raw : raw_segments) {
        if (raw.id >= 0) {
            ids.push_back(raw.id);
            continue;
        }
        const std::string_view piece = text.substr(raw.begin, raw.end - raw.begin);
        const std::string normalized =
            normalizer_ ? normalizer_->normalize(std::string(piece)) : std::string(piece);
        segments.clear();
        added_->split(normalized, /*normalized=*/true, segments);
        for (const TextSegment& s : segments) {
            if (s.id >= 0)
                ids.push_back(s.id);
            else
                encode_piece(std::string_view(normalized).substr(s.begin, s.end - s.begin),
                             raw.begin == 0 && s.begin == 0, ids);
        }
    }
    if (options.add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, DecodeOptions options) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int32_t id : ids) {
        if (const AddedToken* a = added_->by_id(id)) {
            if (!(options.skip_special_tokens && a->special)) tokens.push_back(a->content);
        } else if (const std::string* t = model_->id_to_token(id); t && !t->empty()) {
            tokens.push_back(*t);
        }
    }
    if (!decoder_) {
        std::string out;
        for (size_t k = 0; k < tokens.size(); ++k)
            out += (k ? " " : "") + tokens[k];
        return out;
    }
    decoder_->decode_chain(tokens);
    std::string out;
    for (const auto& t : tokens)
        out += t;
    return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    if (const AddedToken* a = added_->by_content(token)) return a->id;
    return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
    if (const AddedToken* a = added_->by_id(id)) return a->content;
    if (const std::string* t = model_->id_to_token(id); t && !t->empty()) return *t;
    return std::nullopt;
}

size_t Tokenizer::vocab_size() const {
    size_t n = model_->vocab_size();
    for (const auto& a : added_->tokens())
        n = std::max(n, size_t(a.id) + 1);
    return n;
}

bool Tokenizer::is_special(int32_t id) const {
    const AddedToken* a = added_->by_id(id);
    return a && a->special;
}

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, DecodeOptions options)
    : tokenizer_(&tokenizer), options_(options) {}

namespace {

bool ends_with_replacement(const std::string& s) {
    return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}

}  // namespace

std::string IncrementalDecoder::push(int32_t id) {
    if (prefix_.empty() && !ids_.empty()) {
        std::string p = tokenizer_->decode(ids_, options_);
        if (!ends_with_replacement(p)) prefix_ = std::move(p), prefix_index_ = ids_.size();
    }
    ids_.push_back(id);
    const std::string text = tokenizer_->decode(ids_, options_);
    if (text.size() <= prefix_.size() || ends_with_replacement(text) ||
        text.compare(0, prefix_.size(), prefix_) != 0)
        return "";
    std::string piece = text.substr(prefix_.size());
    const size_t new_prefix_index = ids_.size() - prefix_index_;
    ids_.erase(ids_.begin(), ids_.begin() + std::ptrdiff_t(prefix_index_));
    prefix_ = tokenizer_->decode(ids_, options_);
    prefix_index_ = new_prefix_index;
    return piece;
}

std::string IncrementalDecoder::finish() {
    const std::string text = tokenizer_->decode(ids_, options_);
    ids_.clear();
    std::string rest;
    if (text.size() > prefix_.size() && text.compare(0, prefix_.size(), prefix_) == 0)
        rest = text.substr(prefix_.size());
    prefix_.clear();
    prefix_index_ = 0;
    return rest;
}

}  // namespace tandem
