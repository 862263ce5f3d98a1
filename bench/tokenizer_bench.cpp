// tandem-tokenizer-bench: single-thread encoding throughput of a Hugging Face tokenizer on a
// text file, and the time to load the tokenizer. bench/tokenizer_vs_hf.py runs it next to HF
// `tokenizers` on the same text and prints the ratio.
//
//   tandem-tokenizer-bench --tokenizer DIR --text FILE [Google Benchmark flags]
//
// The text is cut into chunks at the first newline after every 4096 bytes (the script cuts it
// the same way) and each chunk is encoded without special tokens, as HF's encode() would be
// called per document. Counters: MB_per_s (10^6 bytes of text per second) and tokens.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace {

std::string g_tokenizer_dir, g_text_file;

std::vector<std::string> chunks_of(const std::string& text) {
    std::vector<std::string> chunks;
    size_t begin = 0;
    while (begin < text.size()) {
        size_t end = begin + 4096 >= text.size() ? text.size() : text.find('\n', begin + 4096);
        end = end == std::string::npos ? text.size() : end + 1;
        chunks.push_back(text.substr(begin, end - begin));
        begin = end;
    }
    return chunks;
}

void BM_Load(benchmark::State& state) {
    for (auto _ : state) {
        tandem::Tokenizer tok = tandem::Tokenizer::load(g_tokenizer_dir);
        benchmark::DoNotOptimize(tok);
    }
}

void BM_Encode(benchmark::State& state) {
    const tandem::Tokenizer tok = tandem::Tokenizer::load(g_tokenizer_dir);
    std::ifstream in(g_text_file, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.empty()) {
        state.SkipWithError("empty or missing --text file");
        return;
    }
    const std::vector<std::string> chunks = chunks_of(text);
    size_t tokens = 0;
    for (auto _ : state) {
        tokens = 0;
        for (const auto& c : chunks)
            tokens += tok.encode(c, {.add_special_tokens = false}).size();
    }
    state.counters["MB_per_s"] = benchmark::Counter(double(text.size()) / 1e6,
                                                    benchmark::Counter::kIsIterationInvariantRate);
    state.counters["tokens"] = double(tokens);
    state.counters["bytes"] = double(text.size());
}

BENCHMARK(BM_Load)->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_Encode)->Unit(benchmark::kMillisecond)->Iterations(2);

}  // namespace

int main(int argc, char** argv) {
    std::vector<char*> rest;
    for (int i = 0; i < argc; ++i) {
        if (i + 1 < argc && std::strcmp(argv[i], "--tokenizer") == 0) {
            g_tokenizer_dir = argv[++i];
        } else if (i + 1 < argc && std::strcmp(argv[i], "--text") == 0) {
            g_text_file = argv[++i];
        } else {
            rest.push_back(argv[i]);
        }
    }
    if (g_tokenizer_dir.empty() || g_text_file.empty()) {
        std::fprintf(stderr, "usage: %s --tokenizer DIR --text FILE [benchmark flags]\n", argv[0]);
        return 2;
    }
    int n = int(rest.size());
    benchmark::Initialize(&n, rest.data());
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
