// The safetensors reader on valid files (written here and by Hugging Face, in tests/data) and on
// every kind of malformed file: each must fail with a tandem::Error that names the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "kernels/error.h"
#include "models/checkpoint.h"
#include "models/safetensors.h"
#include "tests/test_util.h"

namespace tandem {
namespace {

std::vector<std::byte> file_with_header(const std::string& header, size_t data_bytes) {
    std::vector<std::byte> file(8 + header.size() + data_bytes);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i)
        file[size_t(i)] = std::byte((n >> (8 * i)) & 0xff);
    std::memcpy(file.data() + 8, header.data(), header.size());
    return file;
}

// Parses and returns the error message, or "" if it parsed.
std::string parse_error(const std::vector<std::byte>& file) {
    try {
        parse_safetensors(file, "x.safetensors");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

void expect_error(const std::string& header, size_t data_bytes, const std::string& fragment) {
    const std::string message = parse_error(file_with_header(header, data_bytes));
    EXPECT_NE(message.find(fragment), std::string::npos)
        << "header " << header << "\nmessage: " << message;
    EXPECT_EQ(message.rfind("x.safetensors", 0), 0u) << message;
}

TEST(Safetensors, ParsesAValidHeader) {
    const auto file = file_with_header(
        R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2,3],"data_offsets":[16,28]},)"
        R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
        28);
    const SafetensorsContents contents = parse_safetensors(file, "x");
    ASSERT_EQ(contents.tensors.size(), 2u);
    EXPECT_EQ(contents.tensors[0].name, "a");  // sorted by offset
    EXPECT_EQ(contents.tensors[1].dtype, DType::BF16);
    EXPECT_EQ(contents.tensors[1].shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(contents.metadata.at("format"), "pt");
}

TEST(Safetensors, RejectsMalformedHeaders) {
    const std::string ok = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
    expect_error("{\"t\":{" + ok + "}", 8, "not valid JSON");
    expect_error("[1,2]", 0, "must be a JSON object");
    expect_error(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, "needs 12 bytes");
    expect_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4, "run past");
    expect_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, "reversed");
    expect_error(R"({"t":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8,
                 "unknown dtype 'Q9'");
    expect_error(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, "non-negative");
    expect_error(R"({"t":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8, "shape missing");
    expect_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8, "data_offsets");
    expect_error(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8,
                 "unexpected field");
    expect_error(
        R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})",
        8, "overflows");
    expect_error(R"({"a":{)" + ok + R"(},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                 12, "overlap");
    expect_error(R"({"__metadata__":{"k":1}})", 0, "__metadata__.k");
    expect_error(R"({"t":{)" + ok + "}}", 0, "run past");
}

TEST(Safetensors, RejectsLyingHeaderLengths) {
    EXPECT_NE(parse_error({}).find("too small"), std::string::npos);
    auto file = file_with_header("{}", 0);
    file[0] = std::byte{0xff};  // header length 255 > file
    EXPECT_NE(parse_error(file).find("runs past the end"), std::string::npos);
    file[7] = std::byte{0x7f};  // absurd length
    EXPECT_NE(parse_error(file).find("exceeds the limit"), std::string::npos);
}

TEST(Safetensors, WriteThenReadRoundTrips) {
    test::TempDir dir;
    const std::vector<float> a = {1, 2, 3, 4, 5, 6};
    const std::vector<uint16_t> b = {f32_to_bf16(1.5f), f32_to_bf16(-2.0f), f32_to_bf16(3.25f)};
    const std::vector<SafetensorsWriteEntry> entries = {
        {"b", DType::BF16, {3}, std::as_bytes(std::span(b))},
        {"a", DType::F32, {2, 3}, std::as_bytes(std::span(a))}};
    const std::string path = (dir.path() / "t.safetensors").string();
    write_safetensors(path, entries, {{"format", "pt"}});
    const SafetensorsFile file = SafetensorsFile::open(path);
    const SafetensorsEntry* ea = file.find("a");
    ASSERT_NE(ea, nullptr);
    EXPECT_EQ(std::memcmp(ea->data, a.data(), 24), 0);
    EXPECT_EQ(std::memcmp(file.find("b")->data, b.data(), 6), 0);
    EXPECT_EQ(file.find("c"), nullptr);
    EXPECT_THROW(write_safetensors(path,
                                   std::vector<SafetensorsWriteEntry>{
                                       {"x", DType::F32, {3}, std::as_bytes(std::span(b))}}),
                 Error);
}

TEST(Checkpoint, BindChecksShapeAndDtypeAndNamesBoth) {
    test::TempDir dir;
    const std::vector<float> w(12, 1.0f);
    const std::vector<int64_t> ids = {1, 2};
    write_safetensors((dir.path() / "model.safetensors").string(),
                      std::vector<SafetensorsWriteEntry>{
                          {"w", DType::F32, {3, 4}, std::as_bytes(std::span(w))},
                          {"ids", DType::I64, {2}, std::as_bytes(std::span(ids))}});
    const Checkpoint ckpt = Checkpoint::open(dir.str());
    EXPECT_EQ(ckpt.bind("w", {3, 4}).numel(), 12);
    try {
        ckpt.bind("w", {4, 3});
        FAIL() << "expected a shape error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tensor w: expected [4, 3] f32, found [3, 4] f32"),
                  std::string::npos)
            << e.what();
    }
    try {
        ckpt.bind("ids", {2});
        FAIL() << "expected a dtype error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("unsupported dtype"), std::string::npos) << e.what();
    }
    EXPECT_THROW(ckpt.bind("missing", {1}), Error);
    EXPECT_TRUE(ckpt.bind_optional("missing", {1}).empty());
}

TEST(Checkpoint, ReadsShardedCheckpointsAndChecksTheIndex) {
    test::TempDir dir;
    const std::vector<float> a(4, 1.0f), b(2, 2.0f);
    write_safetensors(
        (dir.path() / "s1.safetensors").string(),
        std::vector<SafetensorsWriteEntry>{{"a", DType::F32, {4}, std::as_bytes(std::span(a))}});
    write_safetensors(
        (dir.path() / "s2.safetensors").string(),
        std::vector<SafetensorsWriteEntry>{{"b", DType::F32, {2}, std::as_bytes(std::span(b))}});
    auto write_index = [&](const std::string& text) {
        std::ofstream(dir.path() / "model.safetensors.index.json") << text;
    };
    write_index(R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}})");
    const Checkpoint ckpt = Checkpoint::open(dir.str());
    EXPECT_EQ(ckpt.bind("b", {2}).data_as<float>()[1], 2.0f);
    write_index(R"({"weight_map":{"a":"s2.safetensors"}})");
    EXPECT_THROW(Checkpoint::open(dir.str()), Error);
    write_index(R"({"weight_map":{"a":"../s1.safetensors"}})");
    EXPECT_THROW(Checkpoint::open(dir.str()), Error);
    write_index(R"({"weight_map":{"a":"missing.safetensors"}})");
    EXPECT_THROW(Checkpoint::open(dir.str()), Error);
    write_index("{not json");
    EXPECT_THROW(Checkpoint::open(dir.str()), Error);
}

TEST(Checkpoint, MissingDirectoryContentsAreNamed) {
    test::TempDir dir;
    try {
        Checkpoint::open(dir.str());
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("no model.safetensors"), std::string::npos);
    }
}

}  // namespace
}  // namespace tandem
