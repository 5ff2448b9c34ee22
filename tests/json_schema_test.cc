// engine/grammar/json_schema.cc: the messages for unsupported keywords and
// malformed schemas, the limits, and the shapes of compiled grammars. Whether
// grammars match the right JSON is json_schema_suite_test's and
// json_schema_corpus_test's job (llama.cpp's matcher, the JSON Schema Test
// Suite, ajv) at scale; here, integer ranges against arithmetic with
// std::regex as the matcher, and hand-made cases through the grammar engine's
// parser and matcher (engine/grammar), CompileConstraint included.
#include "engine/grammar/json_schema.h"

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "engine/grammar/constraint.h"
#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema_terminals.h"
#include "engine/grammar/matcher.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::ordered_json;

std::string ErrorOf(const std::string& schema_text, const JsonSchemaOptions& options = {}) {
  absl::StatusOr<std::string> g = JsonSchemaTextToGrammar(schema_text, options);
  if (g.ok()) return "OK:\n" + *g;
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(g.status().message());
}

std::string GrammarOf(const std::string& schema_text, const JsonSchemaOptions& options = {}) {
  absl::StatusOr<std::string> g = JsonSchemaTextToGrammar(schema_text, options);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : "";
}

TEST(JsonSchemaTest, UnsupportedKeywordsAreRefusedByNameAndPlace) {
  EXPECT_EQ(ErrorOf(R"({"type":"object","properties":{"a":{"type":"object","patternProperties":{"x":{}}}}})"),
            "json_schema: unsupported keyword 'patternProperties' at /properties/a");
  EXPECT_EQ(ErrorOf(R"({"not":{"type":"string"}})"), "json_schema: unsupported keyword 'not' at /");
  EXPECT_EQ(ErrorOf(R"({"type":"number","multipleOf":3})"), "json_schema: unsupported keyword 'multipleOf' at /");
  EXPECT_EQ(ErrorOf(R"({"items":{"x-vendor":1}})"), "json_schema: unsupported keyword 'x-vendor' at /items");
  EXPECT_EQ(ErrorOf(R"({"type":"array","uniqueItems":true})"),
            "json_schema: unsupported keyword 'uniqueItems' at / (a grammar cannot compare items)");
  EXPECT_EQ(ErrorOf(R"({"type":"object","properties":{"a/b":{"if":{}}}})"),
            "json_schema: unsupported keyword 'if' at /properties/a~1b");
  EXPECT_EQ(ErrorOf(R"({"$defs":{"a":{"$id":"x"}},"$ref":"#/$defs/a"})"),
            "json_schema: unsupported keyword '$id' at /$defs/a");
  EXPECT_EQ(ErrorOf(R"({"type":"string","format":"uri"})"),
            "json_schema: unsupported format 'uri' at / (supported: date, time, date-time, uuid, email, ipv4)");
  EXPECT_EQ(ErrorOf(R"({"$ref":"http://example.com/a.json"})"),
            "json_schema: unsupported keyword '$ref' at / (only local JSON pointers like #/$defs/name, not "
            "'http://example.com/a.json')");
  EXPECT_EQ(ErrorOf(R"({"type":"number","minimum":1.5})"),
            "json_schema: unsupported keyword 'minimum' at / (a number bound other than 0; integer bounds are "
            "supported)");
  EXPECT_EQ(ErrorOf(R"({"type":"string","pattern":"a","maxLength":3})"),
            "json_schema: unsupported keyword 'maxLength' at / (beside 'pattern')");
  EXPECT_EQ(ErrorOf(R"({"enum":[1,2],"minimum":2})"),
            "json_schema: unsupported keyword 'minimum' at / (beside 'enum')");
  EXPECT_EQ(ErrorOf(R"({"allOf":[{"maxLength":3,"pattern":"a"},{"pattern":"b"}]})"),
            "json_schema: unsupported keyword 'allOf' at /allOf/1 (cannot merge two different 'pattern')");
  EXPECT_EQ(ErrorOf(R"({"allOf":[{"properties":{"a":{}},"additionalProperties":false},{"properties":{"b":{}}}]})"),
            "json_schema: unsupported keyword 'allOf' at /allOf/1 ('additionalProperties' beside properties "
            "declared elsewhere)");
}

TEST(JsonSchemaTest, PatternsOutsideTheSubsetAreRefusedWithThePlace) {
  EXPECT_EQ(ErrorOf(R"j({"type":"string","pattern":"a(?=b)"})j"),
            "json_schema: 'pattern' at /: pattern: look-around '(?' is not supported at offset 2");
  EXPECT_EQ(ErrorOf(R"({"type":"string","pattern":"(a)\\1"})"),
            "json_schema: 'pattern' at /: pattern: the escape '\\1' is not supported at offset 4");
  EXPECT_EQ(ErrorOf(R"({"type":"string","pattern":"\\bword"})"),
            "json_schema: 'pattern' at /: pattern: '\\b' (word boundary) is not supported at offset 2");
  EXPECT_EQ(ErrorOf(R"({"type":"string","pattern":"a{2,1}"})"),
            "json_schema: 'pattern' at /: pattern: {m,n} with n < m at offset 5");
  EXPECT_EQ(ErrorOf(R"({"type":"string","pattern":"(ab"})"),
            "json_schema: 'pattern' at /: pattern: missing ')' at offset 3");
  EXPECT_EQ(ErrorOf(R"({"type":"string","pattern":"a^b"})"),
            "json_schema: 'pattern' at /: pattern: '^' inside the pattern (only at the start of an alternative) "
            "at offset 1");
}

TEST(JsonSchemaTest, MalformedSchemasAreRefusedWithMessages) {
  EXPECT_THAT(ErrorOf(R"({"type":)"), HasSubstr("json_schema: not valid JSON: "));
  EXPECT_EQ(ErrorOf(R"(3)"), "json_schema: a schema must be an object or a boolean at /");
  EXPECT_EQ(ErrorOf(R"({"type":"text"})"),
            "json_schema: 'type' at / must be one of null, boolean, object, array, string, number, integer (or "
            "an array of them)");
  EXPECT_EQ(ErrorOf(R"({"type":"string","minLength":-1})"),
            "json_schema: 'minLength' at / must be a non-negative integer");
  EXPECT_EQ(ErrorOf(R"({"type":"object","required":"a"})"), "json_schema: 'required' at / must be an array");
  EXPECT_EQ(ErrorOf(R"({"type":"object","properties":[]})"), "json_schema: 'properties' at / must be an object");
  EXPECT_EQ(ErrorOf(R"({"$ref":"#/$defs/missing"})"), "json_schema: '$ref' '#/$defs/missing' at / points to nothing");
  EXPECT_EQ(ErrorOf(R"({"anyOf":[]})"), "json_schema: 'anyOf' at / must be a non-empty array");
  EXPECT_EQ(ErrorOf(R"({"enum":"a"})"), "json_schema: 'enum' at / must be an array");
  EXPECT_EQ(ErrorOf(R"({"type":"integer","exclusiveMinimum":true})"),
            "json_schema: 'exclusiveMinimum' true at / without 'minimum'");
}

TEST(JsonSchemaTest, SchemasThatAcceptNothingAreRefused) {
  EXPECT_EQ(ErrorOf("false"), "json_schema: the schema at / accepts nothing (false)");
  EXPECT_EQ(ErrorOf(R"({"type":"integer","minimum":5,"maximum":3})"),
            "json_schema: the schema at / accepts nothing (no integer between the bounds)");
  EXPECT_EQ(ErrorOf(R"({"type":"string","minLength":3,"maxLength":2})"),
            "json_schema: the schema at / accepts nothing (maxLength < minLength)");
  EXPECT_EQ(ErrorOf(R"({"type":"array","items":false,"minItems":1})"),
            "json_schema: the schema at / accepts nothing (fewer items can stand than minItems)");
  EXPECT_EQ(ErrorOf(R"({"type":"object","properties":{"a":false},"required":["a"]})"),
            "json_schema: the schema at / accepts nothing (required property 'a' is false)");
  EXPECT_EQ(ErrorOf(R"({"type":"string","enum":[1,2]})"),
            "json_schema: the schema at / accepts nothing (no value of 'enum' / 'const' is allowed)");
}

TEST(JsonSchemaTest, LimitsAgainstAbuse) {
  std::string deep = "{}";
  for (int i = 0; i < 100; ++i) deep = R"({"type":"array","items":)" + deep + "}";
  EXPECT_THAT(ErrorOf(deep), HasSubstr("json_schema: schema nested deeper than 64 at /items/items/"));
  JsonSchemaOptions few_rules;
  few_rules.max_rules = 5;
  EXPECT_EQ(ErrorOf(R"({"type":"object","properties":{"a":{"type":"string","maxLength":1},"b":{"enum":[1]},)"
                    R"("c":{"enum":[2]},"d":{"enum":[3]},"e":{"enum":[4]}}})",
                    few_rules),
            "json_schema: the grammar would have more than 5 rules");
  EXPECT_EQ(ErrorOf(R"({"type":"string","maxLength":100000})"),
            "json_schema: 'maxLength' at / is 100000, above the limit 10000");
  JsonSchemaOptions small;
  small.max_grammar_bytes = 100;
  EXPECT_THAT(ErrorOf(R"({"enum":["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]})",
                      small),
              HasSubstr("above the limit 100"));
  // A recursive $ref is one rule, not an endless expansion.
  std::string g = GrammarOf(R"({"$ref":"#/$defs/n","$defs":{"n":{"type":"array","items":{"$ref":"#/$defs/n"}}}})");
  EXPECT_THAT(g, HasSubstr("ref-n ::= "));
}

TEST(JsonSchemaTest, AnnotationsAreIgnoredByDesign) {
  std::string plain = GrammarOf(R"({"type":"object","properties":{"a":{"type":"string"}}})");
  std::string annotated = GrammarOf(
      R"({"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"https://example.com/s","title":"T",)"
      R"("description":"D","$comment":"c","type":"object","properties":{"a":{"type":"string","examples":["x"],)"
      R"("default":"y","deprecated":false,"readOnly":true,"writeOnly":false}}})");
  EXPECT_EQ(plain, annotated);
}

TEST(JsonSchemaTest, PropertiesComeInSchemaOrder) {
  // "zeta" sorts after "alpha", but the schema declares it first.
  std::string g = GrammarOf(R"({"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"}},)"
                            R"("required":["alpha","zeta"],"additionalProperties":false})");
  size_t zeta = g.find(R"("\"zeta\"")"), alpha = g.find(R"("\"alpha\"")");
  ASSERT_NE(zeta, std::string::npos) << g;
  ASSERT_NE(alpha, std::string::npos) << g;
  EXPECT_LT(zeta, alpha) << g;
}

TEST(JsonSchemaTest, WhitespaceIsBoundedOrAbsent) {
  EXPECT_THAT(GrammarOf(R"({"type":"array"})"), HasSubstr("ws ::= [ \\t\\n]{0,16}"));
  JsonSchemaOptions compact;
  compact.max_whitespace = 0;
  EXPECT_THAT(GrammarOf(R"({"type":"array"})", compact), ::testing::Not(HasSubstr("ws")));
  JsonSchemaOptions bad;
  bad.max_whitespace = -1;
  EXPECT_EQ(ErrorOf("{}", bad), "json_schema: max_whitespace must be >= 0");
}

TEST(JsonSchemaTest, CanonicalJsonSortsKeysAndWritesIntegralFloatsAsIntegers) {
  EXPECT_EQ(CanonicalJson(Json::parse(R"({"b":1,"a":[1.0,2.5,"x\n",null,-0.0,1e20]})")),
            R"({"a":[1,2.5,"x\n",null,0,1e+20],"b":1})");
  std::string g = GrammarOf(R"({"enum":[{"b":1.0,"a":true}]})");
  EXPECT_THAT(g, HasSubstr(R"("{\"a\":true,\"b\":1}")"));
}

// GBNF integer-range expressions, as an ECMAScript regex: only "x" literals,
// [a-b] classes, groups, | and {m,n} occur in them.
std::regex AsRegex(const std::string& gbnf) {
  std::string re;
  for (size_t i = 0; i < gbnf.size(); ++i) {
    char c = gbnf[i];
    if (c == ' ') continue;
    if (c == '"') {
      for (++i; gbnf[i] != '"'; ++i) re += gbnf[i] == '-' ? std::string("\\-") : std::string(1, gbnf[i]);
      continue;
    }
    re += c;
  }
  return std::regex("^(" + re + ")$");
}

TEST(JsonSchemaTest, IntegerRangesMatchExactlyTheirIntegers) {
  struct Case {
    std::optional<int64_t> lo, hi;
  };
  const Case cases[] = {{-37, 512}, {5, std::nullopt}, {std::nullopt, -3}, {0, 0},     {1000, 1999},
                        {-999, -100}, {7, 7},      {std::nullopt, 42}, {-5, std::nullopt}, {0, 1009},
                        {10, 99},     {19, 21},    {-1, 1},     {123, 4567}};
  for (const Case& c : cases) {
    absl::StatusOr<std::string> expr = json_schema_internal::IntegerRangeExpr(c.lo, c.hi);
    ASSERT_TRUE(expr.ok()) << expr.status();
    std::regex re = AsRegex(*expr);
    for (int64_t v = -2100; v <= 5100; ++v) {
      bool in = (!c.lo || v >= *c.lo) && (!c.hi || v <= *c.hi);
      EXPECT_EQ(std::regex_match(std::to_string(v), re), in)
          << v << " in [" << (c.lo ? std::to_string(*c.lo) : "-inf") << ", "
          << (c.hi ? std::to_string(*c.hi) : "inf") << "]: " << *expr;
    }
    // No leading zeros, no "-0".
    EXPECT_FALSE(std::regex_match("007", re)) << *expr;
    EXPECT_FALSE(std::regex_match("-0", re)) << *expr;
  }
  EXPECT_FALSE(json_schema_internal::IntegerRangeExpr(3, 2).ok());
}

TEST(JsonSchemaTest, IntegerBoundsOfDraft4And2020AreBothRead) {
  // Draft 4: exclusiveMinimum is a flag on minimum; 2020-12: a number.
  EXPECT_EQ(GrammarOf(R"({"type":"integer","minimum":3,"exclusiveMinimum":true})"),
            GrammarOf(R"({"type":"integer","exclusiveMinimum":3})"));
  EXPECT_EQ(GrammarOf(R"({"type":"integer","minimum":3.5})"), GrammarOf(R"({"type":"integer","minimum":4})"));
}

}  // namespace
}  // namespace streamgen

namespace streamgen {
namespace {

// The grammar engine's matcher over the grammar of `schema`.
bool Accepts(const std::string& schema, const std::string& text, const JsonSchemaOptions& options = {}) {
  absl::StatusOr<std::string> text_grammar = JsonSchemaTextToGrammar(schema, options);
  EXPECT_TRUE(text_grammar.ok()) << text_grammar.status();
  absl::StatusOr<grammar::Grammar> g = grammar::ParseGrammar(*text_grammar);
  EXPECT_TRUE(g.ok()) << g.status() << "\n" << *text_grammar;
  absl::StatusOr<std::shared_ptr<const grammar::CompiledGrammar>> cg = grammar::CompileGrammar(*g);
  EXPECT_TRUE(cg.ok()) << cg.status();
  grammar::GrammarMatcher m(*cg);
  return m.Accept(text) && m.CanTerminate();
}

TEST(JsonSchemaGrammarTest, CorpusGrammarsParseWithTheGrammarEngine) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator("tests/json_schema_suite/corpus")) {
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    absl::StatusOr<std::string> g = JsonSchemaTextToGrammar(text);
    ASSERT_TRUE(g.ok()) << entry.path() << ": " << g.status();
    absl::StatusOr<grammar::Grammar> parsed = grammar::ParseGrammar(*g);
    ASSERT_TRUE(parsed.ok()) << entry.path() << ": " << parsed.status() << "\n" << *g;
    EXPECT_TRUE(grammar::CompileGrammar(*parsed).ok()) << entry.path();
    ++n;
  }
  EXPECT_GE(n, 6);
}

TEST(JsonSchemaGrammarTest, OrderOptionalityAndAdditionalProperties) {
  const std::string s = R"({"type":"object","properties":{"b":{"type":"integer"},"a":{"type":"string"}},)"
                        R"("required":["a"],"additionalProperties":false})";
  EXPECT_TRUE(Accepts(s, R"({"b":1,"a":"x"})"));
  EXPECT_TRUE(Accepts(s, R"({"a":"x"})"));
  EXPECT_FALSE(Accepts(s, R"({"a":"x","b":1})"));  // the schema's order only
  EXPECT_FALSE(Accepts(s, R"({"b":1})"));          // a is required
  EXPECT_FALSE(Accepts(s, R"({"a":"x","c":1})"));  // no additional properties
  const std::string open = R"({"type":"object","properties":{"a":{"type":"string"}},)"
                           R"("additionalProperties":{"type":"boolean"}})";
  EXPECT_TRUE(Accepts(open, R"({"a":"x","ab":true,"":false})"));
  EXPECT_FALSE(Accepts(open, R"({"a":"x","a":true})"));  // a declared name is not "additional"
  EXPECT_FALSE(Accepts(open, R"({"z":1})"));
  JsonSchemaOptions strict;
  strict.allow_additional_properties_by_default = false;
  EXPECT_TRUE(Accepts(R"({"type":"object"})", R"({"x":1})"));
  EXPECT_FALSE(Accepts(R"({"type":"object"})", R"({"x":1})", strict));
  EXPECT_TRUE(Accepts(R"({"type":"object"})", R"({})", strict));
}

TEST(JsonSchemaGrammarTest, WhitespaceBound) {
  JsonSchemaOptions two;
  two.max_whitespace = 2;
  EXPECT_TRUE(Accepts(R"({"type":"array"})", "[ 1,\n2 ]", two));
  EXPECT_TRUE(Accepts(R"({"type":"array"})", "[1,  2]", two));
  EXPECT_FALSE(Accepts(R"({"type":"array"})", "[1,   2]", two));
  EXPECT_FALSE(Accepts(R"({"type":"array"})", " [1]", two));  // none before or after the value
  JsonSchemaOptions compact;
  compact.max_whitespace = 0;
  EXPECT_TRUE(Accepts(R"({"type":"array"})", "[1,2]", compact));
  EXPECT_FALSE(Accepts(R"({"type":"array"})", "[1, 2]", compact));
}

TEST(JsonSchemaGrammarTest, PatternsFormatsAndLengths) {
  const std::string sku = R"({"type":"string","pattern":"^[A-Z]{3}-\\d{2,4}$"})";
  EXPECT_TRUE(Accepts(sku, R"("ABC-12")"));
  EXPECT_TRUE(Accepts(sku, R"("ABC-1234")"));
  EXPECT_FALSE(Accepts(sku, R"("ABC-12345")"));
  EXPECT_FALSE(Accepts(sku, R"("abc-12")"));
  // Unanchored: a search.
  EXPECT_TRUE(Accepts(R"({"type":"string","pattern":"b+"})", R"("abbc")"));
  EXPECT_FALSE(Accepts(R"({"type":"string","pattern":"b+"})", R"("ac")"));
  // A quote in the pattern is an escaped quote in the JSON text.
  EXPECT_TRUE(Accepts(R"({"type":"string","pattern":"^say \"hi\"$"})", R"("say \"hi\"")"));
  EXPECT_TRUE(Accepts(R"({"type":"string","format":"date"})", R"("2024-02-28")"));
  EXPECT_FALSE(Accepts(R"({"type":"string","format":"date"})", R"("2024-02-30")"));
  EXPECT_TRUE(Accepts(R"({"type":"string","format":"date-time"})", R"("2024-12-07T17:20:00Z")"));
  EXPECT_TRUE(Accepts(R"({"type":"string","format":"time"})", R"("17:20:00.5+01:00")"));
  EXPECT_TRUE(Accepts(R"({"type":"string","format":"uuid"})", R"("123e4567-e89b-12d3-a456-426614174000")"));
  EXPECT_FALSE(Accepts(R"({"type":"string","format":"uuid"})", R"("123e4567e89b12d3a456426614174000")"));
  EXPECT_TRUE(Accepts(R"({"type":"string","format":"email"})", R"("a.b+c@example.co.uk")"));
  EXPECT_FALSE(Accepts(R"({"type":"string","format":"email"})", R"("a@b")"));
  EXPECT_TRUE(Accepts(R"({"type":"string","format":"ipv4"})", R"("192.168.0.255")"));
  EXPECT_FALSE(Accepts(R"({"type":"string","format":"ipv4"})", R"("192.168.0.256")"));
  // Lengths count characters: an escape or a multi-byte character is one.
  const std::string two_three = R"({"type":"string","minLength":2,"maxLength":3})";
  EXPECT_TRUE(Accepts(two_three, R"("é\n")"));
  EXPECT_TRUE(Accepts(two_three, R"("abc")"));
  EXPECT_FALSE(Accepts(two_three, R"("a")"));
  EXPECT_FALSE(Accepts(two_three, R"("abcd")"));
}

TEST(JsonSchemaGrammarTest, ArraysTuplesEnumsAndRefs) {
  const std::string tuple = R"({"type":"array","prefixItems":[{"type":"integer"},{"type":"string"}],)"
                            R"("items":false,"minItems":1})";
  EXPECT_TRUE(Accepts(tuple, "[1]"));
  EXPECT_TRUE(Accepts(tuple, R"([1,"a"])"));
  EXPECT_FALSE(Accepts(tuple, "[]"));
  EXPECT_FALSE(Accepts(tuple, R"([1,"a",2])"));
  const std::string bounded = R"({"type":"array","items":{"type":"boolean"},"minItems":2,"maxItems":3})";
  EXPECT_FALSE(Accepts(bounded, "[true]"));
  EXPECT_TRUE(Accepts(bounded, "[true,false,true]"));
  EXPECT_FALSE(Accepts(bounded, "[true,false,true,true]"));
  const std::string e = R"({"enum":["a",1,null,[1,{"k":2}]]})";
  EXPECT_TRUE(Accepts(e, R"([1,{"k":2}])"));
  EXPECT_TRUE(Accepts(e, "null"));
  EXPECT_FALSE(Accepts(e, R"("b")"));
  const std::string tree = R"({"$ref":"#/$defs/t","$defs":{"t":{"type":"object","properties":{)"
                           R"("kids":{"type":"array","items":{"$ref":"#/$defs/t"}}},"additionalProperties":false}}})";
  EXPECT_TRUE(Accepts(tree, R"({"kids":[{},{"kids":[{"kids":[]}]}]})"));
  EXPECT_FALSE(Accepts(tree, R"({"kids":[{"x":1}]})"));
  const std::string ranged = R"({"type":"integer","minimum":-5,"exclusiveMaximum":100})";
  EXPECT_TRUE(Accepts(ranged, "-5"));
  EXPECT_TRUE(Accepts(ranged, "99"));
  EXPECT_FALSE(Accepts(ranged, "100"));
  EXPECT_FALSE(Accepts(ranged, "-6"));
  const std::string positive = R"({"type":"number","exclusiveMinimum":0})";
  EXPECT_TRUE(Accepts(positive, "0.5"));
  EXPECT_TRUE(Accepts(positive, "3e2"));
  EXPECT_FALSE(Accepts(positive, "0"));
  EXPECT_FALSE(Accepts(positive, "0.0"));
  EXPECT_FALSE(Accepts(positive, "-1"));
}

TEST(JsonSchemaGrammarTest, CompileConstraintTakesSchemasAndPassesTheirErrors) {
  auto vocab = std::make_shared<TokenVocabulary>();
  for (const char* piece : {"{", "}", "\"", "a", ":", "1", " "}) {
    vocab->bytes.push_back(piece);
    vocab->special.push_back(false);
  }
  ConstraintSpec spec;
  spec.kind = ConstraintSpec::Kind::kJsonSchema;
  spec.text = R"({"type":"object","properties":{"a":{"type":"integer"}}})";
  EXPECT_TRUE(CompileConstraint(spec, vocab).ok());
  spec.text = R"({"type":"object","patternProperties":{}})";
  absl::StatusOr<std::shared_ptr<const CompiledConstraint>> bad = CompileConstraint(spec, vocab);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "json_schema: unsupported keyword 'patternProperties' at /");
}

}  // namespace
}  // namespace streamgen
