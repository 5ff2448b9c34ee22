// Fuzz target: a GenerateRequest as the gRPC face receives it (serialized
// protobuf bytes) -> server/validation.cc's ToGenerationRequest, with the
// limits of a real server and a byte-level PromptEncoder that renders chat
// through the engine's chat templates.
//
// Input: byte 0 picks the limits (bit 0) and the chat family (bits 1-2); the
// rest is the serialized v1::GenerateRequest (inputs that do not parse are
// what gRPC would refuse before the service sees them).
//
// Properties: never a crash; an error is INVALID_ARGUMENT or
// FAILED_PRECONDITION with a message; an accepted request respects every limit
// (tests/fuzz/fuzz_request.h, CheckConversion).
#include <cstddef>
#include <cstdint>

#include "server/validation.h"
#include "tests/fuzz/fuzz_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace streamgen;
  if (size < 1) return 0;
  const RequestLimits limits = fuzz::FuzzLimits(data[0] & 1);
  const fuzz::FuzzEncoder encoder(fuzz::FuzzFamily((data[0] >> 1) & 3));
  v1::GenerateRequest request;
  if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  fuzz::CheckConversion(request, limits, ToGenerationRequest(request, limits, encoder.encoder()));
  return 0;
}
