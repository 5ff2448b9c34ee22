#include "engine/text/jinja/template.h"

#include <utility>

#include "common/status.h"
#include "engine/text/jinja/builtins.h"
#include "engine/text/jinja/lexer.h"
#include "engine/text/jinja/parser.h"

namespace streamgen {
namespace jinja {

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(absl::string_view source,
                                                          std::string name) {
  SG_ASSIGN_OR_RETURN(std::vector<Token> tokens, Tokenize(source, name));
  SG_ASSIGN_OR_RETURN(Body body, jinja::Parse(tokens, name));
  return std::unique_ptr<Template>(new Template(std::move(name), std::move(body)));
}

absl::StatusOr<std::string> Template::Render(const Value& context, const Limits& limits) const {
  Value globals = Value::Object();
  AddGlobals(&globals);
  if (context.is_object()) {
    for (const auto& [key, value] : context.object().entries) globals.Set(key, value);
  }
  Evaluator evaluator(name_, limits, std::move(globals));
  return evaluator.Render(body_);
}

}  // namespace jinja
}  // namespace streamgen
