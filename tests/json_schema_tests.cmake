# JSON Schema -> grammar (issue 22, sections 1 and 3), included from
# tests/CMakeLists.txt:
#   json_schema_test            messages for unsupported keywords and bad
#                               schemas, the shapes of compiled grammars
#   json_schema_suite_test      the JSON Schema Test Suite (npm
#                               json-schema-test-suite, draft 4): each supported
#                               schema's instances accepted by the compiled
#                               grammar exactly when the suite says valid, with
#                               llama.cpp's GBNF matcher (the prebuilt libllama
#                               of npm @node-llama-cpp/linux-x64) as the
#                               independent matcher of the grammar text
#   json_schema_corpus_test     random walks of the grammars of
#                               tests/json_schema_suite/corpus/*.json, each
#                               output validated by ajv
# json_schema_npm_ci installs tests/json_schema_suite's pinned packages.

include(${CMAKE_CURRENT_LIST_DIR}/json_schema_library.cmake)

streamgen_test(json_schema_test json_schema_test.cc)
target_link_libraries(json_schema_test PRIVATE streamgen_json_schema GTest::gmock)

# The tools the suite and corpus tests run: llama.cpp's matcher is loaded at
# run time (dlopen) from the npm package, so the build needs no node_modules.
add_executable(json_schema_suite_driver
  ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/suite_driver.cc
  ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/llama_gbnf.cc)
target_link_libraries(json_schema_suite_driver PRIVATE streamgen_json_schema ${CMAKE_DL_LIBS})
add_executable(json_schema_random_walk
  ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/random_walk.cc
  ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/llama_gbnf.cc)
target_link_libraries(json_schema_random_walk PRIVATE streamgen_json_schema ${CMAKE_DL_LIBS})

streamgen_npm_ci(json_schema_npm_ci json_schema_node ${CMAKE_SOURCE_DIR}/tests/json_schema_suite)
set(STREAMGEN_JSON_SCHEMA_NODE_MODULES ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/node_modules)
add_test(NAME json_schema_suite_test
  COMMAND json_schema_suite_driver
    --suite ${STREAMGEN_JSON_SCHEMA_NODE_MODULES}/json-schema-test-suite/tests/draft4
    --libllama ${STREAMGEN_JSON_SCHEMA_NODE_MODULES}/@node-llama-cpp/linux-x64/bins/linux-x64/libllama.v0.5.0.so
    --known ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/known_limits.json
    # Floors: the counts of docs/structured-outputs.md; raise them, never lower.
    --min-supported 49 --min-agreeing 157
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
add_test(NAME json_schema_corpus_test
  COMMAND ${STREAMGEN_NODE} --test ${CMAKE_SOURCE_DIR}/tests/json_schema_suite/corpus.test.mjs
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/json_schema_suite)
set_tests_properties(json_schema_suite_test json_schema_corpus_test PROPERTIES
  FIXTURES_REQUIRED json_schema_node
  ENVIRONMENT STREAMGEN_BUILD_DIR=${CMAKE_BINARY_DIR}
  TIMEOUT 600)
