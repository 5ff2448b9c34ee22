#include "engine/text/jinja/builtins.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace streamgen {
namespace jinja {
namespace {

absl::Status Error(absl::string_view what, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", detail));
}

// The argument `name` at `position`, or by keyword; `fallback` when absent.
Value Arg(const CallArgs& args, size_t position, absl::string_view name,
          Value fallback = Value()) {
  if (position < args.positional.size()) return args.positional[position];
  for (const auto& [key, value] : args.keyword) {
    if (key == name) return value;
  }
  return fallback;
}

absl::StatusOr<std::string> StringArg(const CallArgs& args, size_t position,
                                      absl::string_view name, absl::string_view what) {
  Value v = Arg(args, position, name);
  if (!v.is_string()) {
    return Error(what, absl::StrCat("argument '", name, "' must be a string, got ", v.TypeName()));
  }
  return v.str();
}

// Python's str.isspace() characters, in UTF-8: the length of the one at `pos`, or 0.
size_t PythonSpaceAt(absl::string_view s, size_t pos) {
  unsigned char c = s[pos];
  if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
  static const char* const kMultiByte[] = {
      "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80", "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82",
      "\xe2\x80\x83", "\xe2\x80\x84", "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87",
      "\xe2\x80\x88", "\xe2\x80\x89", "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9",
      "\xe2\x80\xaf", "\xe2\x81\x9f", "\xe3\x80\x80"};
  if (c < 0x80) return 0;
  for (const char* space : kMultiByte) {
    if (absl::StartsWith(s.substr(pos), space)) return std::char_traits<char>::length(space);
  }
  return 0;
}

// str.strip / lstrip / rstrip, with Python's whitespace or the given characters.
std::string Strip(absl::string_view s, const Value& chars, bool left, bool right) {
  std::vector<std::string> set;
  bool whitespace = !chars.is_string();
  if (!whitespace) set = SplitCodePoints(chars.str());
  auto strip_at = [&](size_t pos) -> size_t {
    if (whitespace) return PythonSpaceAt(s, pos);
    for (const std::string& c : set) {
      if (absl::StartsWith(s.substr(pos), c)) return c.size();
    }
    return 0;
  };
  size_t begin = 0, n;
  if (left) {
    while (begin < s.size() && (n = strip_at(begin)) > 0) begin += n;
  }
  size_t end = s.size();
  if (right) {
    // The end is after the last character that is not stripped.
    end = begin;
    for (size_t pos = begin; pos < s.size();) {
      if ((n = strip_at(pos)) > 0) {
        pos += n;
      } else {
        pos += std::max<size_t>(1, SplitCodePoints(s.substr(pos, 4))[0].size());
        end = pos;
      }
    }
  }
  return std::string(s.substr(begin, end - begin));
}

// str.split(sep=None, maxsplit=-1).
Value Split(const std::string& s, const Value& sep, int64_t maxsplit) {
  std::vector<Value> parts;
  if (!sep.is_string()) {
    size_t pos = 0, n;
    while (true) {
      while (pos < s.size() && (n = PythonSpaceAt(s, pos)) > 0) pos += n;
      if (pos >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        parts.push_back(Value::String(Strip(s.substr(pos), Value(), false, true)));
        break;
      }
      size_t start = pos;
      while (pos < s.size() && PythonSpaceAt(s, pos) == 0) ++pos;
      parts.push_back(Value::String(s.substr(start, pos - start)));
    }
    return Value::Array(std::move(parts));
  }
  size_t start = 0;
  while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
    size_t found = s.find(sep.str(), start);
    if (found == std::string::npos) break;
    parts.push_back(Value::String(s.substr(start, found - start)));
    start = found + sep.str().size();
  }
  parts.push_back(Value::String(s.substr(start)));
  return Value::Array(std::move(parts));
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to,
                    int64_t count) {
  if (from.empty()) return s;  // (Python inserts `to` between characters; templates never do)
  std::string out;
  size_t start = 0, found;
  while ((count < 0 || count-- > 0) && (found = s.find(from, start)) != std::string::npos) {
    out.append(s, start, found - start);
    out += to;
    start = found + from.size();
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string Title(const std::string& s, bool only_first) {
  std::string out = s;
  bool word_start = true;
  for (char& c : out) {
    bool alpha = absl::ascii_isalpha(c);
    if (only_first) {
      c = word_start ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
      word_start = false;
    } else {
      c = word_start && alpha ? absl::ascii_toupper(c) : absl::ascii_tolower(c);
      word_start = !alpha;
    }
  }
  return out;
}

// A bound method of a str or a dict, or Undefined when there is none.
Value Method(const Value& self, const std::string& name) {
  auto bind = [&](auto fn) {
    Value s = self;
    return Value::Fn(name, [s, fn](CallArgs& args) -> absl::StatusOr<Value> { return fn(s, args); });
  };
  if (self.is_string()) {
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      bool l = name != "rstrip", r = name != "lstrip";
      return bind([l, r](const Value& s, CallArgs& a) -> absl::StatusOr<Value> {
        return Value::String(Strip(s.str(), Arg(a, 0, "chars"), l, r));
      });
    }
    if (name == "split") {
      return bind([](const Value& s, CallArgs& a) -> absl::StatusOr<Value> {
        Value max = Arg(a, 1, "maxsplit", Value::Int(-1));
        return Split(s.str(), Arg(a, 0, "sep"), max.is_number() ? max.int_value() : -1);
      });
    }
    if (name == "startswith" || name == "endswith") {
      bool starts = name == "startswith";
      return bind([starts, name](const Value& s, CallArgs& a) -> absl::StatusOr<Value> {
        Value affix = Arg(a, 0, "prefix");
        std::vector<Value> options = affix.is_array() ? affix.items() : std::vector<Value>{affix};
        for (const Value& o : options) {
          if (!o.is_string()) {
            return Error(absl::StrCat("str.", name), absl::StrCat("expected a string, got ",
                                                                  o.TypeName()));
          }
          if (starts ? absl::StartsWith(s.str(), o.str()) : absl::EndsWith(s.str(), o.str())) {
            return Value::Bool(true);
          }
        }
        return Value::Bool(false);
      });
    }
    if (name == "replace") {
      return bind([](const Value& s, CallArgs& a) -> absl::StatusOr<Value> {
        SG_ASSIGN_OR_RETURN(std::string from, StringArg(a, 0, "old", "str.replace"));
        SG_ASSIGN_OR_RETURN(std::string to, StringArg(a, 1, "new", "str.replace"));
        Value count = Arg(a, 2, "count", Value::Int(-1));
        return Value::String(Replace(s.str(), from, to, count.is_number() ? count.int_value() : -1));
      });
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      return bind([name](const Value& s, CallArgs&) -> absl::StatusOr<Value> {
        if (name == "upper") return Value::String(absl::AsciiStrToUpper(s.str()));
        if (name == "lower") return Value::String(absl::AsciiStrToLower(s.str()));
        return Value::String(Title(s.str(), name == "capitalize"));
      });
    }
    if (name == "find" || name == "count") {
      return bind([name](const Value& s, CallArgs& a) -> absl::StatusOr<Value> {
        SG_ASSIGN_OR_RETURN(std::string sub, StringArg(a, 0, "sub", absl::StrCat("str.", name)));
        if (name == "find") {
          size_t at = s.str().find(sub);
          return Value::Int(at == std::string::npos
                                ? -1
                                : static_cast<int64_t>(CodePointCount(s.str().substr(0, at))));
        }
        if (sub.empty()) return Value::Int(CodePointCount(s.str()) + 1);
        int64_t n = 0;
        for (size_t at = s.str().find(sub); at != std::string::npos;
             at = s.str().find(sub, at + sub.size())) {
          ++n;
        }
        return Value::Int(n);
      });
    }
    if (name == "join") {
      return bind([](const Value& s, CallArgs& a) -> absl::StatusOr<Value> {
        SG_ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(Arg(a, 0, "iterable")));
        std::string out;
        for (size_t i = 0; i < items.size(); ++i) {
          if (!items[i].is_string()) {
            return Error("str.join", absl::StrCat("item ", i, " is ", items[i].TypeName(),
                                                  ", not a string"));
          }
          if (i > 0) out += s.str();
          out += items[i].str();
        }
        return Value::String(std::move(out));
      });
    }
    if (name == "isdigit" || name == "isspace" || name == "isalpha") {
      return bind([name](const Value& s, CallArgs&) -> absl::StatusOr<Value> {
        if (s.str().empty()) return Value::Bool(false);
        for (char c : s.str()) {
          bool ok = name == "isdigit" ? absl::ascii_isdigit(c)
                    : name == "isspace" ? absl::ascii_isspace(c) : absl::ascii_isalpha(c);
          if (!ok) return Value::Bool(false);
        }
        return Value::Bool(true);
      });
    }
  }
  if (self.is_object() && !self.object().is_namespace) {
    if (name == "items" || name == "keys" || name == "values") {
      return bind([name](const Value& d, CallArgs&) -> absl::StatusOr<Value> {
        std::vector<Value> out;
        for (const auto& [k, v] : d.object().entries) {
          if (name == "items") {
            out.push_back(Value::Tuple({Value::String(k), v}));
          } else {
            out.push_back(name == "keys" ? Value::String(k) : v);
          }
        }
        return Value::Array(std::move(out));
      });
    }
    if (name == "get") {
      return bind([](const Value& d, CallArgs& a) -> absl::StatusOr<Value> {
        Value key = Arg(a, 0, "key");
        const Value* found = key.is_string() ? d.Find(key.str()) : nullptr;
        return found ? *found : Arg(a, 1, "default", Value::None());
      });
    }
  }
  return Value::Undefined(absl::StrCat("'", self.TypeName(), " object' has no attribute '",
                                       name, "'"));
}

int64_t NormalizeIndex(int64_t index, int64_t size) { return index < 0 ? index + size : index; }

}  // namespace

absl::Status UndefinedError(const Value& undefined) {
  return absl::InvalidArgumentError(undefined.str().empty() ? "undefined value" : undefined.str());
}

absl::StatusOr<std::vector<Value>> Iterate(const Value& value) {
  switch (value.kind()) {
    case Value::Kind::kUndefined: return std::vector<Value>{};
    case Value::Kind::kArray: return value.items();
    case Value::Kind::kObject: {
      std::vector<Value> keys;
      for (const auto& entry : value.object().entries) keys.push_back(Value::String(entry.first));
      return keys;
    }
    case Value::Kind::kString: {
      if (value.str().size() > (size_t{1} << 20) && CodePointCount(value.str()) > (size_t{1} << 20)) {
        return absl::InvalidArgumentError("cannot iterate over a string of more than 1048576 characters");
      }
      std::vector<Value> chars;
      for (std::string& c : SplitCodePoints(value.str())) chars.push_back(Value::String(std::move(c)));
      return chars;
    }
    default:
      return absl::InvalidArgumentError(absl::StrCat("'", value.TypeName(),
                                                     "' object is not iterable"));
  }
}

Value GetAttr(const Value& object, const std::string& name) {
  Value method = Method(object, name);
  if (!method.is_undefined()) return method;
  if (const Value* found = object.Find(name)) return *found;
  return method;
}

Value GetItem(const Value& object, const Value& key) {
  if (object.is_object() && key.is_string()) {
    if (const Value* found = object.Find(key.str())) return *found;
    return Method(object, key.str());
  }
  if ((object.is_array() || object.is_string()) && key.kind() == Value::Kind::kInt) {
    if (object.is_array()) {
      int64_t size = static_cast<int64_t>(object.items().size());
      int64_t i = NormalizeIndex(key.int_value(), size);
      if (i >= 0 && i < size) return object.items()[i];
    } else {
      std::vector<std::string> chars = SplitCodePoints(object.str());
      int64_t size = static_cast<int64_t>(chars.size());
      int64_t i = NormalizeIndex(key.int_value(), size);
      if (i >= 0 && i < size) return Value::String(chars[i]);
    }
    return Value::Undefined(absl::StrCat(object.TypeName(), " object has no element ",
                                         key.int_value()));
  }
  if (key.is_string()) return Method(object, key.str());
  return Value::Undefined(absl::StrCat("'", object.TypeName(), " object' has no attribute ",
                                       key.Repr()));
}

absl::StatusOr<Value> Slice(const Value& sequence, const Value& start, const Value& stop,
                            const Value& step) {
  for (const Value* bound : {&start, &stop, &step}) {
    if (!bound->is_none() && bound->kind() != Value::Kind::kInt) {
      return absl::InvalidArgumentError(absl::StrCat(
          "slice indices must be integers or none, got ", bound->TypeName()));
    }
  }
  std::vector<std::string> chars;
  int64_t size;
  if (sequence.is_string()) {
    chars = SplitCodePoints(sequence.str());
    size = static_cast<int64_t>(chars.size());
  } else if (sequence.is_array()) {
    size = static_cast<int64_t>(sequence.items().size());
  } else {
    return absl::InvalidArgumentError(absl::StrCat("'", sequence.TypeName(),
                                                   "' object cannot be sliced"));
  }
  int64_t s = step.is_none() ? 1 : step.int_value();
  if (s == 0) return absl::InvalidArgumentError("slice step cannot be zero");
  // Python's slice.indices().
  auto clamp = [&](const Value& v, int64_t if_none) {
    if (v.is_none()) return if_none;
    int64_t i = v.int_value();
    if (i < 0) i += size;
    if (s > 0) return std::clamp<int64_t>(i, 0, size);
    return std::clamp<int64_t>(i, -1, size - 1);
  };
  int64_t begin = clamp(start, s > 0 ? 0 : size - 1);
  int64_t end = clamp(stop, s > 0 ? size : -1);
  std::vector<Value> items;
  std::string text;
  for (int64_t i = begin; s > 0 ? i < end : i > end; i += s) {
    if (sequence.is_string()) {
      text += chars[i];
    } else {
      items.push_back(sequence.items()[i]);
    }
  }
  if (sequence.is_string()) return Value::String(std::move(text));
  return Value::Array(std::move(items));
}

void AddGlobals(Value* globals) {
  globals->Set("range", Value::Fn("range", [](CallArgs& a) -> absl::StatusOr<Value> {
    int64_t bounds[3] = {0, 0, 1};
    if (a.positional.empty() || a.positional.size() > 3) {
      return absl::InvalidArgumentError("range: expected 1 to 3 integer arguments");
    }
    for (const Value& v : a.positional) {
      if (v.kind() != Value::Kind::kInt) {
        return Error("range", absl::StrCat("arguments must be integers, got ", v.TypeName()));
      }
    }
    if (a.positional.size() == 1) {
      bounds[1] = a.positional[0].int_value();
    } else {
      for (size_t i = 0; i < a.positional.size(); ++i) bounds[i] = a.positional[i].int_value();
    }
    if (bounds[2] == 0) return absl::InvalidArgumentError("range: step must not be zero");
    std::vector<Value> out;
    for (int64_t i = bounds[0]; bounds[2] > 0 ? i < bounds[1] : i > bounds[1]; i += bounds[2]) {
      if (out.size() >= static_cast<size_t>(kMaxRange)) {
        return Error("range", absl::StrCat("more than ", kMaxRange, " items"));
      }
      out.push_back(Value::Int(i));
    }
    return Value::Array(std::move(out));
  }));
  auto make_dict = [](bool is_namespace) {
    return [is_namespace](CallArgs& a) -> absl::StatusOr<Value> {
      Value out = Value::Object(is_namespace);
      for (const Value& v : a.positional) {
        if (!v.is_object()) {
          return absl::InvalidArgumentError(absl::StrCat(
              is_namespace ? "namespace" : "dict", ": positional arguments must be dicts, got ",
              v.TypeName()));
        }
        for (const auto& [k, item] : v.object().entries) out.Set(k, item);
      }
      for (const auto& [k, v] : a.keyword) out.Set(k, v);
      return out;
    };
  };
  globals->Set("namespace", Value::Fn("namespace", make_dict(true)));
  globals->Set("dict", Value::Fn("dict", make_dict(false)));
  globals->Set("raise_exception", Value::Fn("raise_exception", [](CallArgs& a) -> absl::StatusOr<Value> {
    absl::Status raised = absl::InvalidArgumentError(Arg(a, 0, "message").ToString());
    raised.SetPayload(kRaisedPayload, absl::Cord("1"));
    return raised;
  }));
  globals->Set("strftime_now", Value::Fn("strftime_now", [](CallArgs& a) -> absl::StatusOr<Value> {
    SG_ASSIGN_OR_RETURN(std::string format, StringArg(a, 0, "format", "strftime_now"));
    std::time_t now = std::time(nullptr);
    std::tm local;
    localtime_r(&now, &local);
    char buf[512];
    size_t n = format.empty() ? 0 : std::strftime(buf, sizeof(buf), format.c_str(), &local);
    if (n == 0 && !format.empty()) {
      return Error("strftime_now", "the format is empty or its result longer than 511 bytes");
    }
    return Value::String(std::string(buf, n));
  }));
}

}  // namespace jinja
}  // namespace streamgen
