// engine/text/jinja/: the lexer, parser and evaluator unit by unit, and every
// refusal by its message. (Renderings of real templates are compared with
// Jinja2 and @huggingface/jinja in tests/jinja/templates.test.mjs; the
// expected strings here were checked with Jinja2 set up as transformers does.)
#include <string>

#include "absl/strings/str_cat.h"
#include "engine/text/jinja/lexer.h"
#include "engine/text/jinja/template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> Render(const std::string& source, const std::string& context_json = "{}",
                                   const Limits& limits = Limits()) {
  auto parsed = Template::Parse(source, "t.jinja");
  if (!parsed.ok()) return parsed.status();
  return (*parsed)->Render(Value::FromJson(nlohmann::ordered_json::parse(context_json)), limits);
}

std::string Ok(const std::string& source, const std::string& context_json = "{}") {
  absl::StatusOr<std::string> out = Render(source, context_json);
  EXPECT_TRUE(out.ok()) << source << ": " << out.status();
  return out.ok() ? *out : "";
}

std::string Err(const std::string& source, const std::string& context_json = "{}",
                const Limits& limits = Limits()) {
  absl::StatusOr<std::string> out = Render(source, context_json, limits);
  EXPECT_FALSE(out.ok()) << source << " rendered " << (out.ok() ? *out : "");
  if (out.ok()) return "";
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(out.status().message());
}

TEST(JinjaLexer, TokensCarryLineAndColumn) {
  auto tokens = Tokenize("ab\n {{ x.y }}", "t");
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 7u);  // text {{ x . y }} end
  EXPECT_EQ((*tokens)[0].text, "ab\n ");
  EXPECT_EQ((*tokens)[1].type, TokenType::kVarBegin);
  EXPECT_EQ((*tokens)[2].text, "x");
  EXPECT_EQ((*tokens)[2].line, 2);
  EXPECT_EQ((*tokens)[2].column, 5);
  EXPECT_EQ((*tokens)[6].type, TokenType::kEnd);
}

TEST(JinjaLexer, WhitespaceControlAsTransformersConfiguresJinja) {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: the
  // indentation before it goes; "-" strips all whitespace; "+" keeps it.
  EXPECT_EQ(Ok("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(Ok("a  {%- if true -%}  b  {%- endif %}"), "ab");
  EXPECT_EQ(Ok("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(Ok("a\n  {# note #}\nb"), "a\nb");
  EXPECT_EQ(Ok("  {{ 'x' }}\n"), "  x");  // expressions keep indentation; one final newline goes
  EXPECT_EQ(Ok("a\r\nb"), "a\nb");
}

TEST(JinjaEvaluator, ExpressionsFollowPython) {
  EXPECT_EQ(Ok("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 1 / 4 }} {{ 2 ** 10 }} {{ 3 * 1.5 }}"),
            "3 -4 2 0.25 1024 4.5");
  EXPECT_EQ(Ok("{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 2 }} {{ [1] + [2] }} {{ (1,) }} {{ (1, 'a') }}"),
            "a1NoneTrue abab [1, 2] (1,) (1, 'a')");
  EXPECT_EQ(Ok("{{ 1 if false }}|{{ 'y' if 1 > 0 else 'n' }}|{{ not 0 and 'z' or 'w' }}"),
            "|y|z");
  EXPECT_EQ(Ok("{{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}"),
            "True False True");
  EXPECT_EQ(Ok("{{ {'a': [1, 'x', none, 1.0]} }}"), "{'a': [1, 'x', None, 1.0]}");
  EXPECT_EQ(Ok("{{ 1e16 }} {{ 0.1 + 0.2 }} {{ 1e-05 }}"), "1e+16 0.30000000000000004 1e-05");
}

TEST(JinjaEvaluator, SlicingWithNegativeSteps) {
  EXPECT_EQ(Ok("{{ xs[::-1] }} {{ xs[-2:] }} {{ xs[1:-1] }} {{ xs[::2] }} {{ xs[5:1:-2] }}",
               R"({"xs": [0, 1, 2, 3, 4, 5]})"),
            "[5, 4, 3, 2, 1, 0] [4, 5] [1, 2, 3, 4] [0, 2, 4] [5, 3]");
  EXPECT_EQ(Ok("{{ s[::-1] }} {{ s[1:] }} {{ s[-1] }} {{ s | length }}", R"({"s": "héllo"})"),
            "olléh éllo o 5");
}

TEST(JinjaEvaluator, LoopsNamespacesMacrosAndSetBlocks) {
  EXPECT_EQ(Ok("{% for x in xs if x != 2 %}{{ loop.index }}/{{ loop.length }}"
               "{{ '!' if loop.last }}{% else %}none{% endfor %}",
               R"({"xs": [1, 2, 3]})"),
            "1/22/2!");
  EXPECT_EQ(Ok("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Ok("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
               R"({"d": {"b": 1, "a": 2}})"),
            "b=1;a=2;");
  // A set inside a loop stays inside; a namespace carries values out.
  EXPECT_EQ(Ok("{% set n = 0 %}{% set ns = namespace(n=0) %}{% for i in range(3) %}"
               "{% set n = n + 1 %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ n }} {{ ns.n }}"),
            "0 3");
  EXPECT_EQ(Ok("{% for i in range(6) %}{% if i == 1 %}{% continue %}{% endif %}"
               "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "023");
  EXPECT_EQ(Ok("{% macro greet(name, punct='!') %}hi {{ name }}{{ punct }}{% endmacro %}"
               "{{ greet('a') }} {{ greet('b', punct='?') }}"),
            "hi a! hi b?");
  EXPECT_EQ(Ok("{% set block %}x{{ 1 + 1 }}{% endset %}[{{ block }}]"), "[x2]");
}

TEST(JinjaEvaluator, FiltersTestsAndMethods) {
  const char* messages =
      R"({"m": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]})";
  EXPECT_EQ(Ok("{{ m | map(attribute='role') | join(',') }}|"
               "{{ m | selectattr('role', 'equalto', 'user') | list | length }}|"
               "{{ m | rejectattr('role', 'equalto', 'user') | map(attribute='content') | first }}|"
               "{{ m[0].content | trim }}|{{ m[0]['content'].strip() | upper }}",
               messages),
            "user,assistant|1|yo|hi|HI");
  EXPECT_EQ(Ok("{{ m[0] | tojson }}", messages), R"({"role": "user", "content": " hi "})");
  EXPECT_EQ(Ok("{{ {'b': 1, 'a': [1, 2]} | tojson(separators=(',', ':'), sort_keys=true) }}"),
            R"({"a":[1,2],"b":1})");
  EXPECT_EQ(Ok("{{ '\\u00e9\\x41\\U0001F999\\n' | tojson }}"), R"("éA🦙\n")");
  EXPECT_EQ(Ok("{{ {'a': 'é', 'b': [1, 2]} | tojson(indent=2) }}"),
            "{\n  \"a\": \"é\",\n  \"b\": [\n    1,\n    2\n  ]\n}");
  EXPECT_EQ(Ok("{{ x is defined }} {{ y is defined }} {{ x is string }} {{ d is mapping }} "
               "{{ 3 is odd }} {{ none is none }} {{ x is not number }}",
               R"({"x": "s", "d": {}})"),
            "True False True True True True True");
  EXPECT_EQ(Ok("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'xyx'.replace('x', 'z') }} "
               "{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'xxaxx'.strip('x') }}"),
            "['a', 'b', '', 'c'] ['a', 'b'] zyz True True a");
  EXPECT_EQ(Ok("{{ d.get('a') }} {{ d.get('z', 0) }} {{ d | items | list }} {{ undefined_x | default('dflt') }}",
               R"({"d": {"a": 1}})"),
            "1 0 [('a', 1)] dflt");
}

TEST(JinjaEvaluator, UndefinedPrintsEmptyAndFailsWhenUsed) {
  EXPECT_EQ(Ok("[{{ missing }}][{{ d.missing }}][{% for x in missing %}x{% endfor %}]",
               R"({"d": {}})"),
            "[][][]");
  EXPECT_EQ(Err("{{ missing.attr }}"), "t.jinja:1:11: 'missing' is undefined");
  EXPECT_EQ(Err("\n{{ d.missing.strip() }}", R"({"d": {}})"),
            "t.jinja:2:13: 'dict object' has no attribute 'missing'");
  EXPECT_EQ(Err("{{ missing + 1 }}"), "t.jinja:1:12: 'missing' is undefined");
  EXPECT_EQ(Err("{{ 'a' + 1 }}"), "t.jinja:1:8: unsupported operand type(s) for +: 'str' and 'int'");
  EXPECT_EQ(Err("{{ 1 | nosuchfilter }}"), "t.jinja:1:6: unknown filter 'nosuchfilter'");
  EXPECT_EQ(Err("{{ 1 is nosuchtest }}"), "t.jinja:1:6: unknown test 'nosuchtest'");
}

TEST(JinjaEvaluator, RaiseExceptionGivesTheTemplateMessageAlone) {
  EXPECT_EQ(Err("text{{ raise_exception('Conversation roles must alternate') }}"),
            "Conversation roles must alternate");
  EXPECT_EQ(Err("{% macro f() %}{{ raise_exception('from a macro') }}{% endmacro %}{{ f() }}"),
            "from a macro");
}

TEST(JinjaParser, SyntaxErrorsNameLineColumnExpectedAndFound) {
  EXPECT_EQ(Err("{% for x in xs %}\n{{ x }}"),
            "t.jinja:2:8: expected 'else' or 'endfor' to close the 'for' at 1:4, got end of template");
  EXPECT_EQ(Err("{% if x %}a{% endfor %}"),
            "t.jinja:1:15: expected 'elif' or 'else' or 'endif' to close the 'if' at 1:4, got 'endfor'");
  EXPECT_EQ(Err("a{% endif %}"), "t.jinja:1:5: expected a tag, not one that closes no open block, got 'endif'");
  EXPECT_EQ(Err("{% include 'x' %}"),
            "t.jinja:1:4: expected a known tag (if, for, set, macro, break, continue, "
            "generation), got 'include'");
  EXPECT_EQ(Err("{{ 1 + }}"), "t.jinja:1:8: expected an expression, got '}}'");
  EXPECT_EQ(Err("{{ f(a=1, 2) }}"), "t.jinja:1:11: expected a keyword argument (name=value), got number 2");
  EXPECT_EQ(Err("ab\n{{ x"), "t.jinja:2:1: unterminated tag: expected '}}'");
  EXPECT_EQ(Err("{{ 'abc }}"), "t.jinja:1:4: unterminated string literal");
  EXPECT_EQ(Err("{# never closed"), "t.jinja:1:1: unterminated comment: expected '#}'");
  EXPECT_EQ(Err("{{ a ; b }}"), "t.jinja:1:6: unexpected character ';'");
  EXPECT_EQ(Err("{{ '\\u12' }}"), "t.jinja:1:5: truncated \\u escape");
  EXPECT_EQ(Err("{% set %}"), "t.jinja:1:8: expected a variable name, got '%}'");
}

TEST(JinjaSandbox, NoAttributesBeyondKeysAndTheKnownMethods) {
  EXPECT_EQ(Ok("[{{ ''.__class__ }}][{{ d.__dict__ }}]", R"({"d": {}})"), "[][]");
  EXPECT_EQ(Err("{{ ''.__class__.__mro__ }}"), "t.jinja:1:16: 'str object' has no attribute '__class__'");
  EXPECT_EQ(Err("{% set d = {} %}{% set d.x = 1 %}"),
            "t.jinja:1:20: cannot assign attribute 'x' of 'd': only a namespace() has assignable "
            "attributes");
  EXPECT_EQ(Err("{{ [].append(1) }}"), "t.jinja:1:13: 'list object' has no attribute 'append'");
}

TEST(JinjaSandbox, StepsRecursionAndSizesAreBounded) {
  Limits limits;
  limits.max_steps = 10000;
  EXPECT_THAT(Err("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}",
                  "{}", limits),
              HasSubstr("the template ran more than 10000 steps"));
  EXPECT_EQ(Err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            "t.jinja:1:21: macro 'f': calls nested deeper than 50");
  limits = Limits();
  limits.max_output_bytes = 1000;
  EXPECT_EQ(Err("{% for i in range(100) %}0123456789{% endfor %}x", "{}", limits),
            "t.jinja:1:48: the output is longer than 1000 bytes");
  EXPECT_EQ(Err("{% set s = 'ab' %}{% for i in range(20) %}{% set s = s ~ s %}{% endfor %}", "{}",
                limits),
            "t.jinja:1:56: the template built a string of more than 1000 bytes");
  EXPECT_EQ(Err("{{ range(1000000) }}"), "t.jinja:1:9: range: more than 100000 items");
  // Macros recursing through nested expressions: the total nesting is bounded.
  EXPECT_EQ(Err("{% macro f(n) %}{{ [[[[[[[[[[f(n + 1)]]]]]]]]]] }}{% endmacro %}{{ f(0) }}"),
            "t.jinja:1:29: the template nests deeper than 300 (expressions, blocks and macro "
            "calls together)");
  std::string deep = std::string(150, '(') + "1" + std::string(150, ')');
  EXPECT_THAT(Err("{{ " + deep + " }}"), HasSubstr("expected expressions nested at most 100 deep"));
  std::string blocks;
  for (int i = 0; i < 150; ++i) blocks += "{% if true %}";
  EXPECT_THAT(Err(blocks), HasSubstr("nested at most 100 deep"));
}

}  // namespace
}  // namespace jinja
}  // namespace streamgen
