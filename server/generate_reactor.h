// One Generate stream on gRPC: a ServerWriteReactor that carries out the
// GenerationCall's stream actions (generation_call.h has the lifecycle).
//
// The engine's loop thread only hands events to the ResponseStream (merging
// them while a write is in flight) and, when no write is in flight, starts one:
// it never waits for the client. OnWriteDone drives the next write.
// Cancellation, deadlines and disconnects reach OnCancel, which cancels the
// engine request.
//
// Lifetime: shared between gRPC (until OnDone) and the engine's sink (until
// the engine drops it).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/generation_call.h"
#include "server/tool_calls.h"
#include "streamgen/v1/generate.pb.h"

namespace streamgen {

class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse>,
                        public GenerationCall {
 public:
  // `log_prompt` goes into the log line when non-empty.
  static std::shared_ptr<GenerateReactor> Create(const ReactorEnv& env,
                                                 grpc::CallbackServerContext* context,
                                                 std::string request_id, std::string log_prompt);

  // The output is parsed for tool calls (GenerateRequest.tool_choice): each
  // message is rewritten before it is written (GenerateToolCallRewriter), and
  // a stop string in content ends the generation. Call before Submit.
  void ParseToolCalls(ToolCallParser::Options options);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  GenerateReactor(const ReactorEnv& env, grpc::CallbackServerContext* context,
                  std::string request_id, std::string log_prompt);

  void Apply(const StreamAction& action) override;

  const std::chrono::system_clock::time_point deadline_;
  // Tool calls: the rewriter and the message in flight it wrote (one write in
  // flight at a time: valid until that write is done). Null: not parsed.
  absl::Mutex tools_mu_;
  std::unique_ptr<GenerateToolCallRewriter> tools_ ABSL_GUARDED_BY(tools_mu_);
  v1::GenerateResponse rewritten_ ABSL_GUARDED_BY(tools_mu_);
  absl::Mutex mu_;
  std::shared_ptr<GenerateReactor> self_ ABSL_GUARDED_BY(mu_);  // held until OnDone
};

// absl::Status -> grpc::Status (the codes are the same numbers).
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace streamgen
