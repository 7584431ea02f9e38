# concert_embed(OUT_VAR SYMBOL FILE): turns FILE into a generated C file that defines
# `const unsigned char SYMBOL[]` and `const size_t SYMBOL_len`, and appends its path
# to OUT_VAR. Used for Lua scripts and protobuf descriptors served by reflection.
set(CONCERT_EMBED_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/embed_file.cmake)
function(concert_embed out_var symbol file)
  get_filename_component(abs ${file} ABSOLUTE)
  set(out ${CMAKE_CURRENT_BINARY_DIR}/embed_${symbol}.c)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -DIN=${abs} -DOUT=${out} -DSYMBOL=${symbol}
            -P ${CONCERT_EMBED_SCRIPT}
    DEPENDS ${abs} ${CONCERT_EMBED_SCRIPT}
    COMMENT "Embedding ${file} as ${symbol}")
  set(${out_var} ${${out_var}} ${out} PARENT_SCOPE)
endfunction()
