# The fuzz targets (tests/fuzz/*_fuzz.cc), listed once for both builds:
#  - the ordinary (g++) build, included at the end of tests/CMakeLists.txt:
#    each target's LLVMFuzzerTestOneInput is linked with tests/fuzz/replay_main.cc
#    into <target>_replay, and ctest runs it over tests/fuzz/corpus/<target>/
#    (fuzz_replay_<target>; a missing or empty corpus fails);
#  - the libFuzzer build (-DSTREAMGEN_FUZZ=ON with clang, scripts/fuzz.sh),
#    included by the top-level CMakeLists.txt: each target is a libFuzzer
#    binary, all of them built by the target `streamgen_fuzz`.
# No target links libtorch (the fuzz build does not even look for it).

set(STREAMGEN_FUZZ_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz)
set(STREAMGEN_FUZZ_CORPUS_DIR ${STREAMGEN_FUZZ_DIR}/corpus)
if(STREAMGEN_FUZZ)
  add_custom_target(streamgen_fuzz)
endif()

# streamgen_fuzz_target(NAME LIBS...): tests/fuzz/NAME.cc linked with LIBS.
function(streamgen_fuzz_target name)
  if(STREAMGEN_FUZZ)
    set(exe ${name})
    add_executable(${exe} ${STREAMGEN_FUZZ_DIR}/${name}.cc)
    target_link_options(${exe} PRIVATE -fsanitize=fuzzer)
    set_target_properties(${exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    add_dependencies(streamgen_fuzz ${exe})
  else()
    set(exe ${name}_replay)
    add_executable(${exe} ${STREAMGEN_FUZZ_DIR}/${name}.cc ${STREAMGEN_FUZZ_DIR}/replay_main.cc)
    add_test(NAME fuzz_replay_${name}
      COMMAND ${exe} ${STREAMGEN_FUZZ_CORPUS_DIR}/${name}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(fuzz_replay_${name} PROPERTIES TIMEOUT 300)
  endif()
  target_include_directories(${exe} PRIVATE ${CMAKE_SOURCE_DIR})
  target_compile_definitions(${exe} PRIVATE
    STREAMGEN_FUZZ_TOKENIZER_DEFAULT="models/demo-brown/tokenizer.model")  # from the project root
  target_link_libraries(${exe} PRIVATE ${ARGN})
endfunction()

streamgen_fuzz_target(safetensors_fuzz streamgen_core)
streamgen_fuzz_target(model_config_fuzz streamgen_core)
streamgen_fuzz_target(chat_template_fuzz streamgen_core)
# The Jinja interpreter (engine/text/jinja/): a template per input.
streamgen_fuzz_target(jinja_fuzz streamgen_jinja)
# A real sentencepiece tokenizer; no libprotobuf in this binary (see
# engine/text/sentencepiece_loader.cc: the fuzz build loads the shim without DEEPBIND).
streamgen_fuzz_target(detokenizer_fuzz streamgen_core)
streamgen_fuzz_target(validation_fuzz streamgen_server_core)
streamgen_fuzz_target(openai_request_fuzz streamgen_openai_api streamgen_server_core)
streamgen_fuzz_target(openai_encoder_fuzz streamgen_openai_api)
# JSON Schema -> grammar (engine/grammar/json_schema.cc): a schema per input.
include(${CMAKE_CURRENT_LIST_DIR}/json_schema_library.cmake)
streamgen_fuzz_target(json_schema_fuzz streamgen_json_schema)
# The grammar engine (engine/grammar/): GBNF grammars and regexes, then masks.
streamgen_fuzz_target(grammar_fuzz streamgen_grammar)

if(NOT STREAMGEN_FUZZ)
  # The replay driver itself: a missing or an empty corpus fails, with its message.
  add_test(NAME fuzz_replay_missing_corpus_fails
    COMMAND safetensors_fuzz_replay ${STREAMGEN_FUZZ_CORPUS_DIR}/no-such-target)
  file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz-empty-corpus)
  add_test(NAME fuzz_replay_empty_corpus_fails
    COMMAND safetensors_fuzz_replay ${CMAKE_BINARY_DIR}/fuzz-empty-corpus)
  # The driver prints these only on its way to exit 1.
  set_tests_properties(fuzz_replay_missing_corpus_fails PROPERTIES
    PASS_REGULAR_EXPRESSION "no such corpus file or directory")
  set_tests_properties(fuzz_replay_empty_corpus_fails PROPERTIES
    PASS_REGULAR_EXPRESSION "an empty corpus tests nothing")
endif()
