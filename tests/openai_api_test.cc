// The HTTP face's wire formats without HTTP: OpenAI JSON -> GenerateRequest
// (types, OpenAI's rules, defaults), the validator's messages with OpenAI's
// `param`, the error bodies, and the SSE / JSON encoders.
#include "server/openai_api.h"
#include "server/openai_choices.h"
#include "server/openai_encoder.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/validation.h"

namespace streamgen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

absl::StatusOr<OpenAiRequest> Completions(const char* body) {
  return ParseOpenAiRequest(OpenAiRoute::kCompletions, Json::parse(body));
}
absl::StatusOr<OpenAiRequest> Chat(const char* body) {
  return ParseOpenAiRequest(OpenAiRoute::kChat, Json::parse(body));
}

// The error as the HTTP face would answer it.
HttpError ErrorOf(const absl::StatusOr<OpenAiRequest>& parsed,
                  OpenAiRoute route = OpenAiRoute::kCompletions) {
  EXPECT_FALSE(parsed.ok());
  return ToHttpError(parsed.status(), route);
}

// Issue 22: response_format, vLLM's structured_outputs / guided_*, logit_bias.
TEST(OpenAiRequestTest, ConstraintsAndLogitBiasReachTheProto) {
  absl::StatusOr<OpenAiRequest> parsed = Chat(R"({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true,
          "schema": {"type": "object", "properties": {"age": {"type": "integer"}}}}},
      "logit_bias": {"5": 100, "17": -2.5}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::GenerateRequest& r = parsed->request;
  ASSERT_EQ(r.constraint_case(), v1::GenerateRequest::kJsonSchema);
  EXPECT_EQ(Json::parse(r.json_schema()),
            Json::parse(R"({"type": "object", "properties": {"age": {"type": "integer"}}})"));
  ASSERT_EQ(r.logit_bias().size(), 2u);
  EXPECT_EQ(r.logit_bias().at(5), 100.0f);
  EXPECT_EQ(r.logit_bias().at(17), -2.5f);

  struct Case {
    const char* fields;
    v1::GenerateRequest::ConstraintCase kind;
  };
  for (const Case& c : {
           Case{R"("response_format": {"type": "text"})", v1::GenerateRequest::CONSTRAINT_NOT_SET},
           Case{R"("response_format": {"type": "json_object"})", v1::GenerateRequest::kJsonObject},
           Case{R"("response_format": {"type": "json_schema", "json_schema": {"name": "n"}})",
                v1::GenerateRequest::kJsonObject},
           Case{R"("structured_outputs": {"json": {"type": "string"}})", v1::GenerateRequest::kJsonSchema},
           Case{R"("structured_outputs": {"json": "{\"type\": \"string\"}"})", v1::GenerateRequest::kJsonSchema},
           Case{R"("structured_outputs": {"regex": "[0-9]+", "grammar": null})", v1::GenerateRequest::kRegex},
           Case{R"("structured_outputs": {"choice": ["yes", "no"]})", v1::GenerateRequest::kChoice},
           Case{R"("structured_outputs": {"grammar": "root ::= \"a\""})", v1::GenerateRequest::kGrammar},
           Case{R"("structured_outputs": {"json_object": true})", v1::GenerateRequest::kJsonObject},
           Case{R"("guided_json": {"type": "object"})", v1::GenerateRequest::kJsonSchema},
           Case{R"("guided_regex": "a+")", v1::GenerateRequest::kRegex},
           Case{R"("guided_choice": ["a"])", v1::GenerateRequest::kChoice},
           Case{R"("guided_grammar": "root ::= \"a\"")", v1::GenerateRequest::kGrammar},
       }) {
    const std::string body = std::string(R"({"prompt": "x", )") + c.fields + "}";
    SCOPED_TRACE(body);
    absl::StatusOr<OpenAiRequest> got = Completions(body.c_str());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->request.constraint_case(), c.kind);
  }
  parsed = Completions(R"({"prompt": "x", "structured_outputs": {"choice": ["yes", "no"]}})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_THAT(parsed->request.choice().choices(), ElementsAre("yes", "no"));
  parsed = Completions(R"({"prompt": "x", "guided_regex": "[0-9]+"})");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->request.regex(), "[0-9]+");
}

// The validator's refusals of logit_bias and constraint shapes, as the face answers them.
TEST(OpenAiRequestTest, ValidatorRefusalsOfLogitBiasAndConstraintsNameTheField) {
  RequestLimits limits;
  limits.vocab_size = 100;
  limits.context_length = 64;
  PromptEncoder encoder;
  encoder.tokenize = [](const std::string&, bool) { return std::vector<int>{1, 2}; };
  auto refusal = [&](const char* body) {
    absl::StatusOr<OpenAiRequest> parsed = Completions(body);
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    absl::Status status = ToGenerationRequest(parsed->request, limits, encoder).status();
    return ToHttpError(ForHttpFace(status, OpenAiRoute::kCompletions));
  };
  HttpError error = refusal(R"({"prompt": "x", "logit_bias": {"100": 1}})");
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.param, "logit_bias");
  EXPECT_EQ(error.message, "logit_bias[100]: the token id is outside the vocabulary [0, 100)");
  error = refusal(R"({"prompt": "x", "logit_bias": {"3": -101}})");
  EXPECT_EQ(error.message, "logit_bias[3]: the bias must be in [-100, 100], got -101");
  error = refusal(R"({"prompt": "x", "structured_outputs": {"choice": []}})");
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.message, "choice: the list of choices is empty");
  error = refusal(R"({"prompt": "x", "guided_regex": ""})");
  EXPECT_EQ(error.message, "regex: the text is empty");
  error = refusal(R"({"prompt": "x", "n": 9})");
  EXPECT_EQ(error.param, "n");
  EXPECT_EQ(error.message, "n must be in [1, 8], got 9");
}

// Issue 18: a sampling field or max_tokens the body leaves out (or sends as
// null) stays unset in the proto, so that the model's generation_config.json
// defaults (and the server's default max tokens) apply downstream.
TEST(OpenAiRequestTest, AbsentFieldsStayUnset) {
  for (const char* body : {R"({"model": "m", "prompt": "Hello"})",
                           R"({"model": "m", "prompt": "Hello", "temperature": null, "top_p": null,
                               "top_k": null, "min_p": null, "repetition_penalty": null,
                               "max_tokens": null})"}) {
    SCOPED_TRACE(body);
    absl::StatusOr<OpenAiRequest> parsed = Completions(body);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->model, "m");
    EXPECT_EQ(parsed->request.prompt(), "Hello");
    const v1::GenerateRequest& r = parsed->request;
    EXPECT_FALSE(r.has_max_new_tokens());
    EXPECT_FALSE(r.has_temperature());
    EXPECT_FALSE(r.has_top_p());
    EXPECT_FALSE(r.has_top_k());
    EXPECT_FALSE(r.has_min_p());
    EXPECT_FALSE(r.has_repetition_penalty());
    EXPECT_FALSE(r.has_seed());
    EXPECT_FALSE(parsed->stream);
    EXPECT_FALSE(parsed->logprobs);
  }
  absl::StatusOr<OpenAiRequest> chat = Chat(R"({"messages": [{"role": "user", "content": "x"}],
                                               "max_tokens": null, "temperature": null})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_FALSE(chat->request.has_max_new_tokens());
  EXPECT_FALSE(chat->request.has_temperature());
  EXPECT_FALSE(chat->request.has_top_k());
  // Sent, each is set, a 0 included (temperature 0 is greedy whatever the model says).
  absl::StatusOr<OpenAiRequest> sent = Completions(R"({"prompt": "x", "temperature": 0, "top_k": 0,
      "min_p": 0, "top_p": 1, "repetition_penalty": 1, "max_tokens": 3})");
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_TRUE(sent->request.has_temperature());
  EXPECT_FLOAT_EQ(sent->request.temperature(), 0.0f);
  EXPECT_TRUE(sent->request.has_top_k());
  EXPECT_TRUE(sent->request.has_min_p());
  EXPECT_TRUE(sent->request.has_top_p());
  EXPECT_TRUE(sent->request.has_repetition_penalty());
  EXPECT_TRUE(sent->request.has_max_new_tokens());
  EXPECT_EQ(sent->request.max_new_tokens(), 3u);
}

// Issue 18: OpenAI's batch form with one prompt (LangChain's OpenAI model
// sends ["..."]) and token ids in every shape OpenAI takes.
TEST(OpenAiRequestTest, CompletionsPromptShapes) {
  absl::StatusOr<OpenAiRequest> one_string = Completions(R"({"prompt": ["Once upon"]})");
  ASSERT_TRUE(one_string.ok()) << one_string.status();
  EXPECT_EQ(one_string->request.prompt(), "Once upon");
  EXPECT_EQ(one_string->request.prompt_token_ids_size(), 0);
  absl::StatusOr<OpenAiRequest> one_ids = Completions(R"({"prompt": [[1, 450, 499]]})");
  ASSERT_TRUE(one_ids.ok()) << one_ids.status();
  EXPECT_THAT(one_ids->request.prompt_token_ids(), ElementsAre(1, 450, 499));
  EXPECT_EQ(one_ids->request.prompt(), "");
  absl::StatusOr<OpenAiRequest> ids = Completions(R"({"prompt": [1, 450]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_THAT(ids->request.prompt_token_ids(), ElementsAre(1, 450));

  struct Case {
    const char* body;
    const char* message;
  };
  const Case refused[] = {
      {R"({"prompt": ["a", "b"]})",
       "prompt holds 2 prompts; only one prompt per request is supported (send one request per "
       "prompt)"},
      {R"({"prompt": [[1, 2], [3]]})",
       "prompt holds 2 prompts; only one prompt per request is supported (send one request per "
       "prompt)"},
      {R"({"prompt": [{"text": "x"}]})",
       "prompt must be a string, an array of token ids, or an array of one of them; [0] is an "
       "object"},
      {R"({"prompt": [[1, "2"]]})", "prompt[0] must be an array of token ids; [1] is a string"},
      // Empty, in every shape: the one rule of every face.
      {R"({"prompt": ""})",
       "prompt is empty: send at least one character or the prompt as token ids"},
      {R"({"prompt": []})",
       "prompt is empty: send at least one character or the prompt as token ids"},
      {R"({"prompt": [""]})",
       "prompt is empty: send at least one character or the prompt as token ids"},
      {R"({"prompt": [[]]})",
       "prompt is empty: send at least one character or the prompt as token ids"},
  };
  for (const Case& c : refused) {
    SCOPED_TRACE(c.body);
    HttpError error = ErrorOf(Completions(c.body));
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, "prompt");
    EXPECT_EQ(error.message, c.message);
  }
  HttpError no_messages = ErrorOf(Chat(R"({"messages": []})"), OpenAiRoute::kChat);
  EXPECT_EQ(no_messages.param, "messages");
  EXPECT_EQ(no_messages.message, "messages is empty: send at least one message");
}

TEST(OpenAiRequestTest, CompletionsFieldsMapOntoTheProto) {
  absl::StatusOr<OpenAiRequest> parsed = Completions(R"({
    "prompt": [1, 450, 4996], "max_tokens": 8, "temperature": 0, "top_p": 0.9, "top_k": 40,
    "min_p": 0.05, "repetition_penalty": 1.1, "presence_penalty": 0.5,
    "frequency_penalty": -0.5, "seed": 7, "stop": "\n", "stop_token_ids": [2],
    "ignore_eos": true, "logprobs": 3, "stream": true, "stream_options": {"include_usage": true},
    "user": "ignored", "n": 1, "an_unknown_field": {"x": 1}})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::GenerateRequest& r = parsed->request;
  EXPECT_THAT(r.prompt_token_ids(), ElementsAre(1, 450, 4996));
  EXPECT_EQ(r.max_new_tokens(), 8u);
  EXPECT_FLOAT_EQ(r.temperature(), 0.0f);
  EXPECT_FLOAT_EQ(r.top_p(), 0.9f);
  EXPECT_EQ(r.top_k(), 40u);
  EXPECT_FLOAT_EQ(r.min_p(), 0.05f);
  EXPECT_FLOAT_EQ(r.repetition_penalty(), 1.1f);
  EXPECT_FLOAT_EQ(r.presence_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(r.frequency_penalty(), -0.5f);
  EXPECT_EQ(r.seed(), 7u);
  EXPECT_THAT(r.stop(), ElementsAre("\n"));
  EXPECT_THAT(r.stop_token_ids(), ElementsAre(2));
  EXPECT_TRUE(r.ignore_eos());
  EXPECT_EQ(r.top_logprobs(), 3u);
  EXPECT_TRUE(parsed->logprobs);
  EXPECT_TRUE(parsed->stream);
  EXPECT_TRUE(parsed->include_usage);
}

TEST(OpenAiRequestTest, ChatMessagesTextPartsAndMaxCompletionTokens) {
  absl::StatusOr<OpenAiRequest> parsed = Chat(R"({
    "messages": [{"role": "system", "content": "Be brief"},
                 {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                              {"type": "text", "text": "there"}]},
                 {"role": "assistant", "content": null}],
    "max_completion_tokens": 5, "max_tokens": 9, "logprobs": true, "top_logprobs": 2,
    "top_k": -1, "stop": ["a", "b"]})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::GenerateRequest& r = parsed->request;
  ASSERT_EQ(r.messages_size(), 3);
  EXPECT_EQ(r.messages(1).role(), "user");
  EXPECT_EQ(r.messages(1).content(), "Hi there");
  EXPECT_EQ(r.messages(2).content(), "");
  EXPECT_EQ(r.max_new_tokens(), 5u);  // max_completion_tokens wins
  EXPECT_TRUE(parsed->logprobs);
  EXPECT_EQ(r.top_logprobs(), 2u);
  EXPECT_EQ(r.top_k(), 0u);  // -1: off
  EXPECT_THAT(r.stop(), ElementsAre("a", "b"));
  // Chat without max tokens: 0, the server's default.
  absl::StatusOr<OpenAiRequest> plain = Chat(R"({"messages": [{"role": "user", "content": "x"}]})");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->request.has_max_new_tokens());
  EXPECT_EQ(plain->max_tokens_field, "max_tokens");
  EXPECT_EQ(parsed->max_tokens_field, "max_completion_tokens");
}

// OpenAI's tool use: tools, tool_calls (arguments as a string or an object),
// tool messages, names; parse_special_tokens; refusals by name.
TEST(OpenAiRequestTest, ChatToolsToolCallsAndParseSpecialTokens) {
  absl::StatusOr<OpenAiRequest> parsed = Chat(R"({
    "messages": [{"role": "user", "content": "Weather?", "name": "ann"},
                 {"role": "assistant", "content": null, "tool_calls": [
                   {"id": "c1", "type": "function",
                    "function": {"name": "get", "arguments": "{\"city\": \"Oslo\"}"}},
                   {"id": "c2", "type": "function", "function": {"name": "get", "arguments": {"a": 1}}}]},
                 {"role": "tool", "tool_call_id": "c1", "content": "5C"}],
    "tools": [{"type": "function", "function": {"name": "get"}}], "tool_choice": "auto",
    "parse_special_tokens": true})");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  const v1::GenerateRequest& r = parsed->request;
  EXPECT_EQ(r.messages(0).name(), "ann");
  ASSERT_EQ(r.messages(1).tool_calls_size(), 2);
  EXPECT_EQ(r.messages(1).tool_calls(0).id(), "c1");
  EXPECT_EQ(r.messages(1).tool_calls(0).function().arguments(), "{\"city\": \"Oslo\"}");
  EXPECT_EQ(r.messages(1).tool_calls(1).function().arguments(), "{\"a\":1}");
  EXPECT_EQ(r.messages(2).tool_call_id(), "c1");
  EXPECT_EQ(r.tools_json(), R"([{"function":{"name":"get"},"type":"function"}])");
  EXPECT_TRUE(r.parse_special_tokens());
  EXPECT_FALSE(Chat(R"({"messages": [{"role": "user", "content": "x"}]})")->request.parse_special_tokens());

  // The validator's mapping of the same: tool_calls as a JSON array for the template.
  RequestLimits limits;
  limits.max_messages = 8;
  absl::StatusOr<std::vector<ChatMessage>> messages = ConvertMessages(r.messages(), limits);
  ASSERT_TRUE(messages.ok()) << messages.status();
  EXPECT_TRUE((*messages)[1].content_null);
  EXPECT_EQ((*messages)[1].tool_calls_json,
            R"([{"id":"c1","type":"function","function":{"name":"get","arguments":"{\"city\": \"Oslo\"}"}},)"
            R"({"id":"c2","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}])");
  EXPECT_EQ((*messages)[2].tool_call_id, "c1");

  struct Case {
    const char* body;
    const char* param;
    const char* message;
  };
  const Case cases[] = {
      {R"({"messages": [{"role": "user", "content": "x"}], "tools": {}})", "tools", "tools must be an array, got an object"},
      {R"({"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"})", "tool_choice", "tool_choice \"required\" needs tools"},
      {R"({"messages": [{"role": "user", "content": "x", "name": 5}]})", "messages", "messages[0].name must be a string, got a number"},
      {R"({"messages": [{"role": "assistant", "tool_calls": [{"id": "c"}]}]})", "messages", "messages[0].tool_calls[0] must be {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}"},
      {R"({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": 1}}]}]})", "messages", "messages[0].tool_calls[0].function.name must be a string"},
      {R"({"messages": [{"role": "user", "content": "x"}], "parse_special_tokens": "yes"})", "parse_special_tokens", "parse_special_tokens must be a boolean, got a string"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    HttpError error = ErrorOf(Chat(c.body), OpenAiRoute::kChat);
    EXPECT_EQ(error.param, c.param);
    EXPECT_EQ(error.message, c.message);
  }
  HttpError completions = ErrorOf(Completions(R"({"prompt": "x", "tools": [{}]})"));
  EXPECT_EQ(completions.message, "tools apply to chat completions only (the chat template)");
  // The validator's tools_json is the body's tools.
  absl::Status bad_tools = InvalidField("tools_json", "tools_json must be a JSON array (as text), got object");
  HttpError renamed = ToHttpError(ForHttpFace(bad_tools, OpenAiRoute::kChat), OpenAiRoute::kChat);
  EXPECT_EQ(renamed.param, "tools");
  EXPECT_EQ(renamed.message, "tools must be a JSON array (as text), got object");
}

TEST(ApplyTemplateTest, LlamaCppShapes) {
  absl::StatusOr<v1::TokenizeRequest> request = ParseApplyTemplateRequest(Json::parse(
      R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})"));
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_TRUE(request->add_generation_prompt());  // llama.cpp's default
  EXPECT_EQ(request->tools_json(), R"([{"type":"function"}])");
  request = ParseApplyTemplateRequest(Json::parse(
      R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false})"));
  ASSERT_TRUE(request.ok());
  EXPECT_TRUE(request->has_add_generation_prompt());
  EXPECT_FALSE(request->add_generation_prompt());
  EXPECT_EQ(ParseApplyTemplateRequest(Json::parse(R"({})")).status().message(), "messages is required");
  EXPECT_EQ(ParseApplyTemplateRequest(Json::parse(R"([])")).status().message(),
            "the body must be a JSON object, got an array");
  absl::StatusOr<v1::TokenizeRequest> tokenize = ParseTokenizeRequest(Json::parse(
      R"({"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false,
          "parse_special_tokens": true})"));
  ASSERT_TRUE(tokenize.ok()) << tokenize.status();
  EXPECT_FALSE(tokenize->add_generation_prompt());
  EXPECT_TRUE(tokenize->parse_special_tokens());
}

TEST(OpenAiRequestTest, WrongTypesNameTheField) {
  struct Case {
    const char* body;
    const char* param;
    const char* message;
  };
  const Case cases[] = {
      {R"({"prompt": "x", "max_tokens": "ten"})", "max_tokens", "max_tokens must be an integer, got a string"},
      {R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens", "max_tokens must be an integer, got a number"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature", "temperature must be a number, got a string"},
      {R"({"prompt": "x", "stream": 1})", "stream", "stream must be a boolean, got a number"},
      {R"({"prompt": "x", "stop": 5})", "stop", "stop must be a string or an array of strings, got a number"},
      {R"({"prompt": "x", "stop": ["a", 1]})", "stop", "stop must be a string or an array of strings"},
      {R"({"prompt": "x", "seed": "s"})", "seed", "seed must be an integer, got a string"},
      {R"({"prompt": "x", "model": 3})", "model", "model must be a string, got a number"},
      {R"({"prompt": 5})", "prompt", "prompt must be a string or an array of token ids, got a number"},
      {R"({"prompt": {"text": "x"}})", "prompt", "prompt must be a string or an array of token ids, got an object"},
      {R"({"prompt": [1, "2"]})", "prompt", "prompt must be an array of token ids; [1] is a string"},
      {R"({"prompt": [1, 99999999999]})", "prompt", "prompt must be an array of token ids; [1] is out of range"},
      {R"({"max_tokens": 4})", "prompt", "prompt is required"},
      {R"({"prompt": "x", "n": 0})", "n", "n must be in [1, 8], got 0"},
      {R"({"prompt": "x", "n": -3})", "n", "n must be in [1, 8], got -3"},
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens", "max_tokens must be at least 1, got 0"},
      {R"({"prompt": "x", "top_p": 0})", "top_p", "top_p must be in (0, 1], got 0"},
      {R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty", "repetition_penalty must be in (0, 10], got 0"},
      {R"({"prompt": "x", "top_k": -2})", "top_k", "top_k must be -1 (off), 0 (off) or positive, got -2"},
      {R"({"prompt": "x", "seed": -1})", "seed", "seed must be >= 0, got -1"},
      {R"({"prompt": "x", "logprobs": -1})", "logprobs", "logprobs must be >= 0, got -1"},
      {R"({"prompt": "x", "echo": true})", "echo", "echo is not supported"},
      {R"({"prompt": "x", "best_of": 3})", "best_of", "best_of is not supported (only 1)"},
      {R"({"prompt": "x", "logit_bias": {"abc": 1}})", "logit_bias", "logit_bias[\"abc\"]: the key must be a token id (an integer, as a string)"},
      {R"({"prompt": "x", "logit_bias": {"5": "high"}})", "logit_bias", "logit_bias[\"5\"]: the bias must be a number, got a string"},
      {R"({"prompt": "x", "logit_bias": [1]})", "logit_bias", "logit_bias must be an object of token id -> bias, got an array"},
      {R"({"prompt": "x", "response_format": {"type": "xml"}})", "response_format", "response_format.type must be one of \"text\", \"json_object\", \"json_schema\", got \"xml\""},
      {R"({"prompt": "x", "response_format": "json"})", "response_format", "response_format must be an object, got a string"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema"}})", "response_format", "response_format.json_schema is required with type \"json_schema\""},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})", "response_format", "response_format.json_schema.name is required"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}})", "response_format", "response_format.json_schema.name must be a string of a-z, A-Z, 0-9, _ and - of at most 64 characters"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": 3}}})", "response_format", "response_format.json_schema.schema must be a JSON Schema object, got a number"},
      {R"({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}}})", "response_format", "response_format.json_schema.strict must be a boolean, got a string"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a+"}})", "structured_outputs", "response_format and structured_outputs.regex each constrain the output: set one constraint, not both"},
      {R"({"prompt": "x", "structured_outputs": {"regex": "a", "choice": ["b"]}})", "structured_outputs", "structured_outputs.choice and structured_outputs.regex each constrain the output: set one constraint, not both"},
      {R"({"prompt": "x", "structured_outputs": {"structural_tag": "t"}})", "structured_outputs", "structured_outputs.structural_tag is not supported (json, regex, choice, grammar, json_object are)"},
      {R"({"prompt": "x", "structured_outputs": {"choice": ["a", 2]}})", "structured_outputs", "structured_outputs.choice[1] must be a string, got a number"},
      {R"({"prompt": "x", "structured_outputs": {"json": "{not json"}})", "structured_outputs", "structured_outputs.json must be a JSON Schema (an object, or its JSON text)"},
      {R"({"prompt": "x", "guided_choice": 5})", "guided_choice", "guided_choice must be an array of strings, got a number"},
      {R"({"prompt": "x", "guided_regex": "a", "guided_grammar": "root ::= \"a\""})", "guided_grammar", "guided_regex and guided_grammar each constrain the output: set one constraint, not both"},
      {R"({"prompt": "x", "stream_options": true})", "stream_options", "stream_options must be an object, got a boolean"},
      // Found with tests/fuzz/openai_request_fuzz.cc: positive as doubles, 0 ("off") as the proto's floats.
      {R"({"prompt": "x", "top_p": 1e-50})", "top_p", "top_p must be in (0, 1], got 1e-50"},
      {R"({"prompt": "x", "repetition_penalty": 1e-46})", "repetition_penalty", "repetition_penalty must be in (0, 10], got 1e-46"},
      // Above int64: once wrapped to -1 ("seed must be >= 0, got -1").
      {R"({"prompt": "x", "seed": 18446744073709551615})", "seed", "seed must be at most 2^63 - 1, got 18446744073709551615"},
      {R"({"prompt": "x", "max_tokens": 9223372036854775808})", "max_tokens", "max_tokens must be at most 2^63 - 1, got 9223372036854775808"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    HttpError error = ErrorOf(Completions(c.body));
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.type, "invalid_request_error");
    EXPECT_EQ(error.param, c.param);
    EXPECT_EQ(error.message, c.message);
  }
  HttpError chat = ErrorOf(Chat(R"({"messages": [{"role": "user", "content": "x"}],
                                    "top_logprobs": 2})"),
                           OpenAiRoute::kChat);
  EXPECT_EQ(chat.param, "top_logprobs");
  EXPECT_EQ(chat.message, "top_logprobs needs \"logprobs\": true");
  chat = ErrorOf(Chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
                 OpenAiRoute::kChat);
  EXPECT_EQ(chat.param, "messages");
  EXPECT_THAT(chat.message, HasSubstr("only text is supported"));
  chat = ErrorOf(Chat(R"({"messages": "hello"})"), OpenAiRoute::kChat);
  EXPECT_EQ(chat.message, "messages must be an array, got a string");
  chat = ErrorOf(Chat(R"({"messages": [{"content": "x"}]})"), OpenAiRoute::kChat);
  EXPECT_EQ(chat.message, "messages[0].role must be a string");
  chat = ErrorOf(Chat(R"({"prompt": "x"})"), OpenAiRoute::kChat);
  EXPECT_EQ(chat.message, "messages is required");
  EXPECT_EQ(ErrorOf(ParseOpenAiRequest(OpenAiRoute::kChat, Json::array())).message,
            "the body must be a JSON object, got an array");
}

// The one validation path: what ParseOpenAiRequest passes, the gRPC face's
// validator judges, and its message comes back (ForHttpFace) with the body's
// own field names, in the message and in `param` (issue 18: the HTTP face
// named gRPC's fields).
TEST(OpenAiRequestTest, ValidatorMessagesComeBackWithTheOpenAiNames) {
  RequestLimits limits;
  limits.vocab_size = 100;
  limits.context_length = 32;
  limits.max_new_tokens_limit = 20;
  PromptEncoder encoder;
  encoder.tokenize = [](const std::string& text, bool) { return std::vector<int>(text.size(), 5); };
  encoder.render_chat = [](const std::vector<ChatMessage>& m,
                           const ChatRenderOptions&) -> absl::StatusOr<std::vector<int>> {
    return std::vector<int>(m.size(), 6);
  };
  struct Case {
    OpenAiRoute route;
    const char* body;
    const char* param;
    const char* message;
  };
  const Case cases[] = {
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "temperature": 500})", "temperature",
       "temperature must be in [0, 100], got 500"},
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "max_tokens": 21})", "max_tokens",
       "max_tokens 21 exceeds the server's limit 20"},
      {OpenAiRoute::kChat, R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 21})",
       "max_tokens", "max_tokens 21 exceeds the server's limit 20"},
      {OpenAiRoute::kChat,
       R"({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 21})",
       "max_completion_tokens", "max_completion_tokens 21 exceeds the server's limit 20"},
      // The prompt fits, max_tokens does not: max_tokens is the param, not prompt.
      {OpenAiRoute::kCompletions, R"({"prompt": "xxxxxxxxxxxxxxx", "max_tokens": 20})",
       "max_tokens",
       "the prompt (15 tokens) + max_tokens (20) exceeds the model's context length 32"},
      {OpenAiRoute::kChat,
       R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                        {"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                        {"role": "user", "content": "x"}],
           "max_completion_tokens": 20})",
       "max_completion_tokens",
       "the prompt (13 tokens) + max_completion_tokens (20) exceeds the model's context length 32"},
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "logprobs": 21})", "logprobs",
       "logprobs must be in [0, 20], got 21"},
      {OpenAiRoute::kChat,
       R"({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21})",
       "top_logprobs", "top_logprobs must be in [0, 20], got 21"},
      {OpenAiRoute::kCompletions, R"({"prompt": [1, 200]})", "prompt",
       "prompt[1] = 200 is outside the vocabulary [0, 100)"},
      {OpenAiRoute::kCompletions, R"({"prompt": [[1, 200]]})", "prompt",
       "prompt[1] = 200 is outside the vocabulary [0, 100)"},
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "top_p": 1.5})", "top_p",
       "top_p must be in (0, 1], got 1.5"},
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "stop": ["a", ""]})", "stop",
       "stop[1] is empty"},
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "stop_token_ids": [100]})", "stop_token_ids",
       "stop_token_ids[0] = 100 is outside the vocabulary [0, 100)"},
      {OpenAiRoute::kCompletions, R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty",
       "presence_penalty must be in [-2, 2], got 3"},
      {OpenAiRoute::kChat, R"({"messages": [{"role": "", "content": "x"}]})", "messages",
       "messages[0].role is empty"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(c.route, Json::parse(c.body));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    absl::StatusOr<GenerationRequest> validated =
        ToGenerationRequest(parsed->request, limits, encoder);
    ASSERT_FALSE(validated.ok());
    absl::Status face = ForHttpFace(validated.status(), c.route, parsed->max_tokens_field);
    EXPECT_EQ(face.code(), validated.status().code());
    HttpError error = ToHttpError(face, c.route);
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.param, c.param);
    EXPECT_EQ(error.message, c.message);
  }
  // /query-stream/'s fields: query and max_new_tokens (its own name).
  absl::StatusOr<QueryStreamRequest> query =
      ParseQueryStreamRequest(Json::parse(R"({"query": "xxxxxxxxxxxxxxx", "max_new_tokens": 30})"));
  ASSERT_TRUE(query.ok());
  for (bool chat : {false, true}) {
    absl::StatusOr<GenerationRequest> validated =
        ToGenerationRequest(ToGenerateRequest(*query, chat, 1), limits, encoder);
    ASSERT_FALSE(validated.ok());
    HttpError error = ToHttpError(
        ForHttpFace(validated.status(), OpenAiRoute::kQueryStream, "max_new_tokens"),
        OpenAiRoute::kQueryStream);
    EXPECT_EQ(error.param, "max_new_tokens");
    EXPECT_EQ(error.message, "max_new_tokens 30 exceeds the server's limit 20");
  }
  query->max_new_tokens = 20;
  absl::StatusOr<GenerationRequest> too_long =
      ToGenerationRequest(ToGenerateRequest(*query, false, 1), limits, encoder);
  ASSERT_FALSE(too_long.ok());
  HttpError context = ToHttpError(
      ForHttpFace(too_long.status(), OpenAiRoute::kQueryStream, "max_new_tokens"),
      OpenAiRoute::kQueryStream);
  EXPECT_EQ(context.param, "max_new_tokens");
  EXPECT_EQ(context.message,
            "the query (15 tokens) + max_new_tokens (20) exceeds the model's context length 32");
  query = ParseQueryStreamRequest(Json::parse(std::string(R"({"query": ")") +
                                              std::string(40, 'x') + "\"}"));
  ASSERT_TRUE(query.ok());
  absl::StatusOr<GenerationRequest> long_query =
      ToGenerationRequest(ToGenerateRequest(*query, false, 1), limits, encoder);
  ASSERT_FALSE(long_query.ok());
  HttpError error = ToHttpError(ForHttpFace(long_query.status(), OpenAiRoute::kQueryStream),
                                OpenAiRoute::kQueryStream);
  EXPECT_EQ(error.param, "query");
  EXPECT_EQ(error.message,
            "query is 40 tokens; at most 31 are allowed (the model's context length is 32)");
  // A whole word only; the face's own messages (a param already) are left alone;
  // other codes too.
  absl::Status word = ForHttpFace(absl::InvalidArgumentError("max_new_tokens_x and max_new_tokens"),
                                  OpenAiRoute::kCompletions);
  EXPECT_EQ(word.message(), "max_new_tokens_x and max_tokens");
  absl::Status own = absl::InvalidArgumentError("max_new_tokens must be at least 1, got 0");
  SetErrorParam(&own, "max_new_tokens");
  EXPECT_EQ(ForHttpFace(own, OpenAiRoute::kQueryStream), own);
  absl::Status unavailable = absl::UnavailableError("max_new_tokens");
  EXPECT_EQ(ForHttpFace(unavailable, OpenAiRoute::kCompletions), unavailable);
}

TEST(HttpErrorTest, StatusCodesAndBody) {
  EXPECT_EQ(ToHttpError(absl::UnauthenticatedError("no key")).status, 401);
  EXPECT_EQ(ToHttpError(absl::UnauthenticatedError("no key")).code, "invalid_api_key");
  EXPECT_EQ(ToHttpError(absl::ResourceExhaustedError("full")).status, 429);
  HttpError unavailable = ToHttpError(absl::UnavailableError("loading"));
  EXPECT_EQ(unavailable.status, 503);
  EXPECT_EQ(unavailable.retry_after_s, 1);
  EXPECT_EQ(ToHttpError(absl::InternalError("boom")).status, 500);
  EXPECT_EQ(ToHttpError(absl::FailedPreconditionError("messages: no chat")).status, 400);
  // The field comes from the status's payload (WithField), never from the text:
  EXPECT_EQ(ToHttpError(WithField(absl::FailedPreconditionError("messages: no chat"), "messages"))
                .param,
            "messages");
  EXPECT_EQ(ToHttpError(absl::FailedPreconditionError("messages: no chat")).param, "");
  EXPECT_EQ(ErrorBody(MakeHttpError(404, "invalid_request_error", "gone", "model_not_found",
                                    "model"))
                .dump(),
            R"({"error":{"message":"gone","type":"invalid_request_error","param":"model","code":"model_not_found"}})");
  EXPECT_EQ(ErrorBody(MakeHttpError(400, "invalid_request_error", "bad")).dump(),
            R"({"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}})");
}

TEST(QueryStreamTest, ParsesAndSamplesLikeTransformers) {
  absl::StatusOr<QueryStreamRequest> parsed =
      ParseQueryStreamRequest(Json::parse(R"({"query": "Hi", "max_new_tokens": 12})"));
  ASSERT_TRUE(parsed.ok());
  v1::GenerateRequest chat = ToGenerateRequest(*parsed, /*chat=*/true, 42);
  ASSERT_EQ(chat.messages_size(), 1);
  EXPECT_EQ(chat.messages(0).role(), "user");
  EXPECT_EQ(chat.messages(0).content(), "Hi");
  EXPECT_EQ(chat.max_new_tokens(), 12u);
  EXPECT_FLOAT_EQ(chat.temperature(), 1.0f);
  EXPECT_EQ(chat.top_k(), 50u);
  EXPECT_EQ(chat.seed(), 42u);
  EXPECT_EQ(ToGenerateRequest(*parsed, /*chat=*/false, 1).prompt(), "Hi");
  EXPECT_EQ(ParseQueryStreamRequest(Json::parse(R"({"max_new_tokens": 3})")).status().message(),
            "query is required");
  // The one rule for an empty prompt: refused by name (it once generated from nothing).
  absl::Status empty = ParseQueryStreamRequest(Json::parse(R"({"query": ""})")).status();
  EXPECT_EQ(empty.message(), "query is empty: send at least one character");
  EXPECT_EQ(ToHttpError(empty, OpenAiRoute::kQueryStream).param, "query");
  // max_new_tokens is set only when the body has it.
  absl::StatusOr<QueryStreamRequest> no_max = ParseQueryStreamRequest(Json::parse(R"({"query": "x"})"));
  ASSERT_TRUE(no_max.ok());
  EXPECT_FALSE(ToGenerateRequest(*no_max, false, 1).has_max_new_tokens());
  EXPECT_TRUE(chat.has_max_new_tokens());
  EXPECT_EQ(ParseQueryStreamRequest(Json::parse(R"({"query": "x", "max_new_tokens": "3"})"))
                .status()
                .message(),
            "max_new_tokens must be an integer, got a string");
}

TEST(TokenizeTest, VllmShapes) {
  absl::StatusOr<v1::TokenizeRequest> text =
      ParseTokenizeRequest(Json::parse(R"({"model": "m", "prompt": "Hello"})"));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->text(), "Hello");
  EXPECT_TRUE(text->add_special_tokens());  // vLLM's default
  absl::StatusOr<v1::TokenizeRequest> chat = ParseTokenizeRequest(
      Json::parse(R"({"messages": [{"role": "user", "content": "x"}]})"));
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(chat->messages_size(), 1);
  EXPECT_EQ(ParseTokenizeRequest(Json::parse(R"({})")).status().message(),
            "prompt or messages: exactly one must be set");
  absl::StatusOr<std::vector<int>> ids = ParseDetokenizeRequest(Json::parse(R"({"tokens": [1, 2]})"));
  ASSERT_TRUE(ids.ok());
  EXPECT_THAT(*ids, ElementsAre(1, 2));
  EXPECT_EQ(ParseDetokenizeRequest(Json::parse(R"({"tokens": "1"})")).status().message(),
            "tokens must be an array of token ids, got a string");
}

TEST(PieceTextTest, SpacesAndBytes) {
  EXPECT_EQ(PieceText("\xE2\x96\x81the"), " the");
  EXPECT_EQ(PieceText("<0x0A>"), "\n");
  EXPECT_EQ(PieceText("<0xE2>"), "\xE2");
  EXPECT_EQ(PieceText("<0xZZ>"), "<0xZZ>");
  EXPECT_EQ(PieceText("abc"), "abc");
}

// The SSE events of a stream, parsed back.
std::vector<Json> Events(const std::string& sse, bool* done) {
  std::vector<Json> events;
  *done = false;
  size_t at = 0;
  while (at < sse.size()) {
    size_t end = sse.find("\n\n", at);
    EXPECT_NE(end, std::string::npos) << "an event without its blank line";
    if (end == std::string::npos) break;
    std::string event = sse.substr(at, end - at);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
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

v1::GenerateResponse Message(const std::string& text, std::vector<int> ids) {
  v1::GenerateResponse message;
  message.set_text(text);
  for (int id : ids) {
    v1::Token* token = message.add_tokens();
    token->set_id(id);
    token->set_logprob(-0.5f);
    v1::TokenLogprob* alt = token->add_top_logprobs();
    alt->set_id(id);
    alt->set_logprob(-0.5f);
  }
  return message;
}

v1::GenerateResponse Last(v1::FinishReason reason) {
  v1::GenerateResponse message;
  message.set_finish_reason(reason);
  message.mutable_usage()->set_prompt_tokens(4);
  message.mutable_usage()->set_completion_tokens(2);
  return message;
}

std::string Piece(int id) { return id == 1 ? "\xE2\x96\x81Hi" : "<0x21>"; }

TEST(OpenAiEncoderTest, ChatStreamAsOpenAiClientsParseIt) {
  absl::StatusOr<OpenAiRequest> request = Chat(R"({"messages": [{"role": "user", "content": "x"}],
      "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(request.ok());
  OpenAiEncoder encoder(*request, "chatcmpl-1", 1700000000, "tiny", Piece);
  std::string sse = encoder.StreamStart() +
                    encoder.StreamMessage(Message(" Hi", {1}), false, absl::OkStatus()) +
                    encoder.StreamMessage(Message("!", {2}), false, absl::OkStatus()) +
                    encoder.StreamMessage(Last(v1::FINISH_REASON_EOS), true, absl::OkStatus());
  bool done = false;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 5u);
  for (const Json& e : events) {
    EXPECT_EQ(e["id"], "chatcmpl-1");
    EXPECT_EQ(e["created"], 1700000000);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["model"], "tiny");
  }
  EXPECT_EQ(events[0]["choices"][0]["delta"], Json::parse(R"({"role": "assistant", "content": ""})"));
  EXPECT_EQ(events[1]["choices"][0]["delta"]["content"], " Hi");
  EXPECT_TRUE(events[1]["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(events[1]["usage"].is_null());
  EXPECT_EQ(events[2]["choices"][0]["delta"]["content"], "!");
  EXPECT_EQ(events[3]["choices"][0]["delta"], Json::object());
  EXPECT_EQ(events[3]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[4]["choices"], Json::array());
  EXPECT_EQ(events[4]["usage"],
            Json::parse(R"({"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6})"));
}

// n > 1: the choices interleaved with their index, one usage (the prompt once,
// completions summed), one [DONE]; a body with n choices.
TEST(OpenAiEncoderTest, ChoicesAreInterleavedWithTheirIndexAndCountedOnce) {
  absl::StatusOr<OpenAiRequest> request = Chat(R"({"messages": [{"role": "user", "content": "x"}],
      "n": 2, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->request.n(), 2u);
  auto indexed = [](v1::GenerateResponse m, int index) {
    m.set_index(index);
    return m;
  };
  OpenAiChoicesEncoder encoder(2, *request, "chatcmpl-1", 1, "tiny", Piece);
  // One statement each: the operands of + are evaluated in no fixed order.
  std::string sse = encoder.StreamStart();
  sse += encoder.StreamMessage(indexed(Message(" Hi", {1}), 1), false, absl::OkStatus());
  sse += encoder.StreamMessage(indexed(Message("!", {2}), 0), false, absl::OkStatus());
  sse += encoder.StreamMessage(indexed(Last(v1::FINISH_REASON_LENGTH), 1), false, absl::OkStatus());
  sse += encoder.StreamMessage(indexed(Last(v1::FINISH_REASON_EOS), 0), true, absl::OkStatus());
  bool done = false;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[0]["choices"][0]["index"], 0);  // a role chunk per choice
  EXPECT_EQ(events[1]["choices"][0]["index"], 1);
  EXPECT_EQ(events[2]["choices"][0]["index"], 1);
  EXPECT_EQ(events[2]["choices"][0]["delta"]["content"], " Hi");
  EXPECT_EQ(events[3]["choices"][0]["index"], 0);
  EXPECT_EQ(events[3]["choices"][0]["delta"]["content"], "!");
  EXPECT_EQ(events[4]["choices"][0]["index"], 1);
  EXPECT_EQ(events[4]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(events[5]["choices"][0]["index"], 0);
  EXPECT_EQ(events[5]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[6]["usage"],
            Json::parse(R"({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8})"));

  OpenAiChoicesEncoder body(2, *request, "chatcmpl-2", 1, "tiny", Piece);
  body.Accumulate(indexed(Message("b", {2}), 1));
  body.Accumulate(indexed(Message("a", {2}), 0));
  body.Accumulate(indexed(Last(v1::FINISH_REASON_EOS), 0));
  body.Accumulate(indexed(Last(v1::FINISH_REASON_LENGTH), 1));
  Json json = Json::parse(body.Body().dump());
  ASSERT_EQ(json["choices"].size(), 2u);
  EXPECT_EQ(json["choices"][0]["index"], 0);
  EXPECT_EQ(json["choices"][0]["message"]["content"], "a");
  EXPECT_EQ(json["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(json["choices"][1]["index"], 1);
  EXPECT_EQ(json["choices"][1]["message"]["content"], "b");
  EXPECT_EQ(json["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(json["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(json["usage"]["completion_tokens"], 4);
}

TEST(OpenAiEncoderTest, OneChoiceIsWhatOneEncoderWrites) {
  absl::StatusOr<OpenAiRequest> request = Completions(R"({"prompt": "x", "stream": true,
      "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(request.ok());
  OpenAiEncoder one(*request, "cmpl-1", 1, "tiny", Piece);
  OpenAiChoicesEncoder wrapped(1, *request, "cmpl-1", 1, "tiny", Piece);
  for (bool last : {false, true}) {
    v1::GenerateResponse m = last ? Last(v1::FINISH_REASON_STOP) : Message(" Hi", {1});
    EXPECT_EQ(wrapped.StreamMessage(m, last, absl::OkStatus()), one.StreamMessage(m, last, absl::OkStatus()));
  }
}

TEST(OpenAiEncoderTest, CompletionsStreamWithoutUsageEndsWithLength) {
  absl::StatusOr<OpenAiRequest> request = Completions(R"({"prompt": "x", "stream": true})");
  ASSERT_TRUE(request.ok());
  OpenAiEncoder encoder(*request, "cmpl-1", 1, "tiny", Piece);
  EXPECT_EQ(encoder.StreamStart(), "");
  std::string sse = encoder.StreamMessage(Message(" Hi", {1}), false, absl::OkStatus()) +
                    encoder.StreamMessage(Last(v1::FINISH_REASON_LENGTH), true, absl::OkStatus());
  bool done = false;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "text_completion");
  EXPECT_EQ(events[0]["choices"][0]["text"], " Hi");
  EXPECT_FALSE(events[0].contains("usage"));
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "length");
}

TEST(OpenAiEncoderTest, AnErrorAfterTheStartIsAnEventThenDone) {
  absl::StatusOr<OpenAiRequest> request = Completions(R"({"prompt": "x", "stream": true})");
  ASSERT_TRUE(request.ok());
  OpenAiEncoder encoder(*request, "cmpl-1", 1, "tiny", Piece);
  std::string sse = encoder.StreamMessage(Message("ab", {1}), true,
                                          absl::UnavailableError("the server is shutting down"));
  bool done = false;
  std::vector<Json> events = Events(sse, &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0]["choices"][0]["text"], "ab");
  EXPECT_EQ(events[1]["error"]["message"], "the server is shutting down");
  EXPECT_EQ(events[1]["error"]["type"], "service_unavailable");
  events = Events(encoder.StreamError(absl::InternalError("boom")), &done);
  EXPECT_TRUE(done);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0]["error"]["message"], "boom");
}

TEST(OpenAiEncoderTest, LogprobsInOpenAisShapes) {
  absl::StatusOr<OpenAiRequest> completions = Completions(R"({"prompt": "x", "logprobs": 1})");
  ASSERT_TRUE(completions.ok());
  OpenAiEncoder encoder(*completions, "cmpl-1", 1, "tiny", Piece);
  encoder.Accumulate(Message(" Hi", {1}));
  encoder.Accumulate(Message("!", {2}));
  encoder.Accumulate(Last(v1::FINISH_REASON_STOP));
  Json body = Json::parse(encoder.Body().dump());
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["choices"][0]["text"], " Hi!");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["choices"][0]["logprobs"]["tokens"], Json::parse(R"([" Hi", "!"])"));
  EXPECT_EQ(body["choices"][0]["logprobs"]["token_logprobs"], Json::parse("[-0.5, -0.5]"));
  EXPECT_EQ(body["choices"][0]["logprobs"]["top_logprobs"][0], Json::parse(R"({" Hi": -0.5})"));
  EXPECT_EQ(body["choices"][0]["logprobs"]["text_offset"], Json::parse("[0, 3]"));
  EXPECT_EQ(body["usage"]["total_tokens"], 6);

  absl::StatusOr<OpenAiRequest> chat = Chat(R"({"messages": [{"role": "user", "content": "x"}],
                                                "logprobs": true, "top_logprobs": 1})");
  ASSERT_TRUE(chat.ok());
  OpenAiEncoder chat_encoder(*chat, "chatcmpl-1", 1, "tiny", Piece);
  chat_encoder.Accumulate(Message("!", {2}));
  chat_encoder.Accumulate(Last(v1::FINISH_REASON_LENGTH));
  Json chat_body = Json::parse(chat_encoder.Body().dump());
  EXPECT_EQ(chat_body["object"], "chat.completion");
  EXPECT_EQ(chat_body["choices"][0]["message"],
            Json::parse(R"({"role": "assistant", "content": "!"})"));
  EXPECT_EQ(chat_body["choices"][0]["logprobs"]["content"][0],
            Json::parse(R"({"token": "!", "logprob": -0.5, "bytes": [33],
                            "top_logprobs": [{"token": "!", "logprob": -0.5, "bytes": [33]}]})"));
}

// Found by tests/fuzz/openai_encoder_fuzz.cc: the uint32 counts were kept as
// int, so counts above 2^31 came out negative and their sum overflowed.
TEST(OpenAiEncoderTest, UsageKeepsTheProtosUnsignedCounts) {
  absl::StatusOr<OpenAiRequest> request = Completions(R"({"prompt": "x"})");
  ASSERT_TRUE(request.ok());
  OpenAiEncoder encoder(*request, "c", 1, "tiny", Piece);
  v1::GenerateResponse last = Last(v1::FINISH_REASON_LENGTH);
  last.mutable_usage()->set_prompt_tokens(4294967295u);
  last.mutable_usage()->set_completion_tokens(2147483648u);
  encoder.Accumulate(last);
  EXPECT_EQ(Json::parse(DumpJson(encoder.Body()))["usage"],
            Json::parse(R"({"prompt_tokens": 4294967295, "completion_tokens": 2147483648,
                            "total_tokens": 6442450943})"));
}

TEST(OpenAiEncoderTest, InvalidUtf8IsReplacedNotThrown) {
  absl::StatusOr<OpenAiRequest> chat = Chat(R"({"messages": [{"role": "user", "content": "x"}],
                                                "logprobs": true})");
  ASSERT_TRUE(chat.ok());
  // A byte piece that is half a character.
  OpenAiEncoder encoder(*chat, "c", 1, "tiny", [](int) { return std::string("<0xE2>"); });
  encoder.Accumulate(Message("", {9}));
  encoder.Accumulate(Last(v1::FINISH_REASON_LENGTH));  // lists the token its text never reached
  std::string dumped = DumpJson(encoder.Body());
  Json body = Json::parse(dumped);
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["token"], "\xEF\xBF\xBD");
  EXPECT_EQ(body["choices"][0]["logprobs"]["content"][0]["bytes"], Json::parse("[226]"));
}

// ---- issue 18: logprobs list the tokens of the text returned ----

// " Hello", " wor", "ld", "</s>" (a control token), "!".
std::string StopPiece(int id) {
  switch (id) {
    case 1: return "\xE2\x96\x81Hello";
    case 2: return "\xE2\x96\x81wor";
    case 3: return "ld";
    case 4: return "</s>";
    case 6: return "<0xFF>";  // no character: decoded as U+FFFD
    case 7: return "ab";
    case 8: return "<0xE2>";  // "€": E2 82 AC
    case 9: return "<0x82>";
    case 10: return "<0xAC>";
    default: return "!";
  }
}

v1::GenerateResponse Final(v1::GenerateResponse message, v1::FinishReason reason) {
  message.set_finish_reason(reason);
  message.mutable_usage()->set_prompt_tokens(4);
  message.mutable_usage()->set_completion_tokens(message.tokens_size());
  return message;
}

// The chat stream's content and its logprobs tokens, each joined.
void StreamChat(const std::vector<v1::GenerateResponse>& messages, std::string* content,
                std::string* tokens, int* chunks_with_logprobs) {
  absl::StatusOr<OpenAiRequest> chat = Chat(R"({"messages": [{"role": "user", "content": "x"}],
      "logprobs": true, "stream": true})");
  ASSERT_TRUE(chat.ok());
  OpenAiEncoder encoder(*chat, "c", 1, "tiny", StopPiece);
  encoder.set_hidden_token([](int id) { return id == 4; });
  std::string sse = encoder.StreamStart();
  for (size_t i = 0; i < messages.size(); ++i) {
    sse += encoder.StreamMessage(messages[i], i + 1 == messages.size(), absl::OkStatus());
  }
  bool done = false;
  *chunks_with_logprobs = 0;
  for (const Json& event : Events(sse, &done)) {
    const Json& choice = event["choices"][0];
    if (choice["delta"].contains("content")) *content += choice["delta"]["content"].get<std::string>();
    if (choice["logprobs"].is_null()) continue;
    ++*chunks_with_logprobs;
    for (const Json& entry : choice["logprobs"]["content"]) *tokens += entry["token"].get<std::string>();
  }
  EXPECT_TRUE(done);
}

TEST(OpenAiEncoderTest, LogprobsLeaveOutTheStopStringsTokens) {
  // As the engine sends a stop at " world": " wor" could start it and is held
  // back (its token comes with no text), "ld" completes it (nothing returned).
  std::vector<v1::GenerateResponse> held = {
      Message(" Hello", {1}), Message("", {2}), Final(Message("", {3}), v1::FINISH_REASON_STOP)};
  std::string content, tokens;
  int chunks = 0;
  StreamChat(held, &content, &tokens, &chunks);
  EXPECT_EQ(content, " Hello");
  EXPECT_EQ(tokens, content);
  EXPECT_EQ(chunks, 1);  // no chunk for the held token
  // A stop at "ld": " wor" is returned, the stop string's token is not listed.
  std::vector<v1::GenerateResponse> at_ld = {
      Message(" Hello", {1}), Message(" wor", {2}), Final(Message("", {3}), v1::FINISH_REASON_STOP)};
  content.clear();
  tokens.clear();
  StreamChat(at_ld, &content, &tokens, &chunks);
  EXPECT_EQ(content, " Hello wor");
  EXPECT_EQ(tokens, content);
  // EOS: its token ("</s>", a control token) is no text of the reply.
  std::vector<v1::GenerateResponse> eos = {Message(" Hello", {1}),
                                           Final(Message("", {4}), v1::FINISH_REASON_EOS)};
  content.clear();
  tokens.clear();
  StreamChat(eos, &content, &tokens, &chunks);
  EXPECT_EQ(content, " Hello");
  EXPECT_EQ(tokens, content);
  // A token that straddles the stop string's start is listed (its text goes
  // on into the stop string): the stop " world!"... here "r" of " wor" came out.
  std::vector<v1::GenerateResponse> straddle = {
      Message(" Hello", {1}), Message(" w", {2}), Final(Message("", {3}), v1::FINISH_REASON_STOP)};
  content.clear();
  tokens.clear();
  StreamChat(straddle, &content, &tokens, &chunks);
  EXPECT_EQ(content, " Hello w");
  EXPECT_EQ(tokens, " Hello wor");
  // A length ending lists every token, including a held one (and a control
  // token in the middle, which covers no text).
  std::vector<v1::GenerateResponse> length = {
      Message(" Hello", {1}), Message("", {4}), Message("", {2}),
      Final(Message(" wor", {}), v1::FINISH_REASON_LENGTH)};
  content.clear();
  tokens.clear();
  StreamChat(length, &content, &tokens, &chunks);
  EXPECT_EQ(content, " Hello wor");
  EXPECT_EQ(tokens, " Hello</s> wor");

  // Byte pieces cover the bytes the engine decodes them to: a byte of no
  // character is U+FFFD (3 bytes), so "ab", held as the start of a stop
  // string "abld", is not reached by the text.
  std::vector<v1::GenerateResponse> invalid = {
      Message("\xEF\xBF\xBD", {6}), Message("", {7}), Final(Message("", {3}), v1::FINISH_REASON_STOP)};
  content.clear();
  tokens.clear();
  StreamChat(invalid, &content, &tokens, &chunks);
  EXPECT_EQ(content, "\xEF\xBF\xBD");
  EXPECT_EQ(tokens, "\xEF\xBF\xBD");  // the byte piece as JSON has it
  // A character split over three byte pieces comes out once complete.
  std::vector<v1::GenerateResponse> euro = {
      Message("", {8}), Message("", {9}), Message("\xE2\x82\xAC", {10}), Message("", {7}),
      Final(Message("", {3}), v1::FINISH_REASON_STOP)};
  content.clear();
  tokens.clear();
  StreamChat(euro, &content, &tokens, &chunks);
  EXPECT_EQ(content, "\xE2\x82\xAC");
  EXPECT_EQ(chunks, 1);  // the three bytes' entries come with the character

  // One JSON body, completions: the same rule, and text_offset into the text.
  absl::StatusOr<OpenAiRequest> completions = Completions(R"({"prompt": "x", "logprobs": 0})");
  ASSERT_TRUE(completions.ok());
  OpenAiEncoder encoder(*completions, "cmpl-1", 1, "tiny", StopPiece);
  encoder.set_hidden_token([](int id) { return id == 4; });
  for (const v1::GenerateResponse& message :
       {Message(" Hello", {1, 4}), Message(" wor", {2}), Message("", {3}),
        Final(Message("", {5}), v1::FINISH_REASON_STOP)}) {
    encoder.Accumulate(message);
  }
  Json body = Json::parse(DumpJson(encoder.Body()));
  EXPECT_EQ(body["choices"][0]["text"], " Hello wor");
  EXPECT_EQ(body["choices"][0]["logprobs"]["tokens"], Json::parse(R"([" Hello", "</s>", " wor"])"));
  EXPECT_EQ(body["choices"][0]["logprobs"]["text_offset"], Json::parse("[0, 6, 6]"));
  EXPECT_EQ(body["choices"][0]["logprobs"]["token_logprobs"].size(), 3u);
  EXPECT_EQ(body["choices"][0]["logprobs"]["top_logprobs"].size(), 3u);
}

// ---- issue 18: lone surrogate escapes ----

TEST(JsonBodyTest, LoneSurrogateEscapesBecomeTheReplacementCharacter) {
  const std::string fffd = "\xEF\xBF\xBD";
  struct Case {
    std::string body;
    std::string prompt;
  };
  const Case cases[] = {
      {R"({"prompt": "Hello \udc80 world"})", "Hello " + fffd + " world"},  // a lone low one
      {R"({"prompt": "a\ud83dz"})", "a" + fffd + "z"},                       // high, then text
      {R"({"prompt": "a\uD83D\n"})", "a" + fffd + "\n"},                     // high, then an escape
      {R"({"prompt": "end\ud83d"})", "end" + fffd},                          // high, at the end
      {R"({"prompt": "\ud83d\ud83d\ude00"})", fffd + "\xF0\x9F\x98\x80"},    // lone high, then a pair
      {R"({"prompt": "\udc80\udc80", "\udfff": 1})", fffd + fffd},           // in a key too
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    EXPECT_THROW(Json::parse(c.body), Json::parse_error);  // why this exists
    std::optional<std::string> replaced = ReplaceLoneSurrogates(c.body);
    ASSERT_TRUE(replaced.has_value());
    Json body = Json::parse(*replaced);
    EXPECT_EQ(body["prompt"], c.prompt);
  }
  // Nothing to replace: a valid pair decodes to its character, an escaped
  // backslash before "u" is no escape, and text outside strings is not touched.
  for (const char* body : {R"({"prompt": "\ud83d\ude00!"})", R"({"prompt": "\\udc80"})",
                           R"({"prompt": "\"\\\ud83d\ude00"})", R"({"a": 1})", ""}) {
    SCOPED_TRACE(body);
    EXPECT_FALSE(ReplaceLoneSurrogates(body).has_value());
  }
  EXPECT_EQ(Json::parse(R"({"prompt": "\ud83d\ude00!"})")["prompt"], "\xF0\x9F\x98\x80!");
  EXPECT_EQ(Json::parse(R"({"prompt": "\\udc80"})")["prompt"], "\\udc80");
  // An escaped quote does not end the string: the surrogate after it is in it.
  std::optional<std::string> quoted = ReplaceLoneSurrogates(R"({"prompt": "say \"\udc80\""})");
  ASSERT_TRUE(quoted.has_value());
  EXPECT_EQ(Json::parse(*quoted)["prompt"], "say \"" + fffd + "\"");
}

}  // namespace
}  // namespace streamgen
