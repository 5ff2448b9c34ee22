# The checks that llama.cpp cannot make (issue 20), against tests/llamacpp/hf_reference.py
# (transformers' math in numpy float64), included by tests/CMakeLists.txt after
# llamacpp_tests.cmake (its llamacpp_npm_install fixture brings the llama.cpp
# source bundle whose gguf-py make_fixture.py writes with):
#   hf_reference_test            the reference against llama.cpp on every fixture family;
#                                then config.json variants llama.cpp cannot express
#                                (sliding windows its converter drops, Gemma 3's layer_types
#                                and query_pre_attn_scalar, dense Qwen3-MoE layers,
#                                norm_topk_prob false, Phi-3's per-step longrope switch,
#                                v5 rope_parameters): streamgen-generate's greedy float32
#                                ids against the reference's; Gemma 3's soft-capping on
#                                the server's logprobs; the reference's reader and errors
#   family_batch_resume_test     through streamgen-server, for a dense, a MoE and a
#                                sliding-window family: alone == among 15 concurrent
#                                requests, and resume_token_ids exact at every position
if(TARGET streamgen-generate)
  add_test(NAME hf_reference_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/llamacpp/hf_reference_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(hf_reference_test PROPERTIES
    FIXTURES_REQUIRED llamacpp_node TIMEOUT 600)
endif()

if(TARGET streamgen-server AND TARGET streamgen_python_proto)
  add_test(NAME family_batch_resume_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/llamacpp/family_batch_resume_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(family_batch_resume_test PROPERTIES
    FIXTURES_REQUIRED llamacpp_node TIMEOUT 600)
endif()
