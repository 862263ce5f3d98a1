// The syntax tree of a chat template, shared by the lexer/parser and the evaluator (internal).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/tokenizer/chat_template/value.h"

namespace tandem::jinja {

// "line L, column C" of a byte offset in the template source (1-based).
std::string source_position(const std::string& source, size_t offset);

// A piece of the template after whitespace control: text, {{ expression }} or {% statement %}.
struct Piece {
    enum class Kind { Text, Expression, Statement } kind;
    std::string text;  // the text, or the inside of the tag
    size_t offset;     // where text starts in the source
};

// trim_blocks and lstrip_blocks as transformers sets them (both true), and Jinja's default of
// dropping one trailing newline of the template.
std::vector<Piece> lex(const std::string& source);

struct Expr {
    enum class Kind {
        Literal,
        Name,
        ListLiteral,
        DictLiteral,
        Attr,
        Index,
        Slice,
        Call,
        Filter,
        Test,
        Unary,
        Binary,
        Cond
    } kind;
    size_t offset = 0;
    Value literal;
    std::string name;  // Name, Attr, Filter, Test; operator of Unary/Binary
    std::vector<std::unique_ptr<Expr>> children;  // operands; nullptr for absent slice bounds
    std::vector<std::string> arg_names;           // Call/Filter/Test: "" for positional
    bool negated = false;                         // Test: `is not`
};

struct Stmt {
    enum class Kind { Text, Output, If, For, Set, Macro, Break, Continue, Block } kind;
    size_t offset = 0;
    std::string text;                          // Text
    std::vector<std::unique_ptr<Expr>> exprs;  // Output: [e]; If: conditions; For: [iter,
                                               // filter?]; Set: [value]; Macro: defaults
    std::vector<std::vector<std::unique_ptr<Stmt>>> bodies;  // If: one per condition + else;
                                                             // For: body, else; Set/Macro: body
    std::vector<std::string> names;  // For: targets; Set: [name, attr?]; Macro: [name, params..]
};

using Body = std::vector<std::unique_ptr<Stmt>>;

// Throws tandem::Error "chat template: line L, column C: ..." on a syntax error or a construct
// outside the supported subset (naming it).
Body parse(const std::string& source);

}  // namespace tandem::jinja
