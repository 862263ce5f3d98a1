#include "tests/golden/golden_reference.h"

#include <cstring>
#include <stdexcept>

#include "models/safetensors.h"

namespace tandem {

namespace {

std::vector<int32_t> read_ids(const SafetensorsFile& file, const std::string& name) {
    const SafetensorsEntry* e = file.find(name);
    if (e == nullptr || e->dtype != DType::I64) throw std::runtime_error("reference lacks " + name);
    std::vector<int64_t> wide((e->end - e->begin) / 8);
    std::memcpy(wide.data(), e->data, e->end - e->begin);
    return {wide.begin(), wide.end()};
}

std::vector<float> read_floats(const SafetensorsFile& file, const std::string& name) {
    const SafetensorsEntry* e = file.find(name);
    if (e == nullptr) return {};
    std::vector<float> out((e->end - e->begin) / 4);
    std::memcpy(out.data(), e->data, e->end - e->begin);
    return out;
}

}  // namespace

Reference read_reference(const std::string& path) {
    const SafetensorsFile file = SafetensorsFile::open(path);
    return {read_ids(file, "prompt_ids"),          read_floats(file, "logits"),
            read_ids(file, "greedy_ids"),          read_floats(file, "logits_bf16"),
            read_floats(file, "experts0_gate_up"), read_floats(file, "experts0_down")};
}

}  // namespace tandem
