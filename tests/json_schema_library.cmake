# engine/grammar/json_schema.cc is part of the grammar engine's library
# (engine/grammar/CMakeLists.txt, streamgen_grammar) in both the ordinary and
# the fuzz build; the tests link it under this name.
include_guard(GLOBAL)
if(NOT TARGET streamgen_json_schema)
  add_library(streamgen_json_schema INTERFACE)
  target_link_libraries(streamgen_json_schema INTERFACE streamgen_grammar)
endif()
