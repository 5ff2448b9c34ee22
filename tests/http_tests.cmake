# The HTTP face's tests (issue 8) with real clients, included at the end of
# tests/CMakeLists.txt. Each starts its own streamgen-server subprocess
# (build/server/streamgen-server, the built-in model) on 127.0.0.1, any free
# ports:
#   http_curl_test          Debian's curl against every endpoint and error row
#   http_query_stream_test  the seed's python3-requests client on /query-stream/
#   http_openai_test        the official openai npm package (node:test)
#   http_playground_test    the playground page in Debian's chromium (playwright-core)
#   http_tools_test         tool calls: the openai package and the Vercel AI SDK
#   http_lifecycle_test     HTTPS / mTLS, disconnect while queued, a stalled reader,
#                           the drain timeout's final event, the log line
#   http_readme_test        docs/http-api.md's examples (its Examples section) as written
#   http_structured_samples_test  json_schema / regex / choice outputs of the demo model
#                           and a tiny random model at temperature 1, many seeds, judged
#                           by ajv (+ ajv-formats) and JavaScript's RegExp
# The Node tests need tests/http/node_modules: http_npm_ci installs the pinned
# packages (package-lock.json) first. The tools come from scripts/install-deps.sh;
# a missing one fails its test (these tests never skip).
if(TARGET streamgen_server)
  streamgen_npm_ci(http_npm_ci http_node ${CMAKE_SOURCE_DIR}/tests/http)

  foreach(name openai playground structured_samples)
    add_test(NAME http_${name}_test
      COMMAND ${STREAMGEN_NODE} --test ${CMAKE_SOURCE_DIR}/tests/http/${name}.test.mjs
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/http)
    set_tests_properties(http_${name}_test PROPERTIES
      ENVIRONMENT STREAMGEN_BUILD_DIR=${CMAKE_BINARY_DIR}
      FIXTURES_REQUIRED http_node
      TIMEOUT 600)
  endforeach()

  foreach(name curl query_stream lifecycle readme)
    add_test(NAME http_${name}_test
      COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/http_${name}_test.py
              --build-dir ${CMAKE_BINARY_DIR}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(http_${name}_test PROPERTIES TIMEOUT 600)
  endforeach()
  # Issue 22: tool calls with the openai package and the Vercel AI SDK, with Qwen
  # 2.5's template (npm) and Llama 3.1's (the llama.cpp bundle: llamacpp_node).
  add_test(NAME http_tools_test
    COMMAND ${STREAMGEN_NODE} --test ${CMAKE_SOURCE_DIR}/tests/http/tools.test.mjs
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/http)
  set_tests_properties(http_tools_test PROPERTIES
    ENVIRONMENT STREAMGEN_BUILD_DIR=${CMAKE_BINARY_DIR}
    FIXTURES_REQUIRED "http_node;llamacpp_node"
    TIMEOUT 600)

  # The docs' js example imports the pinned openai package.
  set_tests_properties(http_readme_test PROPERTIES FIXTURES_REQUIRED http_node)
endif()
