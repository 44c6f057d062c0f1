/* ebb-run: preloading, options as EBB_* variables, exit status and signals, and the
 * refusals (library missing, static or set-user-ID program, preload not taking effect). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

/* argv (room for max): ebb-run, the arguments in ap up to NULL, then "--" cmd if cmd. */
static void ebb_run_argv(char **argv, size_t max, va_list ap, const char *cmd) {
    size_t n = 0;
    argv[n++] = (char *)test_need("EBB_RUN");
    for (char *a; (a = va_arg(ap, char *)) && n + 3 < max;) argv[n++] = a;
    if (cmd) {
        argv[n++] = "--";
        argv[n++] = (char *)cmd;
    }
    argv[n] = NULL;
}

/* ebb-run ARGS... with extra environment; returns exit code or 128+signal. */
static int run(char **out, char **err, char *const env[], ...) {
    char *argv[24];
    va_list ap;
    va_start(ap, env);
    ebb_run_argv(argv, 24, ap, NULL);
    va_end(ap);
    int st = run_capture(argv, env, false, 60, out, err);
    assert_true(st != -1);
    return exit_code(st);
}

/* ebb-run ARGS... -- /bin/cat, which lives until its input ends: the test holds cat's
 * input open until ebb-run has said a line starting with `said` (or 60 s have passed), so
 * the check cannot miss a command that ended early, however loaded the machine.  Then
 * cat sees the end of its input and exits 0 (if ebb-run let it run).  Returns ebb-run's
 * exit code; *out (malloc'd) gets what it printed, stdout and stderr together. */
static int run_cat_until(const char *said, char *const env[], char **out, ...) {
    char *argv[24];
    va_list ap;
    va_start(ap, out);
    ebb_run_argv(argv, 24, ap, "/bin/cat");
    va_end(ap);
    struct child c;
    assert_int_equal(child_start_piped(&c, argv, env), 0);
    bool seen = child_wait_line(&c, said, 60);
    close(c.in);
    c.in = -1;
    int st = child_wait_exit(&c, 60);
    char *text = strdup(c.buf);
    if (!seen) fail_msg("ebb-run never said \"%s\": %s", said, text);
    assert_true(st != -1);
    *out = text;
    return exit_code(st);
}

static void test_preload_and_status(void **state) {
    (void)state;
    char *out, *err;
    int rc = run(&out, &err, NULL, "-v", "--lib", (char *)test_need("STUB_LIB"), "--",
                 (char *)test_need("DYN_HELLO"), "3", "a", "b c", NULL);
    assert_int_equal(rc, 3);
    assert_string_equal(out, "a b c\n");
    assert_non_null(strstr(err, "LD_PRELOAD=/"));
    assert_non_null(strstr(err, "libebbstub.so"));
    /* so short-lived that the check may not catch it: either outcome is said */
    assert_true(strstr(err, "checked:") || strstr(err, "ended before"));
    free(out);
    free(err);
    /* a command that lives until the check is done is checked */
    rc = run_cat_until("ebb-run: checked: ", NULL, &out, "-v", "--lib", (char *)test_need("STUB_LIB"), NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "checked: "));
    free(out);
}

static void test_options_to_env(void **state) {
    (void)state;
    char *out, *err;
    char lib[4200];
    snprintf(lib, sizeof(lib), "EBB_LIB=%s", test_need("STUB_LIB"));
    char *env[] = {lib, "LD_PRELOAD=/nonexistent-keep-me.so", NULL};
    int rc = run(&out, &err, env, "--stats", "--release-ms", "250", "--soft-limit", "512M", "--no-stats-page",
                 "--", (char *)test_need("DYN_HELLO"), "0", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, "EBB_STATS=1\n"));
    assert_non_null(strstr(err, "EBB_RELEASE_MS=250\n"));
    assert_non_null(strstr(err, "EBB_SOFT_LIMIT=536870912\n"));
    assert_non_null(strstr(err, "EBB_STATS_SHM=0\n"));
    /* ours first, the user's preload kept */
    assert_non_null(strstr(err, "libebbstub.so:/nonexistent-keep-me.so\n"));
    free(out);
    free(err);

    rc = run(&out, &err, env, "--soft-limit", "90%", "--", (char *)test_need("DYN_HELLO"), "0", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(err, "EBB_SOFT_LIMIT=90%\n"));
    free(out);
    free(err);

    rc = run(&out, &err, env, "--soft-limit", "lots", "--", (char *)test_need("DYN_HELLO"), "0", NULL);
    assert_int_equal(rc, 125);
    assert_non_null(strstr(err, "--soft-limit needs a size"));
    free(out);
    free(err);
}

static void test_missing_library(void **state) {
    (void)state;
    char *out, *err;
    char *env[] = {"EBB_LIB=/nonexistent/libebbmalloc.so", NULL};
    int rc = run(&out, &err, env, "--", (char *)test_need("DYN_HELLO"), "0", NULL);
    assert_int_equal(rc, 125);
    assert_non_null(strstr(err, "does not exist"));
    assert_string_equal(out, ""); /* the command never ran */
    free(out);
    free(err);
}

static void test_not_found(void **state) {
    (void)state;
    char *out, *err;
    int rc = run(&out, &err, NULL, "--lib", (char *)test_need("STUB_LIB"), "--", "no-such-command-ebb", NULL);
    assert_int_equal(rc, 127);
    assert_non_null(strstr(err, "command not found"));
    free(out);
    free(err);
}

static void test_static_refused(void **state) {
    (void)state;
    const char *st = test_need("STATIC_HELLO"); /* tools/meson.build builds it where libc.a is */
    char *out, *err;
    int rc = run(&out, &err, NULL, "--lib", (char *)test_need("STUB_LIB"), "--", (char *)st, "0", "x", NULL);
    assert_int_equal(rc, 125);
    assert_non_null(strstr(err, "statically linked"));
    assert_string_equal(out, "");
    free(out);
    free(err);
    /* a script whose interpreter is static is refused as well */
    char script[] = "/tmp/ebb-run-test-XXXXXX";
    int fd = mkstemp(script);
    assert_true(fd >= 0);
    dprintf(fd, "#!%s\n", st);
    close(fd);
    chmod(script, 0755);
    rc = run(&out, &err, NULL, "--lib", (char *)test_need("STUB_LIB"), "--", script, NULL);
    assert_int_equal(rc, 125);
    assert_non_null(strstr(err, "statically linked"));
    free(out);
    free(err);
    /* and runs anyway when asked */
    rc = run(&out, &err, NULL, "--allow-no-preload", "--lib", (char *)test_need("STUB_LIB"), "--", (char *)st,
             "4", "x", NULL);
    assert_int_equal(rc, 4);
    assert_string_equal(out, "x\n");
    free(out);
    free(err);
    unlink(script);
}

static void test_setuid_refused(void **state) {
    (void)state;
    if (geteuid() != 0) skip();
    char copy[] = "/tmp/ebb-run-suid-XXXXXX";
    int fd = mkstemp(copy);
    assert_true(fd >= 0);
    int in = open(test_need("DYN_HELLO"), O_RDONLY);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof(buf))) > 0) assert_int_equal(write(fd, buf, (size_t)n), n);
    close(in);
    close(fd);
    assert_int_equal(chown(copy, 65534, 65534), 0);
    assert_int_equal(chmod(copy, 04755), 0);
    char *out, *err;
    int rc = run(&out, &err, NULL, "--lib", (char *)test_need("STUB_LIB"), "--", copy, "0", NULL);
    assert_int_equal(rc, 125);
    assert_non_null(strstr(err, "set-user-ID"));
    free(out);
    free(err);
    unlink(copy);
}

/* A library the loader will not preload (here: a position-independent executable):
 * the dynamic check sees the program's libraries without ours. */
static void test_preload_not_effective(void **state) {
    (void)state;
    char *out;
    /* the command outlives the check, however long that takes: it is stopped */
    int rc = run_cat_until("ebb-run: the preload did not take effect", NULL, &out, "--lib",
                           (char *)test_need("DYN_HELLO"), NULL);
    assert_int_equal(rc, 125);
    assert_non_null(strstr(out, "did not take effect"));
    free(out);
    /* or, when allowed, runs on to its own end */
    rc = run_cat_until("ebb-run: warning: ", NULL, &out, "--allow-no-preload", "--lib",
                       (char *)test_need("DYN_HELLO"), NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "did not take effect"));
    free(out);
}

/* SIGTERM and SIGINT sent to ebb-run reach the command; ebb-run ends the same way. */
static void test_signals(void **state) {
    (void)state;
    int sigs[] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        char *argv[] = {(char *)test_need("EBB_RUN"),
                        "--lib",
                        (char *)test_need("STUB_LIB"),
                        "--",
                        (char *)test_need("DYN_HELLO"),
                        "sleep",
                        NULL};
        struct child c;
        assert_int_equal(child_start(&c, argv, NULL, false), 0);
        assert_true(child_wait_line(&c, "ready", 30));
        kill(c.pid, sigs[i]);
        int st;
        assert_int_equal(waitpid(c.pid, &st, 0), c.pid);
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), sigs[i]);
        close(c.out);
    }
}

static void test_finds_library_next_to_itself(void **state) {
    (void)state;
    const char *lib = test_need("EBB_TEST_LIB");
    char *out;
    char *env[] = {"EBB_LIB=", NULL};
    int rc = run_cat_until("ebb-run: checked:", env, &out, "-v", NULL);
    if (rc != 0) fail_msg("ebb-run with the built library: exit %d: %s", rc, out);
    char *real = realpath(lib, NULL);
    assert_non_null(strstr(out, real));
    assert_non_null(strstr(out, "checked:"));
    free(real);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_preload_and_status, children_teardown),
        cmocka_unit_test_teardown(test_options_to_env, children_teardown),
        cmocka_unit_test_teardown(test_missing_library, children_teardown),
        cmocka_unit_test_teardown(test_not_found, children_teardown),
        cmocka_unit_test_teardown(test_static_refused, children_teardown),
        cmocka_unit_test_teardown(test_setuid_refused, children_teardown),
        cmocka_unit_test_teardown(test_preload_not_effective, children_teardown),
        cmocka_unit_test_teardown(test_signals, children_teardown),
        cmocka_unit_test_teardown(test_finds_library_next_to_itself, children_teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
