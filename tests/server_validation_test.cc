// GenerateRequest -> GenerationRequest: every INVALID_ARGUMENT case of the
// issue, each asserting the field named in the message, and the defaults.
#include "server/validation.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

RequestLimits Limits() {
  RequestLimits limits;
  limits.vocab_size = 100;
  limits.context_length = 32;
  limits.default_max_new_tokens = 8;
  limits.max_new_tokens_limit = 20;
  limits.max_stop_strings = 2;
  limits.max_stop_string_bytes = 5;
  limits.max_messages = 3;
  return limits;
}

// Text: BOS (1) then one id per byte (mod 90, + 10). Chat: 7 then one id per message.
PromptEncoder Encoder() {
  PromptEncoder encoder;
  encoder.tokenize = [](const std::string& text, bool) {
    std::vector<int> ids = {1};
    for (unsigned char c : text) ids.push_back(10 + c % 90);
    return ids;
  };
  encoder.render_chat = [](const std::vector<ChatMessage>& messages, const ChatRenderOptions&)
      -> absl::StatusOr<std::vector<int>> {
    if (messages.back().role != "user") {
      return absl::InvalidArgumentError("messages[0].role: the last message must be from the user");
    }
    std::vector<int> ids = {7};
    for (size_t i = 0; i < messages.size(); ++i) ids.push_back(static_cast<int>(20 + i));
    return ids;
  };
  return encoder;
}

v1::GenerateRequest Prompt(const std::string& text) {
  v1::GenerateRequest request;
  request.set_prompt(text);
  return request;
}

absl::Status Convert(const v1::GenerateRequest& request, RequestLimits limits = Limits()) {
  return ToGenerationRequest(request, limits, Encoder()).status();
}

void ExpectInvalid(const v1::GenerateRequest& request, const std::string& text,
                   RequestLimits limits = Limits()) {
  absl::Status status = Convert(request, limits);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(text));
}

TEST(ValidationTest, TextPromptIsTokenizedAndDefaultsAreNeutral) {
  absl::StatusOr<GenerationRequest> out = ToGenerationRequest(Prompt("ab"), Limits(), Encoder());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->prompt_token_ids, ElementsAre(1, 10 + 'a' % 90, 10 + 'b' % 90));
  EXPECT_TRUE(out->prompt.empty());
  EXPECT_EQ(out->max_new_tokens, 8);
  EXPECT_EQ(out->sampling.temperature, 0.0f);
  EXPECT_EQ(out->sampling.top_p, 1.0f);
  EXPECT_EQ(out->sampling.top_k, 0);
  EXPECT_EQ(out->sampling.min_p, 0.0f);
  EXPECT_EQ(out->sampling.repetition_penalty, 1.0f);
  EXPECT_EQ(out->sampling.presence_penalty, 0.0f);
  EXPECT_EQ(out->sampling.frequency_penalty, 0.0f);
  EXPECT_FALSE(out->sampling.seed.has_value());
}

TEST(ValidationTest, SetValuesAreCarried) {
  v1::GenerateRequest request = Prompt("x");
  request.set_temperature(0.7f);
  request.set_top_k(5);
  request.set_top_p(0.9f);
  request.set_min_p(0.05f);
  request.set_repetition_penalty(1.2f);
  request.set_presence_penalty(-0.5f);
  request.set_frequency_penalty(2.0f);
  request.set_seed(0);  // 0 is a valid seed: presence counts
  request.add_stop("ab");
  request.add_stop_token_ids(99);
  request.set_ignore_eos(true);
  request.set_top_logprobs(20);
  request.set_max_new_tokens(20);
  absl::StatusOr<GenerationRequest> out = ToGenerationRequest(request, Limits(), Encoder());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FLOAT_EQ(out->sampling.temperature, 0.7f);
  EXPECT_EQ(out->sampling.top_k, 5);
  EXPECT_FLOAT_EQ(out->sampling.top_p, 0.9f);
  EXPECT_FLOAT_EQ(out->sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(out->sampling.repetition_penalty, 1.2f);
  EXPECT_FLOAT_EQ(out->sampling.presence_penalty, -0.5f);
  EXPECT_FLOAT_EQ(out->sampling.frequency_penalty, 2.0f);
  ASSERT_TRUE(out->sampling.seed.has_value());
  EXPECT_EQ(*out->sampling.seed, 0u);
  EXPECT_THAT(out->stop, ElementsAre("ab"));
  EXPECT_THAT(out->stop_token_ids, ElementsAre(99));
  EXPECT_TRUE(out->ignore_eos);
  EXPECT_EQ(out->top_logprobs, 20);
  EXPECT_EQ(out->max_new_tokens, 20);
}

TEST(ValidationTest, TopKBeyondTheVocabularyIsClampedNotOverflowed) {
  v1::GenerateRequest request = Prompt("x");
  request.set_top_k(std::numeric_limits<uint32_t>::max());
  absl::StatusOr<GenerationRequest> out = ToGenerationRequest(request, Limits(), Encoder());
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->sampling.top_k, 100);
}

TEST(ValidationTest, NoPromptSource) {
  ExpectInvalid(v1::GenerateRequest(), "exactly one of prompt, prompt_token_ids, messages");
  ExpectInvalid(v1::GenerateRequest(), "none is");
}

TEST(ValidationTest, SeveralPromptSources) {
  v1::GenerateRequest request = Prompt("x");
  request.add_prompt_token_ids(5);
  ExpectInvalid(request, "got prompt and prompt_token_ids");
  v1::GenerateRequest chat;
  chat.add_prompt_token_ids(5);
  chat.add_messages()->set_role("user");
  ExpectInvalid(chat, "got prompt_token_ids and messages");
}

TEST(ValidationTest, PromptIdsOutsideTheVocabulary) {
  v1::GenerateRequest request;
  request.add_prompt_token_ids(5);
  request.add_prompt_token_ids(100);
  ExpectInvalid(request, "prompt_token_ids[1] = 100 is outside the vocabulary [0, 100)");
  request.set_prompt_token_ids(1, -1);
  ExpectInvalid(request, "prompt_token_ids[1] = -1");
}

TEST(ValidationTest, PromptIdsAreUsedAsGiven) {
  v1::GenerateRequest request;
  request.add_prompt_token_ids(5);
  request.add_prompt_token_ids(6);
  absl::StatusOr<GenerationRequest> out = ToGenerationRequest(request, Limits(), Encoder());
  ASSERT_TRUE(out.ok());
  EXPECT_THAT(out->prompt_token_ids, ElementsAre(5, 6));
}

TEST(ValidationTest, Temperature) {
  v1::GenerateRequest request = Prompt("x");
  request.set_temperature(-0.1f);
  ExpectInvalid(request, "temperature must be in [0, 100], got -0.1");
  request.set_temperature(100.5f);
  ExpectInvalid(request, "temperature");
  request.set_temperature(std::nanf(""));
  ExpectInvalid(request, "temperature");
  request.set_temperature(100.0f);
  EXPECT_TRUE(Convert(request).ok());
}

TEST(ValidationTest, TopP) {
  v1::GenerateRequest request = Prompt("x");
  request.set_top_p(1.5f);
  ExpectInvalid(request, "top_p must be in (0, 1]");
  request.set_top_p(-0.2f);
  ExpectInvalid(request, "top_p");
  request.set_top_p(std::nanf(""));
  ExpectInvalid(request, "top_p");
  request.set_top_p(1.0f);
  EXPECT_TRUE(Convert(request).ok());
}

TEST(ValidationTest, MinP) {
  v1::GenerateRequest request = Prompt("x");
  request.set_min_p(1.0f);
  ExpectInvalid(request, "min_p must be in [0, 1), got 1");
  request.set_min_p(-0.01f);
  ExpectInvalid(request, "min_p");
}

TEST(ValidationTest, Penalties) {
  v1::GenerateRequest request = Prompt("x");
  request.set_repetition_penalty(-1.0f);
  ExpectInvalid(request, "repetition_penalty must be in (0, 10]");
  request.set_repetition_penalty(10.5f);
  ExpectInvalid(request, "repetition_penalty");
  request.set_repetition_penalty(10.0f);
  request.set_presence_penalty(2.5f);
  ExpectInvalid(request, "presence_penalty must be in [-2, 2], got 2.5");
  request.set_presence_penalty(-2.0f);
  request.set_frequency_penalty(-3.0f);
  ExpectInvalid(request, "frequency_penalty must be in [-2, 2], got -3");
  request.set_frequency_penalty(0.0f);
  EXPECT_TRUE(Convert(request).ok());
}

TEST(ValidationTest, MaxNewTokensAboveTheLimit) {
  v1::GenerateRequest request = Prompt("x");
  request.set_max_new_tokens(21);
  ExpectInvalid(request, "max_new_tokens 21 exceeds the server's limit 20");
}

TEST(ValidationTest, PromptPlusMaxNewTokensBeyondTheContext) {
  v1::GenerateRequest request = Prompt(std::string(20, 'a'));  // 21 tokens with BOS
  request.set_max_new_tokens(12);
  ExpectInvalid(request, "prompt (21 tokens) + max_new_tokens (12) exceeds the model's context length 32");
  request.set_max_new_tokens(11);
  EXPECT_TRUE(Convert(request).ok());
}

TEST(ValidationTest, DefaultMaxNewTokensIsClampedToTheContextLeft) {
  absl::StatusOr<GenerationRequest> out =
      ToGenerationRequest(Prompt(std::string(27, 'a')), Limits(), Encoder());  // 28 tokens
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->max_new_tokens, 4);
}

TEST(ValidationTest, PromptLongerThanTheContext) {
  ExpectInvalid(Prompt(std::string(31, 'a')),
                "prompt is 32 tokens; at most 31 are allowed (the model's context length is 32)");
  RequestLimits limits = Limits();
  limits.max_prompt_tokens = 4;
  ExpectInvalid(Prompt("abcd"), "prompt is 5 tokens; at most 4", limits);
}

TEST(ValidationTest, StopStrings) {
  v1::GenerateRequest request = Prompt("x");
  request.add_stop("a");
  request.add_stop("");
  ExpectInvalid(request, "stop[1] is empty");
  request.set_stop(1, "b");
  request.add_stop("c");
  ExpectInvalid(request, "stop has 3 strings; at most 2 are allowed");
  request.mutable_stop()->RemoveLast();
  request.set_stop(0, "abcdef");
  ExpectInvalid(request, "stop[0] is 6 bytes; at most 5 are allowed");
}

TEST(ValidationTest, StopTokenIdsOutsideTheVocabulary) {
  v1::GenerateRequest request = Prompt("x");
  request.add_stop_token_ids(2);
  request.add_stop_token_ids(1000);
  ExpectInvalid(request, "stop_token_ids[1] = 1000 is outside the vocabulary");
}

TEST(ValidationTest, LogitBiasIsCarriedInIdOrderAndCheckedByName) {
  v1::GenerateRequest request = Prompt("x");
  (*request.mutable_logit_bias())[42] = -100.0f;
  (*request.mutable_logit_bias())[3] = 2.5f;
  absl::StatusOr<GenerationRequest> out = ToGenerationRequest(request, Limits(), Encoder());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->sampling.logit_bias,
            (std::vector<std::pair<int, float>>{{3, 2.5f}, {42, -100.0f}}));
  (*request.mutable_logit_bias())[100] = 1.0f;
  ExpectInvalid(request, "logit_bias[100]: the token id is outside the vocabulary [0, 100)");
  EXPECT_EQ(FieldOf(Convert(request)), "logit_bias");
  request.mutable_logit_bias()->erase(100);
  (*request.mutable_logit_bias())[-1] = 1.0f;
  ExpectInvalid(request, "logit_bias[-1]: the token id is outside the vocabulary [0, 100)");
  request.mutable_logit_bias()->erase(-1);
  (*request.mutable_logit_bias())[5] = 100.5f;
  ExpectInvalid(request, "logit_bias[5]: the bias must be in [-100, 100], got 100.5");
  request.mutable_logit_bias()->clear();
  for (int i = 0; i < 301; ++i) (*request.mutable_logit_bias())[i % 100 + 100 * (i / 100)] = 1;
  ExpectInvalid(request, "logit_bias has 301 entries; at most 300 are allowed",
                [] { RequestLimits l = Limits(); l.vocab_size = 1000; return l; }());
}

TEST(ValidationTest, EachConstraintKindIsCarried) {
  v1::GenerateRequest request = Prompt("x");
  auto convert = [&]() {
    absl::StatusOr<GenerationRequest> out = ToGenerationRequest(request, Limits(), Encoder());
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->constraint : ConstraintSpec();
  };
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kNone);
  request.set_json_schema("{\"type\": \"object\"}");
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kJsonSchema);
  EXPECT_EQ(convert().text, "{\"type\": \"object\"}");
  request.set_regex("[a-z]+");  // a oneof: the last one set wins on the wire
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kRegex);
  EXPECT_EQ(convert().text, "[a-z]+");
  request.set_grammar("root ::= \"a\"");
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kGrammar);
  request.set_json_object(true);
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kJsonObject);
  EXPECT_TRUE(convert().text.empty());
  request.set_json_object(false);
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kNone);
  request.mutable_choice()->add_choices("yes");
  request.mutable_choice()->add_choices("no");
  EXPECT_EQ(convert().kind, ConstraintSpec::Kind::kChoice);
  EXPECT_EQ(convert().choices, (std::vector<std::string>{"yes", "no"}));
}

TEST(ValidationTest, ConstraintShapesAreCheckedByName) {
  v1::GenerateRequest request = Prompt("x");
  request.set_regex("");
  ExpectInvalid(request, "regex: the text is empty");
  EXPECT_EQ(FieldOf(Convert(request)), "constraint");
  request.set_json_schema(std::string(70000, ' '));
  ExpectInvalid(request, "json_schema: the text is 70000 bytes; at most 65536 are allowed");
  request.mutable_choice();
  ExpectInvalid(request, "choice: the list of choices is empty");
  request.mutable_choice()->add_choices("a");
  request.mutable_choice()->add_choices("");
  ExpectInvalid(request, "choice: choice[1] is empty");
}

TEST(ValidationTest, TopLogprobs) {
  v1::GenerateRequest request = Prompt("x");
  request.set_top_logprobs(21);
  ExpectInvalid(request, "top_logprobs must be in [0, 20], got 21");
}

TEST(ValidationTest, RequestIdTooLong) {
  v1::GenerateRequest request = Prompt("x");
  request.set_request_id(std::string(129, 'r'));
  ExpectInvalid(request, "request_id is 129 bytes; at most 128");
}

TEST(ValidationTest, Messages) {
  v1::GenerateRequest request;
  for (int i = 0; i < 4; ++i) request.add_messages()->set_role("user");
  ExpectInvalid(request, "messages has 4 entries; at most 3 are allowed");
  request.mutable_messages()->RemoveLast();
  request.mutable_messages(1)->set_role("");
  ExpectInvalid(request, "messages[1].role is empty");
  request.mutable_messages(1)->set_role("user");
  absl::StatusOr<GenerationRequest> out = ToGenerationRequest(request, Limits(), Encoder());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->prompt_token_ids, ElementsAre(7, 20, 21, 22));
  request.mutable_messages(2)->set_role("assistant");
  ExpectInvalid(request, "the last message must be from the user");  // the template's error
}

TEST(ValidationTest, ChatWithoutATemplateIsFailedPrecondition) {
  v1::GenerateRequest request;
  request.add_messages()->set_role("user");
  PromptEncoder encoder = Encoder();
  encoder.render_chat = nullptr;
  absl::Status status = ToGenerationRequest(request, Limits(), encoder).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("messages: this model has no chat template"));
}

TEST(ValidationTest, PromptThatEncodesToNothing) {
  PromptEncoder encoder = Encoder();
  encoder.tokenize = [](const std::string&, bool) { return std::vector<int>(); };
  absl::Status status = ToGenerationRequest(Prompt(" "), Limits(), encoder).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("prompt encodes to no tokens"));
}

// The request's chat options reach the encoder; parse_special_tokens reaches
// a text prompt's too; tools and documents apply to messages only.
TEST(ValidationTest, ChatOptionsAndParseSpecialTokensReachTheEncoder) {
  PromptEncoder encoder = Encoder();
  ChatRenderOptions seen;
  encoder.render_chat = [&seen](const std::vector<ChatMessage>&, const ChatRenderOptions& options)
      -> absl::StatusOr<std::vector<int>> {
    seen = options;
    return std::vector<int>{7};
  };
  bool parse_special = false;
  encoder.tokenize = [&parse_special](const std::string&, bool parse) {
    parse_special = parse;
    return std::vector<int>{1, 2};
  };
  v1::GenerateRequest chat;
  auto* message = chat.add_messages();
  message->set_role("tool");
  message->set_content("5C");
  message->set_tool_call_id("c1");
  chat.set_tools_json(R"([{"type": "function"}])");
  chat.set_documents_json("[]");
  chat.set_parse_special_tokens(true);
  ASSERT_TRUE(ToGenerationRequest(chat, Limits(), encoder).ok());
  EXPECT_EQ(seen.tools_json, R"([{"type": "function"}])");
  EXPECT_EQ(seen.documents_json, "[]");
  EXPECT_TRUE(seen.parse_special_tokens);
  EXPECT_TRUE(seen.add_generation_prompt);

  v1::GenerateRequest prompt = Prompt("<s>");
  prompt.set_parse_special_tokens(true);
  ASSERT_TRUE(ToGenerationRequest(prompt, Limits(), encoder).ok());
  EXPECT_TRUE(parse_special);
  prompt.set_tools_json("[]");
  absl::Status status = ToGenerationRequest(prompt, Limits(), encoder).status();
  EXPECT_EQ(status.message(), "tools_json applies to messages only (the chat template)");
  EXPECT_EQ(FieldOf(status), "tools_json");

  absl::StatusOr<ChatRenderOptions> bad = ConvertRenderOptions("", "{\"a\": 1}", false, true);
  EXPECT_EQ(bad.status().message(), "documents_json must be a JSON array (as text), got object");
  EXPECT_EQ(FieldOf(bad.status()), "documents_json");
}

}  // namespace
}  // namespace streamgen
