# cmake -DINPUT=file -DOUTPUT=header.h -DNAME=kName -P embed_file.cmake
# Writes `inline constexpr char NAME[] = R"...(<file>)...";` (a raw string
# literal; the file must not contain the delimiter).
file(READ "${INPUT}" content)
set(delimiter "sg_embed")
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )${delimiter}\"")
endif()
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by server/embed_file.cmake. Do not edit.\n"
  "#pragma once\n"
  "inline constexpr char ${NAME}[] = R\"${delimiter}(${content})${delimiter}\";\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
