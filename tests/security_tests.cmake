# Security details (issue 11, section 4), included at the end of
# tests/CMakeLists.txt:
#   security_test  real streamgen-server subprocesses on 127.0.0.1 (free ports)
#                  with Python gRPC (generated stubs in BUILD/python), the C++
#                  client and Python's http.client: API keys on every RPC and
#                  route but health (key before body on HTTP, never logged),
#                  TLS and mutual TLS on both faces (certificates made with
#                  openssl), every request limit with its message, and the JSON
#                  log holding no prompt or output unless --log-prompts.
# The API keys' unit tests (digests, CRYPTO_memcmp over all keys) are in
# tests/server_units_test.cc (AuthTest.*).
if(TARGET streamgen-server AND TARGET streamgen-client AND TARGET streamgen_python_proto)
  add_test(NAME security_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/security_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(security_test PROPERTIES TIMEOUT 600)
endif()
