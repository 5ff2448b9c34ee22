# The Node client (issue 10, section 3), included from tests/CMakeLists.txt.
# Each test starts its own streamgen-server subprocesses (build/server/
# streamgen-server, the tiny random model) on 127.0.0.1, any free ports:
#   node_client_test      client/node (the library and cli.js) next to the C++
#                         streamgen-client: greedy text, info, tokenize, health,
#                         errors, Ctrl-C and AbortSignal cancels, deadlines, API
#                         keys, TLS and mutual TLS (tests/node/client.test.mjs)
#   node_reflection_test  grpc-reflection-js as a second consumer of server
#                         reflection: Generate and health from the reflected
#                         descriptors alone (tests/node/reflection.test.mjs)
# node_client_npm runs `npm ci` in client/node (package-lock.json), the fixture
# of the same name; other tests that run client/node/cli.js require it too.
# node_reflection_npm does the same for tests/node. Node and npm come from
# scripts/install-deps.sh; a missing one fails its test (these never skip).
if(TARGET streamgen_server)
  streamgen_npm_ci(node_client_npm node_client_npm ${CMAKE_SOURCE_DIR}/client/node)
  streamgen_npm_ci(node_reflection_npm node_reflection_npm ${CMAKE_SOURCE_DIR}/tests/node)

  add_test(NAME node_client_test
    COMMAND ${STREAMGEN_NODE} --test ${CMAKE_SOURCE_DIR}/tests/node/client.test.mjs
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  add_test(NAME node_reflection_test
    COMMAND ${STREAMGEN_NODE} --test ${CMAKE_SOURCE_DIR}/tests/node/reflection.test.mjs
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/node)
  set_tests_properties(node_client_test PROPERTIES FIXTURES_REQUIRED node_client_npm)
  set_tests_properties(node_reflection_test PROPERTIES FIXTURES_REQUIRED node_reflection_npm)
  set_tests_properties(node_client_test node_reflection_test PROPERTIES
    ENVIRONMENT STREAMGEN_BUILD_DIR=${CMAKE_BINARY_DIR}
    TIMEOUT 600)
endif()
