// Server reflection used the way grpcurl uses it, with no generated code for
// the service on the client side: list the services, fetch the file
// descriptors of a symbol, build requests from JSON with protobuf's
// DynamicMessage, call methods by name through grpc::GenericStub, and print the
// answers as JSON. Each test is the equivalent of one grpcurl example in the
// README (grpcurl itself is not installed here).
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/generic/generic_stub.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "src/proto/grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/server_test_util.h"

namespace streamgen {
namespace {

namespace pb = google::protobuf;
using ::grpc::reflection::v1alpha::ServerReflection;
using ::grpc::reflection::v1alpha::ServerReflectionRequest;
using ::grpc::reflection::v1alpha::ServerReflectionResponse;
using ::testing::Contains;
using ::testing::HasSubstr;

// What grpcurl does with the reflection service.
class ReflectionClient {
 public:
  explicit ReflectionClient(std::shared_ptr<grpc::Channel> channel)
      : stub_(ServerReflection::NewStub(channel)), pool_(&database_) {}

  // grpcurl list
  std::vector<std::string> ListServices() {
    ServerReflectionRequest request;
    request.set_list_services("");
    ServerReflectionResponse response = Ask(request);
    std::vector<std::string> names;
    for (const auto& service : response.list_services_response().service()) {
      names.push_back(service.name());
    }
    return names;
  }

  // The descriptor of `symbol`, with the files it needs fetched from the server.
  const pb::FileDescriptor* FileContaining(const std::string& symbol) {
    ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    std::string first = AddFiles(Ask(request));
    if (first.empty()) return nullptr;
    return pool_.FindFileByName(first);
  }

  const pb::DescriptorPool& pool() const { return pool_; }

 private:
  ServerReflectionResponse Ask(const ServerReflectionRequest& request) {
    grpc::ClientContext context;
    auto stream = stub_->ServerReflectionInfo(&context);
    ServerReflectionResponse response;
    EXPECT_TRUE(stream->Write(request));
    EXPECT_TRUE(stream->Read(&response));
    stream->WritesDone();
    grpc::Status status = stream->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_FALSE(response.has_error_response())
        << response.error_response().error_code() << ": " << response.error_response().error_message();
    return response;
  }

  // Adds the response's files (and, recursively, their dependencies); returns
  // the first file's name.
  std::string AddFiles(const ServerReflectionResponse& response) {
    std::string first;
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      pb::FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      if (first.empty()) first = file.name();
      if (!known_.insert(file.name()).second) continue;
      database_.Add(file);
      for (const std::string& dependency : file.dependency()) {
        if (known_.count(dependency)) continue;
        ServerReflectionRequest request;
        request.set_file_by_filename(dependency);
        AddFiles(Ask(request));
      }
    }
    return first;
  }

  std::unique_ptr<ServerReflection::Stub> stub_;
  pb::SimpleDescriptorDatabase database_;
  pb::DescriptorPool pool_;
  std::set<std::string> known_;
};

grpc::ByteBuffer ToBuffer(const pb::Message& message) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

bool FromBuffer(const grpc::ByteBuffer& buffer, pb::Message* message) {
  grpc::Slice slice;
  if (!buffer.DumpToSingleSlice(&slice).ok()) return false;
  return message->ParseFromArray(slice.begin(), static_cast<int>(slice.size()));
}

std::string ToJson(const pb::Message& message) {
  std::string json;
  EXPECT_TRUE(pb::util::MessageToJsonString(message, &json).ok());
  return json;
}

bool Next(grpc::CompletionQueue* cq) {
  void* tag = nullptr;
  bool ok = false;
  EXPECT_TRUE(cq->Next(&tag, &ok));
  return ok;
}

// grpcurl -d JSON ... SERVICE/METHOD: one request, every response as JSON.
struct DynamicCallResult {
  std::vector<std::string> responses;
  grpc::Status status;
};

DynamicCallResult CallWithJson(const std::shared_ptr<grpc::Channel>& channel,
                               const pb::MethodDescriptor* method, const std::string& json,
                               const std::string& api_key = "") {
  pb::DynamicMessageFactory factory;
  std::unique_ptr<pb::Message> request(factory.GetPrototype(method->input_type())->New());
  pb::util::Status parsed = pb::util::JsonStringToMessage(json, request.get());
  EXPECT_TRUE(parsed.ok()) << parsed.ToString();
  std::string path = "/" + method->service()->full_name() + "/" + method->name();

  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  // grpcurl -H 'authorization: Bearer KEY'
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&context, path, &cq);
  DynamicCallResult result;
  call->StartCall(nullptr);
  Next(&cq);
  call->Write(ToBuffer(*request), nullptr);
  Next(&cq);
  call->WritesDone(nullptr);
  Next(&cq);
  while (true) {
    grpc::ByteBuffer buffer;
    call->Read(&buffer, nullptr);
    if (!Next(&cq)) break;
    std::unique_ptr<pb::Message> response(factory.GetPrototype(method->output_type())->New());
    EXPECT_TRUE(FromBuffer(buffer, response.get()));
    result.responses.push_back(ToJson(*response));
  }
  call->Finish(&result.status, nullptr);
  Next(&cq);
  return result;
}

class ReflectionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerOptions options = test::TestOptions();
    absl::StatusOr<ApiKeys> keys = ApiKeys::FromText("reflection-test-key\n", "test");
    options.frontend.api_keys = *keys;  // reflection and health need no key
    server_ = test::StartServer(options).release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    channel_ = test::Connect(server_->port());
  }

  static StreamgenServer* server_;
  std::shared_ptr<grpc::Channel> channel_;
};
StreamgenServer* ReflectionTest::server_ = nullptr;

// grpcurl -plaintext localhost:50051 list
TEST_F(ReflectionTest, ListsTheServices) {
  ReflectionClient reflection(channel_);
  std::vector<std::string> services = reflection.ListServices();
  EXPECT_THAT(services, Contains("streamgen.v1.TextGeneration"));
  EXPECT_THAT(services, Contains("grpc.health.v1.Health"));
  EXPECT_THAT(services, Contains("grpc.reflection.v1alpha.ServerReflection"));
}

// grpcurl -plaintext localhost:50051 describe streamgen.v1.TextGeneration
// grpcurl -plaintext localhost:50051 describe streamgen.v1.GenerateRequest
TEST_F(ReflectionTest, DescribesTheService) {
  ReflectionClient reflection(channel_);
  const pb::FileDescriptor* file = reflection.FileContaining("streamgen.v1.TextGeneration");
  ASSERT_NE(file, nullptr);
  EXPECT_EQ(file->name(), "streamgen/v1/generate.proto");
  const pb::ServiceDescriptor* service =
      reflection.pool().FindServiceByName("streamgen.v1.TextGeneration");
  ASSERT_NE(service, nullptr);
  const pb::MethodDescriptor* generate = service->FindMethodByName("Generate");
  ASSERT_NE(generate, nullptr);
  EXPECT_TRUE(generate->server_streaming());
  EXPECT_FALSE(generate->client_streaming());
  EXPECT_EQ(generate->input_type()->full_name(), "streamgen.v1.GenerateRequest");
  EXPECT_EQ(generate->output_type()->full_name(), "streamgen.v1.GenerateResponse");
  EXPECT_NE(service->FindMethodByName("Tokenize"), nullptr);
  EXPECT_NE(service->FindMethodByName("GetModelInfo"), nullptr);
  const pb::Descriptor* request = reflection.pool().FindMessageTypeByName("streamgen.v1.GenerateRequest");
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(request->FindFieldByName("prompt")->number(), 1);
  EXPECT_EQ(request->FindFieldByName("seed")->number(), 12);
  EXPECT_TRUE(request->FindFieldByName("seed")->has_presence());
  EXPECT_EQ(request->FindFieldByName("request_id")->number(), 17);
  EXPECT_NE(reflection.pool().FindEnumTypeByName("streamgen.v1.FinishReason"), nullptr);
}

// grpcurl -plaintext -H 'authorization: Bearer KEY'
//   -d '{"prompt": "Once upon a time", "max_new_tokens": 16}'
//   localhost:50051 streamgen.v1.TextGeneration/Generate
TEST_F(ReflectionTest, GeneratesFromJsonWithReflectedDescriptorsOnly) {
  ReflectionClient reflection(channel_);
  ASSERT_NE(reflection.FileContaining("streamgen.v1.TextGeneration"), nullptr);
  const pb::MethodDescriptor* generate =
      reflection.pool().FindMethodByName("streamgen.v1.TextGeneration.Generate");
  ASSERT_NE(generate, nullptr);

  // Without the key: UNAUTHENTICATED (the service needs one; reflection did not).
  DynamicCallResult refused = CallWithJson(channel_, generate, R"({"prompt": "x"})");
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::UNAUTHENTICATED);

  DynamicCallResult result =
      CallWithJson(channel_, generate, R"({"prompt": "Once upon a time", "max_new_tokens": 16})",
                   "reflection-test-key");
  ASSERT_TRUE(result.status.ok()) << result.status.error_message();
  ASSERT_FALSE(result.responses.empty());

  // The JSON answers, read as grpcurl prints them, carry the same text as the
  // engine produces for the same request.
  std::string text;
  nlohmann::json last;
  for (const std::string& json : result.responses) {
    last = nlohmann::json::parse(json);
    text += last.value("text", "");
  }
  EXPECT_EQ(last["finishReason"], "FINISH_REASON_LENGTH");
  EXPECT_EQ(last["usage"]["completionTokens"], 16);
  EXPECT_TRUE(last.contains("seed"));
  GenerationRequest direct;
  direct.prompt = "Once upon a time";
  direct.max_new_tokens = 16;
  EXPECT_EQ(text, test::RunEngine(server_->engine(), direct).text);
}

// grpcurl -plaintext -d '{"service": ""}' localhost:50051 grpc.health.v1.Health/Check
TEST_F(ReflectionTest, HealthCheckFromJsonWithReflectedDescriptorsOnly) {
  ReflectionClient reflection(channel_);
  ASSERT_NE(reflection.FileContaining("grpc.health.v1.Health"), nullptr);
  const pb::MethodDescriptor* check =
      reflection.pool().FindMethodByName("grpc.health.v1.Health.Check");
  ASSERT_NE(check, nullptr);
  for (const char* service : {"", "streamgen.v1.TextGeneration"}) {
    DynamicCallResult result =
        CallWithJson(channel_, check, std::string(R"({"service": ")") + service + R"("})");
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    ASSERT_EQ(result.responses.size(), 1u);
    EXPECT_EQ(nlohmann::json::parse(result.responses[0])["status"], "SERVING");
  }
}

}  // namespace
}  // namespace streamgen
