/* A program that made 32 thread-specific keys or more before its first malloc.  glibc
 * keeps a thread's first 32 key values in its descriptor and callocs a block for the
 * rest at a thread's first pthread_setspecific of a higher key, so a key ebbmalloc makes
 * then is one whose first value allocates: at its initialisation (under its lock) or in
 * a thread that has no cache yet (whose cache's own key value would be lost with the
 * block).  The constructor below makes the keys before anything allocates; the tests
 * check that allocation works, that threads' caches go back when they end, that the
 * program's own keys keep their values and destructors, and that the process still ends
 * when its last thread does (the release thread then finds its end in /proc). */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbmalloc.h"
#include "ebb_test_fork.h"

#define KEYS 40
static pthread_key_t keys[KEYS];
static int keys_made;
static _Atomic int destructed;
static void key_gone(void *v) {
    if (v == (void *)&keys) destructed++;
}

__attribute__((constructor(101))) static void make_keys(void) {
    for (int i = 0; i < KEYS; i++)
        if (pthread_key_create(&keys[i], key_gone) == 0) keys_made++;
}

static void keys_were_made_above_the_inline_ones(void **st) {
    (void)st;
    assert_int_equal(keys_made, KEYS);
    assert_true(keys[KEYS - 1] >= 32);
    /* and the first allocation after them works (it initialises ebbmalloc) */
    char *p = malloc(100);
    assert_non_null(p);
    memset(p, 7, 100);
    free(p);
}

#define THREADS 64
static void *worker(void *arg) {
    (void)arg;
    void *b[500];
    for (int i = 0; i < 500; i++) b[i] = malloc(16 + (size_t)(i % 50) * 16);
    for (int i = 0; i < 500; i++) free(b[i]);
    /* a program key of its own in the second-level block */
    if (pthread_setspecific(keys[KEYS - 1], &keys) != 0) return (void *)1;
    return pthread_getspecific(keys[KEYS - 1]) == &keys ? NULL : (void *)2;
}

static uint64_t caches_alive(void) {
    struct ebb_stats s;
    ebb_stats(&s);
    return s.threads;
}

static void threads_caches_go_back_and_keys_keep_values(void **st) {
    (void)st;
    free(malloc(1)); /* this thread's own cache */
    uint64_t before = caches_alive();
    destructed = 0;
    for (int round = 0; round < 4; round++) {
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, worker, NULL), 0);
        for (int i = 0; i < THREADS; i++) {
            void *r = (void *)3;
            assert_int_equal(pthread_join(t[i], &r), 0);
            assert_null(r);
        }
    }
    assert_int_equal(destructed, 4 * THREADS);
    /* every cache of an ended thread went back (a lost key value would leave one each) */
    assert_int_equal(caches_alive(), before);
}

/* The first thread ends with pthread_exit while another still runs, which ends later:
 * the process must end then. */
static void process_ends_when_its_last_thread_does(void **st) {
    (void)st;
    int rc = ebb_ends_after_pthread_exit(NULL);
    if (rc == EBB_CHILD_HUNG) fail_msg("the child's last program thread ended, the child did not");
    assert_int_equal(rc, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_were_made_above_the_inline_ones),
        cmocka_unit_test(threads_caches_go_back_and_keys_keep_values),
        cmocka_unit_test(process_ends_when_its_last_thread_does),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
