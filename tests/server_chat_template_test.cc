// Chat templates against the models' real Jinja templates evaluated by
// python3-jinja2 (tests/chat_template_reference.py): the rendered text must be
// identical, and the ids must equal the Jinja text split at the special tokens
// with each text piece encoded on its own.
#include "engine/text/chat_template.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace streamgen {
namespace {

using ::testing::HasSubstr;

constexpr int kBos = 1, kEos = 2, kImStart = 3, kImEnd = 4, kSegmentStart = 9;

// A fake tokenizer that shows segment boundaries: each encoded piece of text
// starts with kSegmentStart (like sentencepiece's dummy prefix), then one id
// per byte.
std::vector<int> Encode(const std::string& text) {
  std::vector<int> ids = {kSegmentStart};
  for (unsigned char c : text) ids.push_back(100 + c);
  return ids;
}

ChatVocabulary Vocabulary() {
  ChatVocabulary vocabulary;
  vocabulary.encode = Encode;
  vocabulary.piece_to_id = [](const std::string& piece) {
    if (piece == "<|im_start|>") return kImStart;
    if (piece == "<|im_end|>") return kImEnd;
    return -1;
  };
  vocabulary.bos_id = kBos;
  vocabulary.eos_id = kEos;
  return vocabulary;
}

// The reference ids of a Jinja rendering: split at the special spellings.
std::vector<int> ReferenceIds(const std::string& text) {
  const std::vector<std::pair<std::string, int>> specials = {
      {"<s>", kBos}, {"</s>", kEos}, {"<|im_start|>", kImStart}, {"<|im_end|>", kImEnd}};
  std::vector<int> ids;
  std::string pending;
  size_t pos = 0;
  while (pos < text.size()) {
    bool matched = false;
    for (const auto& [spelling, id] : specials) {
      if (text.compare(pos, spelling.size(), spelling) == 0) {
        if (!pending.empty()) {
          std::vector<int> piece = Encode(pending);
          ids.insert(ids.end(), piece.begin(), piece.end());
          pending.clear();
        }
        ids.push_back(id);
        pos += spelling.size();
        matched = true;
        break;
      }
    }
    if (!matched) pending += text[pos++];
  }
  if (!pending.empty()) {
    std::vector<int> piece = Encode(pending);
    ids.insert(ids.end(), piece.begin(), piece.end());
  }
  return ids;
}

using Conversation = std::vector<ChatMessage>;

struct Case {
  std::string family;
  Conversation messages;
};

// Runs the Python reference on `cases`; empty json when python3/jinja2 are absent.
nlohmann::json RunReference(const std::vector<Case>& cases) {
  nlohmann::json input;
  input["cases"] = nlohmann::json::array();
  for (const Case& c : cases) {
    nlohmann::json messages = nlohmann::json::array();
    for (const ChatMessage& m : c.messages) {
      messages.push_back({{"role", m.role}, {"content", m.content}});
    }
    input["cases"].push_back({{"family", c.family}, {"messages", messages}});
  }
  // Per process: ctest runs the tests of this binary in parallel processes.
  std::string in_path =
      ::testing::TempDir() + "/chat_reference_in." + std::to_string(getpid()) + ".json";
  std::ofstream(in_path) << input.dump();
  std::string command = std::string("/usr/bin/python3 ") + STREAMGEN_SOURCE_DIR +
                        "/tests/chat_template_reference.py < " + in_path + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return nlohmann::json();
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  int status = pclose(pipe);
  std::remove(in_path.c_str());
  if (status != 0) return nlohmann::json();
  return nlohmann::json::parse(output, nullptr, false);
}

std::vector<Case> Cases() {
  Conversation one_turn = {{"user", "Hello, who are you?"}};
  Conversation multi = {{"user", "Hi"}, {"assistant", "Hello! How can I help?"},
                        {"user", "Tell me a joke."}};
  Conversation spaced = {{"user", "  padded\u3000 "}, {"assistant", " \tanswer\n"}, {"user", "x"}};
  Conversation system = {{"system", "You are terse."}, {"user", "Why?"}};
  Conversation system_multi = {{"system", "S"}, {"user", " u1 "}, {"assistant", "a1"},
                               {"user", "u2"}};
  Conversation unicode = {{"user", "Grüße 🤖 [INST]"}};
  // Special-token spellings inside content: the text must match; the ids must
  // not (see ContentSpellingSpecialTokens).
  Conversation spelled = {{"user", "a </s> <s> <|im_start|>"}};
  std::vector<Case> cases;
  for (const Conversation& c : {one_turn, multi, spaced, system, system_multi, unicode, spelled}) {
    cases.push_back({"llama2", c});
    cases.push_back({"chatml", c});
    if (c[0].role != "system") cases.push_back({"mistral", c});
  }
  return cases;
}

TEST(ChatTemplateTest, MatchesTheJinjaTemplates) {
  std::vector<Case> cases = Cases();
  nlohmann::json reference = RunReference(cases);
  if (reference.is_discarded() || !reference.contains("results")) {
    GTEST_SKIP() << "/usr/bin/python3 with jinja2 (Debian's python3-jinja2) is not available";
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "case " << i << " (" << cases[i].family << ")");
    const nlohmann::json& expected = reference["results"][i];
    ASSERT_TRUE(expected.contains("text")) << expected.dump();
    std::string jinja_text = expected["text"];
    absl::StatusOr<ChatTemplateFamily> family = ParseChatTemplateFamily(cases[i].family);
    ASSERT_TRUE(family.ok());
    auto chat = ChatTemplate::Create(*family, Vocabulary());
    ASSERT_TRUE(chat.ok()) << chat.status();
    absl::StatusOr<std::string> text = (*chat)->RenderText(cases[i].messages);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, jinja_text);
    absl::StatusOr<std::vector<int>> ids = (*chat)->Render(cases[i].messages);
    ASSERT_TRUE(ids.ok());
    // Splitting the Jinja text at special spellings would turn a user's "</s>"
    // into EOS: exactly what rendering straight to ids avoids.
    bool spelled = false;
    for (const ChatMessage& m : cases[i].messages) {
      spelled |= absl::StrContains(m.content, "</s>") || absl::StrContains(m.content, "<|im_");
    }
    if (spelled) {
      EXPECT_NE(*ids, ReferenceIds(jinja_text));
    } else {
      EXPECT_EQ(*ids, ReferenceIds(jinja_text));
    }
  }
}

TEST(ChatTemplateTest, RecognisesTheFamiliesFromTheirTemplates) {
  nlohmann::json reference = RunReference({});
  if (reference.is_discarded() || !reference.contains("templates")) {
    GTEST_SKIP() << "/usr/bin/python3 with jinja2 (Debian's python3-jinja2) is not available";
  }
  EXPECT_EQ(DetectChatTemplateFamily(reference["templates"]["llama2"].get<std::string>()),
            ChatTemplateFamily::kLlama2);
  EXPECT_EQ(DetectChatTemplateFamily(reference["templates"]["mistral"].get<std::string>()),
            ChatTemplateFamily::kMistral);
  EXPECT_EQ(DetectChatTemplateFamily(reference["templates"]["chatml"].get<std::string>()),
            ChatTemplateFamily::kChatMl);
}

TEST(ChatTemplateTest, UnknownTemplatesAreNotGuessed) {
  EXPECT_EQ(DetectChatTemplateFamily(""), ChatTemplateFamily::kNone);
  // Zephyr-style markers.
  EXPECT_EQ(DetectChatTemplateFamily("{% for m in messages %}<|user|>\n{{ m['content'] }}"
                                     "{{ eos_token }}{% endfor %}"),
            ChatTemplateFamily::kNone);
  // A later Mistral template: "[INST]" but spaced differently.
  EXPECT_EQ(DetectChatTemplateFamily("{{ '[INST] ' + message['content'] + '[/INST]' }}"),
            ChatTemplateFamily::kNone);
}

TEST(ChatTemplateTest, ConversationsTheTemplatesRefuseAreRefused) {
  std::vector<Case> refused = {
      {"llama2", {{"user", "a"}, {"user", "b"}}},
      {"llama2", {{"assistant", "a"}}},
      {"mistral", {{"system", "s"}, {"user", "u"}}},
      {"mistral", {{"user", "a"}, {"assistant", "b"}, {"assistant", "c"}}},
  };
  nlohmann::json reference = RunReference(refused);
  bool have_reference = !reference.is_discarded() && reference.contains("results");
  if (!have_reference) std::cerr << "python3-jinja2 absent: checking the C++ side only\n";
  for (size_t i = 0; i < refused.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "case " << i);
    if (have_reference) {
      EXPECT_TRUE(reference["results"][i].contains("error"));
    }
    auto chat = ChatTemplate::Create(*ParseChatTemplateFamily(refused[i].family), Vocabulary());
    ASSERT_TRUE(chat.ok());
    absl::Status status = (*chat)->Render(refused[i].messages).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()), HasSubstr("messages["));
  }
}

TEST(ChatTemplateTest, StricterThanJinjaWhereJinjaWouldRenderNonsense) {
  auto llama = ChatTemplate::Create(ChatTemplateFamily::kLlama2, Vocabulary());
  ASSERT_TRUE(llama.ok());
  // Ending with the assistant: generation would start after EOS.
  absl::Status last = (*llama)->Render({{"user", "a"}, {"assistant", "b"}}).status();
  EXPECT_THAT(std::string(last.message()),
              HasSubstr("messages[1].role: the last message must be from the user"));
  auto chatml = ChatTemplate::Create(ChatTemplateFamily::kChatMl, Vocabulary());
  ASSERT_TRUE(chatml.ok());
  absl::Status role = (*chatml)->Render({{"tool", "x"}}).status();
  EXPECT_THAT(std::string(role.message()),
              HasSubstr("messages[0].role: \"tool\" is not one of system, user, assistant"));
  EXPECT_EQ((*chatml)->Render({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, SpecialTokensGoInAsIdsNeverAsText) {
  auto chat = ChatTemplate::Create(ChatTemplateFamily::kLlama2, Vocabulary());
  ASSERT_TRUE(chat.ok());
  absl::StatusOr<std::vector<int>> ids = (*chat)->Render({{"user", "</s>"}});
  ASSERT_TRUE(ids.ok());
  // Exactly one BOS id, and no EOS id: the user's "</s>" is text.
  EXPECT_EQ(std::count(ids->begin(), ids->end(), kBos), 1);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), kEos), 0);
}

TEST(ChatTemplateTest, MissingTokensAreAStartupError) {
  ChatVocabulary no_im = Vocabulary();
  no_im.piece_to_id = [](const std::string&) { return -1; };
  absl::Status chatml = ChatTemplate::Create(ChatTemplateFamily::kChatMl, no_im).status();
  EXPECT_EQ(chatml.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(chatml.message()), HasSubstr("<|im_start|>"));
  ChatVocabulary no_bos = Vocabulary();
  no_bos.bos_id = -1;
  absl::Status llama = ChatTemplate::Create(ChatTemplateFamily::kLlama2, no_bos).status();
  EXPECT_THAT(std::string(llama.message()), HasSubstr("llama2 template needs BOS and EOS"));
  EXPECT_FALSE(ChatTemplate::Create(ChatTemplateFamily::kNone, Vocabulary()).ok());
}

TEST(ChatTemplateTest, ParsesFamilyNames) {
  EXPECT_EQ(*ParseChatTemplateFamily("chatml"), ChatTemplateFamily::kChatMl);
  EXPECT_EQ(*ParseChatTemplateFamily("none"), ChatTemplateFamily::kNone);
  EXPECT_THAT(std::string(ParseChatTemplateFamily("zephyr").status().message()),
              HasSubstr("unknown chat template family \"zephyr\""));
}

}  // namespace
}  // namespace streamgen
