#include "scheduler/routing_trace.h"

#include <zlib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <unordered_map>

#include "kernels/error.h"

namespace tandem {
namespace {

// gzread inflates plain files too, so one path reads both.
std::string read_file(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f) fail(path, ": cannot open trace");
    std::string text;
    std::vector<char> buffer(1 << 20);
    for (;;) {
        const int n = gzread(f, buffer.data(), unsigned(buffer.size()));
        if (n < 0) {
            int code = 0;
            const std::string why = gzerror(f, &code);
            gzclose(f);
            fail(path, ": corrupt gzip stream: ", why);
        }
        if (n == 0) break;
        text.append(buffer.data(), size_t(n));
    }
    gzclose(f);
    return text;
}

struct Builder {
    RoutingTrace& t;
    std::unordered_map<std::string, int32_t> seq_index;

    void check_shape(int64_t n_layers, int64_t k) {
        if (t.n_layers == 0) {
            if (n_layers <= 0 || k <= 0) fail("no MoE layers or no experts in the first token");
            t.n_layers = n_layers;
            t.top_k = k;
        } else if (n_layers != t.n_layers || k != t.top_k) {
            fail("expected ", t.n_layers, " layers x top-", t.top_k, " like the first token, got ",
                 n_layers, " x ", k);
        }
    }
    void add_expert(int64_t id) {
        if (id < 0 || id > INT32_MAX) fail("expert id ", id, " is not a valid id");
        t.experts.push_back(int32_t(id));
        t.max_expert = std::max(t.max_expert, int32_t(id));
    }

    void object_line(const nlohmann::json& j) {
        const auto& ex = j.at("experts");
        if (!ex.is_array() || ex.empty() || !ex[0].is_array()) fail("'experts' is not [[ids]]");
        check_shape(int64_t(ex.size()), int64_t(ex[0].size()));
        const bool weights = j.contains("weights");
        if (t.n_tokens() == 0) {
            t.has_weights = weights;
            for (int64_t l = 0; l < t.n_layers; ++l)
                t.layer_ids.push_back(int32_t(l));
        } else if (weights != t.has_weights) {
            fail("'weights' present in some tokens only");
        }
        for (const auto& layer : ex) {
            if (int64_t(layer.size()) != t.top_k) fail("a layer with ", layer.size(), " experts");
            for (const auto& id : layer)
                add_expert(id.get<int64_t>());
        }
        if (weights) {
            const auto& w = j.at("weights");
            if (int64_t(w.size()) != t.n_layers) fail("'weights' has ", w.size(), " layers");
            for (const auto& layer : w) {
                if (int64_t(layer.size()) != t.top_k)
                    fail("a layer with ", layer.size(), " weights");
                for (const auto& v : layer)
                    t.weights.push_back(v.get<float>());
            }
        }
        const bool probs = j.contains("probs");
        if (t.n_tokens() == 0 && probs) {
            const auto& p = j.at("probs");
            if (!p.is_array() || p.empty() || !p[0].is_array() || p[0].empty())
                fail("'probs' is not [[probabilities] x layers]");
            t.n_probs = int64_t(p[0].size());
        } else if (probs != t.has_probs()) {
            fail("'probs' present in some tokens only");
        }
        if (probs) {
            const auto& p = j.at("probs");
            if (int64_t(p.size()) != t.n_layers) fail("'probs' has ", p.size(), " layers");
            for (const auto& layer : p) {
                if (int64_t(layer.size()) != t.n_probs)
                    fail("'probs' of ", layer.size(), " experts, expected ", t.n_probs);
                for (const auto& v : layer) {
                    const float x = v.get<float>();
                    if (!(x >= 0.0f && x <= 1.0f)) fail("'probs' value ", x, " not in [0, 1]");
                    t.probs.push_back(x);
                }
            }
        }
        const bool lookahead = j.contains("lookahead");
        if (t.n_tokens() == 0 && lookahead) {
            const auto& la = j.at("lookahead");
            if (!la.is_array() || la.empty() || !la[0].is_array())
                fail("'lookahead' is not [[[ids] x depth] x layers]");
            t.lookahead_depth = int64_t(la[0].size());
        } else if (lookahead != (t.lookahead_depth > 0)) {
            fail("'lookahead' present in some tokens only");
        }
        if (lookahead) {
            const auto& la = j.at("lookahead");
            if (int64_t(la.size()) != t.n_layers) fail("'lookahead' has ", la.size(), " layers");
            for (const auto& layer : la) {
                if (int64_t(layer.size()) != t.lookahead_depth)
                    fail("'lookahead' of depth ", layer.size(), ", expected ", t.lookahead_depth);
                for (const auto& ids : layer) {
                    if (int64_t(ids.size()) != t.top_k)
                        fail("a lookahead with ", ids.size(), " experts");
                    for (const auto& id : ids) {
                        const int64_t e = id.get<int64_t>();
                        if (e < -1 || e > INT32_MAX) fail("lookahead expert id ", e);
                        t.lookahead.push_back(int32_t(e));
                        t.max_expert = std::max(t.max_expert, int32_t(e));
                    }
                }
            }
        }
        const std::string seq = j.value("seq", std::string());
        const auto [it, fresh] = seq_index.try_emplace(seq, int32_t(seq_index.size()));
        t.seq.push_back(it->second);
    }

    void pairs_line(const nlohmann::json& j) {
        // Layers in model order, experts in the order the trace lists them.
        std::map<int64_t, std::vector<int64_t>> by_layer;
        for (const auto& pair : j) {
            if (!pair.is_array() || pair.size() != 2) fail("expected [layer, expert] pairs");
            by_layer[pair[0].get<int64_t>()].push_back(pair[1].get<int64_t>());
        }
        if (by_layer.empty()) fail("a token with no experts");
        check_shape(int64_t(by_layer.size()), int64_t(by_layer.begin()->second.size()));
        size_t l = 0;
        for (const auto& [layer, ids] : by_layer) {
            if (t.n_tokens() == 0)
                t.layer_ids.push_back(int32_t(layer));
            else if (t.layer_ids[l] != layer)
                fail("layer ", layer, " where the first token had ", t.layer_ids[l]);
            if (int64_t(ids.size()) != t.top_k)
                fail("layer ", layer, " has ", ids.size(), " experts, expected ", t.top_k);
            for (int64_t id : ids)
                add_expert(id);
            ++l;
        }
        t.seq.push_back(0);
    }
};

}  // namespace

RoutingTrace parse_routing_trace(const std::string& text, const std::string& source,
                                 int64_t max_tokens) {
    RoutingTrace t;
    t.source = source;
    Builder b{t, {}};
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < text.size() && (max_tokens <= 0 || t.n_tokens() < max_tokens)) {
        size_t end = text.find('\n', pos);
        if (end == std::string::npos) end = text.size();
        ++line_no;
        const std::string_view line(text.data() + pos, end - pos);
        pos = end + 1;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
        with_context(cat(source, ": line ", line_no), [&] {
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
                if (j.is_object())
                    b.object_line(j);
                else if (j.is_array())
                    b.pairs_line(j);
                else
                    fail("expected a JSON object or array");
            } catch (const nlohmann::json::exception& e) {
                fail("bad trace record: ", e.what());
            }
        });
    }
    if (t.n_tokens() == 0) fail(source, ": no tokens in the trace");
    if (t.has_probs() && t.max_expert >= t.n_probs)
        fail(source, ": expert ", t.max_expert, " chosen but 'probs' has only ", t.n_probs,
             " experts");
    return t;
}

RoutingTrace read_routing_trace(const std::string& path, int64_t max_tokens) {
    return parse_routing_trace(read_file(path), path, max_tokens);
}

}  // namespace tandem
