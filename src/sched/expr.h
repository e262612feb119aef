#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace fabrica::sched {

// OpenNebula's SCHED_REQUIREMENTS / SCHED_RANK languages over host attributes.
//
// Requirement: comparisons joined by `&`, `|`, `!` and parentheses:
//   GPU_MODEL = "H100*" & FREE_MEMORY > 65536 & !(NAME = "gpu-node-0?")
// `=` and `!=` compare strings with globs (`*`, `?`) or numbers; `>`, `<`, `>=`, `<=` compare
// numbers. A multi-valued attribute (GPU_MODEL) satisfies `=` when any value matches and `!=`
// when none does. Rank: an arithmetic expression (`+ - * /`, unary minus, parentheses) over
// numeric attributes and numbers; higher ranks first ("FREE_CPU", "-RUNNING_VMS").
//
// Both are compiled once against a table of known attributes: an unknown attribute, a string
// compared with `>` or a syntax error is kInvalidArgument naming the position. Evaluation
// allocates nothing and is thread-safe.

enum class AttrKind { kNumber, kString };

struct AttrSpec {
  std::string_view name;
  AttrKind kind;
  std::string_view help;
};

// What an expression reads: numeric attributes by index, string attributes as value lists.
class AttributeSource {
 public:
  virtual ~AttributeSource() = default;
  virtual double number(int attr) const = 0;
  virtual std::span<const std::string> strings(int attr) const = 0;
};

// `*` matches any run of characters, `?` one character; everything else itself.
bool glob_match(std::string_view pattern, std::string_view text);

class Requirement {
 public:
  // An empty (or all-blank) text matches every host.
  static Result<Requirement> parse(std::string_view text, std::span<const AttrSpec> attributes);
  bool matches(const AttributeSource& source) const;
  bool empty() const { return nodes_.empty(); }

  struct Node;  // Public for the parser; opaque to callers.

 private:
  bool eval(int node, const AttributeSource& source) const;
  std::vector<Node> nodes_;
};

class Rank {
 public:
  static Result<Rank> parse(std::string_view text, std::span<const AttrSpec> attributes);
  double score(const AttributeSource& source) const;
  bool empty() const { return nodes_.empty(); }

  struct Node;

 private:
  double eval(int node, const AttributeSource& source) const;
  std::vector<Node> nodes_;
};

struct Requirement::Node {
  enum class Op { kAnd, kOr, kNot, kEq, kNe, kGt, kLt, kGe, kLe } op;
  int left = -1;   // Child node (kAnd, kOr, kNot) or attribute index (comparisons).
  int right = -1;  // Child node (kAnd, kOr).
  AttrKind kind = AttrKind::kNumber;
  double number = 0;
  std::string text;
};

struct Rank::Node {
  enum class Op { kNumber, kAttr, kNeg, kAdd, kSub, kMul, kDiv } op;
  int left = -1;  // Child node, or attribute index for kAttr.
  int right = -1;
  double number = 0;
};

}  // namespace fabrica::sched
