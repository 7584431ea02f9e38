# Compiler warnings for every target of the project; errors unless CONCERT_WERROR=OFF.
add_compile_options(-Wall -Wextra -Wshadow -Wpointer-arith -Wstrict-prototypes
                    -Wmissing-prototypes -Wno-unused-parameter -Wformat=2)
if(CONCERT_WERROR)
  add_compile_options(-Werror)
endif()
