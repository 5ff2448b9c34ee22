// Chat completions' tools on the HTTP face without HTTP: tools / tool_choice /
// parallel_tool_calls refused by name, what PrepareToolCalls decides per
// tool_choice and template format, and the encoder's delta.tool_calls,
// message.tool_calls and finish_reason (server/tool_calls.h).
#include "server/tool_calls.h"

#include <string>
#include <vector>

#include "engine/grammar/grammar.h"
#include "engine/grammar/json_schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/openai_api.h"
#include "server/openai_encoder.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

constexpr char kTools[] = R"("tools": [
    {"type": "function", "function": {"name": "get_weather", "description": "d",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]}}},
    {"type": "function", "function": {"name": "now"}}])";

absl::StatusOr<OpenAiRequest> Chat(const std::string& rest) {
  return ParseOpenAiRequest(
      OpenAiRoute::kChat,
      Json::parse(R"({"messages": [{"role": "user", "content": "x"}], )" + rest + "}"));
}

TEST(OpenAiToolsTest, ParsesToolsChoiceAndParallel) {
  absl::StatusOr<OpenAiRequest> r = Chat(std::string(kTools) + R"(, "tool_choice": {"type":
      "function", "function": {"name": "now"}}, "parallel_tool_calls": false)");
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->tools.size(), 2u);
  EXPECT_EQ(r->tools[0].name, "get_weather");
  EXPECT_EQ(r->tools[0].parameters["required"], OJson::array({"city"}));
  EXPECT_TRUE(r->tools[1].parameters.is_null());
  EXPECT_EQ(r->tool_choice, ToolChoice::kFunction);
  EXPECT_EQ(r->tool_choice_function, "now");
  EXPECT_FALSE(r->parallel_tool_calls);
  r = Chat(std::string(kTools));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->tool_choice, ToolChoice::kAuto);
  EXPECT_TRUE(r->parallel_tool_calls);
  for (auto [value, choice] : {std::pair{"\"none\"", ToolChoice::kNone},
                               std::pair{"\"auto\"", ToolChoice::kAuto},
                               std::pair{"\"required\"", ToolChoice::kRequired}}) {
    r = Chat(std::string(kTools) + ", \"tool_choice\": " + value);
    ASSERT_TRUE(r.ok()) << value;
    EXPECT_EQ(r->tool_choice, choice) << value;
  }
}

TEST(OpenAiToolsTest, BadToolsAndChoicesAreRefusedByName) {
  struct Case {
    std::string rest, param, message;
  } cases[] = {
      {R"("tools": [5])", "tools", "tools[0] must be an object, got a number"},
      {R"("tools": [{"type": "custom", "function": {"name": "f"}}])", "tools",
       "tools[0].type must be \"function\", got \"custom\""},
      {R"("tools": [{"type": "function"}])", "tools", "tools[0].function must be an object, got nothing"},
      {R"("tools": [{"type": "function", "function": {"name": "a b"}}])", "tools",
       "tools[0].function.name must be 1 to 64 letters, digits, underscores or dashes, got \"a b\""},
      {R"("tools": [{"type": "function", "function": {"name": "f"}},
                    {"type": "function", "function": {"name": "f"}}])", "tools",
       "tools[1].function.name \"f\" is also the name of tools[0]"},
      {R"("tools": [{"type": "function", "function": {"name": "f", "parameters": []}}])", "tools",
       "tools[0].function.parameters must be an object (a JSON Schema), got an array"},
      {std::string(kTools) + R"(, "tool_choice": "any")", "tool_choice",
       "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
       "\"function\": {\"name\": ...}}, got \"any\""},
      {std::string(kTools) + R"(, "tool_choice": {"type": "function", "function": {}})", "tool_choice",
       "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
       "\"function\": {\"name\": ...}}, got {\"function\":{},\"type\":\"function\"}"},
      {R"("tool_choice": "required")", "tool_choice", "tool_choice \"required\" needs tools"},
      {std::string(kTools) + R"(, "tool_choice": {"type": "function", "function": {"name": "x"}})",
       "tool_choice", "tool_choice names the function \"x\", which is not in tools"},
      {std::string(kTools) + R"(, "parallel_tool_calls": 1)", "parallel_tool_calls",
       "parallel_tool_calls must be a boolean, got a number"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.rest);
    absl::StatusOr<OpenAiRequest> r = Chat(c.rest);
    ASSERT_FALSE(r.ok());
    HttpError error = ToHttpError(r.status(), OpenAiRoute::kChat);
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, c.param);
    EXPECT_EQ(error.message, c.message);
  }
}

absl::StatusOr<std::string> FakeConverter(const OJson&) {
  return std::string("root ::= \"{}\"\n");
}

TEST(OpenAiToolsTest, PrepareToolCallsPerChoice) {
  // auto: parsed; stop strings move to the parser (content only).
  absl::StatusOr<OpenAiRequest> r = Chat(std::string(kTools) + R"(, "stop": ["END"])");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(PrepareToolCalls(ToolCallFormat::kHermes, FakeConverter, &*r).ok());
  EXPECT_EQ(r->tool_format, ToolCallFormat::kHermes);
  EXPECT_THAT(r->content_stop, ::testing::ElementsAre("END"));
  EXPECT_FALSE(r->engine_stops);
  EXPECT_EQ(r->request.stop_size(), 1);  // for the validator
  EXPECT_EQ(r->tool_grammar, "");
  // auto with a template of no known format: content, the engine's stops kept.
  r = Chat(std::string(kTools) + R"(, "stop": ["END"])");
  ASSERT_TRUE(PrepareToolCalls(ToolCallFormat::kNone, FakeConverter, &*r).ok());
  EXPECT_EQ(r->tool_format, ToolCallFormat::kNone);
  EXPECT_TRUE(r->engine_stops);
  // none: not parsed; the tools still reach the template.
  r = Chat(std::string(kTools) + R"(, "tool_choice": "none")");
  ASSERT_TRUE(PrepareToolCalls(ToolCallFormat::kHermes, FakeConverter, &*r).ok());
  EXPECT_EQ(r->tool_format, ToolCallFormat::kNone);
  EXPECT_THAT(r->request.tools_json(), HasSubstr("get_weather"));
  // required: a grammar over every tool; a function: over that one; stops dropped.
  r = Chat(std::string(kTools) + R"(, "tool_choice": "required", "stop": ["x"])");
  OJson seen;
  SchemaToGrammar capture = [&seen](const OJson& schema) -> absl::StatusOr<std::string> {
    seen = schema;
    return std::string("root ::= \"{}\"\n");
  };
  ASSERT_TRUE(PrepareToolCalls(ToolCallFormat::kHermes, capture, &*r).ok());
  EXPECT_EQ(r->tool_grammar,
            "root ::= tool-call (\"\\n\" tool-call)*\n"
            "tool-call ::= \"<tool_call>\\n\" call-root \"\\n</tool_call>\"\ncall-root ::= \"{}\"\n");
  EXPECT_EQ(seen["anyOf"].size(), 2u);
  EXPECT_FALSE(r->engine_stops);
  EXPECT_TRUE(r->content_stop.empty());
  r = Chat(std::string(kTools) +
           R"(, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
              "parallel_tool_calls": false)");
  ASSERT_TRUE(PrepareToolCalls(ToolCallFormat::kLlama3Json, capture, &*r).ok());
  EXPECT_EQ(r->tool_grammar, "root ::= call-root\ncall-root ::= \"{}\"\n");
  EXPECT_EQ(seen["properties"]["name"]["const"], "get_weather");
  EXPECT_EQ(seen["properties"]["parameters"]["required"], OJson::array({"city"}));
}

// With the real converter, every format's grammar (one call or several, any
// tool or one) parses in the grammar engine's dialect.
TEST(OpenAiToolsTest, RealGrammarsParse) {
  SchemaToGrammar real = [](const OJson& schema) { return JsonSchemaToGrammar(schema); };
  for (ToolCallFormat format :
       {ToolCallFormat::kHermes, ToolCallFormat::kLlama3Json, ToolCallFormat::kMistral}) {
    for (const char* choice : {R"("required")", R"({"type": "function", "function": {"name": "now"}})"}) {
      for (const char* parallel : {"true", "false"}) {
        absl::StatusOr<OpenAiRequest> r = Chat(std::string(kTools) + ", \"tool_choice\": " + choice +
                                               ", \"parallel_tool_calls\": " + parallel);
        ASSERT_TRUE(r.ok());
        ASSERT_TRUE(PrepareToolCalls(format, real, &*r).ok());
        absl::StatusOr<grammar::Grammar> grammar = grammar::ParseGrammar(r->tool_grammar);
        EXPECT_TRUE(grammar.ok()) << ToolCallFormatName(format) << " " << choice << " "
                                  << grammar.status() << "\n" << r->tool_grammar;
      }
    }
  }
}

TEST(OpenAiToolsTest, PrepareToolCallsRefusals) {
  absl::StatusOr<OpenAiRequest> r = Chat(std::string(kTools) + R"(, "tool_choice": "required")");
  absl::Status status = PrepareToolCalls(ToolCallFormat::kNone, FakeConverter, &*r);
  HttpError error = ToHttpError(status, OpenAiRoute::kChat);
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.param, "tool_choice");
  EXPECT_EQ(error.message,
            "tool_choice \"required\" needs a chat template that writes tool calls in a format "
            "streamgen knows (Llama 3.1 JSON, Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS]); "
            "this model's has none");
  status = PrepareToolCalls(ToolCallFormat::kHermes, SchemaToGrammar(), &*r);
  EXPECT_EQ(status.message(), "tool_choice \"required\" needs constrained decoding, which this "
                              "build lacks");
  SchemaToGrammar refuse = [](const OJson&) -> absl::StatusOr<std::string> {
    return absl::InvalidArgumentError("json_schema: unsupported keyword 'not' at /anyOf/0");
  };
  status = PrepareToolCalls(ToolCallFormat::kHermes, refuse, &*r);
  error = ToHttpError(status, OpenAiRoute::kChat);
  EXPECT_EQ(error.param, "tools");
  EXPECT_EQ(error.message, "tools: a parameter schema cannot constrain the output: json_schema: "
                           "unsupported keyword 'not' at /anyOf/0");
  // n > 1 with a parsed output: one parser per stream.
  absl::StatusOr<OpenAiRequest> many = Chat(std::string(kTools) + R"(, "n": 2)");
  ASSERT_TRUE(many.ok()) << many.status();
  error = ToHttpError(PrepareToolCalls(ToolCallFormat::kHermes, FakeConverter, &*many),
                      OpenAiRoute::kChat);
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.param, "n");
  EXPECT_EQ(error.message, "n must be 1 when the output is parsed for tool calls (tools with "
                           "tool_choice other than \"none\"), got 2");
}

// ---- the encoder ----

std::vector<Json> Events(const std::string& sse, bool* done) {
  std::vector<Json> events;
  *done = false;
  for (size_t at = 0; at < sse.size();) {
    size_t end = sse.find("\n\n", at);
    if (end == std::string::npos) {
      ADD_FAILURE() << "an event without its blank line";
      break;
    }
    std::string event = sse.substr(at, end - at);
    EXPECT_FALSE(*done) << "an event after [DONE]";
    if (event == "data: [DONE]") {
      *done = true;
    } else {
      events.push_back(Json::parse(event.substr(6)));
    }
    at = end + 2;
  }
  return events;
}

v1::GenerateResponse Message(const std::string& text, int tokens = 1) {
  v1::GenerateResponse message;
  message.set_text(text);
  for (int i = 0; i < tokens; ++i) message.add_tokens()->set_id(1);
  return message;
}

v1::GenerateResponse Last(v1::FinishReason reason) {
  v1::GenerateResponse message;
  message.set_finish_reason(reason);
  message.mutable_usage()->set_prompt_tokens(4);
  message.mutable_usage()->set_completion_tokens(9);
  return message;
}

std::string Piece(int) { return "x"; }

OpenAiRequest Prepared(const std::string& rest) {
  absl::StatusOr<OpenAiRequest> r = Chat(std::string(kTools) + rest);
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(PrepareToolCalls(ToolCallFormat::kHermes, FakeConverter, &*r).ok());
  return *r;
}

const std::vector<std::string> kOutput = {
    "Checking.\n<tool", "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci",
    "ty\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}",
    "\n</tool_call>"};

TEST(OpenAiToolsTest, StreamedCallsAsOpenAiSendsThem) {
  OpenAiRequest request = Prepared(R"(, "stream": true, "stream_options": {"include_usage": true})");
  OpenAiEncoder encoder(request, "chatcmpl-1", 1, "tiny", Piece);
  std::string sse = encoder.StreamStart();
  for (const std::string& text : kOutput) {
    sse += encoder.StreamMessage(Message(text), false, absl::OkStatus());
  }
  sse += encoder.StreamMessage(Last(v1::FINISH_REASON_EOS), true, absl::OkStatus());
  bool done = false;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  std::string content;
  std::vector<Json> starts;
  std::vector<std::string> arguments;
  std::string finish;
  for (const Json& e : events) {
    if (e["choices"].empty()) continue;  // usage
    const Json& choice = e["choices"][0];
    if (!choice["finish_reason"].is_null()) finish = choice["finish_reason"];
    const Json& delta = choice["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (!delta.contains("tool_calls")) continue;
    ASSERT_EQ(delta["tool_calls"].size(), 1u);
    const Json& call = delta["tool_calls"][0];
    size_t index = call["index"];
    if (call.contains("id")) {
      EXPECT_EQ(index, starts.size());
      EXPECT_EQ(call["type"], "function");
      starts.push_back(call);
      arguments.emplace_back();
    }
    ASSERT_LT(index, arguments.size());
    arguments[index] += call["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(content, "Checking.");
  ASSERT_EQ(starts.size(), 2u);
  EXPECT_EQ(starts[0]["function"]["name"], "get_weather");
  EXPECT_THAT(starts[0]["id"].get<std::string>(), ::testing::MatchesRegex("call_[A-Za-z0-9]{24}"));
  EXPECT_EQ(starts[1]["function"]["name"], "now");
  EXPECT_NE(starts[0]["id"], starts[1]["id"]);
  EXPECT_EQ(arguments[0], "{\"city\": \"Oslo\"}");
  EXPECT_EQ(arguments[1], "{}");
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 9);
}

TEST(OpenAiToolsTest, BodyListsCallsWithNullContent) {
  OpenAiRequest request = Prepared("");
  OpenAiEncoder encoder(request, "chatcmpl-1", 1, "tiny", Piece);
  for (const std::string& text : {std::string("<tool"), kOutput[1], kOutput[2], kOutput[3]}) {
    encoder.Accumulate(Message(text));
  }
  encoder.Accumulate(Last(v1::FINISH_REASON_EOS));
  Json body = Json::parse(DumpJson(encoder.Body()));
  const Json& choice = body["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  EXPECT_TRUE(choice["message"]["content"].is_null());
  ASSERT_EQ(choice["message"]["tool_calls"].size(), 2u);
  const Json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(call["function"]["arguments"], "{\"city\": \"Oslo\"}");
  // Without calls: content, finish_reason stop, no tool_calls.
  OpenAiEncoder plain(request, "chatcmpl-2", 1, "tiny", Piece);
  plain.Accumulate(Message("Hello"));
  plain.Accumulate(Last(v1::FINISH_REASON_EOS));
  body = Json::parse(DumpJson(plain.Body()));
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello");
  EXPECT_FALSE(body["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
}

TEST(OpenAiToolsTest, LengthStaysLengthWithACutCall) {
  OpenAiRequest request = Prepared("");
  OpenAiEncoder encoder(request, "chatcmpl-1", 1, "tiny", Piece);
  encoder.Accumulate(Message("<tool"));
  encoder.Accumulate(Message(kOutput[1]));
  encoder.Accumulate(Last(v1::FINISH_REASON_LENGTH));
  Json body = Json::parse(DumpJson(encoder.Body()));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"ci");
}

// A stop string in content ends the output at the face (the engine's
// generation is then cancelled); one inside a call's arguments does not.
TEST(OpenAiToolsTest, StopStringsEndContentNotCalls) {
  OpenAiRequest request = Prepared(R"(, "stop": ["Oslo", "STOP"], "stream": true,
                                      "stream_options": {"include_usage": true})");
  OpenAiEncoder encoder(request, "chatcmpl-1", 1, "tiny", Piece);
  encoder.set_prompt_tokens(7);
  std::string sse;
  for (const std::string& text : {std::string("<tool"), kOutput[1], kOutput[2],
                                  std::string("\n</tool_call>\nok ST"),
                                  std::string("OP and more")}) {
    sse += encoder.StreamMessage(Message(text), false, absl::OkStatus());
    if (encoder.finished()) break;
  }
  EXPECT_TRUE(encoder.finished());
  // The cancellation that follows adds nothing.
  EXPECT_EQ(encoder.StreamError(absl::CancelledError("the client disconnected")), "");
  bool done = false;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_EQ(events.back()["usage"],
            Json::parse(R"({"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12})"));
  std::string content, arguments;
  for (const Json& e : events) {
    if (e["choices"].empty()) continue;
    const Json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) content += delta["content"].get<std::string>();
    if (delta.contains("tool_calls") && delta["tool_calls"][0]["index"] == 0) {
      arguments += delta["tool_calls"][0]["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(arguments, "{\"city\": \"Oslo\"}");
  EXPECT_EQ(content, "ok");  // whitespace at the end of an output with calls is dropped
}

// The body's key order reaches the chat template (tools_json) and the
// schema compiler (properties come in the order of `properties`), as a
// Python dict keeps it for transformers and vLLM.
TEST(OpenAiToolsTest, TheBodysKeyOrderReachesTheTemplateAndTheSchema) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(OpenAiRoute::kChat, OJson::parse(R"({
    "messages": [{"role": "user", "content": "x"}],
    "tools": [{"type": "function", "function": {"name": "get", "parameters":
      {"type": "object", "properties": {"zeta": {}, "alpha": {}}}}}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "o",
      "schema": {"properties": {"zeta": {}, "alpha": {}}, "type": "object"}}}})"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request.tools_json(),
            R"([{"type":"function","function":{"name":"get","parameters":)"
            R"({"type":"object","properties":{"zeta":{},"alpha":{}}}}}])");
  EXPECT_EQ(r->request.json_schema(), R"({"properties":{"zeta":{},"alpha":{}},"type":"object"})");
}

}  // namespace
}  // namespace streamgen
