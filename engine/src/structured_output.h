// Structured output: decoding constrained by a grammar (JSON, a JSON schema, a regular
// expression or an EBNF grammar), with xgrammar as the grammar engine (engine/xgrammar.cmake).
//
// A GrammarCompiler is made once per tokenizer: it reads the vocabulary (the token strings and
// how they map to bytes) and compiles specs into grammars, caching them, so a schema sent with
// every request is compiled once. A GrammarMatcher follows one sequence: before each sample it
// masks the logits of every token that cannot continue a valid output, and after it accepts
// the sampled token. Stop tokens are allowed only where the output is complete, and once the
// matcher has accepted one the sequence ends.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <tandem/sampling.h>

namespace tandem {

class Tokenizer;

struct CompiledGrammar;  // xgrammar's, behind this header

class GrammarCompiler {
  public:
    // vocab_size: the width of the model's logits, which may exceed the tokenizer's vocabulary
    // (rows of padding: never allowed). stop_ids end a sequence where the grammar is complete.
    GrammarCompiler(const Tokenizer& tokenizer, int64_t vocab_size, std::vector<int32_t> stop_ids);
    ~GrammarCompiler();
    GrammarCompiler(const GrammarCompiler&) = delete;
    GrammarCompiler& operator=(const GrammarCompiler&) = delete;

    // Throws RequestError naming what is wrong with a spec (bad JSON, an unsupported schema,
    // a malformed regex or grammar). Thread-safe.
    std::shared_ptr<const CompiledGrammar> compile(const GrammarSpec& spec) const;
    int64_t vocab_size() const { return vocab_size_; }

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    int64_t vocab_size_;
};

class GrammarMatcher {
  public:
    explicit GrammarMatcher(std::shared_ptr<const CompiledGrammar> grammar);
    ~GrammarMatcher();
    GrammarMatcher(GrammarMatcher&&) noexcept;
    GrammarMatcher& operator=(GrammarMatcher&&) noexcept;

    // Sets to -infinity the logits of the tokens the grammar does not allow next. logits has
    // the compiler's vocab_size entries. compute_mask() + apply_mask().
    void mask(std::span<float> logits);
    // The two halves of mask(), so that the mask of the next token can be computed while the
    // model runs (it depends only on the tokens accepted so far): compute_mask() may run on
    // another thread than the one that called accept(), if the two do not overlap.
    void compute_mask();
    void apply_mask(std::span<float> logits) const;
    // The allowed tokens as a bitmask, bit i of word i / 32 (what compute_mask() made).
    const std::vector<int32_t>& allowed_bits() const;
    // Advances past a sampled token; false (and no change) if the grammar does not allow it.
    bool accept(int32_t token);
    // A stop token was accepted: the output is complete and the sequence ends.
    bool terminated() const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tandem
