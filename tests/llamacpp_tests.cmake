# llama.cpp as the independent reference for the engine's forward pass (issue
# 20), included by tests/CMakeLists.txt:
#   llamacpp_npm_install          installs tests/llamacpp's pinned node-llama-cpp and
#                                 its prebuilt linux-x64 llama.cpp (package-lock.json)
#   llamacpp_reference_<family>   one per model family (tests/llamacpp/FIXTURES.md):
#                                 a tiny random model of that family (HF layout and
#                                 GGUF, written by the bundled llama.cpp's gguf-py),
#                                 llama.cpp's greedy ids against streamgen-generate's,
#                                 float32; the llama one also checks the scripts'
#                                 error messages. Label: llamacpp (ctest -L llamacpp).
# `npm install --omit=optional`, not `npm ci`: node-llama-cpp lists a prebuilt per
# platform as optional dependencies; only linux-x64 (a direct dependency here) is
# wanted, and the lock file holds only the platforms the registry served.
if(TARGET streamgen-generate)
  add_test(NAME llamacpp_npm_install
    COMMAND ${STREAMGEN_NPM} install --no-save --no-audit --no-fund --omit=optional
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/llamacpp)
  set_tests_properties(llamacpp_npm_install PROPERTIES
    FIXTURES_SETUP llamacpp_node TIMEOUT 600 LABELS llamacpp)

  # The names of make_fixture.py's FAMILIES.
  set(STREAMGEN_LLAMACPP_FAMILIES
    llama llama3 llama-linear qwen2 qwen2-yarn qwen3 qwen3moe mixtral gemma3 phi3)
  foreach(family IN LISTS STREAMGEN_LLAMACPP_FAMILIES)
    add_test(NAME llamacpp_reference_${family}
      COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/llamacpp/llamacpp_reference_test.py
              --build-dir ${CMAKE_BINARY_DIR} --family ${family}
      WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(llamacpp_reference_${family} PROPERTIES
      FIXTURES_REQUIRED llamacpp_node TIMEOUT 600 LABELS llamacpp)
  endforeach()
endif()
