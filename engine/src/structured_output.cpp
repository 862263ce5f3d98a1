#include "engine/src/structured_output.h"

#include <dlpack/dlpack.h>
#include <xgrammar/xgrammar.h>

#include <algorithm>
#include <limits>
#include <stdexcept>

#include <tandem/request.h>
#include <nlohmann/json.hpp>

#include "engine/src/json_schema_types.h"
#include "models/tokenizer/tokenizer.h"

namespace tandem {

using nlohmann::json;

struct CompiledGrammar {
    xgrammar::CompiledGrammar grammar;
};

namespace {

// xgrammar's view of the vocabulary: every id's token string as tokenizer.json has it, and the
// encoding of those strings (byte-level, byte fallback or raw), detected from the tokenizer's
// pipeline as xgrammar detects it from a Hugging Face tokenizer.
xgrammar::TokenizerInfo tokenizer_info(const Tokenizer& tokenizer, int64_t vocab_size,
                                       std::vector<int32_t> stop_ids) {
    const auto n = int64_t(std::min<size_t>(tokenizer.vocab_size(), size_t(vocab_size)));
    std::vector<std::string> vocab(static_cast<size_t>(n));
    for (int64_t id = 0; id < n; ++id)
        vocab[size_t(id)] = tokenizer.id_to_token(int32_t(id)).value_or("");
    // {"vocab_type": 0 raw | 1 byte fallback | 2 byte level, "add_prefix_space": bool}
    const nlohmann::json metadata = nlohmann::json::parse(
        xgrammar::TokenizerInfo::DetectMetadataFromHF(tokenizer.pipeline_json()));
    const auto vocab_type = xgrammar::VocabType(metadata.at("vocab_type").get<int>());
    // The model's width (padding rows included) and our stop ids, with the detected encoding.
    return xgrammar::TokenizerInfo(vocab, vocab_type, int(vocab_size), std::move(stop_ids),
                                   metadata.at("add_prefix_space").get<bool>());
}

// An EBNF grammar of the literal `text`: xgrammar's string literals take JSON's escapes.
xgrammar::Grammar literal(const std::string& text) {
    return xgrammar::Grammar::FromEBNF("root ::= " + json(text).dump());
}

xgrammar::Grammar concat(std::vector<xgrammar::Grammar> parts) {
    std::erase_if(parts, [](const xgrammar::Grammar& g) { return g.IsNull(); });
    return parts.size() == 1 ? parts[0] : xgrammar::Grammar::Concat(parts);
}

// GrammarSpec::Kind::ToolCalls (sampling.h): prefix calls{1,max} suffix, unrolled as
// calls(k) = call | call separator calls(k - 1), since grammars combine only by union and
// concatenation.
xgrammar::Grammar tool_calls_grammar(const std::string& text) {
    const json spec = json::parse(text);
    auto optional_literal = [&](const char* key) {
        const std::string s = spec.value(key, "");
        return s.empty() ? xgrammar::Grammar(xgrammar::NullObj{}) : literal(s);
    };
    std::vector<xgrammar::Grammar> alternatives;
    for (const json& alt : spec.at("alternatives")) {
        json schema = alt.at("schema");
        infer_schema_types(schema);
        const std::string begin = alt.value("begin", ""), end = alt.value("end", "");
        alternatives.push_back(
            concat({begin.empty() ? xgrammar::Grammar(xgrammar::NullObj{}) : literal(begin),
                    xgrammar::Grammar::FromJSONSchema(schema.dump(), /*any_whitespace=*/false,
                                                      std::nullopt, std::make_pair(", ", ": "),
                                                      /*strict_mode=*/true),
                    end.empty() ? xgrammar::Grammar(xgrammar::NullObj{}) : literal(end)}));
    }
    if (alternatives.empty()) throw std::invalid_argument("no function to call");
    const xgrammar::Grammar call =
        alternatives.size() == 1 ? alternatives[0] : xgrammar::Grammar::Union(alternatives);
    const int max_calls = spec.value("max_calls", 1);
    if (max_calls < 1 || max_calls > 16) throw std::invalid_argument("max_calls must be 1..16");
    const xgrammar::Grammar separator = optional_literal("separator");
    xgrammar::Grammar calls = call;
    for (int k = 2; k <= max_calls; ++k)
        calls = xgrammar::Grammar::Union({call, concat({call, separator, calls})});
    return concat({optional_literal("prefix"), calls, optional_literal("suffix")});
}

const char* kind_name(GrammarSpec::Kind kind) {
    switch (kind) {
        case GrammarSpec::Kind::JsonObject: return "json_object";
        case GrammarSpec::Kind::JsonSchema: return "json_schema";
        case GrammarSpec::Kind::Regex: return "regex";
        case GrammarSpec::Kind::Ebnf: return "grammar";
        case GrammarSpec::Kind::ToolCalls: return "tool call grammar";
    }
    return "?";
}

}  // namespace

struct GrammarCompiler::Impl {
    mutable xgrammar::GrammarCompiler compiler;
};

GrammarCompiler::GrammarCompiler(const Tokenizer& tokenizer, int64_t vocab_size,
                                 std::vector<int32_t> stop_ids)
    : vocab_size_(vocab_size) {
    if (vocab_size < int64_t(1)) throw std::invalid_argument("GrammarCompiler: no vocabulary");
    // One compile thread: compilation runs on the caller's (a request's) thread, beside the
    // engine's pool, which it must not crowd out.
    impl_ = std::make_unique<Impl>(Impl{xgrammar::GrammarCompiler(
        tokenizer_info(tokenizer, vocab_size, std::move(stop_ids)), /*max_threads=*/1)});
}

GrammarCompiler::~GrammarCompiler() = default;

std::shared_ptr<const CompiledGrammar> GrammarCompiler::compile(const GrammarSpec& spec) const {
    try {
        auto& c = impl_->compiler;
        switch (spec.kind) {
            case GrammarSpec::Kind::JsonObject:
                // Any JSON object: the schema {"type": "object"}, in the compact form unless
                // asked otherwise (the built-in JSON grammar allows arrays and scalars too).
                return std::make_shared<CompiledGrammar>(CompiledGrammar{c.CompileJSONSchema(
                    R"({"type": "object"})", spec.any_whitespace, std::nullopt,
                    std::make_pair(std::string(", "), std::string(": ")), /*strict_mode=*/false)});
            case GrammarSpec::Kind::JsonSchema: {
                json schema = json::parse(spec.text, nullptr, /*allow_exceptions=*/false);
                if (schema.is_discarded()) throw std::invalid_argument("the schema is not JSON");
                infer_schema_types(schema);
                return std::make_shared<CompiledGrammar>(CompiledGrammar{c.CompileJSONSchema(
                    schema.dump(), spec.any_whitespace, std::nullopt,
                    std::make_pair(std::string(", "), std::string(": ")), /*strict_mode=*/true)});
            }
            case GrammarSpec::Kind::ToolCalls:
                return std::make_shared<CompiledGrammar>(
                    CompiledGrammar{c.CompileGrammar(tool_calls_grammar(spec.text))});
            case GrammarSpec::Kind::Regex:
                return std::make_shared<CompiledGrammar>(
                    CompiledGrammar{c.CompileRegex(spec.text)});
            case GrammarSpec::Kind::Ebnf:
                return std::make_shared<CompiledGrammar>(
                    CompiledGrammar{c.CompileGrammar(spec.text, "root")});
        }
    } catch (const std::exception& e) {
        throw RequestError(std::string("structured output: the ") + kind_name(spec.kind) +
                           " cannot be used: " + e.what());
    }
    throw RequestError("structured output: unknown kind");
}

struct GrammarMatcher::Impl {
    std::shared_ptr<const CompiledGrammar> grammar;  // (the matcher refers to it)
    xgrammar::GrammarMatcher matcher;
    int64_t vocab_size;
    std::vector<int32_t> bits;
};

GrammarMatcher::GrammarMatcher(std::shared_ptr<const CompiledGrammar> grammar) {
    const int64_t vocab = grammar->grammar.GetTokenizerInfo().GetVocabSize();
    xgrammar::GrammarMatcher matcher(grammar->grammar);
    impl_ = std::make_unique<Impl>(
        Impl{std::move(grammar), std::move(matcher), vocab, std::vector<int32_t>()});
    impl_->bits.resize(size_t((vocab + 31) / 32));
}

GrammarMatcher::~GrammarMatcher() = default;
GrammarMatcher::GrammarMatcher(GrammarMatcher&&) noexcept = default;
GrammarMatcher& GrammarMatcher::operator=(GrammarMatcher&&) noexcept = default;

const std::vector<int32_t>& GrammarMatcher::allowed_bits() const {
    return impl_->bits;
}

void GrammarMatcher::compute_mask() {
    std::vector<int32_t>& bits = impl_->bits;
    int64_t shape[1] = {int64_t(bits.size())};
    DLTensor tensor{};
    tensor.data = bits.data();
    tensor.device = DLDevice{kDLCPU, 0};
    tensor.ndim = 1;
    tensor.dtype = DLDataType{kDLInt, 32, 1};
    tensor.shape = shape;
    impl_->matcher.FillNextTokenBitmask(&tensor);
}

void GrammarMatcher::mask(std::span<float> logits) {
    compute_mask();
    apply_mask(logits);
}

void GrammarMatcher::apply_mask(std::span<float> logits) const {
    if (int64_t(logits.size()) != impl_->vocab_size)
        throw std::invalid_argument("GrammarMatcher::mask: logits have " +
                                    std::to_string(logits.size()) + " entries, not " +
                                    std::to_string(impl_->vocab_size));
    const std::vector<int32_t>& bits = impl_->bits;
    constexpr float kMasked = -std::numeric_limits<float>::infinity();
    for (size_t word = 0; word < bits.size(); ++word) {
        const auto w = uint32_t(bits[word]);
        if (w == ~uint32_t(0)) continue;  // (most words inside a string: all allowed)
        const size_t begin = word * 32, end = std::min(logits.size(), begin + 32);
        for (size_t i = begin; i < end; ++i)
            if (((w >> (i - begin)) & 1u) == 0) logits[i] = kMasked;
    }
}

bool GrammarMatcher::accept(int32_t token) {
    if (token < 0 || token >= impl_->vocab_size) return false;
    return impl_->matcher.AcceptToken(token);
}

bool GrammarMatcher::terminated() const {
    return impl_->matcher.IsTerminated();
}

}  // namespace tandem
