// Device, dtype and thread set-up for the engine (torch types: engine-internal).
#pragma once

#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace streamgen {

// "cpu", "cuda", "cuda:N" -> a device that exists on this machine, or an error
// that says why not (CPU-only libtorch, no GPU, index out of range).
absl::StatusOr<torch::Device> ParseDevice(const std::string& name);

// "float32" | "bfloat16" | "float16" ("" picks float32 on CPU, bfloat16 on
// CUDA). float16 on CPU is refused: libtorch 1.13 has no float16 CPU kernels.
absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name, const torch::Device& device);

std::string DtypeName(torch::ScalarType dtype);

// Sets libtorch's intra-op threads: `threads`, or the machine's cores when 0
// (Debian's libtorch starts with 1 thread here). Returns the number set.
int ConfigureThreads(int threads);

}  // namespace streamgen
