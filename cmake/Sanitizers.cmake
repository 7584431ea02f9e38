# ASan + UBSan for the whole build when CONCERT_SANITIZE=ON (the test suite in CI uses it).
if(CONCERT_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
