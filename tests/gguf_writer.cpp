#include "tests/gguf_writer.h"

#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include "kernels/cpu/quant.h"

namespace tandem::test {

namespace {

template <class T>
void put(std::vector<uint8_t>& out, T value) {
    uint8_t bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    out.insert(out.end(), bytes, bytes + sizeof(T));
}

nlohmann::json read_json(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    return nlohmann::json::parse(in);
}

}  // namespace

std::vector<uint8_t> GgufWriter::count_bytes(uint64_t n) const {
    std::vector<uint8_t> out;
    if (version_ == 1) {
        put(out, uint32_t(n));
    } else {
        put(out, n);
    }
    return out;
}

std::vector<uint8_t> GgufWriter::string_bytes(const std::string& s) const {
    std::vector<uint8_t> out = count_bytes(s.size());
    out.insert(out.end(), s.begin(), s.end());
    return out;
}

void GgufWriter::add(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
    kvs_.push_back({key, type, value});
}

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
    std::vector<uint8_t> b;
    put(b, v);
    add(key, 4, b);
}

void GgufWriter::add_f32(const std::string& key, float v) {
    std::vector<uint8_t> b;
    put(b, v);
    add(key, 6, b);
}

void GgufWriter::add_bool(const std::string& key, bool v) {
    add(key, 7, {uint8_t(v ? 1 : 0)});
}

void GgufWriter::add_string(const std::string& key, const std::string& v) {
    add(key, 8, string_bytes(v));
}

void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
    std::vector<uint8_t> b;
    put(b, uint32_t(8));
    const auto n = count_bytes(v.size());
    b.insert(b.end(), n.begin(), n.end());
    for (const auto& s : v) {
        const auto e = string_bytes(s);
        b.insert(b.end(), e.begin(), e.end());
    }
    add(key, 9, b);
}

void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
    std::vector<uint8_t> b;
    put(b, uint32_t(5));
    const auto n = count_bytes(v.size());
    b.insert(b.end(), n.begin(), n.end());
    for (int32_t x : v)
        put(b, x);
    add(key, 9, b);
}

void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& v) {
    std::vector<uint8_t> b;
    put(b, uint32_t(6));
    const auto n = count_bytes(v.size());
    b.insert(b.end(), n.begin(), n.end());
    for (float x : v)
        put(b, x);
    add(key, 9, b);
}

namespace {

void encode_value(const GgufWriter& w, const GgufValue& v, std::vector<uint8_t>& out) {
    switch (v.type) {
        case GgufValueType::U8: put(out, uint8_t(v.u)); break;
        case GgufValueType::I8: put(out, int8_t(v.i)); break;
        case GgufValueType::U16: put(out, uint16_t(v.u)); break;
        case GgufValueType::I16: put(out, int16_t(v.i)); break;
        case GgufValueType::U32: put(out, uint32_t(v.u)); break;
        case GgufValueType::I32: put(out, int32_t(v.i)); break;
        case GgufValueType::U64: put(out, v.u); break;
        case GgufValueType::I64: put(out, v.i); break;
        case GgufValueType::F32: put(out, float(v.f)); break;
        case GgufValueType::F64: put(out, v.f); break;
        case GgufValueType::Bool: put(out, uint8_t(v.b)); break;
        case GgufValueType::String: {
            const auto b = w.string_bytes(v.str);
            out.insert(out.end(), b.begin(), b.end());
            break;
        }
        case GgufValueType::Array: {
            put(out, uint32_t(v.element_type));
            const auto n = w.count_bytes(v.array.size());
            out.insert(out.end(), n.begin(), n.end());
            for (const GgufValue& e : v.array)
                encode_value(w, e, out);
            break;
        }
    }
}

}  // namespace

void GgufWriter::add_value(const std::string& key, const GgufValue& v) {
    std::vector<uint8_t> b;
    encode_value(*this, v, b);
    add(key, uint32_t(v.type), b);
}

void GgufWriter::add_tensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne,
                            std::vector<uint8_t> data, int64_t offset) {
    tensors_.push_back({name, ggml_type, std::move(ne), std::move(data), offset});
}

std::vector<uint8_t> GgufWriter::bytes(uint64_t alignment) const {
    std::vector<uint8_t> out;
    put(out, uint32_t(0x46554747));
    put(out, version_);
    auto append = [&](const std::vector<uint8_t>& b) { out.insert(out.end(), b.begin(), b.end()); };
    append(count_bytes(tensors_.size()));
    append(count_bytes(kvs_.size()));
    for (const Kv& kv : kvs_) {
        append(string_bytes(kv.key));
        put(out, kv.type);
        append(kv.value);
    }
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const TensorInfo& t : tensors_) {
        const uint64_t offset = t.offset >= 0 ? uint64_t(t.offset) : next;
        offsets.push_back(offset);
        next = (std::max(next, offset + t.data.size()) + alignment - 1) / alignment * alignment;
        append(string_bytes(t.name));
        put(out, uint32_t(t.ne.size()));
        for (uint64_t d : t.ne)
            append(count_bytes(d));
        put(out, t.type);
        put(out, offset);
    }
    out.resize((out.size() + alignment - 1) / alignment * alignment, 0);
    const size_t data_start = out.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
        const size_t end = data_start + offsets[i] + tensors_[i].data.size();
        if (tensors_[i].data.empty()) continue;  // a tensor that lies about its size on purpose
        if (out.size() < end) out.resize(end, 0);
        std::memcpy(out.data() + data_start + offsets[i], tensors_[i].data.data(),
                    tensors_[i].data.size());
    }
    return out;
}

void GgufWriter::write(const std::string& path, uint64_t alignment) const {
    const std::vector<uint8_t> b = bytes(alignment);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
    if (!out.flush()) throw std::runtime_error("cannot write " + path);
}

void write_dequantized_gguf(const std::string& path, const std::string& out) {
    const GgufModelFiles files = GgufModelFiles::open(path);
    GgufWriter w;
    for (const auto& [key, value] : files.first().contents().metadata)
        if (key.rfind("split.", 0) != 0) w.add_value(key, value);
    for (const GgufTensor* t : files.tensors()) {
        std::vector<uint64_t> ne(t->shape.rbegin(), t->shape.rend());
        const auto* data = reinterpret_cast<const uint8_t*>(t->data);
        if (!t->dtype || !is_quantized_weight_type(*t->dtype)) {
            w.add_tensor(t->name, ggml_type_from_dtype(*t->dtype), ne, {data, data + t->bytes});
            continue;
        }
        const int64_t k = int64_t(ne[0]), rows = int64_t(t->bytes) / row_bytes(*t->dtype, k);
        std::vector<uint8_t> f32(size_t(rows * k) * sizeof(float));
        for (int64_t r = 0; r < rows; ++r)
            cpu::dequantize_row(*t->dtype, data + r * row_bytes(*t->dtype, k),
                                reinterpret_cast<float*>(f32.data()) + r * k, k);
        w.add_tensor(t->name, 0, ne, std::move(f32));
    }
    w.write(out);
}

void write_tokenizer_gguf(const std::string& dir, const std::string& pre, const std::string& path) {
    const nlohmann::json tok = read_json(dir + "/tokenizer.json");
    nlohmann::json config = nlohmann::json::object();
    if (std::ifstream(dir + "/tokenizer_config.json"))
        config = read_json(dir + "/tokenizer_config.json");
    const auto& model = tok["model"];
    const bool spm = model.value("byte_fallback", false);

    std::map<int64_t, std::string> by_id;
    for (const auto& [token, id] : model["vocab"].items())
        by_id[id.get<int64_t>()] = token;
    std::map<int64_t, bool> added_special;
    for (const auto& a : tok["added_tokens"]) {
        by_id[a["id"].get<int64_t>()] = a["content"].get<std::string>();
        added_special[a["id"].get<int64_t>()] = a["special"].get<bool>();
    }
    const int64_t n = by_id.rbegin()->first + 1;
    std::vector<std::string> tokens;
    std::vector<int32_t> types;
    std::map<std::string, int64_t> ids;
    for (int64_t i = 0; i < n; ++i) {
        auto it = by_id.find(i);
        if (it == by_id.end()) {  // convert_hf_to_gguf.py: holes become unused [PAD<id>] tokens
            tokens.push_back("[PAD" + std::to_string(i) + "]");
            types.push_back(5);
            continue;
        }
        tokens.push_back(it->second);
        ids.emplace(it->second, i);
        auto added = added_special.find(i);
        if (added != added_special.end()) {
            types.push_back(added->second ? 3 : 4);
        } else if (spm && it->second.size() == 6 && it->second.rfind("<0x", 0) == 0) {
            types.push_back(6);  // byte-fallback token
        } else {
            types.push_back(1);
        }
    }

    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_string("tokenizer.ggml.model", spm ? "llama" : "gpt2");
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_i32_array("tokenizer.ggml.token_type", types);
    std::vector<std::string> merges;
    for (const auto& m : model["merges"])
        merges.push_back(m.is_string() ? m.get<std::string>()
                                       : m[0].get<std::string>() + " " + m[1].get<std::string>());
    if (spm) {
        // The scores of tokenizer.model are not in tokenizer.json; rank each token by the first
        // merge that produces it, which is what transformers derived the merges from.
        std::vector<float> scores(size_t(n), 0.0f);
        std::map<std::string, size_t> first_rank;
        for (size_t r = 0; r < merges.size(); ++r) {
            const size_t space = merges[r].find(' ');
            first_rank.emplace(merges[r].substr(0, space) + merges[r].substr(space + 1), r);
        }
        for (const auto& [token, rank] : first_rank)
            if (auto it = ids.find(token); it != ids.end())
                scores[size_t(it->second)] = -float(rank) - 1;
        w.add_f32_array("tokenizer.ggml.scores", scores);
    } else {
        w.add_string("tokenizer.ggml.pre", pre);
        w.add_string_array("tokenizer.ggml.merges", merges);
    }
    auto token_of = [&](const char* key) -> std::string {
        if (!config.contains(key)) return "";
        const auto& v = config[key];
        if (v.is_string()) return v.get<std::string>();
        if (v.is_object()) return v.value("content", "");
        return "";
    };
    auto add_id = [&](const char* key, const char* gguf_key) {
        const std::string t = token_of(key);
        if (auto it = ids.find(t); !t.empty() && it != ids.end())
            w.add_u32(gguf_key, uint32_t(it->second));
    };
    add_id("bos_token", "tokenizer.ggml.bos_token_id");
    add_id("eos_token", "tokenizer.ggml.eos_token_id");
    add_id("unk_token", "tokenizer.ggml.unknown_token_id");
    add_id("pad_token", "tokenizer.ggml.padding_token_id");
    if (config.contains("add_bos_token"))
        w.add_bool("tokenizer.ggml.add_bos_token", config["add_bos_token"]);
    if (config.contains("add_eos_token"))
        w.add_bool("tokenizer.ggml.add_eos_token", config["add_eos_token"]);
    if (config.contains("chat_template") && config["chat_template"].is_string())
        w.add_string("tokenizer.chat_template", config["chat_template"]);
    w.write(path);
}

}  // namespace tandem::test
