# concert_add_test(NAME SOURCES... [LIBS libs...] [JOBS n]): one Criterion binary per
# feature, registered with ctest. JOBS limits Criterion's parallel tests inside it
# (integration tests that start services and measure rates use 1).
#
# A sanitizer report from a test's child process fails the ctest test: Criterion
# ignores a child's exit status once the test has ended, and LeakSanitizer only checks
# at exit, so a leak in a test only shows in the output (FAIL_REGULAR_EXPRESSION below).
# tests/th_sanitize.c (the concert_th_sanitize objects, linked into every binary) names
# the test whose child reported and keeps libcriterion's own runner leak out.
function(concert_add_test name)
  cmake_parse_arguments(T "" "JOBS" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} concert_th_sanitize PkgConfig::CRITERION)
  if(CONCERT_SANITIZE)
    target_link_options(${name} PRIVATE -Wl,--wrap=criterion_internal_test_setup)
  endif()
  target_compile_definitions(${name} PRIVATE TH_SERVER_BIN="$<TARGET_FILE:concert-server>"
                             TH_CONSUMER_BIN="$<TARGET_FILE:payment-consumer>" TH_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  if(NOT T_JOBS)
    set(T_JOBS 2)
  endif()
  add_test(NAME ${name} COMMAND ${name} --jobs ${T_JOBS} --timeout 120)
  set_tests_properties(${name} PROPERTIES FAIL_REGULAR_EXPRESSION "ERROR: LeakSanitizer;ERROR: AddressSanitizer")
endfunction()
