# Included last by tests/CMakeLists.txt (issue 11, the sanitizer jobs).

# The asan job: the soak and fault tests without their RSS bounds, which under
# ASan measure ASan's allocator (the quarantine holds freed blocks, up to 256
# MiB, on purpose; every block carries redzones): measured, the soak's RSS grew
# 45% (bound 10%), 600 idle connections took 71 MiB (bound 64). scripts/sanitize.sh
# asan runs these instead of soak_test and fault_test; leaks are LSan's there,
# at each server's exit. fault_test_asan names the fault test's cases to run
# (all but IdleConnectionsTest.test_connections_that_send_nothing): add new ones.
# Its drain lasts 10 s instead of 2: under ASan an 8-token call among 16 long
# streams takes more than 2 s, so no short client got to call during a 2 s
# drain and meet its refusal (one CI run in two, 2026-12-01).
if(STREAMGEN_SANITIZE STREQUAL "address" AND TARGET streamgen-server AND TARGET streamgen_python_proto)
  add_test(NAME soak_test_asan
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/bench/soak.py
            --build-dir ${CMAKE_BINARY_DIR} --requests 2000 --concurrency 64 --max-rss-growth 1.0
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(soak_test_asan PROPERTIES TIMEOUT 900)
  add_test(NAME fault_test_asan
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/fault_test.py
            --build-dir ${CMAKE_BINARY_DIR} --drain-seconds 10
            -k SigtermUnderLoadTest -k BadModelFileTest -k KvPoolExhaustedTest
            -k test_sigterm_with_idle_connections_open
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(fault_test_asan PROPERTIES TIMEOUT 900)
endif()

# Every test added with add_test in this directory carries its own name as a
# label, as the GoogleTest ones carry their binary's (streamgen_test): a job
# chooses its tests with one label expression (scripts/sanitize.sh tsan).
get_property(_streamgen_plain_tests DIRECTORY PROPERTY TESTS)
foreach(_test IN LISTS _streamgen_plain_tests)
  set_property(TEST ${_test} APPEND PROPERTY LABELS ${_test})
endforeach()

# The sentencepiece shim exports its factory and nothing else; built from the
# static sentencepiece (STREAMGEN_SENTENCEPIECE_STATIC), it also needs neither
# libsentencepiece nor libprotobuf and imports no protobuf, sentencepiece or
# absl symbol (what lets it be loaded without RTLD_DEEPBIND).
if(STREAMGEN_SENTENCEPIECE_STATIC)
  set(_streamgen_shim_kind --self-contained)
else()
  set(_streamgen_shim_kind --system)
endif()
add_test(NAME sentencepiece_shim_exports_test
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/shim_exports_test.py
          --shim $<TARGET_FILE:streamgen_sentencepiece> ${_streamgen_shim_kind})
set_tests_properties(sentencepiece_shim_exports_test PROPERTIES
  LABELS sentencepiece_shim_exports_test TIMEOUT 60)
