#include "models/gguf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "kernels/error.h"
#include "models/model_tokenizer.h"

namespace tandem {

namespace {

using Json = nlohmann::json;

// llama.cpp's token types (llama_token_type / gguf-py TokenType).
enum TokenType : int64_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kByte = 6 };

// Pre-tokenizers of the Hugging Face tokenizers that llama.cpp's tokenizer.ggml.pre names stand
// for (copied from their tokenizer.json files; llama.cpp hard-codes equivalent regexes).
constexpr const char* kQwen2Pre = R"JSON({"type": "Sequence", "pretokenizers": [{"type": "Split",
 "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
 "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false,
 "trim_offsets": false, "use_regex": false}]})JSON";
constexpr const char* kLlama3Pre = R"JSON({"type": "Sequence", "pretokenizers": [{"type": "Split",
 "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
 "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false,
 "trim_offsets": true, "use_regex": false}]})JSON";
constexpr const char* kDeepseekV3Pre = R"JSON({"type": "Sequence", "pretokenizers": [
 {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"}, "behavior": "Isolated", "invert": false},
 {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
 {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})JSON";
constexpr const char* kGpt2Pre =
    R"JSON({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})JSON";

struct PreTokenizerInfo {
    const char* names;  // llama.cpp's names for it, space-separated
    const char* json;
    bool nfc;            // Qwen's tokenizers normalise to NFC first
    bool ignore_merges;  // Llama 3's BPE looks whole words up before merging
    bool add_bos;        // llama.cpp's default when add_bos_token is absent
};

const PreTokenizerInfo kPreTokenizers[] = {
    {"qwen2 deepseek-r1-qwen", kQwen2Pre, true, false, false},
    {"llama3 llama-v3 llama-bpe", kLlama3Pre, false, true, true},
    {"deepseek-v3", kDeepseekV3Pre, false, false, false},
    {"default gpt-2", kGpt2Pre, false, false, false},
};

const PreTokenizerInfo& find_pre_tokenizer(const GgufModelFiles& files) {
    const std::string pre = files.get_string_opt("tokenizer.ggml.pre").value_or("default");
    std::string known;
    for (const PreTokenizerInfo& p : kPreTokenizers) {
        std::string names = std::string(" ") + p.names + " ";
        if (names.find(" " + pre + " ") != std::string::npos) return p;
        known += (known.empty() ? "" : " ") + std::string(p.names);
    }
    fail(files.path(), ": metadata tokenizer.ggml.pre: '", pre,
         "' is not supported (supported: ", known, ")");
}

std::vector<std::string> strings(const GgufValue& array) {
    std::vector<std::string> out;
    out.reserve(array.array.size());
    for (const GgufValue& v : array.array)
        out.push_back(v.str);
    return out;
}

std::vector<int64_t> token_types(const GgufModelFiles& files, size_t n_tokens) {
    std::vector<int64_t> types(n_tokens, kNormal);
    const GgufValue* v = files.value("tokenizer.ggml.token_type");
    if (v == nullptr) return types;
    if (v->type != GgufValueType::Array || v->array.size() != n_tokens)
        fail(files.path(), ": metadata tokenizer.ggml.token_type: expected an array of ", n_tokens,
             " integers (one per token)");
    for (size_t i = 0; i < n_tokens; ++i) {
        const GgufValue& t = v->array[i];
        if (!t.is_integer())
            fail(files.path(), ": metadata tokenizer.ggml.token_type: element ", i,
                 " is not an integer");
        types[i] = t.is_unsigned() ? int64_t(t.u) : t.i;
    }
    return types;
}

// The token of a special id key, "" when the key is absent.
std::string special_token(const GgufModelFiles& files, const std::string& key,
                          const std::vector<std::string>& tokens) {
    const auto id = files.get_uint_opt(key);
    if (!id) return "";
    if (*id >= tokens.size())
        fail(files.path(), ": metadata ", key, ": ", *id, " is not a token id (", tokens.size(),
             " tokens)");
    return tokens[size_t(*id)];
}

// transformers' SentencePieceExtractor: every split of a token into two tokens is a merge,
// ranked by the merged token's score (highest first), ties by the ids of the two halves.
Json merges_from_scores(const std::vector<std::string>& tokens, const std::vector<float>& scores,
                        const std::map<std::string, int64_t>& vocab) {
    struct Merge {
        int64_t left, right;
        float score;
    };
    std::vector<Merge> merges;
    std::vector<Merge> local;
    for (size_t id = 0; id < tokens.size(); ++id) {
        const std::string& token = tokens[id];
        if (vocab.count(token) == 0 || vocab.at(token) != int64_t(id)) continue;
        local.clear();
        for (size_t cut = 1; cut < token.size(); ++cut) {
            if ((uint8_t(token[cut]) & 0xC0) == 0x80) continue;  // inside a UTF-8 character
            auto l = vocab.find(token.substr(0, cut));
            auto r = vocab.find(token.substr(cut));
            if (l != vocab.end() && r != vocab.end())
                local.push_back({l->second, r->second, scores[id]});
        }
        std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
            return a.left != b.left ? a.left < b.left : a.right < b.right;
        });
        merges.insert(merges.end(), local.begin(), local.end());
    }
    std::stable_sort(merges.begin(), merges.end(),
                     [](const Merge& a, const Merge& b) { return a.score > b.score; });
    Json out = Json::array();
    for (const Merge& m : merges)
        out.push_back(Json::array({tokens[size_t(m.left)], tokens[size_t(m.right)]}));
    return out;
}

}  // namespace

std::pair<Json, Json> gguf_tokenizer_json(const GgufModelFiles& files) {
    const std::string model = files.get_string("tokenizer.ggml.model");
    if (model != "gpt2" && model != "llama")
        fail(files.path(), ": metadata tokenizer.ggml.model: '", model,
             "' is not supported (supported: gpt2, llama)");
    const std::vector<std::string> tokens =
        strings(files.get_array("tokenizer.ggml.tokens", GgufValueType::String));
    const std::vector<int64_t> types = token_types(files, tokens.size());

    Json tok;
    tok["version"] = "1.0";
    Json added = Json::array();
    std::map<std::string, int64_t> vocab;
    for (size_t id = 0; id < tokens.size(); ++id) {
        const bool special = types[id] == kControl;
        if (special || types[id] == kUserDefined) {
            // llama.cpp's converter stores these as the text they stand for (not byte-level
            // encoded), which is what an added token's content is.
            added.push_back({{"id", id},
                             {"content", tokens[id]},
                             {"single_word", false},
                             {"lstrip", false},
                             {"rstrip", false},
                             {"normalized", !special},
                             {"special", special}});
            if (model == "gpt2") continue;  // byte-level vocabularies hold them as added only
        }
        vocab.emplace(tokens[id], int64_t(id));  // the first id of a repeated string wins
    }
    tok["added_tokens"] = added;

    Json bpe = {{"type", "BPE"},
                {"dropout", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}};
    Json config = Json::object();
    const std::string bos = special_token(files, "tokenizer.ggml.bos_token_id", tokens);
    const std::string eos = special_token(files, "tokenizer.ggml.eos_token_id", tokens);
    const std::string unk = special_token(files, "tokenizer.ggml.unknown_token_id", tokens);
    const std::string pad = special_token(files, "tokenizer.ggml.padding_token_id", tokens);
    bool add_bos_default = false;
    if (model == "gpt2") {
        const PreTokenizerInfo& pre = find_pre_tokenizer(files);
        tok["normalizer"] = pre.nfc ? Json{{"type", "NFC"}} : Json();
        tok["pre_tokenizer"] = Json::parse(pre.json);
        tok["decoder"] = {{"type", "ByteLevel"},
                          {"add_prefix_space", false},
                          {"trim_offsets", true},
                          {"use_regex", false}};
        bpe["unk_token"] = nullptr;
        bpe["fuse_unk"] = false;
        bpe["byte_fallback"] = false;
        bpe["ignore_merges"] = pre.ignore_merges;
        bpe["merges"] = strings(files.get_array("tokenizer.ggml.merges", GgufValueType::String));
        add_bos_default = pre.add_bos;
    } else {
        std::vector<float> scores(tokens.size(), 0.0f);
        if (files.has("tokenizer.ggml.scores")) {
            const GgufValue& s = files.get_array("tokenizer.ggml.scores", GgufValueType::F32);
            if (s.array.size() != tokens.size())
                fail(files.path(), ": metadata tokenizer.ggml.scores: ", s.array.size(),
                     " scores for ", tokens.size(), " tokens");
            for (size_t i = 0; i < tokens.size(); ++i)
                scores[i] = float(s.array[i].f);
        }
        const bool prefix_space =
            files.get_bool_opt("tokenizer.ggml.add_space_prefix").value_or(true);
        Json normalizers = Json::array();
        if (prefix_space) normalizers.push_back({{"type", "Prepend"}, {"prepend", "\u2581"}});
        normalizers.push_back(
            {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}});
        tok["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
        tok["pre_tokenizer"] = nullptr;
        Json decoders = Json::array(
            {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
             {{"type", "ByteFallback"}},
             {{"type", "Fuse"}}});
        if (prefix_space)
            decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
        tok["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
        bpe["unk_token"] = unk.empty() ? Json() : Json(unk);
        bpe["fuse_unk"] = true;
        bpe["byte_fallback"] = true;
        bpe["ignore_merges"] = false;
        bpe["merges"] = merges_from_scores(tokens, scores, vocab);
        add_bos_default = true;
    }
    bpe["vocab"] = vocab;
    tok["model"] = std::move(bpe);
    tok["post_processor"] = nullptr;

    if (!bos.empty()) config["bos_token"] = bos;
    if (!eos.empty()) config["eos_token"] = eos;
    if (!unk.empty()) config["unk_token"] = unk;
    if (!pad.empty()) config["pad_token"] = pad;
    config["add_bos_token"] =
        files.get_bool_opt("tokenizer.ggml.add_bos_token").value_or(add_bos_default);
    config["add_eos_token"] = files.get_bool_opt("tokenizer.ggml.add_eos_token").value_or(false);
    if (auto chat_template = files.get_string_opt("tokenizer.chat_template"))
        config["chat_template"] = *chat_template;
    return {std::move(tok), std::move(config)};
}

Tokenizer load_gguf_tokenizer(const GgufModelFiles& files) {
    auto [tokenizer, config] = gguf_tokenizer_json(files);
    return Tokenizer::from_json(tokenizer, config, files.path() + " (tokenizer metadata)");
}

Tokenizer load_tokenizer(const std::string& model_path) {
    namespace fs = std::filesystem;
    if (is_gguf_path(model_path) && !fs::is_directory(model_path))
        return load_gguf_tokenizer(GgufModelFiles::open(model_path));
    if (!fs::exists(fs::path(model_path) / "tokenizer.json"))
        fail(model_path, ": no tokenizer.json (and not a .gguf file)");
    return Tokenizer::load(model_path);
}

}  // namespace tandem
