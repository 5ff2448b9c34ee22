// CompileGrammar: the code point IR lowered to byte-level rules.
//
// Each rule becomes a list of alternatives, each a run of elements ending in
// kEnd. A character class becomes its UTF-8 byte-range sequences (one inline
// when there is one, else a helper rule with one alternative per sequence);
// a nested alternation becomes a helper rule; x{m,n} becomes m copies of x
// followed by a chain of n - m optional helpers (x* a right-recursive helper
// S ::= x S | ""), so the matcher's stacks stay shallow (it elides a return
// to a kEnd).
#include <algorithm>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/utf8.h"

namespace streamgen {
namespace grammar {
namespace {

// Elements in a compiled grammar: a bound on memory and on the time the
// checks below take.
constexpr size_t kMaxElements = 1 << 22;

class Lowering {
 public:
  explicit Lowering(const Grammar& g) : g_(g) {}

  absl::StatusOr<std::shared_ptr<const CompiledGrammar>> Run() {
    if (g_.root < 0 || g_.root >= static_cast<int>(g_.rules.size())) {
      return absl::InvalidArgumentError("grammar: no root rule");
    }
    const size_t n = g_.rules.size();
    rules_.resize(n);
    info_.resize(n);
    for (size_t r = 0; r < n; ++r) {
      out_->rule_names.push_back(g_.rules[r].name);
      info_[r] = {g_.rules[r].line, g_.rules[r].column, g_.rules[r].name, -1};
    }
    for (size_t r = 0; r < n && status_.ok(); ++r) {
      current_rule_ = static_cast<int>(r);
      LowerRuleBody(static_cast<int>(r), g_.rules[r].body);
    }
    if (!status_.ok()) return status_;
    // Flatten.
    for (size_t r = 0; r < rules_.size(); ++r) {
      std::vector<uint32_t> starts;
      for (const std::vector<Element>& alt : rules_[r]) {
        starts.push_back(static_cast<uint32_t>(out_->elements.size()));
        out_->elements.insert(out_->elements.end(), alt.begin(), alt.end());
        out_->elements.push_back(Element{});  // kEnd
        if (out_->elements.size() > kMaxElements) {
          return absl::InvalidArgumentError("grammar: too large (over 4M elements once expanded)");
        }
      }
      out_->alternatives.push_back(std::move(starts));
    }
    out_->root = g_.root;
    if (absl::Status s = Check(); !s.ok()) return s;
    return std::shared_ptr<const CompiledGrammar>(std::move(out_));
  }

 private:
  using Alternative = std::vector<Element>;
  struct RuleInfo {
    int line, column;
    std::string name;
    int repeat_body;  // a x* helper: the rule of x (for the "repeats empty" check)
  };

  absl::Status ErrorFor(const RuleInfo& info, const std::string& what) const {
    if (info.line > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("grammar: line ", info.line, ", column ", info.column, ": ", what));
    }
    return absl::InvalidArgumentError(absl::StrCat("grammar: rule '", info.name, "': ", what));
  }

  int NewRule(const Expr& source) {
    rules_.emplace_back();
    const RuleInfo& owner = info_[current_rule_];
    RuleInfo info = owner;
    if (source.line > 0) {
      info.line = source.line;
      info.column = source.column;
    }
    info.name = absl::StrCat(g_.rules[current_rule_].name, "-", ++helper_count_);
    info.repeat_body = -1;
    info_.push_back(info);
    out_->rule_names.push_back(info.name);
    return static_cast<int>(rules_.size()) - 1;
  }

  void LowerRuleBody(int rule, const Expr& body) {
    if (body.kind == Expr::Kind::kAlternation) {
      if (body.children.empty()) {
        status_ = ErrorFor(info_[rule], "an alternation with no alternatives");
        return;
      }
      for (const Expr& alt : body.children) {
        Alternative a;
        Lower(alt, &a);
        rules_[rule].push_back(std::move(a));
      }
    } else {
      Alternative a;
      Lower(body, &a);
      rules_[rule].push_back(std::move(a));
    }
  }

  // A rule whose only alternative... is `e`: the helper for nested groups.
  int HelperFor(const Expr& e) {
    if (e.kind == Expr::Kind::kRuleRef) return e.rule;
    const int rule = NewRule(e);
    LowerRuleBody(rule, e);
    return rule;
  }

  void Lower(const Expr& e, Alternative* out) {
    if (!status_.ok()) return;
    if (++elements_ > kMaxElements) {
      status_ = absl::InvalidArgumentError("grammar: too large (over 4M elements once expanded)");
      return;
    }
    switch (e.kind) {
      case Expr::Kind::kSequence:
        for (const Expr& c : e.children) Lower(c, out);
        return;
      case Expr::Kind::kAlternation:
        if (e.children.size() == 1) return Lower(e.children[0], out);
        out->push_back(RefElement(HelperFor(e)));
        return;
      case Expr::Kind::kRuleRef:
        if (e.rule < 0 || e.rule >= static_cast<int>(g_.rules.size())) {
          status_ = ErrorFor(info_[current_rule_], absl::StrCat("reference to rule ", e.rule,
                                                                 ", which does not exist"));
          return;
        }
        out->push_back(RefElement(e.rule));
        return;
      case Expr::Kind::kCharClass:
        return LowerClass(e, out);
      case Expr::Kind::kRepeat:
        return LowerRepeat(e, out);
    }
  }

  static Element RefElement(int rule) {
    Element el;
    el.type = Element::kRuleRef;
    el.rule = rule;
    return el;
  }

  void LowerClass(const Expr& e, Alternative* out) {
    // Normalize: sorted, merged, complemented when negated.
    std::vector<CodePointRange> r = e.ranges;
    for (CodePointRange& x : r) x.hi = std::min(x.hi, kMaxCodePoint);
    std::sort(r.begin(), r.end(), [](const CodePointRange& a, const CodePointRange& b) {
      return a.lo < b.lo;
    });
    std::vector<CodePointRange> merged;
    for (const CodePointRange& x : r) {
      if (x.lo > x.hi) continue;
      if (!merged.empty() && x.lo <= merged.back().hi + 1) {
        merged.back().hi = std::max(merged.back().hi, x.hi);
      } else {
        merged.push_back(x);
      }
    }
    if (e.negated) {
      std::vector<CodePointRange> comp;
      uint32_t next = 0;
      for (const CodePointRange& x : merged) {
        if (x.lo > next) comp.push_back({next, x.lo - 1});
        next = x.hi + 1;
      }
      if (next <= kMaxCodePoint) comp.push_back({next, kMaxCodePoint});
      merged = std::move(comp);
    }
    std::vector<ByteRangeSequence> seqs;
    for (const CodePointRange& x : merged) SplitUtf8Range(x.lo, x.hi, &seqs);
    if (seqs.empty()) {
      status_ = ErrorFor(e.line > 0 ? RuleInfo{e.line, e.column, "", -1} : info_[current_rule_],
                         "character class matches no character");
      return;
    }
    if (seqs.size() == 1) {
      AppendSequence(seqs[0], out);
      return;
    }
    // Identical classes share one helper rule.
    std::string key;
    for (const ByteRangeSequence& s : seqs) {
      key.push_back(static_cast<char>(s.length));
      for (int i = 0; i < s.length; ++i) {
        key.push_back(static_cast<char>(s.lo[i]));
        key.push_back(static_cast<char>(s.hi[i]));
      }
    }
    auto it = class_rules_.find(key);
    if (it == class_rules_.end()) {
      const int rule = NewRule(e);
      for (const ByteRangeSequence& s : seqs) {
        Alternative a;
        AppendSequence(s, &a);
        rules_[rule].push_back(std::move(a));
      }
      it = class_rules_.emplace(key, rule).first;
    }
    out->push_back(RefElement(it->second));
  }

  static void AppendSequence(const ByteRangeSequence& s, Alternative* out) {
    for (int i = 0; i < s.length; ++i) {
      Element el;
      el.type = Element::kBytes;
      el.lo = s.lo[i];
      el.hi = s.hi[i];
      out->push_back(el);
    }
  }

  void LowerRepeat(const Expr& e, Alternative* out) {
    if (e.children.empty()) return;
    const Expr& item = e.children[0];
    if (e.min_count < 0 || (e.max_count >= 0 && e.max_count < e.min_count)) {
      status_ = ErrorFor(info_[current_rule_], "repetition with bad bounds");
      return;
    }
    if (e.max_count == 0) return;
    // x{1} and x? of a simple x need no helper for x itself.
    const int body = HelperFor(item);
    for (int i = 0; i < e.min_count; ++i) out->push_back(RefElement(body));
    if (e.max_count < 0) {
      // S ::= x S | ""
      const int star = NewRule(e);
      info_[star].repeat_body = body;
      rules_[star].push_back({RefElement(body), RefElement(star)});
      rules_[star].push_back({});
      out->push_back(RefElement(star));
    } else if (e.max_count > e.min_count) {
      // O_1 ::= x | "";  O_k ::= x O_{k-1} | ""
      int prev = -1;
      for (int k = 1; k <= e.max_count - e.min_count && status_.ok(); ++k) {
        const int opt = NewRule(e);
        Alternative a = {RefElement(body)};
        if (prev >= 0) a.push_back(RefElement(prev));
        rules_[opt].push_back(std::move(a));
        rules_[opt].push_back({});
        prev = opt;
        if (++elements_ > kMaxElements) {
          status_ = absl::InvalidArgumentError("grammar: too large (over 4M elements once expanded)");
        }
      }
      out->push_back(RefElement(prev));
    }
  }

  // Nullable rules; then left recursion (a rule reaching itself without
  // consuming a byte), which the matcher's expansion cannot handle.
  absl::Status Check() {
    const CompiledGrammar& cg = *out_;
    const size_t n = cg.alternatives.size();
    std::vector<bool> nullable(n, false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (uint32_t start : cg.alternatives[r]) {
          bool all = true;
          for (uint32_t p = start; cg.elements[p].type != Element::kEnd; ++p) {
            const Element& el = cg.elements[p];
            if (el.type == Element::kBytes || !nullable[el.rule]) {
              all = false;
              break;
            }
          }
          if (all) {
            nullable[r] = changed = true;
            break;
          }
        }
      }
    }
    for (size_t r = 0; r < n; ++r) {
      if (info_[r].repeat_body >= 0 && nullable[info_[r].repeat_body]) {
        return ErrorFor(info_[r],
                        "unbounded repetition of something that can match the empty string");
      }
    }
    // left[r]: the rules r can start with.
    std::vector<std::vector<int>> left(n);
    for (size_t r = 0; r < n; ++r) {
      for (uint32_t start : cg.alternatives[r]) {
        for (uint32_t p = start; cg.elements[p].type == Element::kRuleRef; ++p) {
          left[r].push_back(cg.elements[p].rule);
          if (!nullable[cg.elements[p].rule]) break;
        }
      }
    }
    // Iterative DFS for a cycle.
    std::vector<uint8_t> color(n, 0);  // 0 new, 1 on the path, 2 done
    for (size_t s = 0; s < n; ++s) {
      if (color[s] != 0) continue;
      std::vector<std::pair<int, size_t>> path = {{static_cast<int>(s), 0}};
      color[s] = 1;
      while (!path.empty()) {
        auto& [r, i] = path.back();
        if (i < left[r].size()) {
          const int next = left[r][i++];
          if (color[next] == 1) {
            return ErrorFor(info_[next], absl::StrCat("left recursion: rule '",
                                                      UserName(next), "' can reach itself "
                                                      "without consuming input"));
          }
          if (color[next] == 0) {
            color[next] = 1;
            path.push_back({next, 0});
          }
        } else {
          color[r] = 2;
          path.pop_back();
        }
      }
    }
    return absl::OkStatus();
  }

  // The user's rule a helper belongs to ("object-3" -> "object").
  std::string UserName(int rule) const {
    const std::string& name = info_[rule].name;
    if (rule < static_cast<int>(g_.rules.size())) return name;
    const size_t dash = name.rfind('-');
    return dash == std::string::npos ? name : name.substr(0, dash);
  }

  const Grammar& g_;
  std::unique_ptr<CompiledGrammar> out_ = std::make_unique<CompiledGrammar>();
  std::vector<std::vector<Alternative>> rules_;
  std::vector<RuleInfo> info_;
  std::map<std::string, int> class_rules_;
  int current_rule_ = 0;
  int helper_count_ = 0;
  size_t elements_ = 0;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const CompiledGrammar>> CompileGrammar(const Grammar& g) {
  return Lowering(g).Run();
}

}  // namespace grammar
}  // namespace streamgen
