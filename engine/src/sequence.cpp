#include "engine/src/sequence.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tandem {

namespace {

bool contains(std::span<const int32_t> ids, int32_t id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// Bytes at the end of `text` that could still grow into a stop string: they are held back from
// the stream until the next token decides.
size_t stop_holdback(const std::string& text, const std::vector<std::string>& stops) {
    size_t hold = 0;
    for (const std::string& stop : stops)
        for (size_t len = std::min(stop.size() - 1, text.size()); len > hold; --len)
            if (text.compare(text.size() - len, len, stop, 0, len) == 0) {
                hold = len;
                break;
            }
    return hold;
}

}  // namespace

TokenLogprob token_logprob(std::span<const float> logits, int32_t token, int32_t k) {
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    double sum = 0.0;
    for (float l : logits)
        sum += std::exp(double(l - max_logit));
    const float log_z = max_logit + float(std::log(sum));
    TokenLogprob out{.token = token, .logprob = logits[size_t(token)] - log_z};
    if (k > 0) {
        std::vector<int32_t> ids(logits.size());
        for (size_t i = 0; i < ids.size(); ++i)
            ids[i] = int32_t(i);
        const auto n = std::min<size_t>(size_t(k), ids.size());
        std::partial_sort(ids.begin(), ids.begin() + std::ptrdiff_t(n), ids.end(),
                          [&](int32_t a, int32_t b) {
                              return logits[size_t(a)] > logits[size_t(b)] ||
                                     (logits[size_t(a)] == logits[size_t(b)] && a < b);
                          });
        for (size_t i = 0; i < n; ++i)
            out.top.emplace_back(ids[i], logits[size_t(ids[i])] - log_z);
    }
    return out;
}

Sequence::Sequence(RequestHandle::State& request, int32_t index, std::unique_ptr<KvCache> cache,
                   const Tokenizer* tokenizer, std::span<const int32_t> eos_token_ids,
                   int64_t context_length, GrammarWorker* grammar_worker)
    : request_(request),
      index_(index),
      cache_(std::move(cache)),
      tokenizer_(tokenizer),
      eos_token_ids_(eos_token_ids),
      context_length_(context_length),
      sampler_(request.params, request.seed + uint64_t(index)),
      tokens_(request.prompt),
      grammar_worker_(grammar_worker) {
    completion_.index = index;
    if (tokenizer_ != nullptr)
        detokenizer_.emplace(
            *tokenizer_, DecodeOptions{.skip_special_tokens = request.params.skip_special_tokens});
    if (request.grammar) {
        grammar_.emplace(request.grammar);
        prepare_mask();
    }
}

Sequence::~Sequence() {
    if (mask_ready_.valid()) mask_ready_.wait();  // the worker still uses grammar_
}

void Sequence::prepare_mask() {
    if (grammar_worker_ == nullptr) {
        grammar_->compute_mask();
        return;
    }
    GrammarMatcher* matcher = &*grammar_;
    mask_ready_ = grammar_worker_->run([matcher] { matcher->compute_mask(); });
}

void Sequence::constrain(std::span<const float> logits) {
    scratch_.assign(logits.begin(), logits.end());
    apply_penalties(scratch_, /*mask_eos=*/true);
    if (!grammar_) return;
    if (mask_ready_.valid()) mask_ready_.get();  // rethrows what compute_mask() threw
    grammar_->apply_mask(scratch_);
    constexpr float kMasked = -std::numeric_limits<float>::infinity();
    if (std::all_of(scratch_.begin(), scratch_.end(), [](float l) { return l == kMasked; })) {
        // min_tokens masked all the grammar allows (EOS, the output being complete): the
        // grammar wins, as no token could continue the output.
        scratch_.assign(logits.begin(), logits.end());
        apply_penalties(scratch_, /*mask_eos=*/false);
        grammar_->apply_mask(scratch_);
    }
}

void Sequence::apply_penalties(std::vector<float>& logits, bool mask_eos) const {
    const SamplingParams& p = request_.params;
    if (p.repetition_penalty != 1.0f) {
        std::vector<uint8_t> seen(logits.size());
        for (int32_t t : tokens_)
            seen[size_t(t)] = 1;
        for (size_t i = 0; i < logits.size(); ++i)
            if (seen[i])
                logits[i] = logits[i] > 0 ? logits[i] / p.repetition_penalty
                                          : logits[i] * p.repetition_penalty;
    }
    if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f)
        for (const auto& [token, count] : generated_counts_)
            logits[size_t(token)] -= p.frequency_penalty * float(count) + p.presence_penalty;
    if (mask_eos && generated() < p.min_tokens) {
        constexpr float kMasked = -std::numeric_limits<float>::infinity();
        if (!p.ignore_eos)
            for (int32_t t : eos_token_ids_)
                logits[size_t(t)] = kMasked;
        for (int32_t t : p.stop_token_ids)
            logits[size_t(t)] = kMasked;
    }
}

StreamDelta Sequence::advance(std::span<const float> logits) {
    const SamplingParams& p = request_.params;
    constrain(logits);
    const int32_t token = sampler_.sample(scratch_);

    StreamDelta delta{.index = index_, .token_ids = {token}};
    if (p.logprobs >= 0) {
        completion_.logprobs.push_back(token_logprob(logits, token, p.logprobs));
        delta.logprobs.push_back(completion_.logprobs.back());
    }
    tokens_.push_back(token);
    ++generated_counts_[token];
    completion_.token_ids.push_back(token);

    // The grammar refuses nothing its mask allowed; a refusal would be a bug in the engine,
    // which ends this sample rather than let it go on unconstrained.
    const bool refused = grammar_ && !grammar_->accept(token);
    if (refused) {
        // (As Scheduler::fail_all: the output is read only after the request completes.)
        request_.output.error = "structured output: the grammar refused token " +
                                std::to_string(token) + ", which its mask allowed";
        completion_.finish_reason = FinishReason::Error;
        delta.text = flush_text();
        delta.finish_reason = completion_.finish_reason;
        return delta;
    }
    // A grammar ends with its stop token (EOS, even with ignore_eos): nothing can follow.
    const bool grammar_done = grammar_ && grammar_->terminated();
    const bool is_eos = (!p.ignore_eos || grammar_done) && contains(eos_token_ids_, token);
    if (is_eos || grammar_done || contains(p.stop_token_ids, token)) {
        completion_.finish_reason = FinishReason::Stop;
        delta.text = flush_text();
    } else {
        delta.text = append_text(token);
        if (!finished() &&
            (generated() >= p.max_tokens || int64_t(tokens_.size()) >= context_length_)) {
            completion_.finish_reason = FinishReason::Length;
            delta.text += flush_text();
        }
    }
    delta.finish_reason = completion_.finish_reason;
    if (grammar_ && !finished()) prepare_mask();
    return delta;
}

std::string Sequence::append_text(int32_t token) {
    if (!detokenizer_) return "";
    std::string& text = completion_.text;
    const size_t before = text.size();
    text += detokenizer_->push(token);
    const auto& stops = request_.params.stop;
    size_t first_match = std::string::npos;
    for (const std::string& stop : stops) {
        // A match can only involve the new text and the stop's length before it.
        const size_t from = before >= stop.size() ? before - stop.size() + 1 : 0;
        const size_t at = text.find(stop, from);
        if (at < first_match) {
            first_match = at;
            completion_.stop_reason = stop;
        }
    }
    if (first_match != std::string::npos) {
        text.resize(first_match);
        completion_.finish_reason = FinishReason::Stop;
    }
    const size_t safe = finished() ? text.size() : text.size() - stop_holdback(text, stops);
    if (safe <= text_streamed_) return "";
    std::string out = text.substr(text_streamed_, safe - text_streamed_);
    text_streamed_ = safe;
    return out;
}

std::string Sequence::flush_text() {
    std::string& text = completion_.text;
    if (detokenizer_ && completion_.stop_reason.empty()) text += detokenizer_->finish();
    if (text_streamed_ >= text.size()) return "";
    std::string out = text.substr(text_streamed_);
    text_streamed_ = text.size();
    return out;
}

StreamDelta Sequence::finish(FinishReason reason) {
    completion_.finish_reason = reason;
    return {.index = index_, .text = flush_text(), .finish_reason = reason};
}

void append_routing(RoutedExperts& to, const RoutedExperts& positions) {
    if (to.n_layers == 0) {
        to = positions;
        return;
    }
    auto append = [](auto& a, const auto& b) { a.insert(a.end(), b.begin(), b.end()); };
    append(to.experts, positions.experts);
    append(to.weights, positions.weights);
    append(to.predicted, positions.predicted);
    append(to.probabilities, positions.probabilities);
}

void Sequence::add_routing(const RoutedExperts& positions) {
    append_routing(completion_.routed_experts, positions);
}

}  // namespace tandem
