#include "server/tool_calls.h"

#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace streamgen {

using OJson = nlohmann::ordered_json;

namespace {

using Json = nlohmann::ordered_json;
using openai_json::BadPath;
using openai_json::Field;
using openai_json::TypeName;

// OpenAI's function names: 1 to 64 letters, digits, underscores or dashes.
bool IsFunctionName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

absl::Status InvalidTools(absl::string_view field, absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(absl::StrCat(field, " ", message));
  SetErrorParam(&status, field);
  return status;
}

}  // namespace

absl::StatusOr<std::vector<ToolSpec>> ParseToolSpecs(const Json& tools, absl::string_view field) {
  if (!tools.is_array()) {
    return InvalidTools(field, absl::StrCat("must be an array, got ", TypeName(tools)));
  }
  std::vector<ToolSpec> specs;
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& tool = tools[i];
    const std::string at = absl::StrCat(field, "[", i, "]");
    if (!tool.is_object()) {
      return BadPath(field, at, absl::StrCat("must be an object, got ", TypeName(tool)));
    }
    const Json* type = Field(tool, "type");
    if (type == nullptr || *type != "function") {
      return BadPath(
          field, at + ".type",
          absl::StrCat("must be \"function\", got ", type == nullptr ? "nothing" : type->dump()));
    }
    const Json* function = Field(tool, "function");
    if (function == nullptr || !function->is_object()) {
      return BadPath(field, at + ".function",
                     absl::StrCat("must be an object, got ",
                                  function == nullptr ? "nothing" : TypeName(*function)));
    }
    const Json* name = Field(*function, "name");
    if (name == nullptr || !name->is_string() || !IsFunctionName(name->get<std::string>())) {
      return BadPath(field, at + ".function.name",
                     absl::StrCat("must be 1 to 64 letters, digits, underscores or dashes, got ",
                                  name == nullptr ? "nothing" : name->dump()));
    }
    for (size_t j = 0; j < specs.size(); ++j) {
      if (specs[j].name == name->get<std::string>()) {
        return BadPath(
            field, at + ".function.name",
            absl::StrCat("\"", specs[j].name, "\" is also the name of ", field, "[", j, "]"));
      }
    }
    ToolSpec spec;
    spec.name = name->get<std::string>();
    if (const Json* parameters = Field(*function, "parameters"); parameters != nullptr) {
      if (!parameters->is_object()) {
        return BadPath(
            field, at + ".function.parameters",
            absl::StrCat("must be an object (a JSON Schema), got ", TypeName(*parameters)));
      }
      spec.parameters = OJson::parse(parameters->dump());
    }
    specs.push_back(std::move(spec));
  }
  return specs;
}

absl::StatusOr<ToolCallPlan> PlanToolCalls(ToolCallFormat format,
                                           const SchemaToGrammar& schema_to_grammar,
                                           const ToolCallInputs& inputs) {
  ToolCallPlan plan;
  plan.max_calls = inputs.parallel ? 0 : 1;
  if (inputs.tools.empty() || inputs.choice == ToolChoice::kNone) return plan;
  const bool constrained =
      inputs.choice == ToolChoice::kRequired || inputs.choice == ToolChoice::kFunction;
  auto refuse = [&](absl::string_view why) {
    absl::Status status =
        absl::FailedPreconditionError(absl::StrCat("tool_choice ", inputs.choice_text, " ", why));
    SetErrorParam(&status, "tool_choice");
    return status;
  };
  if (format == ToolCallFormat::kNone) {
    if (!constrained) return plan;  // auto: the output is content
    return refuse(
        "needs a chat template that writes tool calls in a format streamgen knows (Llama 3.1 "
        "JSON, Hermes/Qwen <tool_call>, Mistral [TOOL_CALLS]); this model's has none");
  }
  if (inputs.n > 1) {
    // One tool-call parser per stream: n choices would need one each.
    absl::Status status = absl::InvalidArgumentError(absl::StrCat(
        "n must be 1 when the output is parsed for tool calls (tools with tool_choice other "
        "than \"none\"), got ",
        inputs.n));
    SetErrorParam(&status, "n");
    return status;
  }
  plan.format = format;
  // The engine must not see the stop strings (they could cut a call), but the
  // validator still checks them: the face drops them after validation.
  plan.engine_stops = false;
  if (!constrained) {
    plan.content_stop = inputs.stop;
    return plan;
  }
  if (!schema_to_grammar) return refuse("needs constrained decoding, which this build lacks");
  std::vector<ToolSpec> tools;
  for (const ToolSpec& tool : inputs.tools) {
    if (inputs.choice == ToolChoice::kRequired || tool.name == inputs.function) {
      tools.push_back(tool);
    }
  }
  absl::StatusOr<std::string> grammar =
      ToolCallGrammar(format, tools, inputs.parallel, schema_to_grammar);
  if (!grammar.ok()) {
    absl::Status status(
        grammar.status().code(),
        absl::StrCat(inputs.tools_field, ": a parameter schema cannot constrain the output: ",
                     grammar.status().message()));
    SetErrorParam(&status, inputs.tools_field);
    return status;
  }
  plan.grammar = std::move(*grammar);
  return plan;
}

ToolCallParser::Options ToolParserOptions(const ToolCallPlan& plan) {
  ToolCallParser::Options options;
  options.format = plan.format;
  options.stop = plan.content_stop;
  options.max_calls = plan.max_calls;
  return options;
}

absl::Status PrepareToolCalls(ToolCallFormat format, const SchemaToGrammar& schema_to_grammar,
                              OpenAiRequest* request) {
  ToolCallInputs inputs;
  inputs.tools = request->tools;
  inputs.choice = request->tool_choice;
  inputs.function = request->tool_choice_function;
  inputs.parallel = request->parallel_tool_calls;
  inputs.n = static_cast<int>(request->request.n());
  inputs.stop.assign(request->request.stop().begin(), request->request.stop().end());
  inputs.choice_text =
      request->tool_choice == ToolChoice::kRequired
          ? std::string("\"required\"")
          : absl::StrCat("{\"function\": {\"name\": \"", request->tool_choice_function, "\"}}");
  absl::StatusOr<ToolCallPlan> planned = PlanToolCalls(format, schema_to_grammar, inputs);
  // A refused request is left as unprepared.
  ToolCallPlan plan = planned.ok() ? *std::move(planned) : ToolCallPlan();
  request->tool_format = plan.format;
  request->content_stop = std::move(plan.content_stop);
  request->engine_stops = plan.engine_stops;
  request->tool_grammar = std::move(plan.grammar);
  return planned.status();
}

ToolCallParser::Options ToolParserOptions(const OpenAiRequest& request) {
  ToolCallParser::Options options;
  options.format = request.tool_format;
  options.stop = request.content_stop;
  options.max_calls = request.parallel_tool_calls ? 0 : 1;
  return options;
}

std::vector<OJson> ToolCallDeltas(const std::vector<ToolCallEvent>& events) {
  std::vector<OJson> deltas;
  for (const ToolCallEvent& event : events) {
    switch (event.kind) {
      case ToolCallEvent::Kind::kContent:
        deltas.push_back({{"content", event.text}});
        break;
      case ToolCallEvent::Kind::kCallStart:
        deltas.push_back(
            {{"tool_calls",
              OJson::array({{{"index", event.index},
                             {"id", event.id},
                             {"type", "function"},
                             {"function", {{"name", event.name}, {"arguments", ""}}}}})}});
        break;
      case ToolCallEvent::Kind::kArguments: {
        // The fragment joins its call's start when that is the delta before.
        OJson* last = deltas.empty() ? nullptr : &deltas.back();
        if (last != nullptr && last->contains("tool_calls") &&
            (*last)["tool_calls"][0]["index"] == event.index) {
          (*last)["tool_calls"][0]["function"]["arguments"] =
              (*last)["tool_calls"][0]["function"]["arguments"].get<std::string>() + event.text;
        } else {
          deltas.push_back(
              {{"tool_calls", OJson::array({{{"index", event.index},
                                             {"function", {{"arguments", event.text}}}}})}});
        }
        break;
      }
    }
  }
  return deltas;
}

void AccumulateToolEvents(const std::vector<ToolCallEvent>& events, std::string* content,
                          std::vector<ParsedToolCall>* calls) {
  for (const ToolCallEvent& event : events) {
    switch (event.kind) {
      case ToolCallEvent::Kind::kContent:
        if (content != nullptr) content->append(event.text);
        break;
      case ToolCallEvent::Kind::kCallStart:
        calls->push_back({event.id, event.name, ""});
        break;
      case ToolCallEvent::Kind::kArguments:
        if (!calls->empty()) calls->back().arguments.append(event.text);
        break;
    }
  }
}

// ---- the gRPC face ----

namespace {

absl::Status InvalidField(absl::string_view field, std::string message) {
  absl::Status status = absl::InvalidArgumentError(std::move(message));
  SetErrorParam(&status, field);
  return status;
}

bool HasConstraint(const v1::GenerateRequest& request) {
  switch (request.constraint_case()) {
    case v1::GenerateRequest::CONSTRAINT_NOT_SET:
      return false;
    case v1::GenerateRequest::kJsonObject:
      return request.json_object();  // false is no constraint
    default:
      return true;
  }
}

}  // namespace

absl::StatusOr<ToolCallPlan> PrepareGenerateToolCalls(ToolCallFormat format,
                                                      const SchemaToGrammar& schema_to_grammar,
                                                      v1::GenerateRequest* request) {
  const std::string& choice = request->tool_choice();
  if (choice.empty()) {
    // Unset: the output is text, as this API always gave it.
    if (request->has_parallel_tool_calls()) {
      return InvalidField("parallel_tool_calls",
                          "parallel_tool_calls applies to parsed tool calls: set tool_choice "
                          "(\"auto\", \"required\" or a function's name) too");
    }
    return ToolCallPlan();
  }
  ToolCallInputs inputs;
  inputs.tools_field = "tools_json";
  inputs.choice_text = absl::StrCat("\"", choice, "\"");
  if (!request->tools_json().empty()) {
    Json tools = Json::parse(request->tools_json(), nullptr, /*allow_exceptions=*/false);
    if (tools.is_discarded()) {
      return InvalidField("tools_json",
                          "tools_json is not JSON (it must be a JSON array of function tools: "
                          "[{\"type\": \"function\", \"function\": {\"name\": ...}}])");
    }
    SG_ASSIGN_OR_RETURN(inputs.tools, ParseToolSpecs(tools, "tools_json"));
  }
  if (inputs.tools.empty()) {
    return InvalidField("tool_choice",
                        absl::StrCat("tool_choice ", inputs.choice_text,
                                     " needs tools: tools_json must list at least one function "
                                     "tool ([{\"type\": \"function\", \"function\": {\"name\": "
                                     "...}}])"));
  }
  if (choice == "none") {
    inputs.choice = ToolChoice::kNone;
  } else if (choice == "auto") {
    inputs.choice = ToolChoice::kAuto;
  } else if (choice == "required") {
    inputs.choice = ToolChoice::kRequired;
  } else {
    inputs.choice = ToolChoice::kFunction;
    inputs.function = choice;
    bool known = false;
    std::vector<std::string> names;
    for (const ToolSpec& tool : inputs.tools) {
      known = known || tool.name == choice;
      names.push_back(absl::StrCat("\"", tool.name, "\""));
    }
    if (!known) {
      return InvalidField("tool_choice",
                          absl::StrCat("tool_choice \"", choice,
                                       "\" is not \"none\", \"auto\", \"required\" or "
                                       "the name of a function in tools_json (",
                                       absl::StrJoin(names, ", "), ")"));
    }
  }
  inputs.parallel = !request->has_parallel_tool_calls() || request->parallel_tool_calls();
  inputs.n = static_cast<int>(request->n());
  inputs.stop.assign(request->stop().begin(), request->stop().end());
  SG_ASSIGN_OR_RETURN(ToolCallPlan plan, PlanToolCalls(format, schema_to_grammar, inputs));
  if (plan.format != ToolCallFormat::kNone && request->resume_token_ids_size() > 0) {
    // The parser would start in the middle of the output, and the calls the
    // client already has would get new ids.
    return InvalidField(
        "resume_token_ids",
        absl::StrCat("resume_token_ids cannot be combined with tool_choice ", inputs.choice_text,
                     " (parsed tool calls): resume with tool_choice unset or \"none\", whose "
                     "text holds the calls"));
  }
  if (!plan.grammar.empty()) {
    if (HasConstraint(*request)) {
      return InvalidField(
          "tool_choice",
          absl::StrCat("tool_choice ", inputs.choice_text,
                       " constrains the output to calls: it cannot be combined with a "
                       "constraint (json_schema, json_object, regex, grammar or choice)"));
    }
    request->set_grammar(plan.grammar);
  }
  return plan;
}

GenerateToolCallRewriter::GenerateToolCallRewriter(ToolCallParser::Options options)
    : parser_(std::move(options)) {}

bool GenerateToolCallRewriter::Rewrite(v1::GenerateResponse* message) {
  const bool last = message->finish_reason() != v1::FINISH_REASON_UNSPECIFIED;
  bool just_stopped = false;
  std::string text = std::move(*message->mutable_text());
  message->clear_text();
  if (stopped_) {
    // The output ended at a stop string: what the engine made before it
    // heard of that is not part of it.
    message->clear_tokens();
  } else {
    tokens_ += static_cast<uint32_t>(message->tokens_size());
    std::vector<ToolCallEvent> events = parser_.Feed(text);
    if (last || parser_.stopped()) {
      std::vector<ToolCallEvent> end = parser_.Finish();
      events.insert(events.end(), std::make_move_iterator(end.begin()),
                    std::make_move_iterator(end.end()));
    }
    for (ToolCallEvent& event : events) {
      switch (event.kind) {
        case ToolCallEvent::Kind::kContent:
          message->mutable_text()->append(event.text);
          break;
        case ToolCallEvent::Kind::kCallStart: {
          v1::ToolCallDelta* call = message->add_tool_calls();
          call->set_index(static_cast<uint32_t>(event.index));
          call->set_id(std::move(event.id));
          call->set_name(std::move(event.name));
          made_calls_ = true;
          break;
        }
        case ToolCallEvent::Kind::kArguments: {
          // A fragment joins its call's piece when that is the message's last.
          const int pieces = message->tool_calls_size();
          v1::ToolCallDelta* call = pieces > 0 && message->tool_calls(pieces - 1).index() ==
                                                      static_cast<uint32_t>(event.index)
                                        ? message->mutable_tool_calls(pieces - 1)
                                        : nullptr;
          if (call == nullptr) {
            call = message->add_tool_calls();
            call->set_index(static_cast<uint32_t>(event.index));
          }
          call->mutable_arguments()->append(event.text);
          break;
        }
      }
    }
    if (parser_.stopped()) {
      stopped_ = true;
      just_stopped = true;
    }
  }
  if (last) {
    if (stopped_) {
      // The engine's own end (CANCELLED once the caller ended it, or
      // whatever came first) is not the output's: it ended at the stop string.
      message->set_finish_reason(v1::FINISH_REASON_STOP);
      message->mutable_usage()->set_completion_tokens(tokens_);
    }
    if (made_calls_ && (message->finish_reason() == v1::FINISH_REASON_EOS ||
                        message->finish_reason() == v1::FINISH_REASON_STOP)) {
      message->set_finish_reason(v1::FINISH_REASON_TOOL_CALLS);
    }
  }
  return just_stopped;
}

}  // namespace streamgen
