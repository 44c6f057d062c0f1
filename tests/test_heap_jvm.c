/* A JVM leaking native memory through a JNI library of ours (tests/jni/leaky.c: the Java
 * method org.ebbmalloc.test.Leaky.leak mallocs and never frees), under the real
 * libebbmalloc.so, while its Java heap stays small (-Xmx32m, no garbage per call).
 * ebb-inspect --heap must name the JNI function on the top stack, count that stack under
 * libleaky.so, and estimate its live bytes within 25% of what the program leaked.
 * It needs ebbmalloc's heap sampler: meson runs it with -Dheap_jvm_test=true. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "testutil.h"

#define LEAK_TOTAL "134217728" /* 128 MiB, four times the Java heap's limit */
#define LEAK_BLOCK "16384"
#define JNI_NAME "Java_org_ebbmalloc_test_Leaky_leak"

static int inspect(const char *pid, bool json, char **out, char **err) {
    char *argv[] = {(char *)test_need("EBB_INSPECT"), "--heap", json ? "--json" : (char *)pid,
                    json ? (char *)pid : NULL, NULL};
    int st = run_capture(argv, NULL, false, 120, out, err);
    assert_true(st != -1);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static bool top_is_jni(const struct jval *j) {
    const struct jval *fr = json_at(j, "heap_profile.stacks.0.frames");
    for (size_t k = 0; fr && k < fr->n; k++) {
        const char *fn = json_str(&fr->items[k], "function");
        if (fn && !strcmp(fn, JNI_NAME)) return true;
    }
    return false;
}

/* A JVM whose JNI library leaks `total` bytes, sampled every `sample` bytes on average:
 * ebb-inspect --heap finds the JNI function on the top stack with the leak's size. */
static void jvm_jni_leak(const char *sample, const char *total) {
    char preload[600], sample_env[64];
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", test_need("EBB_TEST_LIB"));
    snprintf(sample_env, sizeof(sample_env), "EBB_PROF_SAMPLE=%s", sample);
    char *env[] = {preload, sample_env, NULL};
    char *argv[] = {(char *)test_need("JAVA"),
                    "-Xmx32m",
                    "-cp",
                    (char *)test_need("LEAKY_CLASSPATH"),
                    "org.ebbmalloc.test.Leaky",
                    (char *)test_need("LEAKY_LIB"),
                    (char *)total,
                    LEAK_BLOCK,
                    NULL};
    struct child c;
    assert_int_equal(child_start(&c, argv, env, false), 0);
    if (!child_wait_line(&c, "ready", 180)) fail_msg("the Java program did not get ready: %s", c.buf);
    long long leaked = 0;
    const char *l = strstr(c.buf, "leaked ");
    assert_non_null(l);
    leaked = atoll(l + 7);
    assert_true(leaked >= atoll(total));
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", (int)c.pid);

    /* the table is published as samples are taken: poll it, bounded */
    struct jval *j = NULL;
    char *out = NULL, *err = NULL;
    double end = test_now() + 60;
    bool done = false;
    while (!done) {
        free(out);
        free(err);
        json_free(j);
        int rc = inspect(pid, true, &out, &err);
        j = rc == 0 ? json_parse(out) : NULL;
        double live = j ? json_num(j, "heap_profile.stacks.0.live_bytes") : -1;
        done = j && top_is_jni(j) && live >= 0.75 * (double)leaked && live <= 1.25 * (double)leaked;
        if (!done && test_now() > end)
            fail_msg("after 60 s the top stack is not %s with %lld bytes (+-25%%): exit %d, %s\n%s", JNI_NAME,
                     leaked, rc, err, out);
    }
    assert_string_equal(json_str(j, "allocator"), "ebbmalloc");
    assert_string_equal(json_str(j, "heap_profile.stacks.0.library"), "libleaky.so");
    assert_int_equal((long long)json_num(j, "java.max_heap_bytes"), 32ll << 20);
    json_free(j);
    free(out);
    free(err);

    /* the text names it on stack #1, and the hint names the Java method */
    assert_int_equal(inspect(pid, false, &out, &err), 0);
    const char *s1 = strstr(out, "\n  #1  "), *s2 = strstr(out, "\n  #2  ");
    const char *fn = strstr(out, "libleaky.so!" JNI_NAME "+0x");
    assert_true(s1 && fn && fn > s1 && (!s2 || fn < s2));
    assert_non_null(strstr(out, "org.ebbmalloc.test.Leaky.leak()"));
    free(out);
    free(err);
    child_stop(&c);
}

/* A finer sampling than the default, so that 128 MiB gives thousands of samples. */
static void test_jvm_jni_leak(void **state) {
    (void)state;
    jvm_jni_leak("65536", LEAK_TOTAL);
}

/* Every allocation of the JVM sampled (a span and a stack walk each, from its start-up
 * on: its threads, its dlopens, its JIT): no deadlock, no crash, and the same answer. */
static void test_jvm_every_allocation_sampled(void **state) {
    (void)state;
    jvm_jni_leak("1", "33554432");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_jvm_jni_leak, children_teardown),
        cmocka_unit_test_teardown(test_jvm_every_allocation_sampled, children_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
