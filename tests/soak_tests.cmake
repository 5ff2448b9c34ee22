# Soak and fault tests (issue 11, section 3), included at the end of
# tests/CMakeLists.txt. Each starts its own streamgen-server subprocesses on
# 127.0.0.1 (free ports) and talks to them with Python gRPC (Debian's
# python3-grpcio, stubs in BUILD/python) and http.client:
#   soak_test        bench/soak.py as recorded in bench/README.md: 2,000 mixed
#                    requests at concurrency 64 on the tiny random model in
#                    float32 (normal, cancelled, deadline, stalled, resumed,
#                    HTTP/SSE, malformed, oversize, prompt-length extremes);
#                    outputs equal to each request alone, the engine idle
#                    afterwards, RSS within 10% of its level after the warm-up
#   soak_catches_a_wrong_reference
#                    the same program with one reference altered: its
#                    comparison must report the difference
#   fault_test       tests/fault_test.py: SIGTERM under load, truncated /
#                    corrupted / wrong-shaped model files at start-up, the KV
#                    pool exhausted (preemption), idle and slowloris connections
if(TARGET streamgen-server AND TARGET streamgen_python_proto)
  add_test(NAME soak_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/bench/soak.py
            --build-dir ${CMAKE_BINARY_DIR} --requests 2000 --concurrency 64
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(soak_test PROPERTIES TIMEOUT 600)

  add_test(NAME soak_catches_a_wrong_reference
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/bench/soak.py
            --build-dir ${CMAKE_BINARY_DIR} --requests 200 --warmup 0 --sabotage-reference
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  # The exit code is ignored with PASS_REGULAR_EXPRESSION: the line must be there.
  set_tests_properties(soak_catches_a_wrong_reference PROPERTIES TIMEOUT 300
    PASS_REGULAR_EXPRESSION "greedy: text differs from the reference at character")

  add_test(NAME fault_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/fault_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(fault_test PROPERTIES TIMEOUT 900)
endif()
