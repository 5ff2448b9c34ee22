// The values a Jinja template computes with: Python's None, bool, int, float,
// str, list, dict (insertion-ordered, string keys), plus Jinja's Undefined and
// callables (macros, bound methods, globals). Lists and dicts are shared by
// reference, as in Python (a namespace() is a dict whose attributes can be
// assigned). Not thread-safe: one render owns its values.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace jinja {

class Value;

// Arguments of a call: positional, then keyword (name=value) in call order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using Function = std::function<absl::StatusOr<Value>(CallArgs& args)>;

struct ObjectData {
  std::vector<std::pair<std::string, Value>> entries;  // insertion order
  bool is_namespace = false;                            // namespace(): attributes assignable
};

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

  // Undefined; `hint` is the error Jinja gives when it is used ("'x' is undefined").
  Value() = default;
  static Value Undefined(std::string hint);
  static Value None();
  static Value Bool(bool b);
  static Value Int(int64_t i);
  static Value Float(double d);
  static Value String(std::string s);
  static Value Array(std::vector<Value> items = {});
  // A list that prints as a Python tuple: "(1, 2)" (dict.items()'s pairs, "(a, b)").
  static Value Tuple(std::vector<Value> items);
  static Value Object(bool is_namespace = false);
  static Value Fn(std::string name, Function fn);
  // From JSON: objects keep their key order.
  static Value FromJson(const nlohmann::ordered_json& json);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_array() const { return kind_ == Kind::kArray; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool bool_value() const { return b_; }
  int64_t int_value() const { return i_; }
  double number() const { return kind_ == Kind::kInt ? static_cast<double>(i_) : f_; }
  const std::string& str() const { return s_; }  // strings; the hint for Undefined
  const std::vector<Value>& items() const { return *array_; }
  std::vector<Value>& mutable_items() { return *array_; }
  const ObjectData& object() const { return *object_; }
  ObjectData& mutable_object() { return *object_; }
  const Function& function() const { return *function_; }
  const std::string& function_name() const { return s_; }

  // Dict lookup; nullptr when absent.
  const Value* Find(absl::string_view key) const;
  // Dict insert or replace.
  void Set(const std::string& key, Value value);

  // Python truthiness (Undefined is false).
  bool Truthy() const;
  // Python's str(): None -> "None", True -> "True", lists and dicts as repr.
  std::string ToString() const;
  // Python's repr() (strings quoted).
  std::string Repr() const;
  // Python's ==.
  bool Equals(const Value& other) const;
  // "str", "int", "list", "dict", ... as Jinja names them in errors.
  const char* TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool b_ = false;  // bool value; for lists: a tuple
  int64_t i_ = 0;
  double f_ = 0;
  std::string s_;
  std::shared_ptr<std::vector<Value>> array_;
  std::shared_ptr<ObjectData> object_;
  std::shared_ptr<Function> function_;
};

// Python's repr() of a float ("1.0", "0.1", "1e+16").
std::string PythonFloatRepr(double d);

// json.dumps(value, ensure_ascii=False, indent=indent, separators=...,
// sort_keys=...) as transformers' tojson filter calls it; indent < 0: none.
// INVALID_ARGUMENT for values JSON
// cannot hold (Undefined, functions).
struct JsonFormat {
  int indent = -1;
  bool custom_separators = false;  // false: ", " (without indent) or ",", and ": "
  std::string item_separator;      // with custom_separators
  std::string key_separator;       // with custom_separators
  bool sort_keys = false;
};
absl::StatusOr<std::string> ToJson(const Value& value, const JsonFormat& format);

// UTF-8 helpers: Python indexes strings by code point.
std::vector<std::string> SplitCodePoints(absl::string_view s);
size_t CodePointCount(absl::string_view s);

}  // namespace jinja
}  // namespace streamgen
