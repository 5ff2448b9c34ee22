# Included last by tests/CMakeLists.txt (issue 11, the sanitizer jobs).

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
