#include "engine/text/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace streamgen {
namespace jinja {

Value Value::Undefined(std::string hint) {
  Value v;
  v.s_ = std::move(hint);
  return v;
}
Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.b_ = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.i_ = i;
  return v;
}
Value Value::Float(double d) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.f_ = d;
  return v;
}
Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.s_ = std::move(s);
  return v;
}
Value Value::Array(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kArray;
  v.array_ = std::make_shared<std::vector<Value>>(std::move(items));
  return v;
}
Value Value::Tuple(std::vector<Value> items) {
  Value v = Array(std::move(items));
  v.b_ = true;
  return v;
}
Value Value::Object(bool is_namespace) {
  Value v;
  v.kind_ = Kind::kObject;
  v.object_ = std::make_shared<ObjectData>();
  v.object_->is_namespace = is_namespace;
  return v;
}
Value Value::Fn(std::string name, Function fn) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.s_ = std::move(name);
  v.function_ = std::make_shared<Function>(std::move(fn));
  return v;
}

Value Value::FromJson(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return None();
    case nlohmann::ordered_json::value_t::boolean: return Bool(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Int(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Int(static_cast<int64_t>(json.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Float(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return String(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<Value> items;
      items.reserve(json.size());
      for (const auto& item : json) items.push_back(FromJson(item));
      return Array(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Value object = Object();
      for (const auto& [key, item] : json.items()) object.Set(key, FromJson(item));
      return object;
    }
    default: return None();
  }
}

const Value* Value::Find(absl::string_view key) const {
  if (kind_ != Kind::kObject) return nullptr;
  for (const auto& [k, v] : object_->entries) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Value::Set(const std::string& key, Value value) {
  for (auto& [k, v] : object_->entries) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  object_->entries.emplace_back(key, std::move(value));
}

bool Value::Truthy() const {
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return false;
    case Kind::kBool: return b_;
    case Kind::kInt: return i_ != 0;
    case Kind::kFloat: return f_ != 0;
    case Kind::kString: return !s_.empty();
    case Kind::kArray: return !array_->empty();  // (b_ marks a tuple here)
    case Kind::kObject: return !object_->entries.empty();
    case Kind::kFunction: return true;
  }
  return false;
}

std::string PythonFloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // The shortest digits that read back to d.
  char buf[64];
  int precision = 1;
  for (; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*e", precision - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string sci = buf;  // [-]D.DDDDe[+-]XX
  bool negative = sci[0] == '-';
  if (negative) sci.erase(0, 1);
  size_t e = sci.find('e');
  int exponent = std::atoi(sci.c_str() + e + 1);
  std::string digits;
  for (size_t i = 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  std::string out;
  if (exponent >= -5 + 1 && exponent < 16) {
    if (exponent < 0) {
      out = "0." + std::string(-exponent - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exponent + 1) {
      out = digits + std::string(exponent + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exponent + 1) + "." + digits.substr(exponent + 1);
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += absl::StrFormat("e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  }
  return negative ? "-" + out : out;
}

namespace {

std::string PythonStringRepr(const std::string& s) {
  char quote = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += absl::StrFormat("\\x%02x", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

void JsonString(const std::string& s, std::string* out) {
  *out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      default:
        if (c < 0x20) {
          *out += absl::StrFormat("\\u%04x", c);
        } else {
          *out += static_cast<char>(c);
        }
    }
  }
  *out += '"';
}

absl::Status JsonDump(const Value& v, const JsonFormat& format, int level, std::string* out) {
  int indent = format.indent;
  std::string newline, inner;
  std::string item_separator =
      format.custom_separators ? format.item_separator : indent < 0 ? ", " : ",";
  std::string key_separator = format.custom_separators ? format.key_separator : ": ";
  if (indent >= 0) {
    newline = "\n" + std::string(static_cast<size_t>(indent) * level, ' ');
    inner = "\n" + std::string(static_cast<size_t>(indent) * (level + 1), ' ');
  }
  switch (v.kind()) {
    case Value::Kind::kNone: *out += "null"; return absl::OkStatus();
    case Value::Kind::kBool: *out += v.bool_value() ? "true" : "false"; return absl::OkStatus();
    case Value::Kind::kInt: *out += std::to_string(v.int_value()); return absl::OkStatus();
    case Value::Kind::kFloat: {
      double d = v.number();
      *out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity")
                                                     : PythonFloatRepr(d);
      return absl::OkStatus();
    }
    case Value::Kind::kString: JsonString(v.str(), out); return absl::OkStatus();
    case Value::Kind::kArray: {
      if (v.items().empty()) {
        *out += "[]";
        return absl::OkStatus();
      }
      *out += "[";
      for (size_t i = 0; i < v.items().size(); ++i) {
        if (i > 0) *out += item_separator;
        *out += inner;
        SG_RETURN_IF_ERROR(JsonDump(v.items()[i], format, level + 1, out));
      }
      *out += newline + "]";
      return absl::OkStatus();
    }
    case Value::Kind::kObject: {
      if (v.object().entries.empty()) {
        *out += "{}";
        return absl::OkStatus();
      }
      *out += "{";
      bool first = true;
      std::vector<const std::pair<std::string, Value>*> entries;
      for (const auto& entry : v.object().entries) entries.push_back(&entry);
      if (format.sort_keys) {
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      for (const auto* entry : entries) {
        if (!first) *out += item_separator;
        first = false;
        *out += inner;
        JsonString(entry->first, out);
        *out += key_separator;
        SG_RETURN_IF_ERROR(JsonDump(entry->second, format, level + 1, out));
      }
      *out += newline + "}";
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: object of type ", v.TypeName(), " is not JSON serializable"));
  }
}

}  // namespace

std::string Value::ToString() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return s_;
    default: return Repr();
  }
}

std::string Value::Repr() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return b_ ? "True" : "False";
    case Kind::kInt: return std::to_string(i_);
    case Kind::kFloat: return PythonFloatRepr(f_);
    case Kind::kString: return PythonStringRepr(s_);
    case Kind::kArray: {
      std::string out = b_ ? "(" : "[";
      for (size_t i = 0; i < array_->size(); ++i) {
        if (i > 0) out += ", ";
        out += (*array_)[i].Repr();
      }
      if (b_ && array_->size() == 1) out += ",";
      return out + (b_ ? ")" : "]");
    }
    case Kind::kObject: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, v] : object_->entries) {
        if (!first) out += ", ";
        first = false;
        out += PythonStringRepr(k) + ": " + v.Repr();
      }
      return out + "}";
    }
    case Kind::kFunction: return "<function " + s_ + ">";
  }
  return "";
}

bool Value::Equals(const Value& other) const {
  if (is_number() && other.is_number()) {
    if (kind_ == Kind::kInt && other.kind_ == Kind::kInt) return i_ == other.i_;
    return number() == other.number();
  }
  if (kind_ == Kind::kBool && other.is_number()) return Int(b_).Equals(other);
  if (is_number() && other.kind_ == Kind::kBool) return Equals(Int(other.b_));
  if (kind_ != other.kind_) return false;
  switch (kind_) {
    case Kind::kUndefined: case Kind::kNone: return true;
    case Kind::kBool: return b_ == other.b_;
    case Kind::kString: return s_ == other.s_;
    case Kind::kArray: {
      if (array_->size() != other.array_->size()) return false;
      for (size_t i = 0; i < array_->size(); ++i) {
        if (!(*array_)[i].Equals((*other.array_)[i])) return false;
      }
      return true;
    }
    case Kind::kObject: {
      if (object_->entries.size() != other.object_->entries.size()) return false;
      for (const auto& [k, v] : object_->entries) {
        const Value* o = other.Find(k);
        if (o == nullptr || !v.Equals(*o)) return false;
      }
      return true;
    }
    case Kind::kFunction: return function_ == other.function_;
    default: return false;
  }
}

const char* Value::TypeName() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kArray: return "list";
    case Kind::kObject: return object_->is_namespace ? "Namespace" : "dict";
    case Kind::kFunction: return "function";
  }
  return "";
}

absl::StatusOr<std::string> ToJson(const Value& value, const JsonFormat& format) {
  std::string out;
  SG_RETURN_IF_ERROR(JsonDump(value, format, 0, &out));
  return out;
}

std::vector<std::string> SplitCodePoints(absl::string_view s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    size_t n = 1;
    unsigned char c = s[i];
    if (c >= 0xf0) n = 4; else if (c >= 0xe0) n = 3; else if (c >= 0xc0) n = 2;
    if (i + n > s.size()) n = s.size() - i;
    out.emplace_back(s.substr(i, n));
    i += n;
  }
  return out;
}

size_t CodePointCount(absl::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

}  // namespace jinja
}  // namespace streamgen
