#include "client/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <httplib.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using Clock = std::chrono::steady_clock;

double Ms(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// What one Generate call did, as seen by the client.
struct CallResult {
  bool ok = false;
  std::string error;  // "CODE: message" when !ok
  int completion_tokens = 0;
  Clock::time_point sent;
  Clock::time_point first_token;  // time_point() when no token came
  Clock::time_point ended;
  std::vector<double> gaps_ms;  // between consecutive tokens received
};

// The calls in flight, so that a stop (Ctrl-C) can cancel them. Thread-safe.
class InFlight {
 public:
  void Add(grpc::ClientContext* context) {
    std::lock_guard<std::mutex> lock(mu_);
    contexts_.insert(context);
  }
  void Remove(grpc::ClientContext* context) {
    std::lock_guard<std::mutex> lock(mu_);
    contexts_.erase(context);
  }
  void CancelAll() {
    std::lock_guard<std::mutex> lock(mu_);
    for (grpc::ClientContext* context : contexts_) context->TryCancel();
  }

 private:
  std::mutex mu_;
  std::set<grpc::ClientContext*> contexts_;
};

// What the prompts and the checks need from GetModelInfo.
struct ModelFacts {
  int vocab = 0;  // ids are drawn below this
  int bos_token_id = -1;
  std::vector<int> eos_token_ids;
  int context_length = 0;
};

Percentiles PercentilesOf(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return Percentiles{Percentile(values, 50), Percentile(values, 90), Percentile(values, 99),
                     values.empty() ? 0.0 : sum / static_cast<double>(values.size())};
}

absl::Status CheckOptions(const BenchOptions& o, const ModelFacts& model) {
  auto bad = [](absl::string_view flag, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("bench: --", flag, " ", why));
  };
  if (o.concurrency < 1) return bad("concurrency", "must be at least 1");
  if (o.requests < 1) return bad("requests", "must be at least 1");
  if (o.warmup < 0) return bad("warmup", "must be >= 0 (or -1: one wave)");
  if (o.prompt_tokens < 1) return bad("prompt-tokens", "must be at least 1");
  if (o.max_new_tokens < 1) return bad("max-new-tokens", "must be at least 1");
  if (o.shared_prefix_tokens < 0 || o.shared_prefix_tokens > o.prompt_tokens) {
    return bad("shared-prefix-tokens", "must be in [0, --prompt-tokens]");
  }
  if (o.prompt_tokens + o.max_new_tokens > model.context_length) {
    return bad("prompt-tokens",
               absl::StrCat("+ --max-new-tokens (", o.prompt_tokens + o.max_new_tokens,
                            ") exceeds the model's context (", model.context_length, ")"));
  }
  if (model.vocab < 4 + static_cast<int>(model.eos_token_ids.size())) {
    return absl::FailedPreconditionError(
        absl::StrCat("bench: the model's vocabulary (", model.vocab, ") is too small"));
  }
  return absl::OkStatus();
}

// A call ended: with `error` ("" : none) it failed; otherwise it must have
// generated exactly max_new_tokens tokens.
void Conclude(const std::string& error, const BenchOptions& o, int index, CallResult* result) {
  if (!error.empty()) {
    result->error = error;
  } else if (result->completion_tokens != o.max_new_tokens) {
    result->error = absl::StrCat("request ", index, " generated ", result->completion_tokens,
                                 " tokens, not ", o.max_new_tokens);
  } else {
    result->ok = true;
  }
}

CallResult RunCall(v1::TextGeneration::Stub* stub, const BenchOptions& o, const ModelFacts& m,
                   int index, InFlight* in_flight) {
  v1::GenerateRequest request;
  for (int id : BenchPromptWithSharedPrefix(o.prompt_seed, index, o.prompt_tokens,
                                            o.shared_prefix_tokens, m.vocab, m.bos_token_id,
                                            m.eos_token_ids)) {
    request.add_prompt_token_ids(id);
  }
  request.set_max_new_tokens(o.max_new_tokens);
  request.set_ignore_eos(true);
  request.set_temperature(static_cast<float>(o.temperature));
  request.set_request_id(absl::StrCat("bench-", index));
  grpc::ClientContext context;
  if (o.prepare) o.prepare(&context);
  CallResult result;
  result.sent = Clock::now();
  if (o.deadline_ms > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(o.deadline_ms));
  }
  in_flight->Add(&context);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub->Generate(&context, request);
  v1::GenerateResponse message;
  Clock::time_point previous;
  while (reader->Read(&message)) {
    Clock::time_point now = Clock::now();
    for (int k = 0; k < message.tokens_size(); ++k) {
      if (result.first_token == Clock::time_point()) {
        result.first_token = now;
      } else {
        result.gaps_ms.push_back(k == 0 ? Ms(previous, now) : 0.0);
      }
    }
    if (message.tokens_size() > 0) previous = now;
    if (message.has_usage()) result.completion_tokens = message.usage().completion_tokens();
  }
  grpc::Status status = reader->Finish();
  result.ended = Clock::now();
  in_flight->Remove(&context);
  Conclude(status.ok() ? ""
                       : absl::StrCat(absl::StatusCodeToString(
                                          static_cast<absl::StatusCode>(status.error_code())),
                                      ": ", status.error_message()),
           o, index, &result);
  return result;
}

// The same call over the HTTP face: POST /v1/completions with stream: true.
CallResult RunHttpCall(const BenchOptions& o, const ModelFacts& m, int index) {
  nlohmann::json body;
  body["prompt"] = BenchPromptWithSharedPrefix(o.prompt_seed, index, o.prompt_tokens,
                                               o.shared_prefix_tokens, m.vocab, m.bos_token_id,
                                               m.eos_token_ids);
  body["max_tokens"] = o.max_new_tokens;
  body["ignore_eos"] = true;
  body["temperature"] = o.temperature;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  CallResult result;
  httplib::Client client(o.http_url);
  client.set_read_timeout(o.deadline_ms > 0 ? o.deadline_ms / 1000 + 1 : 3600, 0);
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.body = body.dump();
  request.set_header("Content-Type", "application/json");
  request.set_header("X-Request-Id", absl::StrCat("bench-", index));
  if (!o.api_key.empty()) request.set_header("Authorization", "Bearer " + o.api_key);
  int http_status = 0;
  request.response_handler = [&](const httplib::Response& response) {
    http_status = response.status;
    return true;
  };
  std::string buffer, error;
  Clock::time_point previous;
  int tokens_seen = 0;
  request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    Clock::time_point now = Clock::now();
    buffer.append(data, length);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos; buffer.erase(0, end + 2)) {
      std::string event = buffer.substr(0, end);
      if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
      nlohmann::json chunk = nlohmann::json::parse(event.substr(6), nullptr, false);
      if (chunk.is_discarded()) continue;
      if (chunk.contains("error")) error = chunk["error"].value("message", "error event");
      if (chunk.contains("usage") && chunk["usage"].is_object()) {
        result.completion_tokens = chunk["usage"].value("completion_tokens", 0);
      }
      if (!chunk.contains("choices") || chunk["choices"].empty()) continue;
      if (chunk["choices"][0].value("text", "").empty()) continue;
      // One chunk: at least one token.
      if (result.first_token == Clock::time_point()) {
        result.first_token = now;
      } else {
        result.gaps_ms.push_back(Ms(previous, now));
      }
      previous = now;
      ++tokens_seen;
    }
    return true;
  };
  result.sent = Clock::now();
  httplib::Result response = client.send(request);
  result.ended = Clock::now();
  // Tokens that came merged into a chunk (or as no text) are 0 ms apart.
  while (static_cast<int>(result.gaps_ms.size()) + 1 < result.completion_tokens) {
    result.gaps_ms.push_back(0.0);
  }
  if (!response) {
    error = absl::StrCat("HTTP: ", httplib::to_string(response.error()));
  } else if (http_status != 200) {
    // The body went to the content receiver: {"error": {"message": ...}}.
    nlohmann::json body = nlohmann::json::parse(buffer, nullptr, false);
    std::string message = buffer;
    if (body.is_object() && body.contains("error") && body["error"].is_object()) {
      message = body["error"].value("message", buffer);
    }
    error = absl::StrCat("HTTP ", http_status, ": ", message);
  }
  Conclude(error, o, index, &result);
  return result;
}

void Summarize(const std::vector<CallResult>& calls, BenchReport* report) {
  const BenchOptions& o = report->options;
  std::vector<double> ttft, itl, e2e;
  Clock::time_point begin = Clock::time_point::max(), end = Clock::time_point::min();
  for (size_t i = 0; i < calls.size(); ++i) {
    const CallResult& call = calls[i];
    if (call.sent == Clock::time_point()) continue;  // never issued (stopped)
    if (!call.ok) {
      if (report->errors++ == 0) report->first_error = call.error;
      continue;
    }
    if (static_cast<int>(i) < o.warmup) continue;
    ++report->completed;
    report->output_tokens += call.completion_tokens;
    begin = std::min(begin, call.sent);
    end = std::max(end, call.ended);
    ttft.push_back(Ms(call.sent, call.first_token));
    e2e.push_back(Ms(call.sent, call.ended));
    itl.insert(itl.end(), call.gaps_ms.begin(), call.gaps_ms.end());
  }
  if (report->completed > 0) {
    report->duration_s = Ms(begin, end) / 1000.0;
    if (report->duration_s > 0) {
      report->output_tokens_per_s = report->output_tokens / report->duration_s;
      report->requests_per_s = report->completed / report->duration_s;
    }
  }
  report->ttft_ms = PercentilesOf(ttft);
  report->itl_ms = PercentilesOf(itl);
  report->e2e_ms = PercentilesOf(e2e);
}

// Rounded to `digits` decimals (JSON stays readable; microseconds suffice).
double Round(double value, int digits) {
  double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

nlohmann::ordered_json ToJson(const Percentiles& p, bool with_p90 = true) {
  nlohmann::ordered_json out;
  out["p50"] = Round(p.p50, 3);
  if (with_p90) out["p90"] = Round(p.p90, 3);
  out["p99"] = Round(p.p99, 3);
  out["mean"] = Round(p.mean, 3);
  return out;
}

}  // namespace

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  size_t low = static_cast<size_t>(std::floor(rank));
  size_t high = std::min(low + 1, values.size() - 1);
  double fraction = rank - static_cast<double>(low);
  return values[low] + (values[high] - values[low]) * fraction;
}

absl::StatusOr<BenchReport> RunBench(v1::TextGeneration::Stub* stub, BenchOptions options) {
  if (options.warmup == -1) options.warmup = options.concurrency;
  v1::ModelInfo info;
  grpc::ClientContext context;
  if (options.prepare) options.prepare(&context);
  grpc::Status status = stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("bench: GetModelInfo: ", status.error_message()));
  }
  ModelFacts model;
  model.vocab = static_cast<int>(info.vocab_size());
  if (info.tokenizer_vocab_size() > 0 &&
      static_cast<int>(info.tokenizer_vocab_size()) < model.vocab) {
    model.vocab = static_cast<int>(info.tokenizer_vocab_size());
  }
  model.bos_token_id = info.bos_token_id();
  model.eos_token_ids.assign(info.eos_token_ids().begin(), info.eos_token_ids().end());
  model.context_length = static_cast<int>(info.context_length());
  absl::Status valid = CheckOptions(options, model);
  if (!valid.ok()) return valid;

  const int total = options.warmup + options.requests;
  std::vector<CallResult> calls(total);
  std::atomic<int> next{0};
  InFlight in_flight;
  std::atomic<bool> done{false};
  std::thread watcher([&] {  // after a stop, cancel the calls in flight (and late starters)
    while (!done) {
      if (options.stop != nullptr && options.stop->load()) in_flight.CancelAll();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  std::vector<std::thread> workers;
  for (int w = 0; w < options.concurrency; ++w) {
    workers.emplace_back([&] {
      while (options.stop == nullptr || !options.stop->load()) {
        int index = next.fetch_add(1);
        if (index >= total) return;
        // One writer each.
        calls[index] = options.http_url.empty() ? RunCall(stub, options, model, index, &in_flight)
                                                : RunHttpCall(options, model, index);
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  done = true;
  watcher.join();

  BenchReport report;
  report.options = options;
  report.face = options.http_url.empty() ? "grpc" : "http";
  report.model = info.name();
  report.dtype = info.dtype();
  report.device = info.device();
  Summarize(calls, &report);
  return report;
}

std::string BenchReportJson(const BenchReport& r) {
  nlohmann::ordered_json out;
  out["face"] = r.face;
  out["model"] = r.model;
  out["dtype"] = r.dtype;
  out["device"] = r.device;
  out["concurrency"] = r.options.concurrency;
  out["requests"] = r.options.requests;
  out["warmup"] = r.options.warmup;
  out["prompt_tokens"] = r.options.prompt_tokens;
  out["shared_prefix_tokens"] = r.options.shared_prefix_tokens;
  out["max_new_tokens"] = r.options.max_new_tokens;
  out["completed"] = r.completed;
  out["errors"] = r.errors;
  if (r.errors > 0) out["first_error"] = r.first_error;
  out["output_tokens"] = r.output_tokens;
  out["duration_s"] = Round(r.duration_s, 6);
  out["output_tokens_per_s"] = Round(r.output_tokens_per_s, 2);
  out["requests_per_s"] = Round(r.requests_per_s, 3);
  out["ttft_ms"] = ToJson(r.ttft_ms);
  out["itl_ms"] = ToJson(r.itl_ms);
  out["e2e_ms"] = ToJson(r.e2e_ms, /*with_p90=*/false);
  return out.dump();
}

std::string BenchReportText(const BenchReport& r) {
  const BenchOptions& o = r.options;
  std::string out = absl::StrFormat(
      "bench (%s): %s (%s, %s): concurrency %d, %d requests (+%d warm-up), prompt %d, output %d "
      "tokens\n",
      r.face, r.model, r.dtype, r.device, o.concurrency, o.requests, o.warmup, o.prompt_tokens,
      o.max_new_tokens);
  absl::StrAppendFormat(&out, "completed %d, errors %d, measured %.3f s\n", r.completed, r.errors,
                        r.duration_s);
  absl::StrAppendFormat(&out, "output tokens/s %.1f, requests/s %.2f\n", r.output_tokens_per_s,
                        r.requests_per_s);
  absl::StrAppendFormat(&out, "TTFT ms  p50 %.1f  p90 %.1f  p99 %.1f\n", r.ttft_ms.p50,
                        r.ttft_ms.p90, r.ttft_ms.p99);
  absl::StrAppendFormat(&out, "ITL ms   p50 %.2f  p90 %.2f  p99 %.2f\n", r.itl_ms.p50, r.itl_ms.p90,
                        r.itl_ms.p99);
  absl::StrAppendFormat(&out, "e2e ms   p50 %.1f  p99 %.1f\n", r.e2e_ms.p50, r.e2e_ms.p99);
  if (r.errors > 0) absl::StrAppend(&out, "first error: ", r.first_error, "\n");
  return out;
}

}  // namespace streamgen
