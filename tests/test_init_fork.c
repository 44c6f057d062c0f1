/* fork() while another thread is inside ebbmalloc's initialisation.  A program linked
 * with the ebb_ API may start threads before its first ebb_malloc, so a fork can come
 * while one of them initialises.  The fork must wait for it: a child that copied a
 * half-done initialisation (state 1, the init lock held by a thread it does not have)
 * would wait for ever at its first malloc.  A test hook holds initialisation open until
 * the fork has happened in the parent (or a second has passed, which is how long a
 * correct fork makes it wait); the child then must see initialisation done, and
 * allocate.  The scenario runs in a process of its own, forked from the test.  Internal library (ebb_ names, the process's malloc stays libc's), so that
 * nothing initialises ebbmalloc before the test does. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ebb_test_fork.h"
#include "internal.h"
#include "ebbmalloc.h"

static _Atomic int in_init, forked;

static long ms_since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Runs on the initialising thread with the init lock held. */
static void hold_init_open(void) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    atomic_store(&in_init, 1);
    while (!atomic_load(&forked) && ms_since(&t0) < 1000) usleep(1000);
}

static void after_fork_in_parent(void) { atomic_store(&forked, 1); }

static void *first_malloc(void *arg) {
    (void)arg;
    unsigned char *p = ebb_malloc(100);
    if (!p) return (void *)1;
    memset(p, 0x5a, 100);
    for (int i = 0; i < 100; i++)
        if (p[i] != 0x5a) return (void *)2;
    ebb_free(p);
    return NULL;
}

enum {
    OK,
    HALF_DONE = 3,
    CHILD_MALLOC = 4,
    CHILD_CONTENT = 5,
    NOT_FRESH = 10,
    NO_INIT,
    THREAD,
    PARENT,
    EMULATOR_HANG = 20,
    CHILD_HUNG
};

/* In a process of its own (forked from the single-threaded test), so that a fork child
 * the emulator leaves hanging (tests/ebb_test_fork.h) can be tried again from the start. */
static int scenario(void) {
    if (atomic_load(&ebbi_init_state) != 0) return NOT_FRESH; /* nothing initialised it yet */
    ebbi_init_hook = hold_init_open;
    if (pthread_atfork(NULL, after_fork_in_parent, NULL)) return THREAD;
    pthread_t t;
    if (pthread_create(&t, NULL, first_malloc, NULL)) return THREAD;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!atomic_load(&in_init)) {
        if (ms_since(&t0) > 10000) return NO_INIT;
        usleep(1000);
    }
    pid_t pid = fork();
    if (pid < 0) return THREAD;
    if (pid == 0) {
        /* A half-done initialisation would make the malloc below wait for ever. */
        if (atomic_load(&ebbi_init_state) != 2) _exit(HALF_DONE);
        unsigned char *q = ebb_malloc(5000);
        if (!q) _exit(CHILD_MALLOC);
        memset(q, 0xa5, 5000);
        for (int i = 0; i < 5000; i++)
            if (q[i] != 0xa5) _exit(CHILD_CONTENT);
        ebb_free(q);
        _exit(OK);
    }
    int rc = ebb_wait_child(pid, NULL);
    if (rc == EBB_CHILD_IN_EMULATOR) return EMULATOR_HANG;
    if (rc == EBB_CHILD_HUNG) return CHILD_HUNG;
    if (rc != OK) return rc;
    void *r;
    if (pthread_join(t, &r) || r) return THREAD;
    if (atomic_load(&ebbi_init_state) != 2) return PARENT;
    void *p = ebb_malloc(64); /* and the parent goes on */
    if (!p) return PARENT;
    ebb_free(p);
    return OK;
}

static void fork_waits_for_initialisation(void **st) {
    (void)st;
    for (;;) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) _exit(scenario());
        int rc = ebb_wait_child(pid, NULL);
        if (rc == EMULATOR_HANG && ebb_emulator_retry(EBB_CHILD_IN_EMULATOR)) continue;
        switch (rc) {
        case OK: return;
        case HALF_DONE: fail_msg("the fork copied initialisation half done (the child's state is not 2)");
        case CHILD_HUNG: fail_msg("the fork child did not end");
        case CHILD_MALLOC: fail_msg("the fork child's ebb_malloc returned NULL");
        case CHILD_CONTENT: fail_msg("the fork child's block did not keep what it wrote");
        case NOT_FRESH: fail_msg("ebbmalloc was initialised before the test's first ebb_malloc");
        case NO_INIT: fail_msg("the first ebb_malloc never reached initialisation");
        default: fail_msg("the scenario ended with %d (threads, or the parent after the fork)", rc);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_waits_for_initialisation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
