// The tool-call formats, the streaming parser and the tool_choice grammar
// (engine/text/tool_calls.h). Expected values are written by hand from the
// formats as the models' own chat templates write calls (Qwen 2.5's
// <tool_call> blocks, Llama 3.1's {"name", "parameters"}, Mistral Nemo's
// [TOOL_CALLS][...]); every output is also fed split at every byte.
#include "engine/text/tool_calls.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;
using Kind = ToolCallEvent::Kind;
using OJson = nlohmann::ordered_json;

struct Call {
  std::string id, name, arguments;
  bool operator==(const Call& o) const {
    return id == o.id && name == o.name && arguments == o.arguments;
  }
};
std::ostream& operator<<(std::ostream& os, const Call& c) {
  return os << "{" << c.id << ", " << c.name << ", " << c.arguments << "}";
}

struct Parsed {
  std::string content;
  std::vector<Call> calls;
  bool stopped = false;
};

// Adds `events` to `out`, checking the order: a call's fragments follow its start.
void Collect(const std::vector<ToolCallEvent>& events, Parsed* out) {
  for (const ToolCallEvent& e : events) {
    switch (e.kind) {
      case Kind::kContent:
        EXPECT_FALSE(e.text.empty());
        out->content += e.text;
        break;
      case Kind::kCallStart:
        EXPECT_EQ(e.index, static_cast<int>(out->calls.size()));
        out->calls.push_back({e.id, e.name, ""});
        break;
      case Kind::kArguments:
        ASSERT_FALSE(out->calls.empty());
        EXPECT_EQ(e.index, static_cast<int>(out->calls.size()) - 1);
        out->calls.back().arguments += e.text;
        break;
    }
  }
}

ToolCallParser::Options Opts(ToolCallFormat format, std::vector<std::string> stop = {},
                             int max_calls = 0) {
  ToolCallParser::Options options;
  options.format = format;
  options.stop = std::move(stop);
  options.max_calls = max_calls;
  return options;
}

// Ids "id0", "id1", ... unless `random_ids`.
Parsed Parse(ToolCallParser::Options options, const std::vector<std::string>& deltas,
             bool random_ids = false) {
  if (!random_ids) {
    auto counter = std::make_shared<int>(0);
    options.new_id = [counter] { return "id" + std::to_string((*counter)++); };
  }
  ToolCallParser parser(options);
  Parsed out;
  for (const std::string& delta : deltas) Collect(parser.Feed(delta), &out);
  Collect(parser.Finish(), &out);
  out.stopped = parser.stopped();
  return out;
}

// `text` whole, one byte per delta, and split in two at every byte: the same
// content and calls each time (so fragments concatenate to the whole).
Parsed ParseEverySplit(const ToolCallParser::Options& options, const std::string& text) {
  Parsed whole = Parse(options, {text});
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  Parsed by_byte = Parse(options, bytes);
  EXPECT_EQ(by_byte.content, whole.content) << "one byte per delta";
  EXPECT_EQ(by_byte.calls, whole.calls) << "one byte per delta";
  EXPECT_EQ(by_byte.stopped, whole.stopped);
  for (size_t i = 1; i < text.size(); ++i) {
    Parsed split = Parse(options, {text.substr(0, i), text.substr(i)});
    EXPECT_EQ(split.content, whole.content) << "split at " << i;
    EXPECT_EQ(split.calls, whole.calls) << "split at " << i;
  }
  return whole;
}

TEST(DetectToolCallFormatTest, ByTheTemplatesText) {
  // Lines of the real templates (Qwen 2.5, Hermes 3, Llama 3.1 / 3.2, Mistral Nemo).
  EXPECT_EQ(DetectToolCallFormat("{{- '<tool_call>\\n{\"name\": \"' }}"), ToolCallFormat::kHermes);
  EXPECT_EQ(DetectToolCallFormat("<|start_header_id|> \"parameters\" <tool_call>"),
            ToolCallFormat::kHermes);
  EXPECT_EQ(DetectToolCallFormat("{{- '<|start_header_id|>' }} {{- \"<|python_tag|>\" }}"),
            ToolCallFormat::kLlama3Json);
  EXPECT_EQ(DetectToolCallFormat("{{- '<|start_header_id|>assistant' }} {{- '\"parameters\": ' }}"),
            ToolCallFormat::kLlama3Json);
  EXPECT_EQ(DetectToolCallFormat("{{- \"[TOOL_CALLS][\" }}"), ToolCallFormat::kMistral);
  EXPECT_EQ(DetectToolCallFormat("{{- \"[TOOL_CALLS] [\" }}"), ToolCallFormat::kMistral);
  // Mistral Small 3.2's [TOOL_CALLS]name[ARGS] form, a template without tools.
  EXPECT_EQ(DetectToolCallFormat("{{- '[TOOL_CALLS]' + tool_call.function.name + '[ARGS]' }}"),
            ToolCallFormat::kNone);
  EXPECT_EQ(DetectToolCallFormat("<|im_start|>{{ message.role }}"), ToolCallFormat::kNone);
  EXPECT_EQ(DetectToolCallFormat(""), ToolCallFormat::kNone);
  EXPECT_STREQ(ToolCallFormatName(ToolCallFormat::kHermes), "hermes");
}

// llama.cpp's copies of the models' templates, where the build has them.
TEST(DetectToolCallFormatTest, RealTemplates) {
  const std::string dir = "build/llamacpp/llama.cpp/models/templates/";
  struct Case {
    const char* file;
    ToolCallFormat format;
  } cases[] = {{"Qwen-Qwen2.5-7B-Instruct.jinja", ToolCallFormat::kHermes},
               {"NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", ToolCallFormat::kHermes},
               {"meta-llama-Llama-3.1-8B-Instruct.jinja", ToolCallFormat::kLlama3Json},
               {"meta-llama-Llama-3.2-3B-Instruct.jinja", ToolCallFormat::kLlama3Json},
               {"meta-llama-Llama-3.3-70B-Instruct.jinja", ToolCallFormat::kLlama3Json},
               {"mistralai-Mistral-Nemo-Instruct-2407.jinja", ToolCallFormat::kMistral},
               {"Mistral-Small-3.2-24B-Instruct-2506.jinja", ToolCallFormat::kNone},
               {"google-gemma-2-2b-it.jinja", ToolCallFormat::kNone}};
  int read = 0;
  for (const Case& c : cases) {
    std::ifstream in(dir + c.file);
    if (!in) continue;
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(DetectToolCallFormat(text.str()), c.format) << c.file;
    ++read;
  }
  if (read == 0) GTEST_SKIP() << "no llama.cpp checkout under " << dir;
}

TEST(ToolCallParserTest, HermesOneCall) {
  Parsed p = ParseEverySplit(
      Opts(ToolCallFormat::kHermes),
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": "
      "\"c\"}}\n</tool_call>");
  EXPECT_EQ(p.content, "");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(
                           Call{"id0", "get_weather", "{\"city\": \"Paris\", \"unit\": \"c\"}"}));
}

TEST(ToolCallParserTest, HermesContentThenParallelCalls) {
  Parsed p = ParseEverySplit(
      Opts(ToolCallFormat::kHermes),
      "Let me check both.\n\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
      "<tool_call>\n{\"name\":\"b\",\"arguments\":{\"x\":[1,{\"y\":null}]}}\n</tool_call>");
  EXPECT_EQ(p.content, "Let me check both.");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "a", "{}"},
                                              Call{"id1", "b", "{\"x\":[1,{\"y\":null}]}"}));
}

TEST(ToolCallParserTest, ArgumentsWithBracesAndEscapesInStrings) {
  const std::string args = R"({"q": "a}\"{b]", "s": "\\", "u": "\u00e9 é"})";
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kHermes),
                             "<tool_call>\n{\"name\": \"f\", \"arguments\": " + args +
                                 "}\n</tool_call>");
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].arguments, args);
  EXPECT_TRUE(OJson::accept(p.calls[0].arguments));
}

TEST(ToolCallParserTest, HermesKeysInAnotherOrderAreParsedWhole) {
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kHermes),
                             "<tool_call>\n{\"arguments\": {\"a\": 1}, \"name\": \"f\"}\n</tool_call>");
  EXPECT_EQ(p.content, "");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{\"a\":1}"}));
}

TEST(ToolCallParserTest, MalformedCallIsContent) {
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kHermes),
                             "See <tool_call>\nnot json\n</tool_call> and more");
  EXPECT_EQ(p.content, "See <tool_call>\nnot json\n</tool_call> and more");
  EXPECT_TRUE(p.calls.empty());
  // A call without arguments, and an unclosed block that is no call.
  p = ParseEverySplit(Opts(ToolCallFormat::kHermes), "<tool_call>{\"name\": \"f\"}</tool_call>");
  EXPECT_EQ(p.content, "<tool_call>{\"name\": \"f\"}</tool_call>");
  p = ParseEverySplit(Opts(ToolCallFormat::kHermes), "x <tool_call> {\"nam");
  EXPECT_EQ(p.content, "x <tool_call> {\"nam");
  EXPECT_TRUE(p.calls.empty());
}

TEST(ToolCallParserTest, PlainTextIsContent) {
  for (ToolCallFormat format : {ToolCallFormat::kNone, ToolCallFormat::kHermes,
                                ToolCallFormat::kLlama3Json, ToolCallFormat::kMistral}) {
    Parsed p = ParseEverySplit(Opts(format), "Hello <tool {world} [1] ok\n");
    EXPECT_EQ(p.content, "Hello <tool {world} [1] ok\n") << ToolCallFormatName(format);
    EXPECT_TRUE(p.calls.empty());
  }
}

TEST(ToolCallParserTest, Llama) {
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kLlama3Json),
                             "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": 1}}");
  EXPECT_EQ(p.content, "");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{\"a\": 1}"}));
  // The detokenizer drops <|python_tag|> (a special token): a bare object.
  p = ParseEverySplit(Opts(ToolCallFormat::kLlama3Json),
                      " {\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"arguments\": "
                      "{\"b\": \"c\"}}\n");
  EXPECT_EQ(p.content, "");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{}"},
                                              Call{"id1", "g", "{\"b\": \"c\"}"}));
  // An object that is no call is content; so is text before an object.
  p = ParseEverySplit(Opts(ToolCallFormat::kLlama3Json), "{\"answer\": 42}");
  EXPECT_EQ(p.content, "{\"answer\": 42}");
  EXPECT_TRUE(p.calls.empty());
  p = ParseEverySplit(Opts(ToolCallFormat::kLlama3Json),
                      "Sure: {\"name\": \"f\", \"parameters\": {}}");
  EXPECT_EQ(p.content, "Sure: {\"name\": \"f\", \"parameters\": {}}");
  EXPECT_TRUE(p.calls.empty());
}

TEST(ToolCallParserTest, Mistral) {
  Parsed p = ParseEverySplit(
      Opts(ToolCallFormat::kMistral),
      "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"id\": \"abc123def\"}, "
      "{\"name\": \"g\", \"arguments\": {}}]");
  EXPECT_EQ(p.content, "");
  EXPECT_THAT(p.calls,
              ::testing::ElementsAre(Call{"id0", "f", "{\"a\": 1}"}, Call{"id1", "g", "{}"}));
  // [TOOL_CALLS] is a control token the detokenizer drops.
  p = ParseEverySplit(Opts(ToolCallFormat::kMistral),
                      "[{\"name\": \"f\", \"arguments\": {\"n\": -1.5e3}}]");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{\"n\": -1.5e3}"}));
  // v0.3's "[TOOL_CALLS] [", after content.
  p = ParseEverySplit(Opts(ToolCallFormat::kMistral),
                      "Sure. [TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {}}]");
  EXPECT_EQ(p.content, "Sure.");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{}"}));
  p = ParseEverySplit(Opts(ToolCallFormat::kMistral), "[1] is a citation");
  EXPECT_EQ(p.content, "[1] is a citation");
  EXPECT_TRUE(p.calls.empty());
}

TEST(ToolCallParserTest, ScalarArguments) {
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kMistral),
                             "[{\"name\": \"f\", \"arguments\": 12}, {\"name\": \"g\", "
                             "\"arguments\": true }]");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "12"}, Call{"id1", "g", "true"}));
}

TEST(ToolCallParserTest, ParallelCallsFalseKeepsTheFirst) {
  Parsed p = ParseEverySplit(
      Opts(ToolCallFormat::kHermes, {}, /*max_calls=*/1),
      "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"i\": 1}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"b\", \"arguments\": {\"i\": 2}}\n</tool_call>");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "a", "{\"i\": 1}"}));
  EXPECT_EQ(p.content, "");
}

TEST(ToolCallParserTest, StopStringsApplyToContentOnly) {
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kHermes, {"END"}),
                             "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"s\": \"END\"}}\n"
                             "</tool_call>\nafter END ignored <tool_call>\n{\"name\": \"g\", "
                             "\"arguments\": {}}\n</tool_call>");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{\"s\": \"END\"}"}));
  EXPECT_EQ(p.content, "after");  // whitespace at the end of an output with calls is dropped
  EXPECT_TRUE(p.stopped);
  p = ParseEverySplit(Opts(ToolCallFormat::kHermes, {"<tool"}), "a <tool_call>\n{\"name\": "
                                                                "\"f\", \"arguments\": {}}\n</tool_call>");
  // The opening is not content: a stop string does not match it.
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{}"}));
  EXPECT_EQ(p.content, "a");
  EXPECT_FALSE(p.stopped);
}

TEST(ToolCallParserTest, TruncatedCallKeepsItsFragments) {
  Parsed p = ParseEverySplit(Opts(ToolCallFormat::kHermes),
                             "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, ");
  EXPECT_THAT(p.calls, ::testing::ElementsAre(Call{"id0", "f", "{\"a\": [1, "}));
}

TEST(ToolCallParserTest, FragmentsStreamBeforeTheCallEnds) {
  ToolCallParser::Options options = Opts(ToolCallFormat::kHermes);
  options.new_id = [] { return "id0"; };
  ToolCallParser parser(options);
  Parsed p;
  Collect(parser.Feed("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": "), &p);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_EQ(p.calls[0].arguments, "{\"a\": ");
  Collect(parser.Feed("\"xy"), &p);
  EXPECT_EQ(p.calls[0].arguments, "{\"a\": \"xy");
}

TEST(ToolCallParserTest, DefaultIds) {
  ToolCallParser::Options options;
  options.format = ToolCallFormat::kHermes;
  Parsed p = Parse(options, {"<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"}, true);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_THAT(p.calls[0].id, ::testing::MatchesRegex("call_[A-Za-z0-9]{24}"));
  options.format = ToolCallFormat::kMistral;
  p = Parse(options, {"[{\"name\": \"f\", \"arguments\": {}}]"}, true);
  ASSERT_EQ(p.calls.size(), 1u);
  EXPECT_THAT(p.calls[0].id, ::testing::MatchesRegex("[A-Za-z0-9]{9}"));
}

// ---- the grammar ----

TEST(ToolCallGrammarTest, PrefixGrammarRules) {
  EXPECT_EQ(PrefixGrammarRules("root ::= \"root\" ws obj # root ws\n"
                               "obj ::= [a-z\\]ws]+ \"\\\"ws\" obj?\nws ::= [ \\t]*\n",
                               "call-"),
            "call-root ::= \"root\" call-ws call-obj # root ws\n"
            "call-obj ::= [a-z\\]ws]+ \"\\\"ws\" call-obj?\ncall-ws ::= [ \\t]*\n");
  // Rules named by numbers (JsonSchemaToGrammar's anyOf branches) and counts.
  EXPECT_EQ(PrefixGrammarRules("root ::= 0 | 1\n0 ::= [0-9]{0,16}\n1 ::= \"1\"{1}\n", "call-"),
            "call-root ::= call-0 | call-1\ncall-0 ::= [0-9]{0,16}\ncall-1 ::= \"1\"{1}\n");
}

TEST(ToolCallGrammarTest, ObjectSchema) {
  std::vector<ToolSpec> tools = {
      {"get_weather", OJson::parse(R"({"type": "object", "properties": {"city": {"type": "string"}}})")},
      {"now", OJson()}};
  EXPECT_EQ(ToolCallObjectSchema(ToolCallFormat::kHermes, {tools[0]}).dump(),
            R"({"type":"object","properties":{"name":{"const":"get_weather"},"arguments":)"
            R"({"type":"object","properties":{"city":{"type":"string"}}}},)"
            R"("required":["name","arguments"],"additionalProperties":false})");
  EXPECT_EQ(ToolCallObjectSchema(ToolCallFormat::kLlama3Json, tools).dump(),
            R"({"anyOf":[{"type":"object","properties":{"name":{"const":"get_weather"},"parameters":)"
            R"({"type":"object","properties":{"city":{"type":"string"}}}},)"
            R"("required":["name","parameters"],"additionalProperties":false},)"
            R"({"type":"object","properties":{"name":{"const":"now"},"parameters":{"type":"object"}},)"
            R"("required":["name","parameters"],"additionalProperties":false}]})");
}

TEST(ToolCallGrammarTest, WrapperPerFormat) {
  OJson seen;
  auto fake = [&seen](const OJson& schema) -> absl::StatusOr<std::string> {
    seen = schema;
    return std::string("root ::= \"{\" ws \"}\"\nws ::= \" \"?\n");
  };
  std::vector<ToolSpec> tools = {{"f", OJson{{"type", "object"}}}};
  const std::string object = "call-root ::= \"{\" call-ws \"}\"\ncall-ws ::= \" \"?\n";
  EXPECT_EQ(*ToolCallGrammar(ToolCallFormat::kHermes, tools, false, fake),
            "root ::= \"<tool_call>\\n\" call-root \"\\n</tool_call>\"\n" + object);
  EXPECT_EQ(seen, ToolCallObjectSchema(ToolCallFormat::kHermes, tools));
  EXPECT_EQ(*ToolCallGrammar(ToolCallFormat::kHermes, tools, true, fake),
            "root ::= tool-call (\"\\n\" tool-call)*\n"
            "tool-call ::= \"<tool_call>\\n\" call-root \"\\n</tool_call>\"\n" + object);
  EXPECT_EQ(*ToolCallGrammar(ToolCallFormat::kLlama3Json, tools, false, fake),
            "root ::= call-root\n" + object);
  EXPECT_EQ(*ToolCallGrammar(ToolCallFormat::kLlama3Json, tools, true, fake),
            "root ::= call-root (\"; \" call-root)*\n" + object);
  EXPECT_EQ(*ToolCallGrammar(ToolCallFormat::kMistral, tools, false, fake),
            "root ::= \"[\" call-root \"]\"\n" + object);
  EXPECT_EQ(*ToolCallGrammar(ToolCallFormat::kMistral, tools, true, fake),
            "root ::= \"[\" call-root (\", \" call-root)* \"]\"\n" + object);
}

TEST(ToolCallGrammarTest, Errors) {
  auto fake = [](const OJson&) -> absl::StatusOr<std::string> {
    return absl::InvalidArgumentError("json_schema: unsupported keyword 'not' at /anyOf/0");
  };
  std::vector<ToolSpec> tools = {{"f", OJson()}};
  EXPECT_THAT(ToolCallGrammar(ToolCallFormat::kNone, tools, false, fake).status().message(),
              HasSubstr("no tool-call format streamgen knows"));
  EXPECT_THAT(ToolCallGrammar(ToolCallFormat::kHermes, {}, false, fake).status().message(),
              HasSubstr("no tools"));
  EXPECT_THAT(ToolCallGrammar(ToolCallFormat::kHermes, tools, false, fake).status().message(),
              HasSubstr("unsupported keyword 'not'"));
}

}  // namespace
}  // namespace streamgen
