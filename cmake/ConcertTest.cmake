# concert_add_test(NAME SOURCES... [LIBS libs...] [JOBS n]): one Criterion binary per
# feature, registered with ctest. JOBS limits Criterion's parallel tests inside it
# (integration tests that start services and measure rates use 1).
function(concert_add_test name)
  cmake_parse_arguments(T "" "JOBS" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} PkgConfig::CRITERION)
  target_compile_definitions(${name} PRIVATE TH_SERVER_BIN="$<TARGET_FILE:concert-server>"
                             TH_CONSUMER_BIN="$<TARGET_FILE:payment-consumer>" TH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  if(NOT T_JOBS)
    set(T_JOBS 2)
  endif()
  add_test(NAME ${name} COMMAND ${name} --jobs ${T_JOBS} --timeout 120)
endfunction()
