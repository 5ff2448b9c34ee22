// A parsed Jinja template, rendered the way transformers' apply_chat_template
// renders a chat template (Jinja2's ImmutableSandboxedEnvironment with
// trim_blocks and lstrip_blocks, loop controls, raise_exception,
// strftime_now, and a tojson that keeps non-ASCII text). docs/chat-templates.md
// lists what is supported.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/text/jinja/ast.h"
#include "engine/text/jinja/evaluator.h"
#include "engine/text/jinja/value.h"

namespace streamgen {
namespace jinja {

class Template {
 public:
  // INVALID_ARGUMENT "NAME:LINE:COLUMN: expected ..., got ..." when `source`
  // does not parse; `name` (a file name) names the template in every error.
  static absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source,
                                                         std::string name);

  // Thread-safe (const): renders with the variables of `context` (a dict) on
  // top of the globals. INVALID_ARGUMENT with the template's own message for
  // raise_exception(message); "NAME:LINE:COLUMN: message" for other errors
  // (an undefined value used, a type error, a limit reached).
  absl::StatusOr<std::string> Render(const Value& context, const Limits& limits = Limits()) const;

  const std::string& name() const { return name_; }

 private:
  Template(std::string name, Body body) : name_(std::move(name)), body_(std::move(body)) {}

  std::string name_;
  Body body_;
};

}  // namespace jinja
}  // namespace streamgen
