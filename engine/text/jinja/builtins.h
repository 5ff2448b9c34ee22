// Jinja's filters, tests, the methods of str and dict that templates call,
// and the globals transformers' apply_chat_template provides (range,
// namespace, dict, raise_exception, strftime_now). Errors are
// INVALID_ARGUMENT naming the filter, test or method; the evaluator adds
// where in the template.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/text/jinja/value.h"

namespace streamgen {
namespace jinja {

// Longest list range() may build.
inline constexpr int64_t kMaxRange = 100000;

// `input | name(args)`. INVALID_ARGUMENT "unknown filter 'name'" for others.
absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& input, CallArgs& args);

// `input is name(args)`. INVALID_ARGUMENT "unknown test 'name'" for others.
absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& input, CallArgs& args);

// `object.name` (Jinja's getattr: methods first, then keys) and
// `object[key]` (keys and indexes first, then methods). A missing one is an
// Undefined whose hint is Jinja's message ("'dict object' has no attribute 'x'").
Value GetAttr(const Value& object, const std::string& name);
Value GetItem(const Value& object, const Value& key);

// Python's sequence[start:stop:step] on a list or a str (by code point).
absl::StatusOr<Value> Slice(const Value& sequence, const Value& start, const Value& stop,
                            const Value& step);

// The error Jinja raises where an Undefined is used.
absl::Status UndefinedError(const Value& undefined);

// The values a template iterates: a list's items, a dict's keys, a str's
// characters, nothing for Undefined; INVALID_ARGUMENT for others.
absl::StatusOr<std::vector<Value>> Iterate(const Value& value);

// Adds range, namespace, dict, raise_exception and strftime_now to `globals` (a dict).
void AddGlobals(Value* globals);

// The payload that marks a raise_exception() error (its message is the template's own).
inline constexpr char kRaisedPayload[] = "streamgen.jinja/raised";

}  // namespace jinja
}  // namespace streamgen
