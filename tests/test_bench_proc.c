/* Tests of ebb-bench's driver (bench/): the configuration selection and child
 * environment, the check of a configuration against what /proc shows of the child,
 * and the refusal of a configuration that did not take effect in a real child process.
 * The /proc parsers themselves (lib/procfs) are tested in test_procfs.c. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/* ------------------------------------------------------------ evidence */

/* A glibc process with three thread arenas: two heaps partly used (rw-p then
 * ---p up to the next 64 MiB boundary) and one fully grown heap, among the usual
 * mappings: main heap, thread stacks with guard pages, libraries. */
static const char maps_three_heaps[] =
    "55f1c7a00000-55f1c7a02000 r--p 00000000 fe:01 1311235                    "
    "/work/build/bench/ebb-wl-arena-creep\n"
    "55f1c7a02000-55f1c7a05000 r-xp 00002000 fe:01 1311235                    "
    "/work/build/bench/ebb-wl-arena-creep\n"
    "55f1c8e4b000-55f1c8e6c000 rw-p 00000000 00:00 0                          [heap]\n"
    "7f2a30000000-7f2a34000000 rw-p 00000000 00:00 0 \n"
    "7f2a38000000-7f2a3a1e4000 rw-p 00000000 00:00 0 \n"
    "7f2a3a1e4000-7f2a3c000000 ---p 00000000 00:00 0 \n"
    "7f2a40000000-7f2a40021000 rw-p 00000000 00:00 0 \n"
    "7f2a40021000-7f2a44000000 ---p 00000000 00:00 0 \n"
    "7f2a46bff000-7f2a46c00000 ---p 00000000 00:00 0 \n"
    "7f2a46c00000-7f2a47400000 rw-p 00000000 00:00 0 \n"
    "7f2a47600000-7f2a47628000 r--p 00000000 fe:01 2228321                    "
    "/usr/lib/x86_64-linux-gnu/libc.so.6\n"
    "7f2a47628000-7f2a4779d000 r-xp 00028000 fe:01 2228321                    "
    "/usr/lib/x86_64-linux-gnu/libc.so.6\n"
    "7ffd6a5d0000-7ffd6a5f1000 rw-p 00000000 00:00 0                          [stack]\n";

/* ------------------------------------------------------------ configurations */

static void test_select_configs(void **state) {
    (void)state;
    struct bench_config known[32], sel[32];
    char err[128];
    int nk = bench_builtin_configs(known, 32, "/nonexistent/libebbmalloc.so");
    assert_int_equal(nk, 12);
    assert_string_equal(known[0].name, "glibc");
    assert_string_equal(known[nk - 2].name, "ebbmalloc");
    assert_string_equal(known[nk - 1].name, "ebbmalloc-noprof");
    assert_string_equal(known[nk - 1].env[0], "EBB_PROF=0");
    assert_string_equal(known[nk - 1].preload, known[nk - 2].preload);

    assert_int_equal(bench_select_configs(known, nk, NULL, sel, 32, err, sizeof err), nk);
    assert_int_equal(bench_select_configs(known, nk, "glibc,arena-max-2", sel, 32, err, sizeof err), 2);
    assert_string_equal(sel[1].name, "arena-max-2");
    assert_string_equal(sel[1].env[0], "MALLOC_ARENA_MAX=2");
    assert_int_equal(bench_select_configs(known, nk, "arena,arena-max-1,peers", sel, 32, err, sizeof err), 7);
    assert_int_equal(bench_select_configs(known, nk, "glibc-all", sel, 32, err, sizeof err), 7);
    assert_int_equal(bench_select_configs(known, nk, "ebb", sel, 32, err, sizeof err), 2);
    assert_int_equal(bench_select_configs(known, nk, "glibc,nosuch", sel, 32, err, sizeof err), -1);
    assert_non_null(strstr(err, "nosuch"));

    assert_int_equal(bench_select_configs(known, nk, "ebbmalloc", sel, 32, err, sizeof err), 1);
    bench_mark_missing(sel, 1);
    assert_true(sel[0].skipped);
    assert_non_null(strstr(sel[0].skip_reason, "/nonexistent/libebbmalloc.so"));
}

static void test_child_env(void **state) {
    (void)state;
    char *base[] = {"HOME=/root",
                    "LD_PRELOAD=/usr/lib/libsomething.so",
                    "MALLOC_ARENA_MAX=4",
                    "GLIBC_TUNABLES=glibc.malloc.arena_max=1",
                    "MALLOC_CONF=narenas:1",
                    "EBB_LIB=/x.so",
                    "EBB_PROF=0",
                    "PATH=/usr/bin",
                    NULL};
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.env[0], sizeof c.env[0], "MALLOC_ARENA_MAX=2");
    c.n_env = 1;
    char **env = bench_child_env(base, &c);
    assert_non_null(env);
    int n = 0, arena = 0;
    for (char **p = env; *p; p++, n++) {
        assert_null(strstr(*p, "LD_PRELOAD"));
        assert_null(strstr(*p, "GLIBC_TUNABLES"));
        assert_null(strstr(*p, "MALLOC_CONF"));
        assert_null(strstr(*p, "EBB_LIB"));
        assert_null(strstr(*p, "EBB_PROF"));
        if (strncmp(*p, "MALLOC_ARENA_MAX=", 17) == 0) {
            assert_string_equal(*p, "MALLOC_ARENA_MAX=2");
            arena++;
        }
    }
    assert_int_equal(arena, 1);
    assert_int_equal(n, 3); /* HOME, PATH, the configuration's */
    bench_free_env(env);

    memset(&c, 0, sizeof c);
    snprintf(c.preload, sizeof c.preload, "/opt/lib/liba.so");
    env = bench_child_env(base, &c);
    int pre = 0;
    for (char **p = env; *p; p++)
        if (strcmp(*p, "LD_PRELOAD=/opt/lib/liba.so") == 0) pre++;
    assert_int_equal(pre, 1);
    bench_free_env(env);
}

static void test_check_config_evidence(void **state) {
    (void)state;
    char why[512];
    static const char env_ok[] = "HOME=/root\0MALLOC_ARENA_MAX=2\0";
    static const char env_none[] = "HOME=/root\0";
    struct bench_config arena2;
    memset(&arena2, 0, sizeof arena2);
    snprintf(arena2.name, sizeof arena2.name, "arena-max-2");
    snprintf(arena2.env[0], sizeof arena2.env[0], "MALLOC_ARENA_MAX=2");
    arena2.n_env = 1;

    struct bench_evidence ev = {maps_three_heaps, env_ok, sizeof env_ok - 1,
                                "/usr/lib/x86_64-linux-gnu/libc.so.6"};
    assert_true(bench_check_config(&arena2, &ev, why, sizeof why));
    ev.environ = env_none;
    ev.environ_len = sizeof env_none - 1;
    assert_false(bench_check_config(&arena2, &ev, why, sizeof why));
    assert_non_null(strstr(why, "MALLOC_ARENA_MAX=2"));

    /* A glibc configuration with another allocator in the process is refused. */
    struct bench_config glibc;
    memset(&glibc, 0, sizeof glibc);
    snprintf(glibc.name, sizeof glibc.name, "glibc");
    char maps_je[2048];
    snprintf(maps_je, sizeof maps_je, "%s%s", maps_three_heaps,
             "7f0000000000-7f0000001000 r--p 00000000 fe:01 5 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n");
    struct bench_evidence ev2 = {maps_je, env_none, sizeof env_none - 1, NULL};
    assert_false(bench_check_config(&glibc, &ev2, why, sizeof why));
    assert_non_null(strstr(why, "libjemalloc"));
    ev2.maps = maps_three_heaps;
    assert_true(bench_check_config(&glibc, &ev2, why, sizeof why));
    ev2.malloc_from = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";
    assert_false(bench_check_config(&glibc, &ev2, why, sizeof why));

    /* A preload that is not in the maps is refused. */
    struct bench_config pre;
    memset(&pre, 0, sizeof pre);
    snprintf(pre.name, sizeof pre.name, "x");
    snprintf(pre.preload, sizeof pre.preload, "/nonexistent/libx.so");
    struct bench_evidence ev3 = {maps_three_heaps, env_none, sizeof env_none - 1, NULL};
    assert_false(bench_check_config(&pre, &ev3, why, sizeof why));
    assert_non_null(strstr(why, "not mapped"));
    ev3.maps = NULL;
    assert_false(bench_check_config(&pre, &ev3, why, sizeof why));
}

/* ------------------------------------------------------------ real children */

static char *creep_argv[] = {WL_ARENA_CREEP,
                             "--threads",
                             "2",
                             "--ops",
                             "3000",
                             "--lifetime",
                             "1000",
                             "--epoch",
                             "500",
                             "--hot-blocks",
                             "64",
                             "--cold-blocks",
                             "8",
                             "--idle-ms",
                             "0",
                             "--sync",
                             NULL};

extern char **environ;

static int run_creep(const struct bench_config *cfg, char *const *argv, struct bench_run *r) {
    struct bench_spec sp = {
        .argv = argv,
        .environ = environ,
        .interval_ms = 20,
        .drop_after_ms = 0,
        .timeout_ms = 30000,
        .sync = true,
    };
    return bench_run(&sp, cfg, r);
}

static struct bench_config preload_config(const char *path) {
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "test-preload");
    snprintf(c.preload, sizeof c.preload, "%s", path);
    return c;
}

static void test_run_glibc_accepted(void **state) {
    (void)state;
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "arena-max-2");
    snprintf(c.env[0], sizeof c.env[0], "MALLOC_ARENA_MAX=2");
    c.n_env = 1;
    struct bench_run r;
    assert_int_equal(run_creep(&c, creep_argv, &r), 0);
    assert_true(r.ok);
    assert_false(r.refused);
    assert_int_equal(r.n_res, 1);
    assert_string_equal(r.res[0].name, "load");
    assert_true(r.res[0].ops == 6000);
    assert_true(r.has_live);
    assert_true(r.peak_live > 0);
    assert_true(r.peak_rss_kib > 0);
    assert_true(r.t_drop_ms >= 0);
    assert_true(r.rss_end_kib > 0);
    assert_true(r.n > 0);
    assert_non_null(strstr(r.malloc_from, "libc"));
    bench_run_free(&r);
}

static void test_run_wrapper_accepted(void **state) {
    (void)state;
    struct bench_config c = preload_config(PRELOAD_WRAP);
    struct bench_run r;
    assert_int_equal(run_creep(&c, creep_argv, &r), 0);
    assert_true(r.ok);
    assert_non_null(strstr(r.malloc_from, "ebbbench-preload-wrap"));
    bench_run_free(&r);
}

static void expect_refused(const struct bench_config *c, char *const *argv, const char *why_part) {
    struct bench_run r;
    assert_int_equal(run_creep(c, argv, &r), 1);
    assert_false(r.ok);
    assert_true(r.refused);
    assert_int_equal(r.n_res, 0); /* killed before it did any work */
    if (!strstr(r.reason, why_part)) fail_msg("reason \"%s\" does not mention \"%s\"", r.reason, why_part);
    bench_run_free(&r);
}

static void test_run_refuses_non_library(void **state) {
    (void)state;
    char path[] = "/tmp/ebb-bench-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a library\n", 14), 14);
    close(fd);
    struct bench_config c = preload_config(path);
    expect_refused(&c, creep_argv, "not mapped");
    unlink(path);
}

static void test_run_refuses_missing_library(void **state) {
    (void)state;
    struct bench_config c = preload_config("/nonexistent/libnothing.so");
    expect_refused(&c, creep_argv, "not mapped");
}

static void test_run_refuses_preload_without_malloc(void **state) {
    (void)state;
    /* Loaded, so in the maps, but malloc still comes from glibc. */
    struct bench_config c = preload_config(PRELOAD_NONE);
    expect_refused(&c, creep_argv, "malloc comes from");
}

static void test_run_refuses_dropped_preload(void **state) {
    (void)state;
    /* A launcher that drops LD_PRELOAD before starting the real program. */
    char *argv[32] = {"env", "-u", "LD_PRELOAD"};
    int n = 3;
    for (char **p = creep_argv; *p; p++) argv[n++] = *p;
    argv[n] = NULL;
    struct bench_config c = preload_config(PRELOAD_WRAP);
    expect_refused(&c, argv, "not mapped");
}

static void test_run_refuses_dropped_env(void **state) {
    (void)state;
    char *argv[32] = {"env", "-u", "MALLOC_ARENA_MAX"};
    int n = 3;
    for (char **p = creep_argv; *p; p++) argv[n++] = *p;
    argv[n] = NULL;
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "arena-max-1");
    snprintf(c.env[0], sizeof c.env[0], "MALLOC_ARENA_MAX=1");
    c.n_env = 1;
    expect_refused(&c, argv, "MALLOC_ARENA_MAX=1 is not in the child's environment");
}

/* ------------------------------------------------------------ statistics */

static void test_median_spread(void **state) {
    (void)state;
    double v[] = {3.0, 1.0, 2.0};
    assert_true(bench_median(v, 3) == 2.0);
    double w[] = {4.0, 1.0, 2.0, 3.0};
    assert_true(bench_median(w, 4) == 2.5);
    assert_true(v[0] == 3.0); /* the input is left alone */
    double s = bench_spread(v, 3, 2.0);
    assert_true(s > 0.49 && s < 0.51);
    assert_true(bench_spread(v, 1, 3.0) == 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_configs),
        cmocka_unit_test(test_child_env),
        cmocka_unit_test(test_check_config_evidence),
        cmocka_unit_test(test_run_glibc_accepted),
        cmocka_unit_test(test_run_wrapper_accepted),
        cmocka_unit_test(test_run_refuses_non_library),
        cmocka_unit_test(test_run_refuses_missing_library),
        cmocka_unit_test(test_run_refuses_preload_without_malloc),
        cmocka_unit_test(test_run_refuses_dropped_preload),
        cmocka_unit_test(test_run_refuses_dropped_env),
        cmocka_unit_test(test_median_spread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
