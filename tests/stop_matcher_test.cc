#include "engine/text/stop_matcher.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace streamgen {
namespace {

// Pushes `chunks` in order and returns (all released text, stopped) including
// the final Flush().
StopMatcher::Result PushAll(std::vector<std::string> stops,
                            const std::vector<std::string>& chunks) {
  StopMatcher matcher(std::move(stops));
  StopMatcher::Result total;
  for (const std::string& chunk : chunks) {
    StopMatcher::Result r = matcher.Push(chunk);
    total.text += r.text;
    total.stopped = total.stopped || r.stopped;
  }
  total.text += matcher.Flush();
  return total;
}

TEST(StopMatcherTest, NoStopsPassesEverythingThrough) {
  StopMatcher matcher({});
  StopMatcher::Result r = matcher.Push("Hello");
  EXPECT_EQ(r.text, "Hello");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, StopInOneChunk) {
  StopMatcher matcher({"END"});
  StopMatcher::Result r = matcher.Push("abcENDdef");
  EXPECT_EQ(r.text, "abc");
  EXPECT_TRUE(r.stopped);
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, StopAtVeryStart) {
  StopMatcher matcher({"END"});
  StopMatcher::Result r = matcher.Push("ENDx");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcherTest, StopSplitAcrossChunks) {
  StopMatcher matcher({"Hello"});
  StopMatcher::Result r1 = matcher.Push("Say Hel");
  EXPECT_EQ(r1.text, "Say ");  // "Hel" may start "Hello": held
  EXPECT_FALSE(r1.stopped);
  StopMatcher::Result r2 = matcher.Push("lo world");
  EXPECT_EQ(r2.text, "");
  EXPECT_TRUE(r2.stopped);
}

TEST(StopMatcherTest, StopSplitOverManyChunks) {
  StopMatcher matcher({"<|end|>"});
  std::string released;
  for (const char* chunk : {"ok", "<", "|", "en", "d", "|", ">", "more"}) {
    StopMatcher::Result r = matcher.Push(chunk);
    released += r.text;
    if (r.stopped) break;
  }
  EXPECT_EQ(released, "ok");
  EXPECT_TRUE(matcher.stopped());
}

TEST(StopMatcherTest, FalsePartialThenContinue) {
  StopMatcher matcher({"Hello"});
  StopMatcher::Result r1 = matcher.Push("Hel");
  EXPECT_EQ(r1.text, "");
  StopMatcher::Result r2 = matcher.Push("p me");
  EXPECT_EQ(r2.text, "Help me");
  EXPECT_FALSE(r2.stopped);
}

TEST(StopMatcherTest, HoldsOnlyTheLongestPossibleStart) {
  StopMatcher matcher({"abc"});
  StopMatcher::Result r = matcher.Push("xxab");
  EXPECT_EQ(r.text, "xx");
  r = matcher.Push("a");  // "aba": only the last "a" can still start "abc"
  EXPECT_EQ(r.text, "ab");
  EXPECT_EQ(matcher.Flush(), "a");
}

TEST(StopMatcherTest, MultipleStopsEarliestWins) {
  StopMatcher::Result r = PushAll({"world", "lo"}, {"Hello world"});
  EXPECT_EQ(r.text, "Hel");
  EXPECT_TRUE(r.stopped);
  // The same, with the later stop completing in an earlier chunk.
  r = PushAll({"B", "xyz"}, {"axy", "zB"});
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcherTest, StopsAsSoonAsAnyStopCompletes) {
  // "bc" is complete while "abcd", which would start earlier, is still only a
  // possibility: generation ends here, so "abcd" can never complete.
  StopMatcher matcher({"abcd", "bc"});
  StopMatcher::Result r = matcher.Push("xabc");
  EXPECT_EQ(r.text, "xa");
  EXPECT_TRUE(r.stopped);
  // Both complete in the same text: the earlier start wins.
  r = PushAll({"abcd", "bc"}, {"xabcd"});
  EXPECT_EQ(r.text, "x");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcherTest, OverlappingPrefixes) {
  StopMatcher::Result r = PushAll({"ab"}, {"aab"});
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
  r = PushAll({"ab"}, {"a", "a", "b"});
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
  r = PushAll({"aab"}, {"a", "a", "a", "b"});
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcherTest, MultiByteStopStrings) {
  // "é" is C3 A9; "😀" is F0 9F 98 80.
  StopMatcher::Result r = PushAll({"café"}, {"un caf", "é noir"});
  EXPECT_EQ(r.text, "un ");
  EXPECT_TRUE(r.stopped);
  r = PushAll({"😀"}, {"hi ", "😀", " there"});
  EXPECT_EQ(r.text, "hi ");
  EXPECT_TRUE(r.stopped);
  // A character sharing only its lead byte with the stop's is released whole.
  StopMatcher matcher({"😀"});
  StopMatcher::Result r1 = matcher.Push("a😁");  // F0 9F 98 81
  EXPECT_EQ(r1.text, "a😁");
  EXPECT_FALSE(r1.stopped);
}

TEST(StopMatcherTest, HeldMultiByteTextIsWholeCharacters) {
  StopMatcher matcher({"日本語"});
  StopMatcher::Result r = matcher.Push("x日本");
  EXPECT_EQ(r.text, "x");  // "日本" may start the stop: held as whole characters
  r = matcher.Push("人");
  EXPECT_EQ(r.text, "日本人");
  EXPECT_FALSE(r.stopped);
  r = matcher.Push("日本語です");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
}

TEST(StopMatcherTest, FlushReleasesHeldText) {
  StopMatcher matcher({"Hello"});
  EXPECT_EQ(matcher.Push("Well, Hell").text, "Well, ");
  EXPECT_EQ(matcher.Flush(), "Hell");
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, NothingAfterAStop) {
  StopMatcher matcher({"STOP"});
  StopMatcher::Result r = matcher.Push("aSTOPb");
  EXPECT_EQ(r.text, "a");
  EXPECT_TRUE(r.stopped);
  r = matcher.Push("more text");
  EXPECT_EQ(r.text, "");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(matcher.Flush(), "");
}

TEST(StopMatcherTest, EmptyStopStringsAreIgnored) {
  StopMatcher::Result r = PushAll({"", "z"}, {"abc"});
  EXPECT_EQ(r.text, "abc");
  EXPECT_FALSE(r.stopped);
}

TEST(StopMatcherTest, ReleasedTextMatchesOneShotForEverySplit) {
  const std::string text = "the cat sat on the mat, then the hat";
  const std::vector<std::string> stops = {"the h", "mat,", "at o"};
  // One chunk: the reference answer.
  const StopMatcher::Result expected = PushAll(stops, {text});
  ASSERT_EQ(expected.text, "the cat s");
  ASSERT_TRUE(expected.stopped);
  // Every way of cutting the text into two or three chunks gives the same.
  for (size_t i = 0; i <= text.size(); ++i) {
    for (size_t j = i; j <= text.size(); ++j) {
      const StopMatcher::Result r =
          PushAll(stops, {text.substr(0, i), text.substr(i, j - i), text.substr(j)});
      ASSERT_EQ(r.text, expected.text) << "cuts at " << i << ", " << j;
      ASSERT_TRUE(r.stopped);
    }
  }
}

}  // namespace
}  // namespace streamgen
