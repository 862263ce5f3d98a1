// A minimal GGUF writer for tests: valid files built in memory (versions 1-3, any alignment),
// which the tests then corrupt on purpose, and tokenizer-only files converted from tokenizer.json
// the way llama.cpp's convert_hf_to_gguf.py does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/gguf.h"

namespace tandem::test {

class GgufWriter {
  public:
    explicit GgufWriter(uint32_t version = 3) : version_(version) {}

    // One key-value pair; `value` is the encoded value (use the helpers below).
    void add(const std::string& key, uint32_t type, const std::vector<uint8_t>& value);
    void add_u32(const std::string& key, uint32_t v);
    void add_f32(const std::string& key, float v);
    void add_bool(const std::string& key, bool v);
    void add_string(const std::string& key, const std::string& v);
    void add_string_array(const std::string& key, const std::vector<std::string>& v);
    void add_i32_array(const std::string& key, const std::vector<int32_t>& v);
    void add_f32_array(const std::string& key, const std::vector<float>& v);
    // Any parsed value, re-encoded (arrays nested as they were).
    void add_value(const std::string& key, const GgufValue& v);

    // ne: dimensions innermost first, as GGUF lists them. offset < 0: the next aligned offset.
    void add_tensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne,
                    std::vector<uint8_t> data, int64_t offset = -1);

    std::vector<uint8_t> bytes(uint64_t alignment = 32) const;
    void write(const std::string& path, uint64_t alignment = 32) const;

    // Encoded values.
    std::vector<uint8_t> string_bytes(const std::string& s) const;
    std::vector<uint8_t> count_bytes(uint64_t n) const;

  private:
    struct Kv {
        std::string key;
        uint32_t type;
        std::vector<uint8_t> value;
    };
    struct TensorInfo {
        std::string name;
        uint32_t type;
        std::vector<uint64_t> ne;
        std::vector<uint8_t> data;
        int64_t offset;
    };
    uint32_t version_;
    std::vector<Kv> kvs_;
    std::vector<TensorInfo> tensors_;
};

// Writes `path` (a .gguf or any split of one) as one file with every block-quantized tensor
// dequantized to F32 by Tandem's dequantize_row (bit-exact with gguf-py's), the rest as stored.
void write_dequantized_gguf(const std::string& path, const std::string& out);

// Writes a GGUF holding only the tokenizer.ggml.* metadata of a Hugging Face tokenizer
// directory (tokenizer.json + tokenizer_config.json) as convert_hf_to_gguf.py would: `pre` is
// its tokenizer.ggml.pre name for byte-level vocabularies; SentencePiece vocabularies (byte
// fallback) become tokenizer.ggml.model llama with scores.
void write_tokenizer_gguf(const std::string& tokenizer_dir, const std::string& pre,
                          const std::string& path);

}  // namespace tandem::test
