// tandem-tokenize: encode, decode and render chat templates with a Hugging Face tokenizer.
//
//   echo "Hello world" | tandem-tokenize --tokenizer DIR            -> [9707, 1879, 198]
//   echo "[9707, 1879]" | tandem-tokenize --tokenizer DIR --decode  -> Hello world
//   tandem-tokenize --tokenizer DIR --chat messages.json --add-generation-prompt
//
// DIR holds tokenizer.json and optionally tokenizer_config.json. Text on stdin is taken as is
// (a trailing newline is part of it); invalid UTF-8 is an error naming the byte offset.
// --chat prints the rendered prompt; with --ids it prints its ids instead (encoded without
// BOS/EOS, since the template writes them, as transformers does).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/error.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace {

std::string read_all(std::istream& in) {
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

nlohmann::ordered_json read_json_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) tandem::fail(path, ": cannot open");
    try {
        return nlohmann::ordered_json::parse(read_all(in));
    } catch (const nlohmann::json::exception& e) {
        tandem::fail(path, ": invalid JSON: ", e.what());
    }
}

void print_ids(const std::vector<int32_t>& ids) {
    std::string out = "[";
    for (size_t k = 0; k < ids.size(); ++k)
        out += (k ? ", " : "") + std::to_string(ids[k]);
    std::printf("%s]\n", out.c_str());
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Encode stdin to token ids, decode ids, or render a chat template"};
    std::string dir, chat_file, tools_file;
    bool decode = false, no_special = false, add_generation_prompt = false, ids = false,
         skip_special = false;
    app.set_version_flag("--version", std::string("tandem-tokenize ") + TANDEM_VERSION);
    app.add_option("--tokenizer", dir, "folder with tokenizer.json")->required();
    app.add_flag("--decode", decode, "read a JSON array of ids on stdin and print the text");
    app.add_flag("--skip-special", skip_special, "with --decode: leave special tokens out");
    app.add_flag("--no-special", no_special, "encode without BOS/EOS (special tokens)");
    app.add_option("--chat", chat_file, "render a JSON list of messages with the chat template");
    app.add_option("--tools", tools_file, "with --chat: a JSON list of tool schemas");
    app.add_flag("--add-generation-prompt", add_generation_prompt,
                 "with --chat: end with the assistant's generation prompt");
    app.add_flag("--ids", ids, "with --chat: print the prompt's token ids");
    CLI11_PARSE(app, argc, argv);

    try {
        const tandem::Tokenizer tok = tandem::Tokenizer::load(dir);
        if (!chat_file.empty()) {
            const auto messages = read_json_file(chat_file);
            const nlohmann::ordered_json tools =
                tools_file.empty() ? nlohmann::ordered_json() : read_json_file(tools_file);
            const std::string prompt = tandem::with_context(chat_file, [&] {
                return tandem::apply_chat_template(tok, messages, add_generation_prompt, tools);
            });
            if (ids)
                print_ids(tok.encode(prompt, {.add_special_tokens = false}));
            else
                std::fwrite(prompt.data(), 1, prompt.size(), stdout);
            return 0;
        }
        const std::string input = read_all(std::cin);
        if (decode) {
            nlohmann::json array;
            try {
                array = nlohmann::json::parse(input);
            } catch (const nlohmann::json::exception& e) {
                tandem::fail("stdin: expected a JSON array of ids: ", e.what());
            }
            if (!array.is_array()) tandem::fail("stdin: expected a JSON array of ids");
            std::vector<int32_t> id_list;
            for (const auto& v : array) {
                if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
                    tandem::fail("stdin: ", v.dump(), " is not a token id");
                if (uint64_t(v.get<int64_t>()) >= tok.vocab_size())
                    tandem::fail("stdin: token id ", v.dump(), " is outside the vocabulary of ",
                                 tok.vocab_size());
                id_list.push_back(int32_t(v.get<int64_t>()));
            }
            const std::string text = tok.decode(id_list, {.skip_special_tokens = skip_special});
            std::fwrite(text.data(), 1, text.size(), stdout);
            return 0;
        }
        print_ids(tok.encode(input, {.add_special_tokens = !no_special}));
    } catch (const tandem::Error& e) {
        std::fprintf(stderr, "tandem-tokenize: %s\n", e.what());
        return 1;
    }
    return 0;
}
