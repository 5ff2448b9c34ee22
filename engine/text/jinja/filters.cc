// Jinja's filters and tests (declared in builtins.h).
#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "engine/text/jinja/builtins.h"

namespace streamgen {
namespace jinja {
namespace {

Value Arg(const CallArgs& args, size_t position, absl::string_view name,
          Value fallback = Value()) {
  if (position < args.positional.size()) return args.positional[position];
  for (const auto& [key, value] : args.keyword) {
    if (key == name) return value;
  }
  return fallback;
}

absl::Status FilterError(absl::string_view filter, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat("filter '", filter, "': ", detail));
}

// A dotted attribute path ("a.b") of `item`, or an index for digits.
Value Attribute(const Value& item, const std::string& path) {
  Value v = item;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    int64_t index;
    if (absl::SimpleAtoi(part, &index)) {
      v = GetItem(v, Value::Int(index));
    } else {
      v = GetItem(v, Value::String(std::string(part)));
    }
    if (v.is_undefined()) break;
  }
  return v;
}

// The rest of the arguments from `first`: for select/map's test or filter.
CallArgs Rest(const CallArgs& args, size_t first) {
  CallArgs rest;
  for (size_t i = first; i < args.positional.size(); ++i) rest.positional.push_back(args.positional[i]);
  return rest;
}

// Python's < for sort/min/max: numbers with numbers, strings with strings.
absl::StatusOr<bool> Less(const Value& a, const Value& b, bool case_sensitive) {
  if (a.is_number() && b.is_number()) return a.number() < b.number();
  if (a.is_string() && b.is_string()) {
    if (case_sensitive) return a.str() < b.str();
    return absl::AsciiStrToLower(a.str()) < absl::AsciiStrToLower(b.str());
  }
  return absl::InvalidArgumentError(absl::StrCat("cannot compare ", a.TypeName(), " with ",
                                                 b.TypeName()));
}

absl::StatusOr<Value> SelectOrReject(const std::string& name, const Value& input,
                                     CallArgs& args) {
  bool by_attribute = name == "selectattr" || name == "rejectattr";
  bool keep_passing = name == "select" || name == "selectattr";
  SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(input));
  size_t test_at = by_attribute ? 1 : 0;
  std::string attribute;
  if (by_attribute) {
    Value a = Arg(args, 0, "attribute");
    if (!a.is_string()) return FilterError(name, "expected an attribute name");
    attribute = a.str();
  }
  Value test = Arg(args, test_at, "test");
  CallArgs test_args = Rest(args, test_at + 1);
  std::vector<Value> out;
  for (const Value& item : items) {
    Value subject = by_attribute ? Attribute(item, attribute) : item;
    bool passed;
    if (test.is_undefined()) {
      passed = subject.Truthy();
    } else {
      if (!test.is_string()) return FilterError(name, "the test must be named by a string");
      SG_ASSIGN_OR_RETURN(passed, ApplyTest(test.str(), subject, test_args));
    }
    if (passed == keep_passing) out.push_back(item);
  }
  return Value::Array(std::move(out));
}

}  // namespace

absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input, CallArgs& args) {
  const Value& v = input;
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value::Int(CodePointCount(v.str()));
    if (v.is_array()) return Value::Int(v.items().size());
    if (v.is_object()) return Value::Int(v.object().entries.size());
    if (v.is_undefined()) return Value::Int(0);
    return FilterError(name, absl::StrCat("object of type '", v.TypeName(), "' has no len()"));
  }
  if (name == "tojson") {
    Value indent = Arg(args, 0, "indent");
    if (!indent.is_undefined() && !indent.is_none() && indent.kind() != Value::Kind::kInt) {
      return FilterError(name, "indent must be an integer");
    }
    JsonFormat format;
    format.indent = indent.kind() == Value::Kind::kInt ? static_cast<int>(indent.int_value()) : -1;
    Value separators = Arg(args, 1, "separators");
    if (separators.is_array() && separators.items().size() == 2 &&
        separators.items()[0].is_string() && separators.items()[1].is_string()) {
      format.custom_separators = true;
      format.item_separator = separators.items()[0].str();
      format.key_separator = separators.items()[1].str();
    } else if (!separators.is_undefined() && !separators.is_none()) {
      return FilterError(name, "separators must be a pair of strings");
    }
    format.sort_keys = Arg(args, 2, "sort_keys", Value::Bool(false)).Truthy();
    absl::StatusOr<std::string> json = ToJson(v, format);
    if (!json.ok()) return FilterError(name, json.status().message());
    return Value::String(*std::move(json));
  }
  if (name == "string") return Value::String(v.ToString());
  if (name == "safe" || name == "list" || name == "items") {
    if (name == "safe") return v;
    if (name == "items") {
      if (v.is_undefined()) return Value::Array();
      if (!v.is_object()) return FilterError(name, absl::StrCat("expected a dict, got ", v.TypeName()));
      return GetAttr(v, "items").function()(args);
    }
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    return Value::Array(std::move(items));
  }
  if (name == "default" || name == "d") {
    bool boolean = Arg(args, 1, "boolean", Value::Bool(false)).Truthy();
    if (v.is_undefined() || (boolean && !v.Truthy())) {
      return Arg(args, 0, "default_value", Value::String(""));
    }
    return v;
  }
  if (v.is_undefined()) {
    // Jinja's filters use an Undefined as an empty string or sequence.
    if (name == "trim" || name == "upper" || name == "lower" || name == "title" ||
        name == "capitalize" || name == "join" || name == "indent" || name == "replace") {
      return Value::String("");
    }
    if (name == "map" || name == "select" || name == "reject" || name == "selectattr" ||
        name == "rejectattr" || name == "unique" || name == "reverse" || name == "sort") {
      return Value::Array();
    }
    return UndefinedError(v);
  }
  if (name == "trim" || name == "upper" || name == "lower" || name == "title" ||
      name == "capitalize") {
    Value method = GetAttr(Value::String(v.ToString()), name == "trim" ? "strip" : name);
    return method.function()(args);
  }
  if (name == "replace") {
    Value method = GetAttr(Value::String(v.ToString()), "replace");
    return method.function()(args);
  }
  if (name == "join") {
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    Value sep = Arg(args, 0, "d", Value::String(""));
    Value attribute = Arg(args, 1, "attribute");
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (i > 0) out += sep.ToString();
      out += (attribute.is_string() ? Attribute(items[i], attribute.str()) : items[i]).ToString();
    }
    return Value::String(std::move(out));
  }
  if (name == "first" || name == "last") {
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    if (items.empty()) return Value::Undefined(absl::StrCat("filter '", name, "': no items"));
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (v.is_string()) return Slice(v, Value::None(), Value::None(), Value::Int(-1));
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    std::reverse(items.begin(), items.end());
    return Value::Array(std::move(items));
  }
  if (name == "map") {
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    Value attribute = Arg(args, 99, "attribute");
    std::vector<Value> out;
    if (attribute.is_string()) {
      Value fallback = Arg(args, 99, "default");
      for (const Value& item : items) {
        Value a = Attribute(item, attribute.str());
        out.push_back(a.is_undefined() && !fallback.is_undefined() ? fallback : a);
      }
    } else {
      Value filter = Arg(args, 0, "filter");
      if (!filter.is_string()) return FilterError(name, "expected a filter name or attribute=");
      CallArgs rest = Rest(args, 1);
      for (const Value& item : items) {
        SG_ASSIGN_OR_RETURN(Value mapped, ApplyFilter(filter.str(), item, rest));
        out.push_back(std::move(mapped));
      }
    }
    return Value::Array(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return SelectOrReject(name, v, args);
  }
  if (name == "unique") {
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    std::vector<Value> out;
    for (const Value& item : items) {
      bool seen = false;
      for (const Value& o : out) seen = seen || o.Equals(item);
      if (!seen) out.push_back(item);
    }
    return Value::Array(std::move(out));
  }
  if (name == "sort" || name == "min" || name == "max") {
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    bool reverse = name == "sort" && Arg(args, 0, "reverse", Value::Bool(false)).Truthy();
    bool case_sensitive = Arg(args, name == "sort" ? 1 : 0, "case_sensitive",
                              Value::Bool(false)).Truthy();
    Value attribute = Arg(args, name == "sort" ? 2 : 1, "attribute");
    auto key = [&](const Value& item) {
      return attribute.is_string() ? Attribute(item, attribute.str()) : item;
    };
    absl::Status status;
    auto less = [&](const Value& a, const Value& b) {
      absl::StatusOr<bool> r = Less(key(a), key(b), case_sensitive);
      if (!r.ok()) status = r.status();
      return r.ok() && *r;
    };
    if (name == "sort") {
      std::stable_sort(items.begin(), items.end(),
                       [&](const Value& a, const Value& b) { return reverse ? less(b, a) : less(a, b); });
      if (!status.ok()) return FilterError(name, status.message());
      return Value::Array(std::move(items));
    }
    if (items.empty()) return Value::Undefined(absl::StrCat("filter '", name, "': no items"));
    Value best = items[0];
    for (const Value& item : items) {
      if (name == "min" ? less(item, best) : less(best, item)) best = item;
    }
    if (!status.ok()) return FilterError(name, status.message());
    return best;
  }
  if (name == "int" || name == "float" || name == "abs" || name == "round") {
    double d = 0;
    if (v.is_number()) {
      d = v.number();
    } else if (v.kind() == Value::Kind::kBool) {
      d = v.bool_value();
    } else if (v.is_string() && (name == "int" || name == "float")) {
      if (!absl::SimpleAtod(absl::StripAsciiWhitespace(v.str()), &d)) {
        return Arg(args, 0, "default", name == "int" ? Value::Int(0) : Value::Float(0));
      }
    } else {
      return FilterError(name, absl::StrCat("expected a number, got ", v.TypeName()));
    }
    if (name == "int") return Value::Int(static_cast<int64_t>(d));
    if (name == "float") return Value::Float(d);
    if (name == "abs") return v.kind() == Value::Kind::kInt ? Value::Int(std::llabs(v.int_value())) : Value::Float(std::fabs(d));
    Value precision = Arg(args, 0, "precision", Value::Int(0));
    double scale = std::pow(10.0, precision.is_number() ? precision.number() : 0);
    return Value::Float(std::round(d * scale) / scale);
  }
  if (name == "indent") {
    Value width = Arg(args, 0, "width", Value::Int(4));
    bool first = Arg(args, 1, "first", Value::Bool(false)).Truthy();
    bool blank = Arg(args, 2, "blank", Value::Bool(false)).Truthy();
    std::string pad = width.is_string() ? width.str()
                                        : std::string(width.is_number() ? std::max<int64_t>(0, width.int_value()) : 4, ' ');
    std::vector<std::string> lines = absl::StrSplit(v.ToString(), '\n');
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += '\n';
      bool indent = (i > 0 || first) && (blank || !lines[i].empty());
      if (indent) out += pad;
      out += lines[i];
    }
    return Value::String(std::move(out));
  }
  if (name == "wordcount") {
    return Value::Int(GetAttr(Value::String(v.ToString()), "split").function()(args)->items().size());
  }
  if (name == "sum") {
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
    Value attribute = Arg(args, 0, "attribute");
    bool is_float = false;
    int64_t i_sum = 0;
    double f_sum = 0;
    for (const Value& item : items) {
      Value x = attribute.is_string() ? Attribute(item, attribute.str()) : item;
      if (!x.is_number()) return FilterError(name, absl::StrCat("cannot add ", x.TypeName()));
      is_float |= x.kind() == Value::Kind::kFloat;
      i_sum += x.kind() == Value::Kind::kInt ? x.int_value() : 0;
      f_sum += x.number();
    }
    return is_float ? Value::Float(f_sum) : Value::Int(i_sum);
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown filter '", name, "'"));
}

absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& v, CallArgs& args) {
  using Kind = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind() == Kind::kBool;
  if (name == "true") return v.kind() == Kind::kBool && v.bool_value();
  if (name == "false") return v.kind() == Kind::kBool && !v.bool_value();
  if (name == "integer") return v.kind() == Kind::kInt;
  if (name == "float") return v.kind() == Kind::kFloat;
  if (name == "number") return v.is_number() || v.kind() == Kind::kBool;
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_object();
  if (name == "iterable") return v.is_string() || v.is_array() || v.is_object() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_array() || v.is_object();
  if (name == "callable") return v.is_function();
  if (name == "lower" || name == "upper") {
    if (!v.is_string()) return false;
    return name == "lower" ? absl::AsciiStrToLower(v.str()) == v.str()
                           : absl::AsciiStrToUpper(v.str()) == v.str();
  }
  Value other = Arg(args, 0, "other");
  if (name == "eq" || name == "equalto" || name == "==") return v.Equals(other);
  if (name == "ne" || name == "!=") return !v.Equals(other);
  if (name == "sameas") {
    if (v.kind() != other.kind()) return false;
    if (v.is_none() || v.kind() == Kind::kBool) return v.Equals(other);
    return v.Equals(other) && (v.is_string() || v.is_number());
  }
  if (name == "in") {
    if (other.is_string()) return v.is_string() && other.str().find(v.str()) != std::string::npos;
    if (other.is_object()) return v.is_string() && other.Find(v.str()) != nullptr;
    SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(other));
    for (const Value& item : items) {
      if (item.Equals(v)) return true;
    }
    return false;
  }
  if (name == "lt" || name == "<" || name == "le" || name == "<=" || name == "gt" ||
      name == ">" || name == "ge" || name == ">=") {
    if (!(v.is_number() && other.is_number()) && !(v.is_string() && other.is_string())) {
      return absl::InvalidArgumentError(absl::StrCat("test '", name, "': cannot compare ",
                                                     v.TypeName(), " with ", other.TypeName()));
    }
    int cmp = v.is_number() ? (v.number() < other.number() ? -1 : v.number() > other.number())
                            : v.str().compare(other.str());
    if (name == "lt" || name == "<") return cmp < 0;
    if (name == "le" || name == "<=") return cmp <= 0;
    if (name == "gt" || name == ">") return cmp > 0;
    return cmp >= 0;
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.kind() != Kind::kInt) {
      return absl::InvalidArgumentError(absl::StrCat("test '", name, "': expected an integer, got ",
                                                     v.TypeName()));
    }
    if (name == "divisibleby") {
      if (other.kind() != Kind::kInt || other.int_value() == 0) {
        return absl::InvalidArgumentError("test 'divisibleby': expected a non-zero integer");
      }
      return v.int_value() % other.int_value() == 0;
    }
    return (v.int_value() % 2 != 0) == (name == "odd");
  }
  if (name == "escaped") return false;
  return absl::InvalidArgumentError(absl::StrCat("unknown test '", name, "'"));
}

}  // namespace jinja
}  // namespace streamgen
