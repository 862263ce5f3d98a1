// The pre-tokenizers that real tokenizer.json files use, with the split behaviours of HF
// `tokenizers` (tokenizer/normalizer.rs NormalizedString::split).
#include "models/tokenizer/pre_tokenizers.h"

#include <algorithm>

#include "kernels/error.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/regex.h"

namespace tandem {

namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& name) {
    if (name == "Removed") return Behavior::Removed;
    if (name == "Isolated") return Behavior::Isolated;
    if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
    if (name == "MergedWithNext") return Behavior::MergedWithNext;
    if (name == "Contiguous") return Behavior::Contiguous;
    fail("Split: unknown behavior '", name, "'");
}

using Range = std::pair<size_t, size_t>;

// Cuts text at the matches of regex, grouping the segments by behavior; appends to out.
void split_text(const std::string& text, const Regex& regex, Behavior behavior, bool invert,
                std::vector<std::string>& out) {
    thread_local std::vector<Range> matches;
    regex.find_all(text, matches);
    if (matches.empty() && !invert) {
        // No match: the whole text is one non-matching segment.
        if (!text.empty()) out.push_back(text);
        return;
    }
    thread_local std::vector<std::pair<Range, bool>> segments;
    segments.clear();
    size_t pos = 0;
    for (const auto& [b, e] : matches) {
        if (b > pos) segments.push_back({{pos, b}, invert});
        segments.push_back({{b, e}, !invert});
        pos = e;
    }
    if (pos < text.size()) segments.push_back({{pos, text.size()}, invert});

    thread_local std::vector<Range> ranges;
    ranges.clear();
    bool previous_match = false;
    switch (behavior) {
        case Behavior::Removed:
            for (const auto& [r, m] : segments)
                if (!m) ranges.push_back(r);
            break;
        case Behavior::Isolated:
            for (const auto& [r, m] : segments)
                ranges.push_back(r);
            break;
        case Behavior::MergedWithPrevious:
            for (const auto& [r, m] : segments) {
                if (m && !previous_match && !ranges.empty())
                    ranges.back().second = r.second;
                else
                    ranges.push_back(r);
                previous_match = m;
            }
            break;
        case Behavior::MergedWithNext:
            for (size_t k = segments.size(); k-- > 0;) {
                const auto& [r, m] = segments[k];
                if (m && !previous_match && !ranges.empty())
                    ranges.back().first = r.first;
                else
                    ranges.push_back(r);
                previous_match = m;
            }
            std::reverse(ranges.begin(), ranges.end());
            break;
        case Behavior::Contiguous:
            for (const auto& [r, m] : segments) {
                if (m == previous_match && !ranges.empty())
                    ranges.back().second = r.second;
                else
                    ranges.push_back(r);
                previous_match = m;
            }
            break;
    }
    for (const auto& [b, e] : ranges)
        if (e > b) out.emplace_back(text, b, e - b);
}

class RegexSplit : public PreTokenizer {
  public:
    RegexSplit(const std::string& regex, Behavior behavior, bool invert)
        : regex_(regex), behavior_(behavior), invert_(invert) {}
    void pre_tokenize(std::vector<std::string>& pieces, bool) const override {
        thread_local std::vector<std::string> out;
        out.clear();
        for (const auto& p : pieces)
            split_text(p, regex_, behavior_, invert_, out);
        pieces.swap(out);
    }

  private:
    Regex regex_;
    Behavior behavior_;
    bool invert_;
};

// GPT-2's pre-tokenizer regex, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevel : public PreTokenizer {
  public:
    ByteLevel(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
        if (use_regex) split_ = std::make_unique<RegexSplit>(kGpt2Regex, Behavior::Isolated, false);
    }
    void pre_tokenize(std::vector<std::string>& pieces, bool at_start) const override {
        if (add_prefix_space_)
            for (auto& p : pieces)
                if (p.empty() || p[0] != ' ') p.insert(0, 1, ' ');
        if (split_) split_->pre_tokenize(pieces, at_start);
    }
    bool byte_level() const override { return true; }

  private:
    bool add_prefix_space_;
    std::unique_ptr<RegexSplit> split_;
};

class Metaspace : public PreTokenizer {
  public:
    Metaspace(std::string replacement, std::string scheme, bool split)
        : replacement_(std::move(replacement)), scheme_(std::move(scheme)), split_(split) {
        if (scheme_ != "always" && scheme_ != "first" && scheme_ != "never")
            fail("Metaspace: unknown prepend_scheme '", scheme_, "'");
    }
    void pre_tokenize(std::vector<std::string>& pieces, bool at_start) const override {
        std::vector<std::string> out;
        for (size_t k = 0; k < pieces.size(); ++k) {
            std::string text;
            for (const char c : pieces[k])
                if (c == ' ')
                    text += replacement_;
                else
                    text += c;
            const bool prepend = scheme_ == "always" || (scheme_ == "first" && k == 0 && at_start);
            if (prepend && text.rfind(replacement_, 0) != 0) text.insert(0, replacement_);
            if (!split_) {
                out.push_back(std::move(text));
                continue;
            }
            // Split on the replacement, each one starting a new piece (MergedWithNext).
            size_t begin = 0;
            for (size_t pos = text.find(replacement_, 1); pos != std::string::npos;
                 pos = text.find(replacement_, pos + replacement_.size())) {
                out.emplace_back(text, begin, pos - begin);
                begin = pos;
            }
            if (text.size() > begin) out.emplace_back(text, begin, text.size() - begin);
        }
        pieces.swap(out);
    }

  private:
    std::string replacement_, scheme_;
    bool split_;
};

class Sequence : public PreTokenizer {
  public:
    explicit Sequence(std::vector<std::unique_ptr<PreTokenizer>> parts) : parts_(std::move(parts)) {
        for (size_t k = 0; k + 1 < parts_.size(); ++k)
            if (parts_[k]->byte_level())
                fail("pre_tokenizer: ByteLevel followed by other pre-tokenizers is not supported");
    }
    void pre_tokenize(std::vector<std::string>& pieces, bool at_start) const override {
        for (const auto& p : parts_)
            p->pre_tokenize(pieces, at_start);
    }
    bool byte_level() const override { return !parts_.empty() && parts_.back()->byte_level(); }

  private:
    std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& json) {
    if (json.is_null()) return nullptr;
    const std::string type = json_string(json, "type");
    if (type == "Split")
        return std::make_unique<RegexSplit>(pattern_to_regex(json_field(json, "pattern")),
                                            parse_behavior(json_string(json, "behavior")),
                                            json_bool(json, "invert", false));
    if (type == "ByteLevel")
        return std::make_unique<ByteLevel>(json_bool(json, "add_prefix_space", true),
                                           json_bool(json, "use_regex", true));
    if (type == "Digits")
        return std::make_unique<RegexSplit>(
            json_bool(json, "individual_digits", false) ? "\\p{N}" : "\\p{N}+", Behavior::Isolated,
            false);
    if (type == "Metaspace") {
        std::string scheme = "always";
        if (json.contains("prepend_scheme") && json["prepend_scheme"].is_string())
            scheme = json["prepend_scheme"].get<std::string>();
        else if (json.contains("add_prefix_space"))
            scheme = json_bool(json, "add_prefix_space", true) ? "always" : "never";
        return std::make_unique<Metaspace>(json_string(json, "replacement"), scheme,
                                           json_bool(json, "split", true));
    }
    if (type == "Sequence") {
        std::vector<std::unique_ptr<PreTokenizer>> parts;
        for (const auto& p : json_array(json, "pretokenizers"))
            if (auto t = make_pre_tokenizer(p)) parts.push_back(std::move(t));
        return std::make_unique<Sequence>(std::move(parts));
    }
    fail("pre_tokenizer: unsupported type '", type, "'");
}

}  // namespace tandem
