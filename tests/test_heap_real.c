/* ebb-inspect --heap on a process under the real ebbmalloc (not a fake producer): a
 * program whose dlopen'ed library, built -O2 -fomit-frame-pointer, leaks, among noise
 * from other stacks (a small live set of the program's own, allocations freed again).
 * The top stack must name the library's function with its live bytes within 25% of the
 * truth; after a baseline, the diff must show that stack growing by the second leak
 * (within 25%), and no other stack growing by more than a tenth of it. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "testutil.h"

#define LEAK "33554432" /* 32 MiB a phase, in blocks of 4 KiB */
#define BLOCK "4096"
#define FN "real_leak_grow"

/* ebb-inspect --heap ARGS... PID --json: the parsed output, or NULL (*rc its status). */
static struct jval *heap_json(const char *pid, const char *a1, const char *a2, int *rc) {
    char *argv[8];
    int k = 0;
    argv[k++] = (char *)test_need("EBB_INSPECT");
    argv[k++] = "--heap";
    argv[k++] = "--json";
    if (a1) argv[k++] = (char *)a1;
    if (a2) argv[k++] = (char *)a2;
    argv[k++] = (char *)pid;
    argv[k] = NULL;
    char *out = NULL, *err = NULL;
    int st = run_capture(argv, NULL, false, 120, &out, &err);
    assert_true(st != -1);
    *rc = exit_code(st);
    struct jval *j = *rc == 0 ? json_parse(out) : NULL;
    free(out);
    free(err);
    return j;
}

static bool names_fn(const struct jval *frames) {
    for (size_t k = 0; frames && k < frames->n; k++) {
        const char *fn = json_str(&frames->items[k], "function");
        if (fn && !strcmp(fn, FN)) return true;
    }
    return false;
}

static bool near(double got, double want) { return got >= 0.75 * want && got <= 1.25 * want; }

static void leak_in_dlopened_library_found_and_diffed(void **state) {
    (void)state;
    char preload[600];
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", test_need("EBB_TEST_LIB"));
    /* a finer sampling than the default, so that 32 MiB gives about 500 samples */
    char *env[] = {preload, "EBB_PROF_SAMPLE=65536", NULL};
    char *argv[] = {(char *)test_need("REAL_LEAK"), (char *)test_need("REAL_LEAK_LIB"), LEAK, BLOCK, NULL};
    struct child c;
    assert_int_equal(child_start_piped(&c, argv, env), 0);
    if (!child_wait_line(&c, "ready 1", 120)) fail_msg("real-leak did not get ready: %s", c.buf);
    assert_true(maps_has(c.pid, "libebbmalloc")); /* the preload took effect */
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)c.pid);
    const double leak = (double)atoll(LEAK);

    /* The table is published as samples are taken: poll it, bounded. */
    struct jval *j = NULL;
    int rc = 0;
    for (double end = test_now() + 60;;) {
        j = heap_json(pid, NULL, NULL, &rc);
        if (j && names_fn(json_at(j, "heap_profile.stacks.0.frames")) &&
            near(json_num(j, "heap_profile.stacks.0.live_bytes"), leak))
            break;
        if (test_now() > end)
            fail_msg("after 60 s the top stack is not " FN " with %.0f bytes (+-25%%): exit %d, "
                     "top %.0f bytes",
                     leak, rc, j ? json_num(j, "heap_profile.stacks.0.live_bytes") : -1);
        json_free(j);
    }
    assert_string_equal(json_str(j, "heap_profile.stacks.0.library"), "libreal_leak.so");
    /* the noise is there but smaller: the program's own 1 MiB set, under its own name */
    const struct jval *st = json_at(j, "heap_profile.stacks");
    assert_true(st && st->n >= 2);
    json_free(j);

    char file[] = "/tmp/ebb-heap-real-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    close(fd);
    j = heap_json(pid, "--baseline", file, &rc);
    assert_int_equal(rc, 0);
    json_free(j);

    /* the second leak: only its stack grows */
    assert_int_equal(write(c.in, "\n", 1), 1);
    if (!child_wait_line(&c, "ready 2", 120)) fail_msg("real-leak did not leak again: %s", c.buf);
    for (double end = test_now() + 60;;) {
        j = heap_json(pid, "--diff", file, &rc);
        const struct jval *g = j ? json_at(j, "heap_profile.growth.stacks") : NULL;
        if (g && g->n >= 1 && names_fn(json_at(g, "0.frames")) && near(json_num(g, "0.growth_bytes"), leak))
            break;
        if (test_now() > end)
            fail_msg("after 60 s the diff's first stack is not " FN " growing by %.0f bytes (+-25%%): "
                     "exit %d, %.0f",
                     leak, rc, g ? json_num(g, "0.growth_bytes") : -1);
        json_free(j);
    }
    const struct jval *g = json_at(j, "heap_profile.growth.stacks");
    for (size_t k = 1; k < g->n; k++) {
        double other = json_num(&g->items[k], "growth_bytes");
        if (other > leak / 10) fail_msg("stack %zu grew by %.0f bytes too", k + 1, other);
    }
    json_free(j);
    unlink(file);
    child_stop(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(leak_in_dlopened_library_found_and_diffed, children_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
