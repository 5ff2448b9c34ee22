# The gateway (issue 10, docker/gateway/nginx.conf) with real nginx, included
# from tests/CMakeLists.txt:
#   gateway_test  Debian's nginx (/usr/sbin/nginx, from scripts/install-deps.sh)
#                 running the shipped config in front of two streamgen-server
#                 subprocesses on 127.0.0.1 (free ports), TLS with certificates
#                 made by openssl; streams from the C++, Python and Node clients,
#                 health and reflection, the HTTP face and SSE, cancel and
#                 disconnect, SIGTERM (drain) and kill -9 of a replica.
# The Node client's packages come from the node_client_npm fixture. A missing
# nginx fails the test (it never skips).
if(TARGET streamgen_server)
  find_program(STREAMGEN_GATEWAY_NODE node)
  if(NOT STREAMGEN_GATEWAY_NODE)
    set(STREAMGEN_GATEWAY_NODE node)
  endif()
  add_test(NAME gateway_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/gateway_test.py
            --build-dir ${CMAKE_BINARY_DIR} --node ${STREAMGEN_GATEWAY_NODE}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(gateway_test PROPERTIES
    FIXTURES_REQUIRED node_client_npm
    TIMEOUT 600)
endif()
