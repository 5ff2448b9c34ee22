// The pending-message merger of a Generate stream, without gRPC: one write in
// flight, events merged while it is, the last message's fields, cancellation
// and server-side aborts.
#include "server/response_stream.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace streamgen {
namespace {

using ::testing::ElementsAre;

TokenEvent Token(const std::string& text, int id) {
  TokenEvent event;
  event.text = text;
  TokenInfo info;
  info.id = id;
  info.logprob = -0.5f * id;
  event.tokens.push_back(info);
  return event;
}

TokenEvent Final(FinishReason reason, const std::string& text = "", int id = -1) {
  TokenEvent event = id >= 0 ? Token(text, id) : TokenEvent();
  event.finish_reason = reason;
  event.prompt_tokens = 5;
  event.completion_tokens = 7;
  event.seed = 1234;
  event.ttft_ms = 12.5;
  event.decode_tokens_per_s = 80;
  return event;
}

std::vector<int> Ids(const v1::GenerateResponse& message) {
  std::vector<int> ids;
  for (const v1::Token& token : message.tokens()) ids.push_back(token.id());
  return ids;
}

TEST(ResponseStreamTest, FirstEventIsWrittenAtOnce) {
  ResponseStream stream("req-1");
  StreamAction action = stream.OnEvent(Token("a", 1));
  ASSERT_EQ(action.kind, StreamAction::kWrite);
  EXPECT_EQ(action.message->text(), "a");
  EXPECT_THAT(Ids(*action.message), ElementsAre(1));
  EXPECT_FLOAT_EQ(action.message->tokens(0).logprob(), -0.5f);
  EXPECT_EQ(action.message->request_id(), "req-1");
  EXPECT_EQ(action.message->finish_reason(), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_FALSE(action.message->has_usage());
  EXPECT_FALSE(action.message->has_seed());
}

TEST(ResponseStreamTest, EventsDuringAWriteAreMergedIntoTheNextMessage) {
  ResponseStream stream("r");
  ASSERT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kWrite);
  EXPECT_EQ(stream.OnEvent(Token("b", 2)).kind, StreamAction::kNone);
  EXPECT_EQ(stream.OnEvent(Token("", 3)).kind, StreamAction::kNone);  // held-back bytes
  EXPECT_EQ(stream.OnEvent(Token("cd", 4)).kind, StreamAction::kNone);
  StreamAction next = stream.OnWriteDone(true);
  ASSERT_EQ(next.kind, StreamAction::kWrite);
  EXPECT_EQ(next.message->text(), "bcd");
  EXPECT_THAT(Ids(*next.message), ElementsAre(2, 3, 4));
  EXPECT_EQ(next.message->request_id(), "r");
  EXPECT_EQ(stream.OnWriteDone(true).kind, StreamAction::kNone);
  // Nothing in flight any more: the next event goes out at once.
  StreamAction again = stream.OnEvent(Token("e", 5));
  ASSERT_EQ(again.kind, StreamAction::kWrite);
  EXPECT_EQ(again.message->text(), "e");
}

// n > 1: events merge per choice; the last choice's last event goes out last.
TEST(ResponseStreamTest, ChoicesMergeApartAndTheCallEndsAfterTheLastChoice) {
  ResponseStream stream("r");
  stream.SetChoices(2);
  stream.SetConstraint("regex");
  auto of = [](TokenEvent e, int index, bool first = false) {
    e.index = index;
    e.first = first;
    return e;
  };
  StreamAction a = stream.OnEvent(of(Token("a", 1), 0, true));
  ASSERT_EQ(a.kind, StreamAction::kWrite);
  EXPECT_EQ(a.message->index(), 0u);
  EXPECT_EQ(a.message->constraint(), "regex");
  EXPECT_EQ(stream.OnEvent(of(Token("x", 5), 1, true)).kind, StreamAction::kNone);
  EXPECT_EQ(stream.OnEvent(of(Token("b", 2), 0)).kind, StreamAction::kNone);
  EXPECT_EQ(stream.OnEvent(of(Token("y", 6), 1)).kind, StreamAction::kNone);
  // Choice 1 ends first; choice 0's last event then ends the call.
  EXPECT_EQ(stream.OnEvent(of(Final(FinishReason::kLength, "z", 7), 1)).kind, StreamAction::kNone);
  EXPECT_EQ(stream.OnEvent(of(Final(FinishReason::kEos, "c", 3), 0)).kind, StreamAction::kNone);
  EXPECT_TRUE(stream.outcome().finish_reason == FinishReason::kEos);
  StreamAction next = stream.OnWriteDone(true);  // choice 1's merged message
  ASSERT_EQ(next.kind, StreamAction::kWrite);
  EXPECT_EQ(next.message->index(), 1u);
  EXPECT_EQ(next.message->text(), "xyz");
  EXPECT_THAT(Ids(*next.message), ElementsAre(5, 6, 7));
  EXPECT_EQ(next.message->constraint(), "regex");
  EXPECT_EQ(next.message->finish_reason(), v1::FINISH_REASON_LENGTH);
  StreamAction last = stream.OnWriteDone(true);
  ASSERT_EQ(last.kind, StreamAction::kWriteAndFinish);
  EXPECT_EQ(last.message->index(), 0u);
  EXPECT_EQ(last.message->text(), "bc");
  EXPECT_EQ(last.message->finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_TRUE(last.status.ok());
  // The prompt once, the completions summed.
  EXPECT_EQ(stream.outcome().prompt_tokens, 5);
  EXPECT_EQ(stream.outcome().completion_tokens, 14);
}

TEST(ResponseStreamTest, ASlowReaderCostsOneMessageNotAQueue) {
  ResponseStream stream("r");
  ASSERT_EQ(stream.OnEvent(Token("x", 0)).kind, StreamAction::kWrite);
  std::string expected;
  for (int i = 1; i <= 1000; ++i) {
    EXPECT_EQ(stream.OnEvent(Token("y", i)).kind, StreamAction::kNone);
    expected += "y";
  }
  StreamAction next = stream.OnWriteDone(true);
  ASSERT_EQ(next.kind, StreamAction::kWrite);
  EXPECT_EQ(next.message->text(), expected);
  EXPECT_EQ(next.message->tokens_size(), 1000);
  EXPECT_EQ(stream.OnWriteDone(true).kind, StreamAction::kNone);
}

TEST(ResponseStreamTest, LastEventCarriesFinishReasonUsageSeedAndTimings) {
  ResponseStream stream("r");
  StreamAction action = stream.OnEvent(Final(FinishReason::kLength, "z", 9));
  ASSERT_EQ(action.kind, StreamAction::kWriteAndFinish);
  EXPECT_TRUE(action.status.ok());
  const v1::GenerateResponse& last = *action.message;
  EXPECT_EQ(last.text(), "z");
  EXPECT_EQ(last.finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(last.usage().prompt_tokens(), 5u);
  EXPECT_EQ(last.usage().completion_tokens(), 7u);
  ASSERT_TRUE(last.has_seed());
  EXPECT_EQ(last.seed(), 1234u);
  EXPECT_DOUBLE_EQ(last.timings().ttft_ms(), 12.5);
  StreamOutcome outcome = stream.outcome();
  EXPECT_TRUE(outcome.finished);
  EXPECT_EQ(outcome.finish_reason, FinishReason::kLength);
  EXPECT_EQ(outcome.completion_tokens, 7);
}

TEST(ResponseStreamTest, LastEventDuringAWriteIsMergedAndFinishes) {
  ResponseStream stream("r");
  ASSERT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kWrite);
  EXPECT_EQ(stream.OnEvent(Token("b", 2)).kind, StreamAction::kNone);
  EXPECT_EQ(stream.OnEvent(Final(FinishReason::kStop)).kind, StreamAction::kNone);
  StreamAction last = stream.OnWriteDone(true);
  ASSERT_EQ(last.kind, StreamAction::kWriteAndFinish);
  EXPECT_EQ(last.message->text(), "b");
  EXPECT_THAT(Ids(*last.message), ElementsAre(2));
  EXPECT_EQ(last.message->finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(last.message->usage().completion_tokens(), 7u);
}

TEST(ResponseStreamTest, TopLogprobsAreCopied) {
  TokenEvent event = Token("a", 1);
  event.tokens[0].top_logprobs = {{1, -0.1f}, {4, -2.0f}};
  v1::GenerateResponse message;
  AppendEvent(event, &message);
  ASSERT_EQ(message.tokens(0).top_logprobs_size(), 2);
  EXPECT_EQ(message.tokens(0).top_logprobs(1).id(), 4);
  EXPECT_FLOAT_EQ(message.tokens(0).top_logprobs(1).logprob(), -2.0f);
}

TEST(ResponseStreamTest, ClientCancelDuringAWriteFinishesWhenTheWriteReturns) {
  ResponseStream stream("r");
  ASSERT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kWrite);
  EXPECT_FALSE(stream.NeedsEngineCancel());
  EXPECT_EQ(stream.OnCancel(absl::CancelledError("gone")).kind, StreamAction::kNone);
  EXPECT_TRUE(stream.NeedsEngineCancel());
  EXPECT_EQ(stream.OnEvent(Token("b", 2)).kind, StreamAction::kNone);  // dropped
  StreamAction finish = stream.OnWriteDone(false);
  ASSERT_EQ(finish.kind, StreamAction::kFinish);
  EXPECT_EQ(finish.status.code(), absl::StatusCode::kCancelled);
  // The engine's cancelled event: nothing more is sent, the engine is done.
  EXPECT_EQ(stream.OnEvent(Final(FinishReason::kCancelled)).kind, StreamAction::kNone);
  EXPECT_FALSE(stream.NeedsEngineCancel());
  StreamOutcome outcome = stream.outcome();
  EXPECT_TRUE(outcome.client_cancelled);
  EXPECT_EQ(outcome.finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(outcome.completion_tokens, 7);
}

TEST(ResponseStreamTest, ClientCancelWithNoWriteInFlightFinishesAtOnce) {
  ResponseStream stream("r");
  StreamAction finish = stream.OnCancel(absl::DeadlineExceededError("deadline"));
  ASSERT_EQ(finish.kind, StreamAction::kFinish);
  EXPECT_EQ(finish.status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(stream.NeedsEngineCancel());
  EXPECT_EQ(stream.OnCancel(absl::CancelledError("again")).kind, StreamAction::kNone);
  EXPECT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kNone);
}

TEST(ResponseStreamTest, FailedWriteMeansTheClientIsGone) {
  ResponseStream stream("r");
  ASSERT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kWrite);
  StreamAction finish = stream.OnWriteDone(false);
  ASSERT_EQ(finish.kind, StreamAction::kFinish);
  EXPECT_EQ(finish.status.code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(stream.NeedsEngineCancel());
}

TEST(ResponseStreamTest, ServerAbortSendsCancelledWithUsageThenTheStatus) {
  ResponseStream stream("r");
  ASSERT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kWrite);
  EXPECT_EQ(stream.OnWriteDone(true).kind, StreamAction::kNone);
  stream.Abort(absl::UnavailableError("drain timeout"));
  EXPECT_TRUE(stream.NeedsEngineCancel());
  StreamAction last = stream.OnEvent(Final(FinishReason::kCancelled));
  ASSERT_EQ(last.kind, StreamAction::kWriteAndFinish);
  EXPECT_EQ(last.message->finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(last.message->usage().completion_tokens(), 7u);
  EXPECT_EQ(last.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(last.status.message(), "drain timeout");
  EXPECT_FALSE(stream.NeedsEngineCancel());
}

TEST(ResponseStreamTest, EngineShutdownWithoutAbortIsUnavailable) {
  ResponseStream stream("r");
  StreamAction last = stream.OnEvent(Final(FinishReason::kCancelled));
  ASSERT_EQ(last.kind, StreamAction::kWriteAndFinish);
  EXPECT_EQ(last.status.code(), absl::StatusCode::kUnavailable);
}

TEST(ResponseStreamTest, EngineErrorSendsErrorThenInternal) {
  ResponseStream stream("r");
  TokenEvent event = Final(FinishReason::kError);
  event.status = absl::InternalError("device lost");
  StreamAction last = stream.OnEvent(std::move(event));
  ASSERT_EQ(last.kind, StreamAction::kWriteAndFinish);
  EXPECT_EQ(last.message->finish_reason(), v1::FINISH_REASON_ERROR);
  EXPECT_TRUE(last.message->has_usage());
  EXPECT_EQ(last.status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(last.status.message(), "device lost");
}

TEST(ResponseStreamTest, RejectFinishesAndDropsLaterEvents) {
  ResponseStream stream("r");
  StreamAction finish = stream.Reject(absl::ResourceExhaustedError("queue full"));
  ASSERT_EQ(finish.kind, StreamAction::kFinish);
  EXPECT_EQ(finish.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(stream.OnEvent(Token("a", 1)).kind, StreamAction::kNone);
  EXPECT_EQ(stream.outcome().status.code(), absl::StatusCode::kResourceExhausted);
}

TEST(ResponseStreamTest, FinishReasonsMapOneToOne) {
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kNone), v1::FINISH_REASON_UNSPECIFIED);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kLength), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kEos), v1::FINISH_REASON_EOS);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kStop), v1::FINISH_REASON_STOP);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kCancelled), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(ToProtoFinishReason(FinishReason::kError), v1::FINISH_REASON_ERROR);
}

}  // namespace
}  // namespace streamgen
