// streamgen-client: a command-line client for streamgen.v1.TextGeneration,
// built on the generated C++ stub.
//   streamgen-client [--server HOST:PORT] [--tls ...] [--api-key KEY]
//                    [--deadline-ms N] generate PROMPT [sampling flags] [--json]
//   streamgen-client tokenize TEXT [--add-special-tokens | --chat] [--parse-special-tokens] [--json]
//   streamgen-client info [--json]
//   streamgen-client health [--service NAME]   (grpc.health.v1: exit 0 SERVING, 1 otherwise;
//                                               the container's HEALTHCHECK)
//   streamgen-client bench --concurrency C --requests N --prompt-tokens P
//                          --max-new-tokens M [--warmup W] [--json]   (client/bench.h)
// Ctrl-C cancels the call (ClientContext::TryCancel) and exits with 130.
// generate retries a call refused with UNAVAILABLE before its first message
// (a draining replica), and resumes a stream that is cut short after it (see
// CutShort: the server or its connection died, a gateway lost its upstream, a
// drain timed out), on whatever server the
// address reaches now (another replica behind a gateway): it sends the ids
// received so far as resume_token_ids, with the seed and model fingerprint of
// the first message, and the text goes on where it stopped (--resume-retries).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/bench.h"
#include "common/cli_flags.h"
#include "common/sampling_flags.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "streamgen/v1/generate.grpc.pb.h"

ABSL_FLAG(std::string, server, "localhost:50051", "Server address HOST:PORT.");
ABSL_FLAG(bool, tls, false, "Connect with TLS (system roots unless --tls-ca).");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle that signed the server's certificate.");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS).");
ABSL_FLAG(std::string, tls_key, "", "PEM client key (mutual TLS).");
ABSL_FLAG(std::string, tls_server_name, "", "Expected server name, if not the host in --server.");
ABSL_FLAG(std::string, api_key, "",
          "API key, sent as 'authorization: Bearer KEY' (default: $STREAMGEN_API_KEY).");
ABSL_FLAG(int64_t, deadline_ms, 0, "Deadline for the call in milliseconds (0: none).");
ABSL_FLAG(bool, json, false, "Print each response message as protobuf JSON, one per line.");
// generate
ABSL_FLAG(std::string, request_id, "", "Request id (default: the server makes one).");
ABSL_FLAG(bool, chat, false,
          "Send PROMPT (tokenize: TEXT) as a user message, rendered with the chat template.");
ABSL_FLAG(std::string, system, "", "With --chat: a system message first.");
ABSL_FLAG(std::vector<std::string>, prompt_token_ids, {},
          "Prompt as token ids, comma-separated (then no PROMPT).");
ABSL_FLAG(std::string, json_schema, "",
          "generate: constrain the text to a JSON Schema, given as JSON text or @FILE "
          "(docs/structured-outputs.md). At most one of --json-schema, --json-object, --regex, "
          "--grammar, --choice.");
ABSL_FLAG(bool, json_object, false, "generate: constrain the text to one JSON object.");
ABSL_FLAG(std::string, regex, "", "generate: the whole text matches this regular expression.");
ABSL_FLAG(std::string, grammar, "",
          "generate: constrain the text to a grammar (GBNF dialect), given as text or @FILE.");
ABSL_FLAG(std::vector<std::string>, choice, {},
          "generate: the text is exactly one of these strings, comma-separated.");
ABSL_FLAG(int, resume_retries, 3,
          "generate: when the call is cut short (UNAVAILABLE, or a gateway's RST_STREAM), retry "
          "it (before its first message) or resume it (resume_token_ids, after) up to this many "
          "times; 0: never.");
// bench
ABSL_FLAG(int, concurrency, 1, "bench: calls in flight (closed loop: each starts when one ends).");
ABSL_FLAG(int, requests, 8, "bench: measured calls (after the warm-up).");
ABSL_FLAG(int, warmup, -1, "bench: calls left out of the figures first (-1: one wave, = --concurrency).");
ABSL_FLAG(int, prompt_tokens, 128, "bench: prompt length in tokens (BOS + ids drawn from the vocabulary).");
ABSL_FLAG(int, shared_prefix_tokens, 0,
          "bench: the first this many prompt ids are the same in every call (a common system "
          "prompt, for --enable-prefix-caching); 0: every prompt differs from its start.");
ABSL_FLAG(uint64_t, prompt_seed, 0,
          "bench: draws the prompts (call i gets the same prompt for the same seed). Give each "
          "run its own seed when a server may remember earlier prompts (llama-server's prompt "
          "cache, --enable-prefix-caching), unless the cache is what is measured.");
ABSL_FLAG(std::string, http, "",
          "bench: send the calls to the HTTP face at this URL (http://HOST:PORT: POST "
          "/v1/completions, server-sent events) instead of gRPC; GetModelInfo still uses --server.");
// health
ABSL_FLAG(std::string, service, "",
          "health: the service to check (\"\": the whole server; or streamgen.v1.TextGeneration).");
// tokenize
ABSL_FLAG(bool, add_special_tokens, false, "tokenize: add BOS/EOS as a text prompt gets them.");
ABSL_FLAG(bool, parse_special_tokens, false,
          "generate, tokenize: special tokens written in the prompt or message (\"<|im_start|>\") "
          "become control tokens instead of text (for trusted text only).");

namespace streamgen {
namespace {

using google::protobuf::util::JsonPrintOptions;
using google::protobuf::util::MessageToJsonString;

// The call in flight, for Ctrl-C. Guarded by g_context_mu: the watcher holds
// it while it calls TryCancel, so a context is never destroyed while
// TryCancel still runs on it (the call can end, and its context go out of
// scope, before TryCancel returns: seen as an abseil "Mutex unlocked when
// destroyed" abort after Ctrl-C).
std::mutex g_context_mu;
grpc::ClientContext* g_active_context = nullptr;

// Makes `context` the one Ctrl-C cancels, for this object's lifetime (declare
// it after the context, so that it ends first).
class ActiveContext {
 public:
  explicit ActiveContext(grpc::ClientContext* context) {
    std::lock_guard<std::mutex> lock(g_context_mu);
    g_active_context = context;
  }
  ~ActiveContext() {
    std::lock_guard<std::mutex> lock(g_context_mu);
    }
  ActiveContext(const ActiveContext&) = delete;
  ActiveContext& operator=(const ActiveContext&) = delete;
};
std::atomic<bool> g_interrupted{false};
SamplingFlags g_sampling;  // set once in main, before any call

// Ctrl-C: cancel the call in flight (from a thread; TryCancel is not
// async-signal-safe, so no signal handler does it).
class InterruptWatcher {
 public:
  InterruptWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::thread([this] {
      timespec tick{0, 100 * 1000 * 1000};
      while (!done_) {
        if (sigtimedwait(&signals_, nullptr, &tick) <= 0) continue;
        g_interrupted = true;
        std::lock_guard<std::mutex> lock(g_context_mu);
        if (g_active_context != nullptr) g_active_context->TryCancel();
      }
    });
  }
  ~InterruptWatcher() {
    done_ = true;
    thread_.join();
  }

 private:
  sigset_t signals_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  if (!file) {
    std::cerr << "streamgen-client: cannot read " << path << "\n";
    std::exit(2);
  }
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::shared_ptr<grpc::Channel> MakeChannel() {
  grpc::ChannelArguments args;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  bool tls = absl::GetFlag(FLAGS_tls) || !absl::GetFlag(FLAGS_tls_ca).empty() ||
             !absl::GetFlag(FLAGS_tls_cert).empty();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    if (!absl::GetFlag(FLAGS_tls_ca).empty()) ssl.pem_root_certs = ReadFile(absl::GetFlag(FLAGS_tls_ca));
    if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
      ssl.pem_cert_chain = ReadFile(absl::GetFlag(FLAGS_tls_cert));
      ssl.pem_private_key = ReadFile(absl::GetFlag(FLAGS_tls_key));
    }
    credentials = grpc::SslCredentials(ssl);
    if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
      args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
    }
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_server), credentials, args);
}

// The end of --deadline-ms from now (time_point::max() without one).
std::chrono::system_clock::time_point DeadlineFromFlag() {
  int64_t deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  if (deadline_ms <= 0) return std::chrono::system_clock::time_point::max();
  return std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms);
}

// The API key and the deadline (`deadline`, or --deadline-ms from now).
void PrepareContext(grpc::ClientContext* context,
                    std::chrono::system_clock::time_point deadline = DeadlineFromFlag()) {
  std::string key = absl::GetFlag(FLAGS_api_key);
  if (key.empty() && std::getenv("STREAMGEN_API_KEY") != nullptr) {
    key = std::getenv("STREAMGEN_API_KEY");
  }
  if (!key.empty()) context->AddMetadata("authorization", "Bearer " + key);
  if (deadline != std::chrono::system_clock::time_point::max()) context->set_deadline(deadline);
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string json;
  JsonPrintOptions options;
  MessageToJsonString(message, &json, options);
  return json;
}

// Exit status for a finished call: 0, 130 after Ctrl-C, 1 otherwise.
int Report(const grpc::Status& status) {
  if (status.ok()) return 0;
  if (g_interrupted) {
    std::cerr << "streamgen-client: cancelled\n";
    return 130;
  }
  std::cerr << "streamgen-client: " << absl::StatusCodeToString(
                   static_cast<absl::StatusCode>(status.error_code()))
            << ": " << status.error_message() << "\n";
  return 1;
}

std::vector<int> ParseIds(const std::vector<std::string>& values, const char* flag) {
  std::vector<int> ids;
  for (const std::string& value : values) {
    int id = 0;
    if (!absl::SimpleAtoi(value, &id)) {
      std::cerr << "streamgen-client: --" << flag << ": '" << value << "' is not an integer\n";
      std::exit(2);
    }
    ids.push_back(id);
  }
  return ids;
}

// --chat: the optional --system message, then `text` as the user's turn
// (GenerateRequest and TokenizeRequest both carry messages).
template <typename Request>
void AddChatMessages(const std::string& text, Request* request) {
  if (!absl::GetFlag(FLAGS_system).empty()) {
    v1::ChatMessage* system = request->add_messages();
    system->set_role("system");
    system->set_content(absl::GetFlag(FLAGS_system));
  }
  v1::ChatMessage* user = request->add_messages();
  user->set_role("user");
  user->set_content(text);
}

// A flag's text, or with a leading '@' the named file's.
std::string TextOrFile(const std::string& value) {
  return absl::StartsWith(value, "@") ? ReadFile(value.substr(1)) : value;
}

// --json-schema, --json-object, --regex, --grammar, --choice: the request's
// constraint oneof, where a second field would silently replace the first.
void SetConstraint(v1::GenerateRequest* request) {
  std::vector<std::string> given;
  if (!absl::GetFlag(FLAGS_json_schema).empty()) {
    given.push_back("--json-schema");
    request->set_json_schema(TextOrFile(absl::GetFlag(FLAGS_json_schema)));
  }
  if (absl::GetFlag(FLAGS_json_object)) {
    given.push_back("--json-object");
    request->set_json_object(true);
  }
  if (!absl::GetFlag(FLAGS_regex).empty()) {
    given.push_back("--regex");
    request->set_regex(absl::GetFlag(FLAGS_regex));
  }
  if (!absl::GetFlag(FLAGS_grammar).empty()) {
    given.push_back("--grammar");
    request->set_grammar(TextOrFile(absl::GetFlag(FLAGS_grammar)));
  }
  if (!absl::GetFlag(FLAGS_choice).empty()) {
    given.push_back("--choice");
    for (const std::string& c : absl::GetFlag(FLAGS_choice)) {
      request->mutable_choice()->add_choices(c);
    }
  }
  if (given.size() > 1) {
    std::cerr << "streamgen-client: " << absl::StrJoin(given, " and ")
              << " each constrain the output: give one\n";
    std::exit(2);
  }
}

v1::GenerateRequest BuildGenerateRequest(const std::string& prompt) {
  v1::GenerateRequest request;
  std::vector<int> prompt_ids = ParseIds(absl::GetFlag(FLAGS_prompt_token_ids), "prompt-token-ids");
  if (!prompt_ids.empty()) {
    for (int id : prompt_ids) request.add_prompt_token_ids(id);
  } else if (absl::GetFlag(FLAGS_chat)) {
    AddChatMessages(prompt, &request);
  } else {
    request.set_prompt(prompt);
  }
  request.set_parse_special_tokens(absl::GetFlag(FLAGS_parse_special_tokens));
  // Only what was given on the command line is sent: the server fills the
  // rest from the model's defaults (common/sampling_flags.h).
  const SamplingFlags& f = g_sampling;
  if (f.max_new_tokens) request.set_max_new_tokens(*f.max_new_tokens);
  if (f.temperature) request.set_temperature(*f.temperature);
  if (f.top_k) request.set_top_k(*f.top_k);
  if (f.top_p) request.set_top_p(*f.top_p);
  if (f.min_p) request.set_min_p(*f.min_p);
  if (f.repetition_penalty) request.set_repetition_penalty(*f.repetition_penalty);
  request.set_presence_penalty(f.presence_penalty);
  request.set_frequency_penalty(f.frequency_penalty);
  if (f.seed) request.set_seed(*f.seed);
  for (const std::string& stop : f.stop) request.add_stop(stop);
  for (int id : f.stop_token_ids) request.add_stop_token_ids(id);
  request.set_ignore_eos(f.ignore_eos);
  request.set_top_logprobs(f.top_logprobs);
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  SetConstraint(&request);
  return request;
}

// A stream cut short rather than ended, worth resuming elsewhere:
//  - UNAVAILABLE: the server or the connection died, or the server drained past
//    its timeout (then after a last message with FINISH_REASON_CANCELLED);
//  - INTERNAL "Received RST_STREAM ...": what a gateway (nginx) gives when its
//    upstream dies after the response began: it can only reset the HTTP/2
//    stream, and gRPC maps the reset to INTERNAL. The server's own INTERNAL
//    (an engine failure) comes after a last message with FINISH_REASON_ERROR
//    and is never resumed.
bool CutShort(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE ||
         (status.error_code() == grpc::StatusCode::INTERNAL &&
          absl::StrContains(status.error_message(), "RST_STREAM"));
}

// Sleeps `ms`, waking early on Ctrl-C.
void SleepUnlessInterrupted(int ms) {
  for (int slept = 0; slept < ms && !g_interrupted; slept += 10) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int Generate(v1::TextGeneration::Stub& stub, const std::string& prompt) {
  v1::GenerateRequest request = BuildGenerateRequest(prompt);
  const auto deadline = DeadlineFromFlag();  // one deadline for every attempt
  const int max_resumes = std::max(0, absl::GetFlag(FLAGS_resume_retries));
  v1::GenerateResponse last;
  bool json = absl::GetFlag(FLAGS_json);
  // What a resume needs: every token received, and the first message's fields.
  std::vector<int> received;
  int messages = 0;
  int resumes = 0;
  grpc::Status status;
  for (;;) {
    grpc::ClientContext context;
    PrepareContext(&context, deadline);
    ActiveContext active(&context);
    if (g_interrupted) context.TryCancel();
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        stub.Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (json) {
        std::cout << ToJson(response) << std::endl;
      } else {
        std::cout << response.text() << std::flush;
      }
      if (messages++ == 0) {
        // The first message names the seed and the model: what a resume sends back.
        if (!request.has_seed() && response.has_seed()) request.set_seed(response.seed());
        request.set_model_fingerprint(response.model_fingerprint());
        if (request.request_id().empty()) request.set_request_id(response.request_id());
      }
      for (const v1::Token& token : response.tokens()) received.push_back(token.id());
      if (response.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) last = response;
    }
    status = reader->Finish();
    // Ended for good: a last message other than the drain's CANCELLED.
    const bool ended = last.finish_reason() != v1::FINISH_REASON_UNSPECIFIED &&
                       last.finish_reason() != v1::FINISH_REASON_CANCELLED;
    if (status.ok() || ended || g_interrupted || !CutShort(status) || resumes >= max_resumes) {
      break;
    }
    last.Clear();
    ++resumes;
    const std::string why =
        absl::StrCat(absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                     ": ", status.error_message());
    if (messages == 0) {
      // Refused or lost before anything came (a draining replica behind a
      // gateway, one that died while this call waited): nothing was
      // generated for us, so the same request again is safe.
      std::cerr << "[" << why << "; retrying, " << resumes << " of " << max_resumes << "]\n";
    } else {
      std::cerr << "\n[stream broke after " << received.size() << " tokens (" << why
                << "); resuming, " << resumes << " of " << max_resumes << "]\n";
      request.clear_resume_token_ids();
      for (int id : received) request.add_resume_token_ids(id);
    }
    // A short back-off: a gateway needs a moment to eject the dead replica.
    SleepUnlessInterrupted(std::min(2000, 100 << (resumes - 1)));
  }
  if (!json) {
    std::cout << std::endl;
    if (last.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      std::cerr << "[" << v1::FinishReason_Name(last.finish_reason())
                << " request_id=" << last.request_id()
                << " prompt_tokens=" << last.usage().prompt_tokens()
                << " completion_tokens=" << last.usage().completion_tokens()
                << " seed=" << last.seed() << " ttft_ms=" << last.timings().ttft_ms()
                << " tokens_per_s=" << last.timings().decode_tokens_per_s();
      if (resumes > 0) std::cerr << " resumed=" << resumes;
      std::cerr << "]\n";
    }
  }
  return Report(status);
}

int Tokenize(v1::TextGeneration::Stub& stub, const std::string& text) {
  v1::TokenizeRequest request;
  if (absl::GetFlag(FLAGS_chat)) {
    AddChatMessages(text, &request);
  } else {
    request.set_text(text);
    request.set_add_special_tokens(absl::GetFlag(FLAGS_add_special_tokens));
  }
  request.set_parse_special_tokens(absl::GetFlag(FLAGS_parse_special_tokens));
  v1::TokenizeResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  ActiveContext active(&context);
  grpc::Status status = stub.Tokenize(&context, request, &response);
  if (status.ok()) {
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(response) << "\n";
    } else {
      for (int i = 0; i < response.token_ids_size(); ++i) {
        std::cout << response.token_ids(i) << "\t" << response.pieces(i) << "\n";
      }
    }
  }
  return Report(status);
}

int Info(v1::TextGeneration::Stub& stub) {
  v1::ModelInfo info;
  grpc::ClientContext context;
  PrepareContext(&context);
  ActiveContext active(&context);
  grpc::Status status = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (status.ok()) {
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << ToJson(info) << "\n";
    } else {
      std::cout << info.DebugString();
    }
  }
  return Report(status);
}

// grpc.health.v1.Health/Check: prints the status and exits 0 when SERVING,
// 1 otherwise (NOT_SERVING while the model loads or the server drains,
// UNAVAILABLE when nothing answers). Without --deadline-ms a 5 s deadline: a
// health check that hangs is a failed one.
int Health(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  if (absl::GetFlag(FLAGS_deadline_ms) <= 0) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  ActiveContext active(&context);
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Report(status);
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())
            << "\n";
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

int Bench(v1::TextGeneration::Stub& stub) {
  BenchOptions options;
  options.concurrency = absl::GetFlag(FLAGS_concurrency);
  options.requests = absl::GetFlag(FLAGS_requests);
  options.warmup = absl::GetFlag(FLAGS_warmup);
  options.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  options.shared_prefix_tokens = absl::GetFlag(FLAGS_shared_prefix_tokens);
  options.prompt_seed = absl::GetFlag(FLAGS_prompt_seed);
  options.max_new_tokens = g_sampling.max_new_tokens.value_or(0);
  options.temperature = g_sampling.temperature.value_or(0);
  options.deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  options.stop = &g_interrupted;
  options.http_url = absl::GetFlag(FLAGS_http);
  options.api_key = absl::GetFlag(FLAGS_api_key);
  if (options.api_key.empty() && std::getenv("STREAMGEN_API_KEY") != nullptr) {
    options.api_key = std::getenv("STREAMGEN_API_KEY");
  }
  // The deadline is per call (RunBench sets it); PrepareContext adds the key.
  options.prepare = [](grpc::ClientContext* context) {
    std::string key = absl::GetFlag(FLAGS_api_key);
    if (key.empty() && std::getenv("STREAMGEN_API_KEY") != nullptr) {
      key = std::getenv("STREAMGEN_API_KEY");
    }
    if (!key.empty()) context->AddMetadata("authorization", "Bearer " + key);
  };
  absl::StatusOr<BenchReport> report = RunBench(&stub, options);
  if (!report.ok()) {
    std::cerr << "streamgen-client: " << absl::StatusCodeToString(report.status().code()) << ": "
              << report.status().message() << "\n";
    return report.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  std::cout << (absl::GetFlag(FLAGS_json) ? BenchReportJson(*report) + "\n"
                                          : BenchReportText(*report))
            << std::flush;
  if (g_interrupted) return 130;
  if (report->errors > 0) {
    std::cerr << "streamgen-client: bench: " << report->errors
              << " calls failed; the first: " << report->first_error << "\n";
    return 1;
  }
  return 0;
}

int Usage() {
  std::cerr << "usage: streamgen-client [flags] generate PROMPT | tokenize TEXT | info | health | bench\n"
               "       (streamgen-client --help lists the flags)\n";
  return 2;
}

}  // namespace
}  // namespace streamgen

int main(int argc, char** argv) {
  const char* kUsage =
      "Client for streamgen.v1.TextGeneration.\n"
      "  streamgen-client [--server HOST:PORT] generate PROMPT [--max-new-tokens N] [--json]\n"
      "  streamgen-client tokenize TEXT\n"
      "  streamgen-client info\n"
      "  streamgen-client health [--service NAME]   (exit 0 when SERVING)\n"
      "  streamgen-client bench --concurrency C --requests N --prompt-tokens P\n"
      "                         --max-new-tokens M [--warmup W] [--json]\n"
      "Flags may be written --max-new-tokens=8 or --max_new_tokens=8.";
  absl::SetProgramUsageMessage(kUsage);
  if (streamgen::PrintHelpIfAsked(argc, argv, kUsage, {"client/main.cc", "common/sampling_flags.cc"})) {
    return 0;
  }
  streamgen::ArgvHolder args(streamgen::NormalizeFlagNames(argc, argv));
  int args_count = args.argc();
  streamgen::SamplingArgs stops = streamgen::TakeSamplingArgs(&args_count, args.argv());
  std::vector<char*> positional = absl::ParseCommandLine(args_count, args.argv());
  absl::StatusOr<streamgen::SamplingFlags> sampling = streamgen::ReadSamplingFlags(std::move(stops));
  if (!sampling.ok()) {
    std::cerr << "streamgen-client: " << sampling.status().message() << "\n";
    return 2;
  }
  streamgen::g_sampling = *std::move(sampling);
  if (positional.size() < 2) return streamgen::Usage();
  std::string command = positional[1];
  std::vector<std::string> rest(positional.begin() + 2, positional.end());
  streamgen::InterruptWatcher watcher;
  std::shared_ptr<grpc::Channel> channel = streamgen::MakeChannel();
  auto stub = streamgen::v1::TextGeneration::NewStub(channel);
  if (command == "generate") {
    bool ids = !absl::GetFlag(FLAGS_prompt_token_ids).empty();
    if (rest.size() != (ids ? 0u : 1u)) {
      std::cerr << "streamgen-client: generate takes one PROMPT (or --prompt-token-ids)\n";
      return 2;
    }
    return streamgen::Generate(*stub, ids ? "" : rest[0]);
  }
  if (command == "tokenize" && rest.size() == 1) return streamgen::Tokenize(*stub, rest[0]);
  if (command == "info" && rest.empty()) return streamgen::Info(*stub);
  if (command == "health" && rest.empty()) return streamgen::Health(channel);
  if (command == "bench" && rest.empty()) return streamgen::Bench(*stub);
  return streamgen::Usage();
}
