#include "tools/routing_recorder.h"

#include <zlib.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace tandem {

struct RoutingRecorder::Sink {
    std::ofstream plain;
    gzFile gz = nullptr;

    void write(const std::string& line) {
        if (gz != nullptr) {
            if (gzwrite(gz, line.data(), unsigned(line.size())) != int(line.size()))
                fail("routing trace: gzip write failed");
        } else {
            plain << line;
            if (!plain) fail("routing trace: write failed");
        }
    }
};

RoutingRecorder::RoutingRecorder(const std::string& path, bool prefill)
    : sink_(std::make_unique<Sink>()), prefill_(prefill) {
    if (path.size() > 3 && path.ends_with(".gz")) {
        sink_->gz = gzopen(path.c_str(), "wb6");
        if (sink_->gz == nullptr) fail(path, ": cannot open for writing");
    } else {
        sink_->plain.open(path, std::ios::binary);
        if (!sink_->plain) fail(path, ": cannot open for writing");
    }
}

RoutingRecorder::~RoutingRecorder() {
    if (sink_->gz != nullptr) gzclose(sink_->gz);
}

void RoutingRecorder::write(const std::string& seq, const std::string& domain,
                            const RequestOutput& output, int32_t index) {
    const Completion& c = output.completions.at(size_t(index));
    const RoutedExperts& r = c.routed_experts;
    if (r.n_layers == 0) fail("routing trace: the request was run without routed experts");
    const auto k = size_t(r.top_k), layers = size_t(r.n_layers), la = size_t(r.lookahead);
    const auto n_experts = size_t(r.n_experts);
    const bool probs = !r.probabilities.empty();
    const auto prompt = size_t(output.prompt_tokens);
    std::vector<int32_t> tokens = output.prompt_token_ids;
    tokens.insert(tokens.end(), c.token_ids.begin(), c.token_ids.end());
    bool first = true;
    for (size_t pos = prefill_ ? 0 : prompt; pos < size_t(r.positions()); ++pos) {
        nlohmann::json line = {{"seq", seq},
                               {"domain", domain},
                               {"pos", pos < prompt ? pos : pos - prompt},
                               {"token_id", tokens[pos]}};
        if (pos < prompt) line["phase"] = "prefill";
        nlohmann::json experts = nlohmann::json::array(), weights = nlohmann::json::array(),
                       predicted = nlohmann::json::array(), distribution = nlohmann::json::array();
        for (size_t l = 0; l < layers; ++l) {
            const size_t at = (pos * layers + l) * k;
            experts.push_back(std::vector<int32_t>(r.experts.begin() + std::ptrdiff_t(at),
                                                   r.experts.begin() + std::ptrdiff_t(at + k)));
            // Five significant decimals are plenty for a probability and halve the file.
            nlohmann::json w = nlohmann::json::array();
            for (size_t i = at; i < at + k; ++i)
                w.push_back(std::round(double(r.weights[i]) * 1e5) / 1e5);
            weights.push_back(w);
            nlohmann::json ahead = nlohmann::json::array();
            for (size_t j = 0; j < la; ++j) {
                const size_t p = ((pos * layers + l) * la + j) * k;
                ahead.push_back(std::vector<int32_t>(r.predicted.begin() + std::ptrdiff_t(p),
                                                     r.predicted.begin() + std::ptrdiff_t(p + k)));
            }
            predicted.push_back(ahead);
            if (probs) {
                // Four decimals: what MRS's top-p needs to rank the near-misses, and the
                // negligible tail written as 0 keeps the file small.
                nlohmann::json all = nlohmann::json::array();
                for (size_t e = 0; e < n_experts; ++e) {
                    const double p =
                        std::round(double(r.probabilities[(pos * layers + l) * n_experts + e]) *
                                   1e4) /
                        1e4;
                    if (p == 0)
                        all.push_back(0);
                    else
                        all.push_back(p);
                }
                distribution.push_back(all);
            }
        }
        line["experts"] = experts;
        line["weights"] = weights;
        if (la > 0) line["lookahead"] = predicted;
        if (probs) line["probs"] = distribution;
        if (first) line["layers"] = r.layers;
        first = false;
        sink_->write(line.dump() + "\n");
        ++lines_;
    }
}

}  // namespace tandem
