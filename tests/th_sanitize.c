/* th_sanitize: linked into every Criterion test binary (concert_add_test). In an ASan
 * build it makes a leak in a test child visible to ctest and keeps libcriterion's own
 * runner leak out of the way; without ASan it is empty.
 *
 * Why it is needed: Criterion runs each test in a child process (exec'd by BoxFort)
 * and has recorded the test's result once the child reports its end phase. The child
 * then exits, and only then does LeakSanitizer check it: a leak prints its report and
 * sets the child's exit status, which Criterion 2.4 ignores after the end phase, so the
 * test stayed PASS and the binary exited 0. concert_add_test therefore sets ctest's
 * FAIL_REGULAR_EXPRESSION on the sanitizers' report headers, and this file names the
 * test whose child reported (the report itself cannot: it comes after the test).
 *
 * libcriterion's runner (the parent process) leaks 48 bytes of its own with --jobs 2
 * (one calloc straight from libcriterion's stripped code, no symbol to name it). A
 * suppression file cannot scope that: the only pattern that matches its frames is the
 * module, `libcriterion.so`, and every test body, init and fini runs under libcriterion
 * frames too (criterion_internal_test_main calls them), so the same rule in a child
 * would hide the leaks this is here to catch. So the rule is given only to a runner
 * that ran tests in parallel: LeakSanitizer reads __lsan_default_suppressions when it
 * first checks for leaks (at exit), criterion_current_test is set in a test child and
 * NULL in the runner, and criterion_options.jobs is the --jobs it ran with (0: one per
 * CPU). Our code in the runner (the ReportHook fixtures that start and stop Kafka in
 * test_payment, test_consumer and test_adaptive, all --jobs 1) stays leak-checked. */
#if defined(__SANITIZE_ADDRESS__)
#include <criterion/criterion.h>
#include <criterion/options.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#include <stdio.h>

const char *__lsan_default_suppressions(void);

const char *__lsan_default_suppressions(void) {
    return !criterion_current_test && criterion_options.jobs != 1 ? "leak:libcriterion.so\n" : "";
}

/* The test a child runs, copied when it starts: by the time LeakSanitizer checks (at
 * exit) criterion_current_test's strings are gone. Every Test() trampoline calls
 * criterion_internal_test_setup first; the link wraps it (-Wl,--wrap, concert_add_test). */
static char test_name[256];

void __real_criterion_internal_test_setup(void);
void __wrap_criterion_internal_test_setup(void);

void __wrap_criterion_internal_test_setup(void) {
    const struct criterion_test *t = criterion_current_test;
    if (t) snprintf(test_name, sizeof test_name, "%s::%s", t->category, t->name);
    __real_criterion_internal_test_setup();
}

/* Runs when a sanitizer ends the process with an error (LeakSanitizer at exit, an
 * AddressSanitizer report): says which test's child it was. */
static void on_sanitizer_death(void) {
    if (criterion_current_test)
        fprintf(stderr,
                "th_sanitize: the report above is from the child of test %s; ctest fails the binary on it, "
                "whatever Criterion counted\n",
                test_name[0] ? test_name : "(not started)");
    else
        fprintf(stderr, "th_sanitize: the report above is from the Criterion runner (ReportHooks, libcriterion)\n");
}

__attribute__((constructor)) static void th_sanitize_init(void) { __sanitizer_set_death_callback(on_sanitizer_death); }
#else
typedef int th_sanitize_empty; /* ISO C wants a translation unit to declare something */
#endif
