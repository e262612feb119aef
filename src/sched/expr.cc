#include "sched/expr.h"

#include <cctype>
#include <charconv>
#include <cmath>

namespace fabrica::sched {
namespace {

constexpr size_t kMaxText = 4096;
constexpr int kMaxDepth = 64;

enum class Tok { kEnd, kIdent, kNumber, kString, kOp };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;
  double number = 0;
  size_t pos = 0;
};

// Splits an expression into identifiers, numbers, quoted strings and operators.
class Lexer {
 public:
  // Words: requirement values may hold globs and dashes ("gpu-node-0?"); rank words may not,
  // so "FREE_CPU*2" reads as a product.
  enum class Words { kGlobs, kPlain };
  Lexer(std::string_view text, std::string_view field, Words words)
      : text_(text), field_(field), words_(words) {}

  Result<void> next() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    tok_ = Token{.pos = pos_};
    if (pos_ >= text_.size()) return {};
    char c = text_[pos_];
    if (c == '"') return quoted();
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') return number();
    bool glob = words_ == Words::kGlobs && (c == '*' || c == '?');
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_' || glob) {
      size_t start = pos_;
      while (pos_ < text_.size() && word_char(text_[pos_])) ++pos_;
      tok_.kind = Tok::kIdent;
      tok_.text = std::string(text_.substr(start, pos_ - start));
      return {};
    }
    for (std::string_view op :
         {">=", "<=", "!=", "=", ">", "<", "&", "|", "!", "(", ")", "+", "-", "*", "/"}) {
      if (text_.substr(pos_).starts_with(op)) {
        tok_.kind = Tok::kOp;
        tok_.text = std::string(op);
        pos_ += op.size();
        return {};
      }
    }
    return fail(error("unexpected character '" + std::string(1, c) + "'"));
  }

  const Token& tok() const { return tok_; }
  bool at(std::string_view op) const { return tok_.kind == Tok::kOp && tok_.text == op; }
  Error error(const std::string& what) const { return error_at(tok_.pos, what); }
  Error error_at(size_t pos, const std::string& what) const {
    return Error(
        ErrorCode::kInvalidArgument,
        what + " at position " + std::to_string(pos + 1) + " of \"" + std::string(text_) + "\"",
        std::string(field_));
  }

 private:
  bool word_char(char c) const {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') return true;
    return words_ == Words::kGlobs && (c == '*' || c == '?' || c == '.' || c == '-' || c == ':');
  }
  Result<void> quoted() {
    size_t end = text_.find('"', pos_ + 1);
    if (end == std::string_view::npos) return fail(error("unterminated string"));
    tok_.kind = Tok::kString;
    tok_.text = std::string(text_.substr(pos_ + 1, end - pos_ - 1));
    pos_ = end + 1;
    return {};
  }
  Result<void> number() {
    size_t start = pos_;
    while (pos_ < text_.size() &&
           (std::isdigit(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.')) {
      ++pos_;
    }
    auto digits = text_.substr(start, pos_ - start);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), tok_.number);
    if (ec != std::errc() || end != digits.data() + digits.size()) return fail(error("bad number"));
    tok_.kind = Tok::kNumber;
    tok_.text = std::string(digits);
    return {};
  }

  std::string_view text_;
  std::string_view field_;
  Words words_;
  size_t pos_ = 0;
  Token tok_;
};

Result<int> find_attribute(const Lexer& lex, std::span<const AttrSpec> attributes) {
  for (size_t i = 0; i < attributes.size(); ++i) {
    if (attributes[i].name == lex.tok().text) return static_cast<int>(i);
  }
  std::string known;
  for (const auto& a : attributes) known += (known.empty() ? "" : ", ") + std::string(a.name);
  return fail(
      lex.error("unknown host attribute \"" + lex.tok().text + "\" (known: " + known + ")"));
}

Result<void> check_length(std::string_view text, std::string_view field) {
  if (text.size() > kMaxText) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 4096 characters", std::string(field));
  }
  return {};
}

class RequirementParser {
 public:
  using Node = Requirement::Node;
  using Op = Node::Op;

  RequirementParser(std::string_view text, std::span<const AttrSpec> attributes,
                    std::vector<Node>& nodes)
      : lex_(text, "requirements", Lexer::Words::kGlobs), attributes_(attributes), nodes_(nodes) {}

  Result<void> run() {
    FAB_TRY(lex_.next());
    if (lex_.tok().kind == Tok::kEnd) return {};
    FAB_TRY(parse_or(0));
    if (lex_.tok().kind != Tok::kEnd)
      return fail(lex_.error("unexpected \"" + lex_.tok().text + "\""));
    return {};
  }

 private:
  int add(Node node) {
    nodes_.push_back(std::move(node));
    return static_cast<int>(nodes_.size()) - 1;
  }

  Result<int> parse_or(int depth) {
    FAB_ASSIGN_OR_RETURN(int left, parse_and(depth));
    while (lex_.at("|")) {
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int right, parse_and(depth));
      left = add(Node{.op = Op::kOr, .left = left, .right = right});
    }
    return left;
  }

  Result<int> parse_and(int depth) {
    FAB_ASSIGN_OR_RETURN(int left, parse_unary(depth));
    while (lex_.at("&")) {
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int right, parse_unary(depth));
      left = add(Node{.op = Op::kAnd, .left = left, .right = right});
    }
    return left;
  }

  Result<int> parse_unary(int depth) {
    if (depth > kMaxDepth) return fail(lex_.error("expression nested too deeply"));
    if (lex_.at("!")) {
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int child, parse_unary(depth + 1));
      return add(Node{.op = Op::kNot, .left = child});
    }
    if (lex_.at("(")) {
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int inner, parse_or(depth + 1));
      if (!lex_.at(")")) return fail(lex_.error("expected \")\""));
      FAB_TRY(lex_.next());
      return inner;
    }
    return parse_comparison();
  }

  Result<int> parse_comparison() {
    if (lex_.tok().kind != Tok::kIdent) return fail(lex_.error("expected a host attribute"));
    FAB_ASSIGN_OR_RETURN(int attr, find_attribute(lex_, attributes_));
    const AttrSpec& spec = attributes_[attr];
    FAB_TRY(lex_.next());
    static const std::pair<std::string_view, Op> kOps[] = {{"=", Op::kEq},  {"!=", Op::kNe},
                                                           {">", Op::kGt},  {"<", Op::kLt},
                                                           {">=", Op::kGe}, {"<=", Op::kLe}};
    std::optional<Op> op;
    for (auto [text, o] : kOps) {
      if (lex_.at(text)) op = o;
    }
    if (!op)
      return fail(lex_.error("expected =, !=, >, <, >= or <= after " + std::string(spec.name)));
    FAB_TRY(lex_.next());
    Node node{.op = *op, .left = attr, .kind = spec.kind};
    const Token& value = lex_.tok();
    if (spec.kind == AttrKind::kNumber) {
      bool negative = lex_.at("-");
      if (negative) FAB_TRY(lex_.next());
      if (lex_.tok().kind != Tok::kNumber) {
        return fail(lex_.error(std::string(spec.name) + " is a number; expected a number"));
      }
      node.number = negative ? -lex_.tok().number : lex_.tok().number;
    } else {
      if (value.kind != Tok::kString && value.kind != Tok::kIdent && value.kind != Tok::kNumber) {
        return fail(lex_.error("expected a value for " + std::string(spec.name)));
      }
      if (*op != Op::kEq && *op != Op::kNe) {
        return fail(lex_.error(std::string(spec.name) + " is a string; only = and != apply"));
      }
      node.text = value.text;
    }
    FAB_TRY(lex_.next());
    return add(std::move(node));
  }

  Lexer lex_;
  std::span<const AttrSpec> attributes_;
  std::vector<Node>& nodes_;
};

class RankParser {
 public:
  using Node = Rank::Node;
  using Op = Node::Op;

  RankParser(std::string_view text, std::span<const AttrSpec> attributes, std::vector<Node>& nodes)
      : lex_(text, "rank", Lexer::Words::kPlain), attributes_(attributes), nodes_(nodes) {}

  Result<void> run() {
    FAB_TRY(lex_.next());
    if (lex_.tok().kind == Tok::kEnd) return {};
    FAB_TRY(parse_sum(0));
    if (lex_.tok().kind != Tok::kEnd)
      return fail(lex_.error("unexpected \"" + lex_.tok().text + "\""));
    return {};
  }

 private:
  int add(Node node) {
    nodes_.push_back(node);
    return static_cast<int>(nodes_.size()) - 1;
  }

  Result<int> parse_sum(int depth) {
    FAB_ASSIGN_OR_RETURN(int left, parse_product(depth));
    while (lex_.at("+") || lex_.at("-")) {
      Op op = lex_.at("+") ? Op::kAdd : Op::kSub;
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int right, parse_product(depth));
      left = add(Node{.op = op, .left = left, .right = right});
    }
    return left;
  }

  Result<int> parse_product(int depth) {
    FAB_ASSIGN_OR_RETURN(int left, parse_factor(depth));
    while (lex_.at("*") || lex_.at("/")) {
      Op op = lex_.at("*") ? Op::kMul : Op::kDiv;
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int right, parse_factor(depth));
      left = add(Node{.op = op, .left = left, .right = right});
    }
    return left;
  }

  Result<int> parse_factor(int depth) {
    if (depth > kMaxDepth) return fail(lex_.error("expression nested too deeply"));
    const Token& t = lex_.tok();
    if (lex_.at("-")) {
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int child, parse_factor(depth + 1));
      return add(Node{.op = Op::kNeg, .left = child});
    }
    if (lex_.at("(")) {
      FAB_TRY(lex_.next());
      FAB_ASSIGN_OR_RETURN(int inner, parse_sum(depth + 1));
      if (!lex_.at(")")) return fail(lex_.error("expected \")\""));
      FAB_TRY(lex_.next());
      return inner;
    }
    if (t.kind == Tok::kNumber) {
      int node = add(Node{.op = Op::kNumber, .number = t.number});
      FAB_TRY(lex_.next());
      return node;
    }
    if (t.kind == Tok::kIdent) {
      FAB_ASSIGN_OR_RETURN(int attr, find_attribute(lex_, attributes_));
      if (attributes_[attr].kind != AttrKind::kNumber) {
        return fail(lex_.error(std::string(attributes_[attr].name) + " is not a number"));
      }
      FAB_TRY(lex_.next());
      return add(Node{.op = Op::kAttr, .left = attr});
    }
    return fail(lex_.error("expected a number, an attribute or \"(\""));
  }

  Lexer lex_;
  std::span<const AttrSpec> attributes_;
  std::vector<Node>& nodes_;
};

bool compare_number(Requirement::Node::Op op, double value, double literal) {
  using Op = Requirement::Node::Op;
  switch (op) {
    case Op::kEq:
      return value == literal;
    case Op::kNe:
      return value != literal;
    case Op::kGt:
      return value > literal;
    case Op::kLt:
      return value < literal;
    case Op::kGe:
      return value >= literal;
    case Op::kLe:
      return value <= literal;
    default:
      return false;
  }
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text) {
  size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

Result<Requirement> Requirement::parse(std::string_view text,
                                       std::span<const AttrSpec> attributes) {
  FAB_TRY(check_length(text, "requirements"));
  Requirement out;
  FAB_TRY(RequirementParser(text, attributes, out.nodes_).run());
  return out;
}

bool Requirement::matches(const AttributeSource& source) const {
  return nodes_.empty() || eval(static_cast<int>(nodes_.size()) - 1, source);
}

bool Requirement::eval(int index, const AttributeSource& source) const {
  const Node& n = nodes_[index];
  switch (n.op) {
    case Node::Op::kAnd:
      return eval(n.left, source) && eval(n.right, source);
    case Node::Op::kOr:
      return eval(n.left, source) || eval(n.right, source);
    case Node::Op::kNot:
      return !eval(n.left, source);
    default:
      break;
  }
  if (n.kind == AttrKind::kNumber) return compare_number(n.op, source.number(n.left), n.number);
  bool any = false;
  for (const std::string& value : source.strings(n.left)) {
    if (glob_match(n.text, value)) {
      any = true;
      break;
    }
  }
  return n.op == Node::Op::kEq ? any : !any;
}

Result<Rank> Rank::parse(std::string_view text, std::span<const AttrSpec> attributes) {
  FAB_TRY(check_length(text, "rank"));
  Rank out;
  FAB_TRY(RankParser(text, attributes, out.nodes_).run());
  return out;
}

double Rank::score(const AttributeSource& source) const {
  return nodes_.empty() ? 0 : eval(static_cast<int>(nodes_.size()) - 1, source);
}

double Rank::eval(int index, const AttributeSource& source) const {
  const Node& n = nodes_[index];
  switch (n.op) {
    case Node::Op::kNumber:
      return n.number;
    case Node::Op::kAttr:
      return source.number(n.left);
    case Node::Op::kNeg:
      return -eval(n.left, source);
    case Node::Op::kAdd:
      return eval(n.left, source) + eval(n.right, source);
    case Node::Op::kSub:
      return eval(n.left, source) - eval(n.right, source);
    case Node::Op::kMul:
      return eval(n.left, source) * eval(n.right, source);
    case Node::Op::kDiv: {
      double d = eval(n.right, source);
      return d == 0 ? 0 : eval(n.left, source) / d;
    }
  }
  return 0;
}

}  // namespace fabrica::sched
