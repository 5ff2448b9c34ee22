#include "engine/text/stop_matcher.h"

#include <algorithm>
#include <utility>

namespace streamgen {

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& stop : stops) {
    if (stop.empty()) continue;
    max_stop_size_ = std::max(max_stop_size_, stop.size());
    stops_.push_back(std::move(stop));
  }
}

StopMatcher::Result StopMatcher::Push(std::string_view text) {
  Result result;
  if (stopped_) {
    result.stopped = true;
    return result;
  }
  pending_.append(text);

  // Earliest occurrence of any stop string. No occurrence can start in text
  // released earlier: it would have started inside the held-back suffix.
  size_t earliest = std::string::npos;
  for (const std::string& stop : stops_) {
    earliest = std::min(earliest, pending_.find(stop));
  }
  if (earliest != std::string::npos) {
    result.text = pending_.substr(0, earliest);
    result.stopped = true;
    stopped_ = true;
    pending_.clear();
    return result;
  }

  const size_t release = pending_.size() - HeldSuffixLength();
  result.text = pending_.substr(0, release);
  pending_.erase(0, release);
  return result;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

size_t StopMatcher::HeldSuffixLength() const {
  const std::string_view pending(pending_);
  const size_t longest = std::min(pending.size(), max_stop_size_ == 0 ? 0 : max_stop_size_ - 1);
  for (size_t len = longest; len > 0; --len) {
    const std::string_view suffix = pending.substr(pending.size() - len);
    for (const std::string& stop : stops_) {
      if (stop.size() > len && std::string_view(stop).substr(0, len) == suffix) return len;
    }
  }
  return 0;
}

}  // namespace streamgen
