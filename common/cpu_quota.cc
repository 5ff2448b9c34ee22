#include "common/cpu_quota.h"

#include <sched.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace streamgen {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// "150000 100000" -> 1.5; "max 100000" -> nullopt.
std::optional<double> ParseCpuMax(const std::string& text) {
  std::vector<std::string> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  double quota = 0, period = 0;
  if (parts.size() != 2 || parts[0] == "max" || !absl::SimpleAtod(parts[0], &quota) ||
      !absl::SimpleAtod(parts[1], &period) || quota <= 0 || period <= 0) {
    return std::nullopt;
  }
  return quota / period;
}

std::optional<double> ParseCfs(const std::string& quota_text, const std::string& period_text) {
  double quota = 0, period = 0;
  if (!absl::SimpleAtod(absl::StripAsciiWhitespace(quota_text), &quota) ||
      !absl::SimpleAtod(absl::StripAsciiWhitespace(period_text), &period) || quota <= 0 ||
      period <= 0) {
    return std::nullopt;  // -1: unlimited
  }
  return quota / period;
}

void KeepMin(std::optional<double>* best, std::optional<double> v) {
  if (v && (!*best || *v < **best)) *best = v;
}

// `dir` and each ancestor up to `root`: a parent's limit applies to its children.
std::vector<std::string> SelfAndAncestors(const std::string& root, std::string path) {
  std::vector<std::string> dirs;
  while (true) {
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    dirs.push_back(path == "/" || path.empty() ? root : root + path);
    if (path == "/" || path.empty()) break;
    const size_t slash = path.rfind('/');
    path = slash == 0 ? "/" : path.substr(0, slash);
  }
  return dirs;
}

}  // namespace

int AffinityCpuCount() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

std::optional<double> CgroupCpuLimit(const std::string& cgroup_root,
                                     const std::string& proc_self_cgroup) {
  std::string self;
  if (!ReadFile(proc_self_cgroup, &self)) return std::nullopt;
  std::optional<double> limit;
  for (absl::string_view line : absl::StrSplit(self, '\n', absl::SkipEmpty())) {
    // "hierarchy-id:controllers:path"; the path may itself hold ':'.
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    const std::string& controllers = f[1];
    const std::string& path = f[2];
    std::string text;
    if (f[0] == "0" && controllers.empty()) {  // cgroup v2 (unified)
      for (const std::string& dir : SelfAndAncestors(cgroup_root, path)) {
        if (ReadFile(dir + "/cpu.max", &text)) KeepMin(&limit, ParseCpuMax(text));
      }
      continue;
    }
    std::vector<std::string> names = absl::StrSplit(controllers, ',');
    if (std::find(names.begin(), names.end(), "cpu") == names.end()) continue;
    // v1: the cpu controller is mounted as cpu, cpu,cpuacct or cpuacct,cpu.
    for (const char* mount : {"cpu", "cpu,cpuacct", "cpuacct,cpu"}) {
      const std::string base = absl::StrCat(cgroup_root, "/", mount);
      for (const std::string& dir : SelfAndAncestors(base, path)) {
        std::string period;
        if (ReadFile(dir + "/cpu.cfs_quota_us", &text) &&
            ReadFile(dir + "/cpu.cfs_period_us", &period)) {
          KeepMin(&limit, ParseCfs(text, period));
        }
      }
    }
  }
  return limit;
}

int DefaultThreadCount() {
  int n = AffinityCpuCount();
  if (std::optional<double> quota = CgroupCpuLimit()) {
    n = std::min(n, static_cast<int>(std::floor(*quota + 1e-9)));
  }
  return std::max(1, n);
}

std::string DescribeDefaultThreads() {
  std::string text = absl::StrCat(DefaultThreadCount(), " (affinity ", AffinityCpuCount(), " CPUs");
  if (std::optional<double> quota = CgroupCpuLimit()) {
    absl::StrAppend(&text, absl::StrFormat(", cgroup quota %.2f CPUs", *quota));
  } else {
    absl::StrAppend(&text, ", no cgroup CPU quota");
  }
  return text + ")";
}

}  // namespace streamgen
