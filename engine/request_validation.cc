#include "engine/request_validation.h"

#include <algorithm>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace streamgen {
namespace {

// "<field> must be in <range>, got <value>": written as !(in range) at the
// call sites so that NaN is refused too.
absl::Status OutOfRange(absl::string_view field, absl::string_view range, double value) {
  return InvalidField(field, absl::StrCat(field, " must be in ", range, ", got ", value));
}

}  // namespace

absl::Status InvalidField(absl::string_view field, absl::string_view message) {
  return WithField(absl::InvalidArgumentError(message), field);
}

absl::Status WithField(absl::Status status, absl::string_view field) {
  if (!status.ok()) status.SetPayload(kFieldPayloadUrl, absl::Cord(field));
  return status;
}

std::string FieldOf(const absl::Status& status) {
  absl::optional<absl::Cord> field = status.GetPayload(kFieldPayloadUrl);
  return field ? std::string(*field) : std::string();
}

absl::Status ValidateSampling(const SamplingParams& s, int top_logprobs) {
  if (!(s.temperature >= 0.0f && s.temperature <= 100.0f)) {
    return OutOfRange("temperature", "[0, 100]", s.temperature);
  }
  if (s.top_k < 0) return OutOfRange("top_k", "[0, vocabulary]", s.top_k);
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) return OutOfRange("top_p", "(0, 1]", s.top_p);
  if (!(s.min_p >= 0.0f && s.min_p < 1.0f)) return OutOfRange("min_p", "[0, 1)", s.min_p);
  if (!(s.repetition_penalty > 0.0f && s.repetition_penalty <= 10.0f)) {
    return OutOfRange("repetition_penalty", "(0, 10]", s.repetition_penalty);
  }
  if (!(s.presence_penalty >= -2.0f && s.presence_penalty <= 2.0f)) {
    return OutOfRange("presence_penalty", "[-2, 2]", s.presence_penalty);
  }
  if (!(s.frequency_penalty >= -2.0f && s.frequency_penalty <= 2.0f)) {
    return OutOfRange("frequency_penalty", "[-2, 2]", s.frequency_penalty);
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return OutOfRange("top_logprobs", absl::StrCat("[0, ", kMaxTopLogprobs, "]"), top_logprobs);
  }
  return absl::OkStatus();
}

absl::Status ValidateStops(const std::vector<std::string>& stop,
                           const std::vector<int>& stop_token_ids, const StopLimits& limits) {
  if (static_cast<int64_t>(stop.size()) > limits.max_strings) {
    return InvalidField("stop", absl::StrCat("stop has ", stop.size(), " strings; at most ",
                                             limits.max_strings, " are allowed"));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].empty()) return InvalidField("stop", absl::StrCat("stop[", i, "] is empty"));
    if (static_cast<int64_t>(stop[i].size()) > limits.max_string_bytes) {
      return InvalidField("stop", absl::StrCat("stop[", i, "] is ", stop[i].size(),
                                               " bytes; at most ", limits.max_string_bytes,
                                               " are allowed"));
    }
  }
  return ValidateIds(stop_token_ids, "stop_token_ids", limits.vocab_size);
}

absl::Status ValidateLogitBias(const std::vector<std::pair<int, float>>& bias, int vocab_size) {
  if (static_cast<int64_t>(bias.size()) > kMaxLogitBias) {
    return InvalidField("logit_bias", absl::StrCat("logit_bias has ", bias.size(),
                                                   " entries; at most ", kMaxLogitBias,
                                                   " are allowed"));
  }
  std::vector<int> seen;
  for (const auto& [id, value] : bias) {
    if (id < 0 || id >= vocab_size) {
      return InvalidField("logit_bias",
                          absl::StrCat("logit_bias[", id, "]: the token id is outside the vocabulary [0, ",
                                       vocab_size, ")"));
    }
    if (!(value >= -kMaxAbsLogitBias && value <= kMaxAbsLogitBias)) {
      return InvalidField("logit_bias", absl::StrCat("logit_bias[", id, "]: the bias must be in [-",
                                                     kMaxAbsLogitBias, ", ", kMaxAbsLogitBias,
                                                     "], got ", value));
    }
    seen.push_back(id);
  }
  // Twice the same id cannot come from a JSON object or a proto map, only from
  // a direct caller: which value wins would be an accident of order.
  std::sort(seen.begin(), seen.end());
  auto twice = std::adjacent_find(seen.begin(), seen.end());
  if (twice != seen.end()) {
    return InvalidField("logit_bias",
                        absl::StrCat("logit_bias[", *twice, "]: the token id is given twice"));
  }
  return absl::OkStatus();
}

absl::Status ValidateChoiceCount(int n) {
  if (n < 1 || n > kMaxChoices) return OutOfRange("n", absl::StrCat("[1, ", kMaxChoices, "]"), n);
  return absl::OkStatus();
}

absl::Status ValidateConstraintShape(const ConstraintSpec& c) {
  const std::string kind = ConstraintKindName(c.kind);
  auto bad = [&](auto&&... parts) {
    return InvalidField("constraint", absl::StrCat(kind, ": ", parts...));
  };
  switch (c.kind) {
    case ConstraintSpec::Kind::kNone:
    case ConstraintSpec::Kind::kJsonObject:
      if (!c.text.empty() || !c.choices.empty()) return bad("takes no text and no choices");
      return absl::OkStatus();
    case ConstraintSpec::Kind::kJsonSchema:
    case ConstraintSpec::Kind::kRegex:
    case ConstraintSpec::Kind::kGrammar:
      if (c.text.empty()) return bad("the text is empty");
      if (c.text.size() > static_cast<size_t>(kMaxConstraintBytes)) {
        return bad("the text is ", c.text.size(), " bytes; at most ", kMaxConstraintBytes,
                   " are allowed");
      }
      if (!c.choices.empty()) return bad("takes no choices");
      return absl::OkStatus();
    case ConstraintSpec::Kind::kChoice: {
      if (c.choices.empty()) return bad("the list of choices is empty");
      if (c.choices.size() > static_cast<size_t>(kMaxConstraintChoices)) {
        return bad(c.choices.size(), " choices; at most ", kMaxConstraintChoices, " are allowed");
      }
      size_t bytes = 0;
      for (size_t i = 0; i < c.choices.size(); ++i) {
        if (c.choices[i].empty()) return bad("choice[", i, "] is empty");
        bytes += c.choices[i].size();
      }
      if (bytes > static_cast<size_t>(kMaxConstraintBytes)) {
        return bad("the choices are ", bytes, " bytes in all; at most ", kMaxConstraintBytes,
                   " are allowed");
      }
      if (!c.text.empty()) return bad("takes no text");
      return absl::OkStatus();
    }
  }
  return InvalidField("constraint", "constraint: unknown kind");
}

absl::Status ValidateIds(const std::vector<int>& ids, absl::string_view field, int vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return InvalidField(field, absl::StrCat(field, "[", i, "] = ", ids[i],
                                              " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace streamgen
