// The real server in process on an ephemeral loopback port: streamed output
// against the golden fixture and against the engine itself, Tokenize and
// GetModelInfo, every INVALID_ARGUMENT case over the wire, RESOURCE_EXHAUSTED,
// UNAUTHENTICATED, and 16 concurrent streams; the front door alone.
#include <algorithm>
#include <fstream>
#include <functional>
#include <thread>

#include <grpcpp/impl/client_unary_call.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/frontend.h"
#include "server/server.h"
#include "server/service.h"
#include "tests/server_test_util.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;
using test::Connect;
using test::Generate;
using test::PromptRequest;
using test::StartServer;
using test::StreamResult;
using test::TestOptions;
using test::WaitFor;

class TinyModelServer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = StartServer(TestOptions()).release(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    stub_ = v1::TextGeneration::NewStub(Connect(server_->port()));
  }

  static StreamgenServer* server_;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
};
StreamgenServer* TinyModelServer::server_ = nullptr;

// The text and ids streamed for a request equal the engine's own for the same
// request; the last message carries finish_reason, usage and the seed.
TEST_F(TinyModelServer, StreamEqualsTheEngine) {
  for (float temperature : {0.0f, 0.9f}) {
    SCOPED_TRACE(temperature);
    v1::GenerateRequest request = PromptRequest("Once upon a time", 24);
    request.set_temperature(temperature);
    request.set_seed(7);
    StreamResult result = Generate(stub_.get(), request);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    ASSERT_FALSE(result.messages.empty());

    GenerationRequest direct;
    direct.prompt = "Once upon a time";
    direct.max_new_tokens = 24;
    direct.sampling.temperature = temperature;
    direct.sampling.seed = 7;
    test::EngineResult engine = test::RunEngine(server_->engine(), direct);
    EXPECT_EQ(result.text, engine.text);
    EXPECT_EQ(result.ids, engine.ids);

    const v1::GenerateResponse& last = result.last();
    EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(last.usage().completion_tokens(), 24u);
    EXPECT_EQ(static_cast<int>(last.usage().prompt_tokens()), engine.last.prompt_tokens);
    EXPECT_EQ(last.seed(), 7u);
    EXPECT_FALSE(last.request_id().empty());
    for (size_t i = 0; i + 1 < result.messages.size(); ++i) {
      EXPECT_EQ(result.messages[i].finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
      EXPECT_FALSE(result.messages[i].has_usage());
      EXPECT_EQ(result.messages[i].request_id(), last.request_id());
    }
  }
}

TEST_F(TinyModelServer, SeedIsChosenAndReportedAndReproduces) {
  v1::GenerateRequest request = PromptRequest("The cat", 12);
  request.set_temperature(1.0f);
  StreamResult first = Generate(stub_.get(), request);
  ASSERT_TRUE(first.status.ok());
  ASSERT_TRUE(first.last().has_seed());
  request.set_seed(first.last().seed());
  StreamResult again = Generate(stub_.get(), request);
  ASSERT_TRUE(again.status.ok());
  EXPECT_EQ(again.ids, first.ids);
  EXPECT_EQ(again.text, first.text);
}

TEST_F(TinyModelServer, RequestIdIsEchoed) {
  v1::GenerateRequest request = PromptRequest("a", 2);
  request.set_request_id("my-id-42");
  StreamResult result = Generate(stub_.get(), request);
  ASSERT_TRUE(result.status.ok());
  for (const auto& message : result.messages) EXPECT_EQ(message.request_id(), "my-id-42");
}

TEST_F(TinyModelServer, PromptTokenIdsAreUsedAsGiven) {
  v1::TokenizeRequest tokenize;
  tokenize.set_text("Once upon a time");
  tokenize.set_add_special_tokens(true);
  v1::TokenizeResponse tokens;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->Tokenize(&context, tokenize, &tokens).ok());
  ASSERT_GT(tokens.token_ids_size(), 1);
  EXPECT_EQ(tokens.token_ids(0), server_->engine()->model_info().bos_token_id);
  ASSERT_EQ(tokens.pieces_size(), tokens.token_ids_size());
  EXPECT_EQ(tokens.pieces(0), server_->engine()->TokenPiece(tokens.token_ids(0)));

  v1::GenerateRequest by_ids;
  for (int id : tokens.token_ids()) by_ids.add_prompt_token_ids(id);
  by_ids.set_max_new_tokens(10);
  StreamResult ids = Generate(stub_.get(), by_ids);
  StreamResult text = Generate(stub_.get(), PromptRequest("Once upon a time", 10));
  ASSERT_TRUE(ids.status.ok() && text.status.ok());
  EXPECT_EQ(ids.ids, text.ids);
  EXPECT_EQ(ids.text, text.text);
  EXPECT_EQ(ids.last().usage().prompt_tokens(), static_cast<uint32_t>(tokens.token_ids_size()));
}

TEST_F(TinyModelServer, StopStringEndsTheStreamAndIsNotInTheText) {
  StreamResult full = Generate(stub_.get(), PromptRequest("Once upon a time", 40));
  ASSERT_TRUE(full.status.ok());
  ASSERT_GE(full.text.size(), 12u);
  // A stop string taken from the middle of the greedy text: two whole UTF-8
  // characters (a string field must be valid UTF-8).
  auto is_continuation = [&](size_t i) { return (full.text[i] & 0xC0) == 0x80; };
  size_t begin = full.text.size() / 2;
  while (begin > 0 && is_continuation(begin)) --begin;
  size_t end = begin + 1;
  for (int chars = 0; end < full.text.size(); ++end) {
    if (!is_continuation(end) && ++chars == 2) break;
  }
  std::string stop = full.text.substr(begin, end - begin);
  v1::GenerateRequest request = PromptRequest("Once upon a time", 40);
  request.add_stop(stop);
  StreamResult stopped = Generate(stub_.get(), request);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.last().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(stopped.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_TRUE(stopped.last().has_usage());
  EXPECT_TRUE(stopped.last().has_seed());
  EXPECT_LE(stopped.last().usage().completion_tokens(), 40u);
}

TEST_F(TinyModelServer, StopTokenIdIsCountedButNotInTheText) {
  StreamResult full = Generate(stub_.get(), PromptRequest("Once upon a time", 20));
  ASSERT_TRUE(full.status.ok());
  ASSERT_EQ(full.ids.size(), 20u);
  int stop_id = full.ids[5];
  size_t first = std::find(full.ids.begin(), full.ids.end(), stop_id) - full.ids.begin();
  v1::GenerateRequest request = PromptRequest("Once upon a time", 20);
  request.add_stop_token_ids(stop_id);
  StreamResult stopped = Generate(stub_.get(), request);
  ASSERT_TRUE(stopped.status.ok());
  EXPECT_EQ(stopped.last().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(stopped.last().usage().completion_tokens(), first + 1);
  EXPECT_TRUE(full.text.rfind(stopped.text, 0) == 0) << "not a prefix: " << stopped.text;
}

TEST_F(TinyModelServer, TopLogprobsAreStreamed) {
  v1::GenerateRequest request = PromptRequest("Hello", 4);
  request.set_top_logprobs(3);
  StreamResult result = Generate(stub_.get(), request);
  ASSERT_TRUE(result.status.ok());
  int tokens = 0;
  for (const auto& message : result.messages) {
    for (const v1::Token& token : message.tokens()) {
      ++tokens;
      ASSERT_EQ(token.top_logprobs_size(), 3);
      EXPECT_EQ(token.top_logprobs(0).id(), token.id());  // greedy: the best is chosen
      EXPECT_GE(token.top_logprobs(0).logprob(), token.top_logprobs(1).logprob());
      EXPECT_LE(token.logprob(), 0.0f);
    }
  }
  EXPECT_EQ(tokens, 4);
}

TEST_F(TinyModelServer, ChatMessagesUseTheModelsTemplate) {
  // The tiny random model's tokenizer_config.json carries Llama-2's template,
  // rendered as Jinja (--chat-template auto).
  v1::ModelInfo info;
  grpc::ClientContext info_context;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info).ok());
  ASSERT_EQ(info.chat_template(), "jinja");
  EXPECT_THAT(info.chat_template_source(), HasSubstr("tokenizer_config.json chat_template"));

  v1::TokenizeRequest tokenize;
  auto* message = tokenize.add_messages();
  message->set_role("user");
  message->set_content("Hi there");
  v1::TokenizeResponse rendered;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->Tokenize(&context, tokenize, &rendered).ok());
  // <s> then "[INST] Hi there [/INST]" encoded as text.
  std::vector<int> expected = {server_->engine()->model_info().bos_token_id};
  for (int id : server_->engine()->Tokenize("[INST] Hi there [/INST]", false)) {
    expected.push_back(id);
  }
  EXPECT_EQ(std::vector<int>(rendered.token_ids().begin(), rendered.token_ids().end()), expected);
  EXPECT_EQ(rendered.rendered_prompt(), "<s>[INST] Hi there [/INST]");

  v1::GenerateRequest chat;
  *chat.add_messages() = *message;
  chat.set_max_new_tokens(8);
  StreamResult by_chat = Generate(stub_.get(), chat);
  v1::GenerateRequest by_ids;
  for (int id : expected) by_ids.add_prompt_token_ids(id);
  by_ids.set_max_new_tokens(8);
  StreamResult direct = Generate(stub_.get(), by_ids);
  ASSERT_TRUE(by_chat.status.ok()) << by_chat.status.error_message();
  EXPECT_EQ(by_chat.ids, direct.ids);

  v1::GenerateRequest bad = chat;
  bad.mutable_messages(0)->set_role("assistant");
  StreamResult refused = Generate(stub_.get(), bad);
  // The template's raise_exception, as the request's INVALID_ARGUMENT.
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.status.error_message(),
            "Conversation roles must alternate user/assistant/user/assistant/...");
}

// A special token's spelling in a message is text unless the request sets
// parse_special_tokens (the same for a text prompt); OpenAI's message fields
// reach the template; bad ones are refused by name.
TEST_F(TinyModelServer, SpecialTokensInMessagesAreTextUnlessParseSpecialTokens) {
  const int bos = server_->engine()->model_info().bos_token_id;
  auto tokenize = [&](v1::TokenizeRequest request) {
    v1::TokenizeResponse response;
    grpc::ClientContext context;
    grpc::Status status = stub_->Tokenize(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return std::vector<int>(response.token_ids().begin(), response.token_ids().end());
  };
  v1::TokenizeRequest request;
  auto* message = request.add_messages();
  message->set_role("user");
  message->set_content("a <s> b");
  std::vector<int> safe = tokenize(request);
  EXPECT_EQ(std::count(safe.begin(), safe.end(), bos), 1);  // the template's own
  request.set_parse_special_tokens(true);
  std::vector<int> parsed = tokenize(request);
  EXPECT_EQ(std::count(parsed.begin(), parsed.end(), bos), 2);
  EXPECT_LT(parsed.size(), safe.size());

  // (A text prompt's parse_special_tokens: tests/chat_template_model_test.py,
  // a tokenizer.json model; sentencepiece never matches control tokens in text.)

  // Content parts are joined; another part type, a bad role, tools that are
  // not a JSON array are refused by name.
  v1::TokenizeRequest parts;
  auto* part_message = parts.add_messages();
  part_message->set_role("user");
  for (const char* piece : {"a <s>", " b"}) {
    auto* part = part_message->add_content_parts();
    part->set_type("text");
    part->set_text(piece);
  }
  EXPECT_EQ(tokenize(parts), safe);
  struct Case {
    std::function<void(v1::GenerateRequest*)> edit;
    std::string message;
  };
  const Case cases[] = {
      {[](v1::GenerateRequest* r) { r->mutable_messages(0)->add_content_parts()->set_type("image_url"); },
       "messages[0]: set one of content and content_parts, not both"},
      {[](v1::GenerateRequest* r) {
         r->mutable_messages(0)->clear_content();
         r->mutable_messages(0)->add_content_parts()->set_type("image_url");
       },
       "messages[0].content_parts[0].type \"image_url\" is not supported (only \"text\")"},
      {[](v1::GenerateRequest* r) { r->mutable_messages(0)->set_role("robot"); },
       "messages[0].role \"robot\" is not one of system, developer, user, assistant, tool"},
      {[](v1::GenerateRequest* r) { r->set_tools_json("{}"); },
       "tools_json must be a JSON array (as text), got object"},
      {[](v1::GenerateRequest* r) { r->set_documents_json("[nope"); },
       "documents_json must be a JSON array (as text), got text that is not JSON"},
      {[](v1::GenerateRequest* r) {
         auto* call = r->mutable_messages(0)->add_tool_calls();
         call->set_type("function");
       },
       "messages[0].tool_calls[0].function.name is empty"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest generate;
    auto* m = generate.add_messages();
    m->set_role("user");
    m->set_content("hi");
    generate.set_max_new_tokens(1);
    c.edit(&generate);
    StreamResult result = Generate(stub_.get(), generate);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.message;
    EXPECT_EQ(result.status.error_message(), c.message);
  }
}

TEST_F(TinyModelServer, ModelInfoReportsTheModelAndTheLimits) {
  v1::ModelInfo info;
  grpc::ClientContext context;
  ASSERT_TRUE(stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &info).ok());
  const ModelInfo& engine = server_->engine()->model_info();
  EXPECT_EQ(info.name(), "tiny-builtin");
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(static_cast<int>(info.vocab_size()), engine.vocab_size);
  EXPECT_EQ(static_cast<int>(info.context_length()), engine.context_length);
  EXPECT_EQ(info.dtype(), "float32");
  EXPECT_EQ(info.device(), "cpu");
  // The CPU kernels' ISA (engine/model/cpu_isa.h), as the engine detected it.
  EXPECT_EQ(info.cpu_isa(), engine.cpu_isa);
  EXPECT_TRUE(info.cpu_isa() == "avx512" || info.cpu_isa() == "avx2" ||
              info.cpu_isa() == "portable")
      << info.cpu_isa();
  EXPECT_EQ(info.limits().max_new_tokens_limit(), 4096u);
  EXPECT_EQ(info.limits().default_max_new_tokens(), 256u);
  EXPECT_EQ(static_cast<int>(info.limits().max_prompt_tokens()), engine.context_length - 1);
  EXPECT_EQ(info.limits().max_top_logprobs(), 20u);
  EXPECT_EQ(info.limits().max_stop_strings(), 16u);
  EXPECT_EQ(info.limits().max_messages(), 256u);
  EXPECT_EQ(info.limits().max_receive_message_bytes(), 4u << 20);
}

// Every INVALID_ARGUMENT of the issue, over the wire.
TEST_F(TinyModelServer, InvalidArgumentsNameTheField) {
  int vocab = server_->engine()->model_info().vocab_size;
  int context = server_->engine()->model_info().context_length;
  struct Case {
    std::function<void(v1::GenerateRequest*)> mutate;
    std::string message;
  };
  std::vector<Case> cases = {
      {[](auto* r) { r->clear_prompt(); }, "exactly one of prompt, prompt_token_ids, messages"},
      {[](auto* r) { r->add_prompt_token_ids(1); }, "got prompt and prompt_token_ids"},
      {[](auto* r) { r->add_messages()->set_role("user"); }, "got prompt and messages"},
      {[vocab](auto* r) { r->clear_prompt(); r->add_prompt_token_ids(vocab); },
       "prompt_token_ids[0] = " + std::to_string(vocab) + " is outside the vocabulary"},
      {[](auto* r) { r->set_temperature(-1); }, "temperature must be in [0, 100]"},
      {[](auto* r) { r->set_top_p(1.5f); }, "top_p must be in (0, 1]"},
      {[](auto* r) { r->set_top_p(-0.5f); }, "top_p must be in (0, 1]"},
      {[](auto* r) { r->set_min_p(1.0f); }, "min_p must be in [0, 1)"},
      {[](auto* r) { r->set_repetition_penalty(11); }, "repetition_penalty must be in (0, 10]"},
      {[](auto* r) { r->set_presence_penalty(-3); }, "presence_penalty must be in [-2, 2]"},
      {[](auto* r) { r->set_frequency_penalty(2.5f); }, "frequency_penalty must be in [-2, 2]"},
      {[](auto* r) { r->set_max_new_tokens(5000); }, "max_new_tokens 5000 exceeds the server's limit 4096"},
      {[context](auto* r) { r->set_max_new_tokens(context); },
       "exceeds the model's context length " + std::to_string(context)},
      {[](auto* r) { r->add_stop(""); }, "stop[0] is empty"},
      {[](auto* r) { for (int i = 0; i < 17; ++i) r->add_stop("x"); },
       "stop has 17 strings; at most 16"},
      {[](auto* r) { r->add_stop(std::string(257, 'x')); }, "stop[0] is 257 bytes; at most 256"},
      {[vocab](auto* r) { r->add_stop_token_ids(vocab + 5); }, "stop_token_ids[0]"},
      {[](auto* r) { r->set_top_logprobs(21); }, "top_logprobs must be in [0, 20]"},
      {[context](auto* r) { r->set_prompt(std::string(context * 8, 'a')); r->set_max_new_tokens(0); },
       "prompt is"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].message);
    v1::GenerateRequest request = PromptRequest("Once upon a time", 8);
    cases[i].mutate(&request);
    StreamResult result = Generate(stub_.get(), request);
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(result.status.error_message(), HasSubstr(cases[i].message));
    EXPECT_TRUE(result.messages.empty());
  }
  // The server is still fine.
  EXPECT_TRUE(Generate(stub_.get(), PromptRequest("ok", 2)).status.ok());
}

// ---- issue 18: a string field that is not UTF-8 ----

// `request` serialized, with `placeholder` (which it holds once) replaced by
// `bytes` of the same length: no protobuf API writes invalid UTF-8 into a
// proto3 string, a client in another language may.
template <typename Message>
std::string WithBytes(const Message& request, const std::string& placeholder,
                      const std::string& bytes) {
  EXPECT_EQ(placeholder.size(), bytes.size());
  std::string wire = request.SerializeAsString();
  size_t at = wire.find(placeholder);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(wire.find(placeholder, at + 1), std::string::npos);
  return wire.replace(at, placeholder.size(), bytes);
}

grpc::ByteBuffer Bytes(const std::string& data) {
  grpc::Slice slice(data);
  return grpc::ByteBuffer(&slice, 1);
}

// A Generate call whose request message is `wire` as it is (grpc's generic
// byte-buffer codec): the status and the number of messages received.
grpc::Status RawGenerate(grpc::ChannelInterface* channel, const std::string& wire, int* received) {
  grpc::ClientContext context;
  grpc::internal::RpcMethod method("/streamgen.v1.TextGeneration/Generate",
                                   grpc::internal::RpcMethod::SERVER_STREAMING);
  std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
      grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel, method, &context,
                                                                    Bytes(wire)));
  grpc::ByteBuffer response;
  *received = 0;
  while (reader->Read(&response)) ++*received;
  return reader->Finish();
}

grpc::Status RawTokenize(grpc::ChannelInterface* channel, const std::string& wire) {
  grpc::ClientContext context;
  grpc::internal::RpcMethod method("/streamgen.v1.TextGeneration/Tokenize",
                                   grpc::internal::RpcMethod::NORMAL_RPC);
  grpc::ByteBuffer response;
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel, method, &context, Bytes(wire), &response);
}

double InvalidArgumentCount(StreamgenServer* server, const std::string& method) {
  std::string wanted = "streamgen_requests_total{method=\"" + method +
                       "\",code=\"INVALID_ARGUMENT\"} ";
  std::string text = server->RenderMetrics();
  size_t at = text.find(wanted);
  return at == std::string::npos ? 0 : std::stod(text.substr(at + wanted.size()));
}

// gRPC's own parsing answered these UNIMPLEMENTED with an empty message and
// no log line: the service now parses the bytes, names the field, and counts
// (and logs) the refusal like any other.
TEST_F(TinyModelServer, InvalidUtf8IsInvalidArgumentNamingTheField) {
  std::shared_ptr<grpc::Channel> channel = Connect(server_->port());
  const std::string bad = "ab\xff\xfe";  // never UTF-8
  const std::string placeholder = "ab@@";
  struct Case {
    v1::GenerateRequest request;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({PromptRequest("Once upon ab@@ time", 4),
                   "prompt is not valid UTF-8 (protobuf string fields must hold UTF-8 text)"});
  {
    v1::GenerateRequest chat;
    chat.set_max_new_tokens(4);
    auto* first = chat.add_messages();
    first->set_role("user");
    first->set_content("Hello");
    auto* second = chat.add_messages();
    second->set_role("user");
    second->set_content("say ab@@");
    cases.push_back({chat, "messages[1].content is not valid UTF-8"});
  }
  {
    v1::GenerateRequest stops = PromptRequest("Once upon a time", 4);
    stops.add_stop("x");
    stops.add_stop("ab@@");
    cases.push_back({stops, "stop[1] is not valid UTF-8"});
  }
  const double before = InvalidArgumentCount(server_, "Generate");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    int received = 0;
    grpc::Status status =
        RawGenerate(channel.get(), WithBytes(c.request, placeholder, bad), &received);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    EXPECT_EQ(received, 0);
  }
  // Bytes that are no GenerateRequest at all (field 1, 100 bytes long, cut short).
  int received = 0;
  grpc::Status garbage = RawGenerate(channel.get(), std::string("\x0a\x64" "abc", 5), &received);
  EXPECT_EQ(garbage.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(garbage.error_message(),
            "the request is not a streamgen.v1.GenerateRequest message (its bytes do not parse)");
  // Counted (and logged, in the same place) as refused requests.
  EXPECT_TRUE(WaitFor([&] { return InvalidArgumentCount(server_, "Generate") >= before + 4; }))
      << server_->RenderMetrics();

  // Tokenize's text too.
  v1::TokenizeRequest tokenize;
  tokenize.set_text("ab@@ cd");
  grpc::Status tokenized = RawTokenize(channel.get(), WithBytes(tokenize, placeholder, bad));
  EXPECT_EQ(tokenized.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(tokenized.error_message(), HasSubstr("text is not valid UTF-8"));

  // The same bytes with UTF-8 in place: served as ever, through the same handler.
  grpc::Status ok = RawGenerate(
      channel.get(), WithBytes(cases[0].request, placeholder, "ab\xc3\xa9"), &received);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_GT(received, 0);
  EXPECT_TRUE(RawTokenize(channel.get(), WithBytes(tokenize, placeholder, "abcd")).ok());
}

TEST(InvalidUtf8FieldTest, NamesTheFirstFieldAsAPath) {
  v1::GenerateRequest request;
  request.set_prompt("fine");
  auto* message = request.add_messages();
  message->set_role("user");
  message->set_content("fine");
  message = request.add_messages();
  message->set_role("user");
  message->set_content("xx@@");
  request.add_stop("yy@@");
  const google::protobuf::Descriptor* type = v1::GenerateRequest::descriptor();
  EXPECT_EQ(InvalidUtf8Field(request.SerializeAsString(), type), "");
  std::string wire = request.SerializeAsString();
  std::string content = wire;
  content.replace(content.find("xx@@"), 4, "xx\xc0\x80");  // an overlong NUL
  EXPECT_EQ(InvalidUtf8Field(content, type), "messages[1].content");
  std::string stop = wire;
  stop.replace(stop.find("yy@@"), 4, "yy\xed\xa0");  // half a surrogate's encoding
  EXPECT_EQ(InvalidUtf8Field(stop, type), "stop[0]");
  EXPECT_EQ(InvalidUtf8Field(std::string("\x0a\x64" "abc", 5), type), "");  // cut short
}

// The front door alone, without a face and before a model: the key comes
// first, then the model, each refusal by name; the drain is its own state.
TEST(FrontendTest, AdmitsTheKeyFirstThenTheModel) {
  FrontendOptions options;
  options.api_keys = *ApiKeys::FromText("front-key\n", "test");
  Metrics metrics;
  Frontend frontend(options, &metrics);
  EXPECT_FALSE(frontend.loaded());
  EXPECT_EQ(frontend.model_name(), "");
  EXPECT_EQ(frontend.chat_family(), "");

  absl::Status missing = frontend.CheckKey(std::nullopt);
  EXPECT_EQ(missing.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(missing.message()), HasSubstr("missing API key"));
  // Without the key the model's state is not told: the key's refusal, not UNAVAILABLE.
  absl::StatusOr<Frontend::Admission> wrong = frontend.Admit("Bearer not-the-key");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong.status().message(), "invalid API key");

  EXPECT_TRUE(frontend.CheckKey("Bearer front-key").ok());
  absl::StatusOr<Frontend::Admission> loading = frontend.Admit("Bearer front-key");
  EXPECT_EQ(loading.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(loading.status().message(), "the model is still loading; retry");

  EXPECT_FALSE(frontend.draining());
  frontend.BeginDrain();
  EXPECT_TRUE(frontend.draining());
  EXPECT_EQ(frontend.active_streams(), 0);
  EXPECT_TRUE(frontend.WaitForIdle(absl::ZeroDuration()));
}

// A Frontend with a built-in family over the same engine: what only a Jinja
// template takes (tools, documents, add_generation_prompt false) is refused
// by name; ApplyTemplate renders the family's text.
TEST_F(TinyModelServer, BuiltInFamilyRefusesWhatOnlyJinjaTakes) {
  FrontendOptions options;
  options.chat_template = "llama2";
  Metrics metrics;
  Frontend frontend(options, &metrics);
  ASSERT_TRUE(frontend.SetEngine(server_->engine()).ok());
  absl::StatusOr<Frontend::Admission> admission = frontend.Admit(std::nullopt);
  ASSERT_TRUE(admission.ok());
  v1::ModelInfo info;
  frontend.GetModelInfo(*admission, &info);
  EXPECT_EQ(info.chat_template(), "llama2");
  EXPECT_EQ(info.chat_template_source(), "built-in");

  v1::TokenizeRequest request;
  auto* message = request.add_messages();
  message->set_role("user");
  message->set_content("Hi");
  absl::StatusOr<std::string> text = frontend.ApplyTemplate(*admission, request);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "<s>[INST] Hi [/INST]");

  struct Case {
    std::function<void(v1::TokenizeRequest*)> edit;
    std::string field;
    std::string message;
  };
  const Case cases[] = {
      {[](v1::TokenizeRequest* r) { r->set_tools_json("[]"); }, "tools_json",
       "tools_json: the chat template in use (built-in llama2) takes no tools"},
      {[](v1::TokenizeRequest* r) { r->set_documents_json("[]"); }, "documents_json",
       "documents_json: the chat template in use (built-in llama2) takes no documents"},
      {[](v1::TokenizeRequest* r) { r->set_add_generation_prompt(false); }, "add_generation_prompt",
       "add_generation_prompt: false needs a Jinja chat template; the built-in llama2 always "
       "ends with the assistant's turn"},
  };
  for (const Case& c : cases) {
    v1::TokenizeRequest edited = request;
    c.edit(&edited);
    v1::TokenizeResponse response;
    absl::Status status = frontend.Tokenize(*admission, edited, &response);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.message;
    EXPECT_EQ(status.message(), c.message);
    EXPECT_EQ(FieldOf(status), c.field);
    EXPECT_EQ(frontend.ApplyTemplate(*admission, edited).status().message(), c.message);
  }
  v1::GenerateRequest generate;
  *generate.add_messages() = *message;
  generate.set_tools_json("[]");
  EXPECT_EQ(frontend.PrepareGenerate(*admission, generate).status().message(),
            "tools_json: the chat template in use (built-in llama2) takes no tools");

  v1::TokenizeRequest text_only;
  text_only.set_text("Hi");
  text_only.set_tools_json("[]");
  v1::TokenizeResponse response;
  EXPECT_EQ(frontend.Tokenize(*admission, text_only, &response).message(),
            "tools_json and documents_json apply to messages only");
  EXPECT_EQ(frontend.ApplyTemplate(*admission, text_only).status().message(),
            "messages is required");
}

TEST_F(TinyModelServer, SixteenConcurrentStreamsAllComplete) {
  const std::vector<std::string> prompts = {"Once upon a time", "The quick brown fox",
                                            "In the beginning", "Hello world"};
  std::vector<StreamResult> expected;
  for (const std::string& prompt : prompts) {
    expected.push_back(Generate(stub_.get(), PromptRequest(prompt, 32)));
    ASSERT_TRUE(expected.back().status.ok());
  }
  std::vector<StreamResult> results(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      auto stub = v1::TextGeneration::NewStub(Connect(server_->port()));
      results[i] = Generate(stub.get(), PromptRequest(prompts[i % prompts.size()], 32));
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < 16; ++i) {
    SCOPED_TRACE(i);
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(results[i].text, expected[i % prompts.size()].text);
    EXPECT_EQ(results[i].ids, expected[i % prompts.size()].ids);
    EXPECT_EQ(results[i].last().finish_reason(), v1::FINISH_REASON_LENGTH);
  }
}

// ---- the shared golden fixture ----

class FixtureServer : public ::testing::Test {
 protected:
  void SetUp() override {
    SKIP_WITHOUT_FIXTURE();
    server_ = StartServer(TestOptions(test::FixtureDir()));
    ASSERT_NE(server_, nullptr);
    stub_ = v1::TextGeneration::NewStub(Connect(server_->port()));
  }
  std::unique_ptr<StreamgenServer> server_;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
};

TEST_F(FixtureServer, GreedyStreamEqualsTheGoldenTextAndIds) {
  for (const auto& entry : test::Golden()) {
    std::string prompt = entry["prompt"];
    SCOPED_TRACE(prompt);
    int max_new_tokens = entry["max_new_tokens"];
    StreamResult result = Generate(stub_.get(), PromptRequest(prompt, max_new_tokens));
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.ids, entry["generated_token_ids"].get<std::vector<int>>());
    EXPECT_EQ(result.text, entry["generated_text"].get<std::string>());
    EXPECT_EQ(result.last().finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(result.last().usage().prompt_tokens(), entry["prompt_token_ids"].size());
    EXPECT_EQ(result.last().usage().completion_tokens(), static_cast<uint32_t>(max_new_tokens));

    v1::TokenizeRequest tokenize;
    tokenize.set_text(prompt);
    tokenize.set_add_special_tokens(true);
    v1::TokenizeResponse tokens;
    grpc::ClientContext context;
    ASSERT_TRUE(stub_->Tokenize(&context, tokenize, &tokens).ok());
    EXPECT_EQ(std::vector<int>(tokens.token_ids().begin(), tokens.token_ids().end()),
              entry["prompt_token_ids"].get<std::vector<int>>());
  }
}

TEST_F(FixtureServer, SixteenConcurrentStreamsMatchTheGolden) {
  nlohmann::json golden = test::Golden();
  std::vector<StreamResult> results(16);
  std::vector<std::thread> threads;
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&, i] {
      const auto& entry = golden[i % golden.size()];
      auto stub = v1::TextGeneration::NewStub(Connect(server_->port()));
      results[i] = Generate(stub.get(), PromptRequest(entry["prompt"], entry["max_new_tokens"]));
    });
  }
  for (auto& thread : threads) thread.join();
  for (int i = 0; i < 16; ++i) {
    const auto& entry = golden[i % golden.size()];
    SCOPED_TRACE(entry["prompt"].get<std::string>());
    ASSERT_TRUE(results[i].status.ok()) << results[i].status.error_message();
    EXPECT_EQ(results[i].text, entry["generated_text"].get<std::string>());
    EXPECT_EQ(results[i].ids, entry["generated_token_ids"].get<std::vector<int>>());
  }
}

TEST_F(FixtureServer, ChatWithoutATemplateIsFailedPrecondition) {
  v1::GenerateRequest request;
  auto* message = request.add_messages();
  message->set_role("user");
  message->set_content("hi");
  StreamResult result = Generate(stub_.get(), request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(result.status.error_message(), HasSubstr("no chat_template"));
}

// ---- limits and keys ----

TEST(ServerLimitsTest, FullQueueIsResourceExhausted) {
  ServerOptions options = TestOptions();
  options.engine.max_queue = 1;
  options.engine.start_paused = true;
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto stub = v1::TextGeneration::NewStub(Connect(server->port()));
  grpc::ClientContext first_context;
  auto first = stub->Generate(&first_context, PromptRequest("a", 4));
  ASSERT_TRUE(WaitFor([&] { return server->engine()->stats().waiting == 1; }));
  StreamResult second = Generate(stub.get(), PromptRequest("b", 4));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_FALSE(second.status.error_message().empty());
  server->engine()->Resume();
  StreamResult first_result = test::Collect(first.get());
  EXPECT_TRUE(first_result.status.ok()) << first_result.status.error_message();
  EXPECT_EQ(first_result.last().usage().completion_tokens(), 4u);
}

TEST(ServerAuthTest, KeysAreRequiredForTheServiceOnly) {
  ServerOptions options = TestOptions();
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromText("secret-1\nsecret-2\n", "test");
  ASSERT_TRUE(keys.ok());
  options.frontend.api_keys = *keys;
  std::unique_ptr<StreamgenServer> server = StartServer(options);
  ASSERT_NE(server, nullptr);
  auto channel = Connect(server->port());
  auto stub = v1::TextGeneration::NewStub(channel);

  StreamResult none = Generate(stub.get(), PromptRequest("a", 2));
  EXPECT_EQ(none.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(none.status.error_message(), HasSubstr("missing API key"));
  StreamResult wrong = Generate(stub.get(), PromptRequest("a", 2), "secret-3");
  EXPECT_EQ(wrong.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.status.error_message(), HasSubstr("invalid API key"));
  EXPECT_TRUE(Generate(stub.get(), PromptRequest("a", 2), "secret-2").status.ok());

  v1::ModelInfo info;
  grpc::ClientContext info_context;
  EXPECT_EQ(stub->GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::TokenizeResponse tokens;
  grpc::ClientContext tokenize_context;
  EXPECT_EQ(stub->Tokenize(&tokenize_context, v1::TokenizeRequest(), &tokens).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Health needs no key (reflection: see server_reflection_test).
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse status;
  grpc::ClientContext health_context;
  ASSERT_TRUE(health->Check(&health_context, grpc::health::v1::HealthCheckRequest(), &status).ok());
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace streamgen
