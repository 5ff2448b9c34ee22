// Fuzz target: an HTTP request body as the HTTP face receives it -> the JSON
// parser (as HttpServer's ParseBody calls it) -> server/openai_api.cc's body
// parsers (completions, chat completions, /query-stream/, /tokenize,
// /detokenize) -> the shared validator (ToGenerationRequest) under both
// limit sets and every chat family -> the error body the client would get.
//
// Input: the body bytes (a corpus file is a JSON body as curl would send it).
//
// Properties: never a crash or an uncaught exception; every parser error for
// an object body names its OpenAI `param`; every error body is valid JSON
// carrying the status message; a positive top_p / repetition_penalty never
// becomes the proto's 0 ("off"); accepted requests respect every limit
// (tests/fuzz/fuzz_request.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "nlohmann/json.hpp"
#include "server/openai_api.h"
#include "server/openai_encoder.h"
#include "server/validation.h"
#include "tests/fuzz/fuzz_request.h"
#include "tests/fuzz/fuzz_util.h"

namespace streamgen {
namespace {

using Json = nlohmann::json;

// The error body the HTTP face sends for `status` is JSON with its message.
void CheckErrorBody(const absl::Status& status, OpenAiRoute route) {
  const HttpError error = ToHttpError(status, route);
  FUZZ_CHECK(error.status >= 400 && error.status < 600, "HTTP status %d", error.status);
  const std::string text = DumpJson(ErrorBody(error));
  // Not const: operator[] of a const json asserts that the key exists.
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  FUZZ_CHECK(!parsed.is_discarded(), "the error body is not JSON: %s", text.c_str());
  const Json& message = parsed["error"]["message"];
  FUZZ_CHECK(message.is_string(), "error.message is not a string: %s", text.c_str());
  if (fuzz::IsValidUtf8(status.message())) {
    FUZZ_CHECK(message.get<std::string>() == status.message(), "error.message changed: %s",
               text.c_str());
  }
  const Json& param = parsed["error"]["param"];
  FUZZ_CHECK(param.is_null() || param.is_string(), "error.param: %s", text.c_str());
}

// A parser's error for an object body names the field (OpenAI's `param`).
void CheckParserError(const absl::Status& status, const Json& body, OpenAiRoute route) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument, "parser error %s",
             status.ToString().c_str());
  if (body.is_object()) {
    FUZZ_CHECK(!ErrorParam(status, route).empty(), "no param for: %s",
               status.ToString().c_str());
  }
  CheckErrorBody(status, route);
}

// A JSON value that the parsers read as a positive number.
bool PositiveNumber(const Json& body, const char* name) {
  auto it = body.find(name);
  return it != body.end() && it->is_number() && it->get<double>() > 0;
}

void Validate(const v1::GenerateRequest& request, OpenAiRoute route) {
  for (int which = 0; which < 2; ++which) {
    const RequestLimits limits = fuzz::FuzzLimits(which);
    for (int family = 0; family < 4; ++family) {
      const fuzz::FuzzEncoder encoder(fuzz::FuzzFamily(family));
      absl::StatusOr<GenerationRequest> converted =
          ToGenerationRequest(request, limits, encoder.encoder());
      fuzz::CheckConversion(request, limits, converted);
      if (!converted.ok()) CheckErrorBody(converted.status(), route);
    }
  }
}

void CheckGenerateBody(OpenAiRoute route, const Json& body) {
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(route, body);
  if (!parsed.ok()) return CheckParserError(parsed.status(), body, route);
  FUZZ_CHECK(parsed->route == route, "route changed");
  // The proto reads 0 as "off": a positive value sent must not arrive as 0.
  if (PositiveNumber(body, "top_p")) {
    FUZZ_CHECK(parsed->request.top_p() > 0, "top_p %s became 0 (off)",
               body["top_p"].dump().c_str());
  }
  if (PositiveNumber(body, "repetition_penalty")) {
    FUZZ_CHECK(parsed->request.repetition_penalty() > 0, "repetition_penalty %s became 0 (off)",
               body["repetition_penalty"].dump().c_str());
  }
  Validate(parsed->request, route);
}

}  // namespace
}  // namespace streamgen

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  Json body;
  try {
    body = Json::parse(data, data + size);
  } catch (const Json::exception&) {
    return 0;  // the face answers 400 "the body is not valid JSON"
  }
  CheckGenerateBody(OpenAiRoute::kCompletions, body);
  CheckGenerateBody(OpenAiRoute::kChat, body);

  absl::StatusOr<QueryStreamRequest> query = ParseQueryStreamRequest(body);
  if (query.ok()) {
    Validate(ToGenerateRequest(*query, /*chat=*/false, /*seed=*/42), OpenAiRoute::kCompletions);
    Validate(ToGenerateRequest(*query, /*chat=*/true, /*seed=*/42), OpenAiRoute::kCompletions);
  } else {
    CheckParserError(query.status(), body, OpenAiRoute::kCompletions);
  }

  absl::StatusOr<v1::TokenizeRequest> tokenize = ParseTokenizeRequest(body);
  if (tokenize.ok()) {
    // As Frontend::Tokenize renders messages.
    if (tokenize->messages_size() > 0) {
      for (int which = 0; which < 2; ++which) {
        absl::StatusOr<std::vector<ChatMessage>> messages =
            ConvertMessages(tokenize->messages(), fuzz::FuzzLimits(which));
        if (!messages.ok()) continue;
        for (int family = 0; family < 4; ++family) {
          const fuzz::FuzzEncoder encoder(fuzz::FuzzFamily(family));
          absl::StatusOr<std::vector<int>> ids = encoder.encoder().render_chat(*messages, ChatRenderOptions());
          if (!ids.ok()) CheckErrorBody(ids.status(), OpenAiRoute::kChat);
        }
      }
    }
  } else {
    CheckParserError(tokenize.status(), body, OpenAiRoute::kCompletions);
  }

  absl::StatusOr<std::vector<int>> detokenize = ParseDetokenizeRequest(body);
  if (!detokenize.ok()) CheckParserError(detokenize.status(), body, OpenAiRoute::kCompletions);
  return 0;
}
