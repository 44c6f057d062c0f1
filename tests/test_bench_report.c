/* Tests of what ebb-bench reads and computes beyond /proc: the workload protocol's
 * result and ebbstats lines, callgrind's output, db_bench's result lines, the RSS
 * trend, and real children: a section's faults and bytes, ebbmalloc's breakdown read
 * inside the process, the callgrind arcs of the fast-path wrappers, and the second
 * configuration check after a launcher exec's a program. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

/* ------------------------------------------------------------ protocol lines */

static void test_kv(void **state) {
    (void)state;
    uint64_t v = 0;
    assert_true(bench_kv_u64("a=1 minflt=42 majflt=3", "minflt", &v));
    assert_true(v == 42);
    assert_true(bench_kv_u64("majflt=3 minflt=7", "minflt", &v));
    assert_true(v == 7);
    /* A key that only ends like the one asked for is not it. */
    assert_false(bench_kv_u64("xminflt=9", "minflt", &v));
    assert_false(bench_kv_u64("minflt 9", "minflt", &v));
    assert_false(bench_kv_u64("minflt=", "minflt", &v));
}

static void test_parse_result(void **state) {
    (void)state;
    struct bench_result r;
    assert_true(bench_parse_result("large 300 323954420 minflt=156021 majflt=2 bytes=4576069142", &r));
    assert_string_equal(r.name, "large");
    assert_true(r.ops == 300 && r.ns == 323954420ull);
    assert_true(r.has_faults && r.minflt == 156021 && r.majflt == 2);
    assert_true(r.bytes == 4576069142ull);
    assert_true(bench_parse_result("load 6000 4749611", &r)); /* the old form */
    assert_false(r.has_faults);
    assert_true(r.bytes == 0 && r.ops == 6000);
    assert_false(bench_parse_result("load six 4749611", &r));
}

static void test_parse_ebbstats(void **state) {
    (void)state;
    enum bench_moment m;
    struct bench_ebbstats e;
    assert_true(bench_parse_ebbstats("after rss_kib=18016 own_kib=3236 in_use=8344992 thread_cache=1110336 "
                                     "central=4552992 page_free=1482752 released=80977920 "
                                     "metadata=388480 resident=15879552",
                                     &m, &e));
    assert_int_equal(m, BM_AFTER);
    assert_true(e.have && e.rss_kib == 18016 && e.in_use == 8344992 && e.thread_cache == 1110336);
    assert_true(e.central == 4552992 && e.page_free == 1482752 && e.released == 80977920);
    assert_true(e.metadata == 388480 && e.resident == 15879552 && e.own_kib == 3236);
    assert_true(bench_parse_ebbstats("peak resident=1", &m, &e));
    assert_int_equal(m, BM_PEAK);
    assert_true(bench_parse_ebbstats("live resident=2", &m, &e));
    assert_int_equal(m, BM_LIVE);
    assert_true(e.resident == 2);
    assert_true(e.own_kib == 0); /* not said: none */
    assert_false(bench_parse_ebbstats("sometime resident=1", &m, &e));
}

/* ------------------------------------------------------------ other programs' output */

static const char callgrind_plain[] =
    "version: 1\ncreator: callgrind-3.19.0\npositions: line\nevents: Ir\nsummary: 7066765\n\n"
    "fn=main\n10 5\ncfn=ebb_fp_malloc\ncalls=3 40\n11 999\n"
    "fn=ebb_fp_malloc\n78 25600\n79 25600\ncob=/lib/libc.so.6\ncfn=malloc\ncalls=25600 3281 \n"
    "79 3099065\n82 51200\n\n"
    "fn=ebb_fp_free\n85 25600\ncfn=free\ncalls=25600 10\n86 870400\n"
    "fn=ebb_fp_malloc\ncfn=malloc_slow\ncalls=4 900\n79 4000\n"
    "\ntotals: 7066765\n";

static const char callgrind_ids[] = "events: Ir\n"
                                    "fn=(1) main\ncfn=(2) ebb_fp_malloc\ncalls=3 40\n11 999\n"
                                    "fn=(2)\n78 100\ncfn=(3) malloc\ncalls=100 1\n79 2400\n"
                                    "fn=(4) ebb_fp_free\ncfn=(5) free\ncalls=100 1\n86 3400\n"
                                    "fn=(2)\ncfn=(3)\ncalls=50 1\n79 1200\n"
                                    "totals: 12345\n";

static void test_callgrind_parse(void **state) {
    (void)state;
    struct bench_callgrind c;
    assert_int_equal(bench_callgrind_parse(callgrind_plain, "ebb_fp_malloc", &c), 0);
    assert_true(c.total == 7066765);
    assert_true(c.calls == 25604);              /* both blocks of the function, every callee */
    assert_true(c.inclusive == 3099065 + 4000); /* not its own lines, not main's call to it */
    assert_int_equal(bench_callgrind_parse(callgrind_plain, "ebb_fp_free", &c), 0);
    assert_true(c.calls == 25600 && c.inclusive == 870400);
    assert_int_equal(bench_callgrind_parse(callgrind_plain, "nosuch", &c), 0);
    assert_true(c.calls == 0 && c.inclusive == 0);

    assert_int_equal(bench_callgrind_parse(callgrind_ids, "ebb_fp_malloc", &c), 0);
    assert_true(c.total == 12345 && c.calls == 150 && c.inclusive == 3600);
    assert_int_equal(bench_callgrind_parse("fn=x\n", "x", &c), -1);
}

static void test_dbbench_line(void **state) {
    (void)state;
    struct bench_result r;
    assert_true(bench_parse_dbbench_line(
        "fillrandom   :       5.507 micros/op 181586 ops/sec 5.507 seconds 1000000 operations;   "
        "20.1 MB/s",
        &r));
    assert_string_equal(r.name, "fillrandom");
    assert_true(r.ops == 1000000 && r.ns == 5507000000ull);
    assert_true(bench_parse_dbbench_line(
        "readrandom   :      11.553 micros/op 86554 ops/sec 11.553 seconds 1000000 operations;    "
        "6.1 MB/s (632595 of 1000000 found)",
        &r));
    assert_string_equal(r.name, "readrandom");
    assert_false(bench_parse_dbbench_line("DB path: [/tmp/dbt]", &r));
    assert_false(bench_parse_dbbench_line("Keys:       16 bytes each", &r));
    assert_false(bench_parse_dbbench_line("fillrandom   :       5.031 micros/op 198747 ops/sec;", &r));
}

static void test_trend(void **state) {
    (void)state;
    double x[10], y[10], slope = 0, range = 0;
    for (int i = 0; i < 10; i++) {
        x[i] = i;
        y[i] = i < 5 ? 100 : 100 + 2.0 * (i - 5); /* flat, then rising 2 per step */
    }
    assert_true(bench_trend(x, y, 10, 5, 9, &slope, &range));
    assert_true(fabs(slope - 2.0) < 1e-9);
    assert_true(fabs(range - 8.0) < 1e-9);
    assert_true(bench_trend(x, y, 10, 0, 4, &slope, &range));
    assert_true(fabs(slope) < 1e-9 && fabs(range) < 1e-9);
    assert_false(bench_trend(x, y, 10, 8, 9, &slope, &range)); /* two points */
}

/* ------------------------------------------------------------ real children */

static int run_child(const struct bench_config *cfg, char *const *argv, const char *exec_path,
                     bool (*parse_line)(const char *, struct bench_result *), struct bench_run *r) {
    struct bench_spec sp = {
        .argv = argv,
        .environ = environ,
        .interval_ms = 20,
        .drop_after_ms = 0,
        .timeout_ms = 60000,
        .sync = true,
        .exec_path = exec_path,
        .parse_line = parse_line,
    };
    return bench_run(&sp, cfg, r);
}

static struct bench_config glibc_config(void) {
    struct bench_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.name, sizeof c.name, "glibc");
    return c;
}

static void test_section_reports_faults(void **state) {
    (void)state;
    struct bench_config c = glibc_config();
    char *argv[] = {WL_THROUGHPUT, "--only", "large,fastpath-burst", "--large-iters", "4", "--iters", "1000",
                    "--sync",      NULL};
    struct bench_run r;
    assert_int_equal(run_child(&c, argv, NULL, NULL, &r), 0);
    assert_int_equal(r.n_res, 2);
    assert_string_equal(r.res[0].name, "fastpath-burst");
    assert_true(r.res[0].ops == 768); /* whole rounds of 256 */
    assert_true(r.res[0].has_faults);
    assert_string_equal(r.res[1].name, "large");
    assert_true(r.res[1].ops == 4);
    assert_true(r.res[1].bytes >= 4ull * (5 << 20) && r.res[1].bytes <= 4ull * (25 << 20));
    /* The first block of 5 MiB or more cannot come without faulting its pages in. */
    assert_true(r.res[1].has_faults && r.res[1].minflt >= (5u << 20) / 4096 / 512);
    assert_true(r.minflt >= r.res[1].minflt);
    bench_run_free(&r);
}

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
                             "2100",
                             "--sync",
                             NULL};

static void test_breakdown_only_under_ebbmalloc(void **state) {
    (void)state;
    struct bench_config e;
    memset(&e, 0, sizeof e);
    snprintf(e.name, sizeof e.name, "ebbmalloc");
    snprintf(e.preload, sizeof e.preload, "%s", EBB_LIB_PATH);
    struct bench_run r;
    assert_int_equal(run_child(&e, creep_argv, NULL, NULL, &r), 0);
    for (int m = 0; m < BM_COUNT; m++) {
        const struct bench_ebbstats *s = &r.ebb[m];
        assert_true(s->have);
        assert_true(s->in_use > 0 && s->metadata > 0 && s->rss_kib > 0);
        assert_true(s->resident >= s->in_use + s->metadata);
        assert_true(s->resident / 1024 <= s->rss_kib + 1024); /* resident pages are in RSS */
        /* the workload's bookkeeping, written during the load, is resident, and apart
         * from ebbmalloc's pages */
        assert_true(s->own_kib > 0 && s->own_kib + s->resident / 1024 <= s->rss_kib + 1024);
    }
    bench_run_free(&r);

    struct bench_config g = glibc_config();
    assert_int_equal(run_child(&g, creep_argv, NULL, NULL, &r), 0);
    for (int m = 0; m < BM_COUNT; m++) assert_false(r.ebb[m].have);
    bench_run_free(&r);
}

static void test_wrappers_arcs_under_callgrind(void **state) {
    (void)state;
    char out[] = "/tmp/ebb-bench-test-cg-XXXXXX";
    int fd = mkstemp(out);
    assert_true(fd >= 0);
    close(fd);
    char outopt[64];
    snprintf(outopt, sizeof outopt, "--callgrind-out-file=%s", out);
    char *argv[] = {"valgrind",
                    "--tool=callgrind",
                    "--quiet",
                    "--compress-strings=no",
                    "--compress-pos=no",
                    outopt,
                    WL_THROUGHPUT,
                    "--only",
                    "fastpath-burst",
                    "--iters",
                    "2560",
                    "--null",
                    "--sync",
                    NULL};
    struct bench_config c = glibc_config();
    struct bench_run r;
    struct bench_spec sp = {.argv = argv,
                            .environ = environ,
                            .interval_ms = 1000,
                            .timeout_ms = 120000,
                            .sync = true,
                            .no_samples = true};
    assert_int_equal(bench_run(&sp, &c, &r), 0);
    bench_run_free(&r);
    char *text = NULL;
    size_t cap = 0, len = 0;
    assert_int_equal(procfs_read(out, &text, &cap, &len), 0);
    struct bench_callgrind m, f;
    assert_int_equal(bench_callgrind_parse(text, "ebb_fp_malloc", &m), 0);
    assert_int_equal(bench_callgrind_parse(text, "ebb_fp_free", &f), 0);
    /* Every malloc and free of the loop is a call arc from its wrapper (no tail jump). */
    assert_true(m.calls == 2560 && f.calls == 2560);
    /* Do-nothing functions: a handful of instructions per call, none of the loop's. */
    assert_true(m.inclusive >= 2 * m.calls && m.inclusive <= 12 * m.calls);
    assert_true(f.inclusive >= 1 * f.calls && f.inclusive <= 8 * f.calls);
    free(text);
    unlink(out);
}

static void test_exec_checked_again(void **state) {
    (void)state;
    char sh[PATH_MAX];
    assert_non_null(realpath("/bin/sh", sh));
    char *argv[] = {WL_EXEC,
                    "--sync",
                    "--",
                    "/bin/sh",
                    "-c",
                    "echo 'fillrandom   :  5.0 micros/op 200000 ops/sec 1.500 seconds 300000 "
                    "operations;   1.0 MB/s'; sleep 1; true",
                    NULL};
    struct bench_config c = glibc_config();
    struct bench_run r;
    /* The program after the exec is the shell, which stays while sleep runs (the last
     * command is a builtin): exec_path names the shell's file. */
    if (run_child(&c, argv, sh, bench_parse_dbbench_line, &r) != 0) fail_msg("run failed: %s", r.reason);
    assert_true(r.ok && r.rechecked);
    assert_int_equal(r.n_res, 1);
    assert_string_equal(r.res[0].name, "fillrandom");
    assert_true(r.res[0].ops == 300000 && r.res[0].ns == 1500000000ull);
    bench_run_free(&r);
}

static void test_exec_refused_when_program_maps_an_allocator(void **state) {
    (void)state;
    char sleep_path[PATH_MAX], pre[PATH_MAX + 16];
    assert_non_null(realpath("/bin/sleep", sleep_path));
    snprintf(pre, sizeof pre, "LD_PRELOAD=%s", EBB_LIB_PATH);
    /* The launcher passes the glibc check; the program it runs brings ebbmalloc in. */
    char *argv[] = {WL_EXEC, "--sync", "--", "env", pre, sleep_path, "2", NULL};
    struct bench_config c = glibc_config();
    struct bench_run r;
    assert_int_equal(run_child(&c, argv, sleep_path, bench_parse_dbbench_line, &r), 1);
    assert_true(r.refused);
    if (!strstr(r.reason, "libebbmalloc")) fail_msg("reason \"%s\" does not name libebbmalloc", r.reason);
    bench_run_free(&r);
}

static void test_exec_refused_when_never_seen(void **state) {
    (void)state;
    /* exec_path is never what runs, so the configuration is never checked again. */
    char *argv[] = {WL_EXEC, "--sync", "--", "/bin/true", NULL};
    struct bench_config c = glibc_config();
    struct bench_run r;
    assert_int_equal(run_child(&c, argv, "/nonexistent/db_bench", bench_parse_dbbench_line, &r), 1);
    assert_true(r.refused && !r.rechecked);
    assert_non_null(strstr(r.reason, "before ebb-bench could check"));
    bench_run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv),
        cmocka_unit_test(test_parse_result),
        cmocka_unit_test(test_parse_ebbstats),
        cmocka_unit_test(test_callgrind_parse),
        cmocka_unit_test(test_dbbench_line),
        cmocka_unit_test(test_trend),
        cmocka_unit_test(test_section_reports_faults),
        cmocka_unit_test(test_breakdown_only_under_ebbmalloc),
        cmocka_unit_test(test_wrappers_arcs_under_callgrind),
        cmocka_unit_test(test_exec_checked_again),
        cmocka_unit_test(test_exec_refused_when_program_maps_an_allocator),
        cmocka_unit_test(test_exec_refused_when_never_seen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
