#include "engine/device.h"

#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"

#if defined(STREAMGEN_CUDA)
#include <torch/cuda.h>
#endif

namespace streamgen {

absl::StatusOr<torch::Device> ParseDevice(const std::string& name) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  if (name == "cuda" || absl::StartsWith(name, "cuda:")) {
    int index = 0;
    if (name != "cuda" && !absl::SimpleAtoi(name.substr(5), &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device: '", name, "' is not cpu, cuda or cuda:N"));
    }
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--device ", name,
          ": CUDA is not available (no GPU, or this libtorch is built without CUDA); use "
          "--device cpu"));
    }
    const int count = static_cast<int>(torch::cuda::device_count());
    if (index < 0 || index >= count) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device ", name, ": there are ", count, " CUDA devices"));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device: '", name, "' is not cpu, cuda or cuda:N"));
}

absl::StatusOr<torch::ScalarType> ParseDtype(const std::string& name,
                                             const torch::Device& device) {
  if (name.empty()) return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
  if (name == "float32") return torch::kFloat32;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float16") {
    if (device.is_cpu()) {
      return absl::InvalidArgumentError(
          "--dtype float16 is not supported on CPU (libtorch has no float16 CPU kernels): use "
          "float32 or bfloat16");
    }
    return torch::kFloat16;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--dtype: '", name, "' is not float32, bfloat16 or float16"));
}

std::string DtypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "float32";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return c10::toString(dtype);
  }
}

int ConfigureThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::thread::hardware_concurrency());
  if (threads <= 0) threads = 1;
  at::set_num_threads(threads);
  return threads;
}

}  // namespace streamgen
