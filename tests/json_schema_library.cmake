# engine/grammar/json_schema.cc as a library of its own, for the ordinary and
# the fuzz build, until the grammar engine's library (engine/grammar/
# CMakeLists.txt) exists and compiles these sources.
include_guard(GLOBAL)
if(NOT TARGET streamgen_json_schema)
  add_library(streamgen_json_schema STATIC
    ${CMAKE_SOURCE_DIR}/engine/grammar/json_schema.cc
    ${CMAKE_SOURCE_DIR}/engine/grammar/json_schema_terminals.cc)
  target_include_directories(streamgen_json_schema PUBLIC ${CMAKE_SOURCE_DIR})
  target_link_libraries(streamgen_json_schema PUBLIC streamgen_status absl::status absl::statusor
    absl::strings absl::str_format nlohmann_json::nlohmann_json)
endif()
