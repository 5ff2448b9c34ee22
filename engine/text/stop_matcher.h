// Stop strings over streamed text: text is released only once it is certain
// that no stop string starts in it; a stop string and anything after it never
// come out.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace streamgen {

// Not thread-safe: one per request, used by one thread.
class StopMatcher {
 public:
  struct Result {
    std::string text;      // safe to emit now (possibly "")
    bool stopped = false;  // a stop string was found: generation should end
  };

  // Empty stop strings are ignored. Stop strings are expected to be valid
  // UTF-8 (the engine validates requests): then held-back text always starts
  // at a character boundary and released text never ends inside a character.
  explicit StopMatcher(std::vector<std::string> stops);

  // Takes newly detokenized text. When a stop string occurs in the text not
  // yet released, returns everything before its earliest occurrence and
  // stopped = true; every later call returns {"", true}. Otherwise holds back
  // the longest suffix that is a proper prefix of some stop string and
  // returns the rest.
  Result Push(std::string_view text);

  // Releases the held-back text (end of stream); "" after a stop.
  std::string Flush();

  bool stopped() const { return stopped_; }

 private:
  // Length of the longest suffix of pending_ that is a proper prefix of a stop.
  size_t HeldSuffixLength() const;

  std::vector<std::string> stops_;
  size_t max_stop_size_ = 0;
  std::string pending_;  // text not yet released
  bool stopped_ = false;
};

}  // namespace streamgen
