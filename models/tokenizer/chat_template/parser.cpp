// Parses the pieces of a template into statements and expressions, with Jinja's operator
// precedence (lowest first): `x if c else y`, or, and, not, comparisons and `in`, `+ -`, `~`,
// `* / // %`, `**`, unary `- +`, then postfix `.attr [index] [a:b:c] (call)`, `| filter`,
// `is test`. Supported statements: if/elif/else, for (unpacking, `if` filter, else), set
// (incl. namespace attributes and block set), macro, break, continue, generation. Anything
// else is an error naming it and its position.
#include <charconv>
#include <cstring>

#include "kernels/error.h"
#include "models/tokenizer/chat_template/ast.h"

namespace tandem::jinja {

namespace {

struct Token {
    enum class Kind { Name, String, Int, Float, Op, End } kind;
    std::string text;
    size_t offset;
};

class Parser {
  public:
    explicit Parser(const std::string& source) : source_(source) {}

    Body parse_all() {
        pieces_ = lex(source_);
        Body body = parse_body({});
        if (index_ < pieces_.size()) error(pieces_[index_].offset, "unexpected '", end_tag_, "'");
        return body;
    }

  private:
    template <class... Parts>
    [[noreturn]] void error(size_t offset, const Parts&... parts) {
        fail("chat template: ", source_position(source_, offset), ": ", parts...);
    }

    // --- expression tokens of one tag ---
    void tokenize(const Piece& piece) {
        tokens_.clear();
        pos_ = 0;
        const std::string& s = piece.text;
        size_t i = 0;
        while (i < s.size()) {
            const char c = s[i];
            const size_t at = piece.offset + i;
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
                ++i;
            } else if (std::isalpha((unsigned char)c) || c == '_') {
                size_t j = i;
                while (j < s.size() && (std::isalnum((unsigned char)s[j]) || s[j] == '_'))
                    ++j;
                tokens_.push_back({Token::Kind::Name, s.substr(i, j - i), at});
                i = j;
            } else if (std::isdigit((unsigned char)c)) {
                size_t j = i;
                bool is_float = false;
                while (j < s.size() && (std::isdigit((unsigned char)s[j]) || s[j] == '_'))
                    ++j;
                if (j + 1 < s.size() && s[j] == '.' && std::isdigit((unsigned char)s[j + 1])) {
                    is_float = true;
                    ++j;
                    while (j < s.size() && std::isdigit((unsigned char)s[j]))
                        ++j;
                }
                if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
                    is_float = true;
                    ++j;
                    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
                    while (j < s.size() && std::isdigit((unsigned char)s[j]))
                        ++j;
                }
                tokens_.push_back(
                    {is_float ? Token::Kind::Float : Token::Kind::Int, s.substr(i, j - i), at});
                i = j;
            } else if (c == '\'' || c == '"') {
                std::string value;
                size_t j = i + 1;
                for (; j < s.size() && s[j] != c; ++j) {
                    if (s[j] != '\\' || j + 1 >= s.size()) {
                        value += s[j];
                        continue;
                    }
                    const char e = s[++j];
                    switch (e) {
                        case 'n': value += '\n'; break;
                        case 't': value += '\t'; break;
                        case 'r': value += '\r'; break;
                        case '\\': value += '\\'; break;
                        case '\'': value += '\''; break;
                        case '"': value += '"'; break;
                        default: value += '\\', value += e;
                    }
                }
                if (j >= s.size()) error(at, "unterminated string");
                tokens_.push_back({Token::Kind::String, value, at});
                i = j + 1;
            } else {
                static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                            "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                            "]",  "{",  "}",  ",",  ".",  ":",  "|"};
                bool matched = false;
                for (const char* op : ops) {
                    const size_t n = std::strlen(op);
                    if (s.compare(i, n, op) == 0) {
                        tokens_.push_back({Token::Kind::Op, op, at});
                        i += n;
                        matched = true;
                        break;
                    }
                }
                if (!matched) error(at, "unexpected character '", c, "'");
            }
        }
        tokens_.push_back({Token::Kind::End, "", piece.offset + s.size()});
    }

    const Token& peek(size_t ahead = 0) const {
        return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
    }
    bool is_op(const char* op, size_t ahead = 0) const {
        return peek(ahead).kind == Token::Kind::Op && peek(ahead).text == op;
    }
    bool is_name(const char* name, size_t ahead = 0) const {
        return peek(ahead).kind == Token::Kind::Name && peek(ahead).text == name;
    }
    const Token& next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
    void expect_op(const char* op) {
        if (!is_op(op)) error(peek().offset, "expected '", op, "', found '", peek().text, "'");
        ++pos_;
    }
    std::string expect_name() {
        if (peek().kind != Token::Kind::Name)
            error(peek().offset, "expected a name, found '", peek().text, "'");
        return next().text;
    }
    void expect_end() {
        if (peek().kind != Token::Kind::End) error(peek().offset, "unexpected '", peek().text, "'");
    }

    using ExprPtr = std::unique_ptr<Expr>;
    ExprPtr node(Expr::Kind kind, size_t offset) {
        auto e = std::make_unique<Expr>();
        e->kind = kind;
        e->offset = offset;
        return e;
    }
    ExprPtr binary(const std::string& op, ExprPtr lhs, ExprPtr rhs, size_t offset) {
        auto e = node(Expr::Kind::Binary, offset);
        e->name = op;
        e->children.push_back(std::move(lhs));
        e->children.push_back(std::move(rhs));
        return e;
    }

    ExprPtr parse_expression() {
        ExprPtr e = parse_or();
        while (is_name("if")) {
            const size_t at = next().offset;
            auto c = node(Expr::Kind::Cond, at);
            ExprPtr cond = parse_or();
            ExprPtr otherwise;
            if (is_name("else")) {
                next();
                otherwise = parse_expression();
            }
            c->children.push_back(std::move(e));
            c->children.push_back(std::move(cond));
            c->children.push_back(std::move(otherwise));
            e = std::move(c);
        }
        return e;
    }
    ExprPtr parse_or() {
        ExprPtr e = parse_and();
        while (is_name("or")) {
            const size_t at = next().offset;
            e = binary("or", std::move(e), parse_and(), at);
        }
        return e;
    }
    ExprPtr parse_and() {
        ExprPtr e = parse_not();
        while (is_name("and")) {
            const size_t at = next().offset;
            e = binary("and", std::move(e), parse_not(), at);
        }
        return e;
    }
    ExprPtr parse_not() {
        if (is_name("not")) {
            const size_t at = next().offset;
            auto e = node(Expr::Kind::Unary, at);
            e->name = "not";
            e->children.push_back(parse_not());
            return e;
        }
        return parse_compare();
    }
    ExprPtr parse_compare() {
        ExprPtr e = parse_math1();
        while (true) {
            const size_t at = peek().offset;
            std::string op;
            for (const char* o : {"==", "!=", "<", ">", "<=", ">="})
                if (is_op(o)) op = o;
            if (!op.empty()) {
                next();
            } else if (is_name("in")) {
                next();
                op = "in";
            } else if (is_name("not") && is_name("in", 1)) {
                pos_ += 2;
                op = "not in";
            } else {
                return e;
            }
            e = binary(op, std::move(e), parse_math1(), at);
        }
    }
    ExprPtr parse_math1() {
        ExprPtr e = parse_concat();
        while (is_op("+") || is_op("-")) {
            const Token& t = next();
            e = binary(t.text, std::move(e), parse_concat(), t.offset);
        }
        return e;
    }
    ExprPtr parse_concat() {
        ExprPtr e = parse_math2();
        while (is_op("~")) {
            const size_t at = next().offset;
            e = binary("~", std::move(e), parse_math2(), at);
        }
        return e;
    }
    ExprPtr parse_math2() {
        ExprPtr e = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const Token& t = next();
            e = binary(t.text, std::move(e), parse_pow(), t.offset);
        }
        return e;
    }
    ExprPtr parse_pow() {
        ExprPtr e = parse_unary();
        while (is_op("**")) {
            const size_t at = next().offset;
            e = binary("**", std::move(e), parse_unary(), at);
        }
        return e;
    }
    ExprPtr parse_unary() {
        if (is_op("-") || is_op("+")) {
            const Token& t = next();
            auto e = node(Expr::Kind::Unary, t.offset);
            e->name = t.text;
            e->children.push_back(parse_unary());
            return parse_filters(std::move(e));
        }
        return parse_filters(parse_postfix(parse_primary()));
    }
    void parse_call_args(Expr& call) {
        expect_op("(");
        while (!is_op(")")) {
            if (peek().kind == Token::Kind::Name && is_op("=", 1)) {
                call.arg_names.push_back(next().text);
                next();
            } else {
                call.arg_names.push_back("");
            }
            call.children.push_back(parse_expression());
            if (!is_op(")")) expect_op(",");
        }
        expect_op(")");
    }
    ExprPtr parse_postfix(ExprPtr e) {
        while (true) {
            const size_t at = peek().offset;
            if (is_op(".")) {
                next();
                auto a = node(Expr::Kind::Attr, at);
                a->name = peek().kind == Token::Kind::Int ? next().text : expect_name();
                a->children.push_back(std::move(e));
                e = std::move(a);
            } else if (is_op("[")) {
                next();
                ExprPtr parts[3];
                bool slice = false;
                for (int k = 0; k < 3; ++k) {
                    if (!is_op(":") && !is_op("]")) parts[k] = parse_expression();
                    if (k < 2 && is_op(":")) {
                        next();
                        slice = true;
                    } else {
                        break;
                    }
                }
                expect_op("]");
                // `x[]` parses to an index with no expression; slices may omit any part.
                if (!slice && !parts[0]) error(at, "empty subscript []");
                auto s = node(slice ? Expr::Kind::Slice : Expr::Kind::Index, at);
                s->children.push_back(std::move(e));
                for (int k = 0; k < (slice ? 3 : 1); ++k)
                    s->children.push_back(std::move(parts[k]));
                e = std::move(s);
            } else if (is_op("(")) {
                auto c = node(Expr::Kind::Call, at);
                c->children.push_back(std::move(e));
                c->arg_names.push_back("");
                parse_call_args(*c);
                e = std::move(c);
            } else {
                return e;
            }
        }
    }
    ExprPtr parse_filters(ExprPtr e) {
        while (true) {
            if (is_op("|")) {
                const size_t at = next().offset;
                auto f = node(Expr::Kind::Filter, at);
                f->name = expect_name();
                f->children.push_back(std::move(e));
                f->arg_names.push_back("");
                if (is_op("(")) parse_call_args(*f);
                e = std::move(f);
            } else if (is_name("is")) {
                const size_t at = next().offset;
                auto t = node(Expr::Kind::Test, at);
                if (is_name("not")) {
                    next();
                    t->negated = true;
                }
                t->name = expect_name();
                t->children.push_back(std::move(e));
                t->arg_names.push_back("");
                if (is_op("(")) {
                    parse_call_args(*t);
                } else if (peek().kind == Token::Kind::String || peek().kind == Token::Kind::Int ||
                           peek().kind == Token::Kind::Float ||
                           (peek().kind == Token::Kind::Name && !is_name("and") && !is_name("or") &&
                            !is_name("else") && !is_name("if") && !is_name("in") &&
                            !is_name("not") && !is_name("is"))) {
                    t->children.push_back(parse_postfix(parse_primary()));
                    t->arg_names.push_back("");
                }
                e = std::move(t);
            } else {
                return e;
            }
        }
    }
    ExprPtr parse_primary() {
        const Token& t = next();
        auto literal = [&](Value v) {
            auto e = node(Expr::Kind::Literal, t.offset);
            e->literal = std::move(v);
            return e;
        };
        switch (t.kind) {
            case Token::Kind::String: {
                std::string s = t.text;
                while (peek().kind == Token::Kind::String)
                    s += next().text;  // adjacent literals concatenate
                return literal(Value(std::move(s)));
            }
            case Token::Kind::Int: {
                // from_chars, not stoll: a literal past int64 is the template's error to report,
                // not an out_of_range exception escaping the parser (found by fuzzing).
                int64_t value = 0;
                const auto [end, ec] =
                    std::from_chars(t.text.data(), t.text.data() + t.text.size(), value);
                if (ec != std::errc() || end != t.text.data() + t.text.size())
                    error(t.offset, "integer literal ", t.text, " is out of range");
                return literal(Value(value));
            }
            case Token::Kind::Float: {
                double value = 0;
                const auto [end, ec] =
                    std::from_chars(t.text.data(), t.text.data() + t.text.size(), value);
                if (ec != std::errc() || end != t.text.data() + t.text.size())
                    error(t.offset, "float literal ", t.text, " is out of range");
                return literal(Value(value));
            }
            case Token::Kind::Name: {
                if (t.text == "true" || t.text == "True") return literal(Value(true));
                if (t.text == "false" || t.text == "False") return literal(Value(false));
                if (t.text == "none" || t.text == "None") return literal(Value::none());
                auto e = node(Expr::Kind::Name, t.offset);
                e->name = t.text;
                return e;
            }
            case Token::Kind::Op:
                if (t.text == "(") {
                    ExprPtr e = parse_expression();
                    if (is_op(",")) {  // a tuple: evaluated as a list
                        auto list = node(Expr::Kind::ListLiteral, t.offset);
                        list->children.push_back(std::move(e));
                        while (is_op(",")) {
                            next();
                            if (is_op(")")) break;
                            list->children.push_back(parse_expression());
                        }
                        e = std::move(list);
                    }
                    expect_op(")");
                    return e;
                }
                if (t.text == "[") {
                    auto list = node(Expr::Kind::ListLiteral, t.offset);
                    while (!is_op("]")) {
                        list->children.push_back(parse_expression());
                        if (!is_op("]")) expect_op(",");
                    }
                    expect_op("]");
                    return list;
                }
                if (t.text == "{") {
                    auto dict = node(Expr::Kind::DictLiteral, t.offset);
                    while (!is_op("}")) {
                        dict->children.push_back(parse_expression());
                        expect_op(":");
                        dict->children.push_back(parse_expression());
                        if (!is_op("}")) expect_op(",");
                    }
                    expect_op("}");
                    return dict;
                }
                break;
            default: break;
        }
        error(t.offset, t.kind == Token::Kind::End ? "unexpected end of expression"
                                                   : "unexpected '" + t.text + "'");
    }

    // --- statements ---
    using StmtPtr = std::unique_ptr<Stmt>;

    // Parses statements until one of the end tags (returned in end_tag_, not consumed).
    Body parse_body(std::vector<std::string> ends) {
        Body body;
        end_tag_.clear();
        while (index_ < pieces_.size()) {
            const Piece& piece = pieces_[index_];
            if (piece.kind == Piece::Kind::Text) {
                auto s = std::make_unique<Stmt>();
                s->kind = Stmt::Kind::Text;
                s->text = piece.text;
                s->offset = piece.offset;
                body.push_back(std::move(s));
                ++index_;
                continue;
            }
            tokenize(piece);
            if (piece.kind == Piece::Kind::Expression) {
                auto s = std::make_unique<Stmt>();
                s->kind = Stmt::Kind::Output;
                s->offset = piece.offset;
                s->exprs.push_back(parse_expression());
                expect_end();
                body.push_back(std::move(s));
                ++index_;
                continue;
            }
            const std::string keyword = peek().kind == Token::Kind::Name ? peek().text : "";
            for (const auto& e : ends)
                if (keyword == e) {
                    end_tag_ = keyword;
                    return body;
                }
            ++pos_;
            ++index_;
            body.push_back(parse_statement(keyword, piece.offset));
        }
        if (!ends.empty()) {
            std::string want;
            for (const auto& e : ends)
                want += (want.empty() ? "'" : " or '") + e + "'";
            error(source_.size(), "missing ", want);
        }
        return body;
    }

    // Consumes the end tag found by parse_body and tokenizes its piece.
    void take_end_tag() {
        tokenize(pieces_[index_]);
        ++pos_;
        ++index_;
    }

    StmtPtr parse_statement(const std::string& keyword, size_t offset) {
        auto s = std::make_unique<Stmt>();
        s->offset = offset;
        if (keyword == "if") {
            s->kind = Stmt::Kind::If;
            s->exprs.push_back(parse_expression());
            expect_end();
            while (true) {
                s->bodies.push_back(parse_body({"elif", "else", "endif"}));
                const std::string end = end_tag_;
                take_end_tag();
                if (end == "elif") {
                    s->exprs.push_back(parse_expression());
                    expect_end();
                } else if (end == "else") {
                    expect_end();
                    s->bodies.push_back(parse_body({"endif"}));
                    take_end_tag();
                    expect_end();
                    break;
                } else {
                    expect_end();
                    break;
                }
            }
            return s;
        }
        if (keyword == "for") {
            s->kind = Stmt::Kind::For;
            s->names.push_back(expect_name());
            while (is_op(",")) {
                next();
                s->names.push_back(expect_name());
            }
            if (!is_name("in")) error(peek().offset, "expected 'in' in for");
            next();
            s->exprs.push_back(parse_or());
            if (is_name("if")) {
                next();
                s->exprs.push_back(parse_expression());
            }
            if (is_name("recursive")) error(peek().offset, "unsupported: recursive for loops");
            expect_end();
            s->bodies.push_back(parse_body({"else", "endfor"}));
            if (end_tag_ == "else") {
                take_end_tag();
                expect_end();
                s->bodies.push_back(parse_body({"endfor"}));
            }
            take_end_tag();
            expect_end();
            return s;
        }
        if (keyword == "set") {
            s->kind = Stmt::Kind::Set;
            s->names.push_back(expect_name());
            if (is_op(".")) {
                next();
                s->names.push_back(expect_name());
            }
            if (is_op(",")) error(peek().offset, "unsupported: tuple assignment in set");
            if (is_op("=")) {
                next();
                s->exprs.push_back(parse_expression());
                expect_end();
            } else {
                expect_end();  // block set: {% set x %}...{% endset %}
                s->bodies.push_back(parse_body({"endset"}));
                take_end_tag();
                expect_end();
            }
            return s;
        }
        if (keyword == "macro") {
            s->kind = Stmt::Kind::Macro;
            s->names.push_back(expect_name());
            expect_op("(");
            while (!is_op(")")) {
                s->names.push_back(expect_name());
                if (is_op("=")) {
                    next();
                    s->exprs.push_back(parse_expression());
                } else {
                    s->exprs.push_back(nullptr);
                }
                if (!is_op(")")) expect_op(",");
            }
            expect_op(")");
            expect_end();
            s->bodies.push_back(parse_body({"endmacro"}));
            take_end_tag();
            expect_end();
            return s;
        }
        if (keyword == "break" || keyword == "continue") {
            s->kind = keyword == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue;
            expect_end();
            return s;
        }
        if (keyword == "generation") {  // transformers' assistant-mask marker: renders its body
            s->kind = Stmt::Kind::Block;
            expect_end();
            s->bodies.push_back(parse_body({"endgeneration"}));
            take_end_tag();
            expect_end();
            return s;
        }
        if (keyword.empty()) error(offset, "expected a statement name");
        error(offset, "unsupported tag '", keyword, "'");
    }

    const std::string& source_;
    std::vector<Piece> pieces_;
    size_t index_ = 0;
    std::vector<Token> tokens_;
    size_t pos_ = 0;
    std::string end_tag_;
};

}  // namespace

Body parse(const std::string& source) {
    return Parser(source).parse_all();
}

}  // namespace tandem::jinja
