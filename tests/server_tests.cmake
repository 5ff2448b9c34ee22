# The server's tests (issue 3), included at the end of tests/CMakeLists.txt.
if(TARGET streamgen_server_core)
  streamgen_test(server_validation_test server_validation_test.cc)
  target_link_libraries(server_validation_test PRIVATE streamgen_server_core GTest::gmock)

  streamgen_test(server_response_stream_test server_response_stream_test.cc)
  target_link_libraries(server_response_stream_test PRIVATE streamgen_server_core GTest::gmock)

  streamgen_test(server_units_test server_units_test.cc)
  target_link_libraries(server_units_test PRIVATE streamgen_server_core GTest::gmock)
endif()

if(TARGET streamgen_server_core)
  streamgen_test(server_chat_template_test server_chat_template_test.cc)
  target_link_libraries(server_chat_template_test PRIVATE streamgen_core GTest::gmock
    nlohmann_json::nlohmann_json)
endif()

if(TARGET streamgen_server)
  streamgen_test(server_integration_test server_integration_test.cc)
  target_link_libraries(server_integration_test PRIVATE streamgen_server GTest::gmock)
  add_dependencies(server_integration_test tiny_model)
endif()

if(TARGET streamgen_server)
  streamgen_test(server_lifecycle_test server_lifecycle_test.cc)
  target_link_libraries(server_lifecycle_test PRIVATE streamgen_server GTest::gmock)
  add_dependencies(server_lifecycle_test tiny_model)
endif()

if(TARGET streamgen_server)
  streamgen_test(server_reflection_test server_reflection_test.cc)
  target_link_libraries(server_reflection_test PRIVATE streamgen_server streamgen_reflection_stub
    GTest::gmock)
  add_dependencies(server_reflection_test tiny_model)
endif()

if(TARGET streamgen_server)
  streamgen_test(server_client_cli_test server_client_cli_test.cc)
  target_link_libraries(server_client_cli_test PRIVATE streamgen_server GTest::gmock)
  add_dependencies(server_client_cli_test tiny_model streamgen-client)
endif()

# The Python client against a server subprocess (also runs the C++ client's
# README commands and checks that SIGTERM exits 0).
if(TARGET streamgen_python_proto)
  add_test(NAME server_python_client_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/server_python_client_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(server_python_client_test PROPERTIES TIMEOUT 600)
endif()

# Issue 4: the vLLM-named metrics scraped over HTTP, the scheduler flags, and
# `streamgen-client bench` against an in-process server.
if(TARGET streamgen_server)
  streamgen_test(server_metrics_test server_metrics_test.cc)
  target_link_libraries(server_metrics_test PRIVATE streamgen_server GTest::gmock)
  add_dependencies(server_metrics_test tiny_model streamgen-server)
endif()

if(TARGET streamgen_server AND TARGET streamgen_client_bench)
  streamgen_test(client_bench_test client_bench_test.cc)
  target_link_libraries(client_bench_test PRIVATE streamgen_server streamgen_client_bench
    GTest::gmock)
  add_dependencies(client_bench_test tiny_model streamgen-client)
endif()

# Issue 8: the HTTP face's wire formats (JSON mapping, errors, SSE encoders).
if(TARGET streamgen_openai_api)
  streamgen_test(openai_api_test openai_api_test.cc)
  target_link_libraries(openai_api_test PRIVATE streamgen_openai_api streamgen_server_core
    GTest::gmock)
  # Issue 22: tools, tool_choice, delta.tool_calls.
  streamgen_test(openai_tools_test openai_tools_test.cc)
  target_link_libraries(openai_tools_test PRIVATE streamgen_openai_api streamgen_grammar GTest::gmock)
endif()

# Issue 22: tool calls on the gRPC face (tool_choice, GenerateResponse.tool_calls).
if(TARGET streamgen_server)
  streamgen_test(server_tools_test server_tools_test.cc)
  target_link_libraries(server_tools_test PRIVATE streamgen_server streamgen_tiny_model
    GTest::gmock)
  add_dependencies(server_tools_test tiny_model)
endif()

# docs/flags.md is the programs' own --help (scripts/flag-docs.sh): it cannot drift.
if(TARGET streamgen-server AND TARGET streamgen-client AND TARGET streamgen-generate)
  add_test(NAME flag_docs_test
    COMMAND /bin/bash ${CMAKE_SOURCE_DIR}/scripts/flag-docs.sh --check ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(flag_docs_test PROPERTIES TIMEOUT 60)
  # The streamgen-client lines of the README and docs/, run as written.
  add_test(NAME docs_client_examples_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/docs_client_examples_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(docs_client_examples_test PROPERTIES TIMEOUT 600)
endif()
