/* Threads and processes: cross-thread frees under stress with every byte checked, thread
 * exit returning caches, the cap on all thread caches, fork from a threaded parent (also
 * while other threads are inside stdio), and fork from a signal handler.  Linked to
 * libebbmalloc.so, so malloc here is ebbmalloc's.
 *
 * Knobs (environment): EBB_THREADS_OPS (150000 operations per thread of the cross-thread
 * stress), EBB_THREADS_LIFETIMES (3000 threads that start, churn and exit),
 * EBB_THREADS_FORKS (150 forks from a parent whose threads allocate), EBB_THREADS_FILL
 * (4000 blocks per thread of the cache cap's 300), EBB_TEST_CHILD_S (20 seconds for
 * a fork child to end before it counts as deadlocked).
 *
 * Every fork child is waited for through tests/ebb_test_fork.h, which reports a child
 * that does not end (with the step it reached, from child_stage) and tells a child stuck
 * in qemu-user's own lock, which is forked again a few times at most. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbmalloc.h"
#include "ebb_test_fork.h"

static long knob(const char *name, long def) {
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 0) : def;
}

static void fill(unsigned char *p, size_t n) {
    uintptr_t k = (uintptr_t)p * 2654435761u + n;
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(k + i * 7);
}
static int intact(const unsigned char *p, size_t n) {
    uintptr_t k = (uintptr_t)p * 2654435761u + n;
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(k + i * 7)) return 0;
    return 1;
}

/* ---------------------------------------------------------------- cross-thread stress */
#define RING 4096
struct ring {
    pthread_mutex_t mu;
    void *p[RING];
    size_t n[RING];
    unsigned head, tail;
};
static struct ring ring = {.mu = PTHREAD_MUTEX_INITIALIZER};
static _Atomic long corrupt;
static long stress_ops;

static void *stress_worker(void *arg) {
    unsigned r = (unsigned)(uintptr_t)arg * 7919 + 1;
    for (long i = 0; i < stress_ops; i++) {
        r = r * 1103515245 + 12345;
        size_t n = (r >> 16) % 100 < 90 ? (r >> 8) % 600 : (r >> 16) % 100 < 99 ? (r >> 4) % 40000 : 300000;
        unsigned char *p = malloc(n);
        if (!p) abort();
        fill(p, n);
        void *victim = NULL;
        size_t vn = 0;
        pthread_mutex_lock(&ring.mu);
        if (ring.head - ring.tail == RING || (r & 1)) {
            if (ring.head != ring.tail) {
                victim = ring.p[ring.tail % RING];
                vn = ring.n[ring.tail % RING];
                ring.tail++;
            }
        }
        if (ring.head - ring.tail < RING) {
            ring.p[ring.head % RING] = p;
            ring.n[ring.head % RING] = n;
            ring.head++;
            p = NULL;
        }
        pthread_mutex_unlock(&ring.mu);
        if (p) {
            if (!intact(p, n)) corrupt++;
            free(p);
        }
        if (victim) {
            if (!intact(victim, vn)) corrupt++;
            free(victim);
        }
    }
    return NULL;
}

static void cross_thread_stress(void **st) {
    (void)st;
    pthread_t t[8];
    stress_ops = knob("EBB_THREADS_OPS", 150000);
    for (long i = 0; i < 8; i++) pthread_create(&t[i], NULL, stress_worker, (void *)i);
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    while (ring.head != ring.tail) {
        if (!intact(ring.p[ring.tail % RING], ring.n[ring.tail % RING])) corrupt++;
        free(ring.p[ring.tail % RING]);
        ring.tail++;
    }
    assert_int_equal(corrupt, 0);
}

/* ---------------------------------------------------------------- thread exit */
static void *churn_and_exit(void *arg) {
    (void)arg;
    void *v[256];
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < 256; i++) v[i] = malloc((size_t)(i * 37) % 2048);
        for (int i = 0; i < 256; i++) free(v[i]);
    }
    return NULL;
}

static void thread_exit_returns_cache(void **st) {
    (void)st;
    struct ebb_stats s0, s1;
    ebb_stats(&s0);
    long lifetimes = knob("EBB_THREADS_LIFETIMES", 3000);
    for (long i = 0; i < lifetimes; i++) {
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, churn_and_exit, NULL), 0);
        pthread_join(t, NULL);
    }
    ebb_stats(&s1);
    assert_true(s1.threads <= s0.threads + 1);
    assert_true(s1.thread_cache <= s0.thread_cache + (1 << 20));
    assert_true(s1.resident <= s0.resident + (32 << 20));
}

/* ---------------------------------------------------------------- the cap */
static pthread_barrier_t bar;
static long fill_n; /* blocks each thread allocates and frees, three times */
static void *fill_cache(void *arg) {
    (void)arg;
    const long N = fill_n;
    void **v = malloc((size_t)N * sizeof *v);
    for (int round = 0; round < 3; round++) {
        for (long i = 0; i < N; i++) v[i] = malloc(64 + (size_t)(i % 8) * 128);
        for (long i = 0; i < N; i++) free(v[i]);
    }
    free(v);
    pthread_barrier_wait(&bar); /* everyone is holding a full cache */
    pthread_barrier_wait(&bar); /* main has looked */
    return NULL;
}

static void all_thread_caches_are_capped(void **st) {
    (void)st;
    enum { T = 300 };
    pthread_t t[T];
    fill_n = knob("EBB_THREADS_FILL", 4000);
    pthread_barrier_init(&bar, NULL, T + 1);
    for (int i = 0; i < T; i++) assert_int_equal(pthread_create(&t[i], NULL, fill_cache, NULL), 0);
    pthread_barrier_wait(&bar);
    struct ebb_stats s;
    ebb_stats(&s);
    assert_true(s.threads >= T);
    assert_true(s.thread_cache > 0);
    assert_true(s.thread_cache <= 4u << 20); /* EBB_THREAD_CACHE_MAX=4M (meson.build) */
    pthread_barrier_wait(&bar);
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
}

/* ---------------------------------------------------------------- fork */
static _Atomic int stop;
static void *busy_alloc(void *arg) {
    (void)arg;
    unsigned r = 1;
    void *v[64] = {0};
    while (!stop) {
        r = r * 1103515245 + 12345;
        int k = (r >> 10) % 64;
        free(v[k]);
        v[k] = malloc((r >> 4) % ((r & 3) ? 2000 : 400000));
    }
    for (int i = 0; i < 64; i++) free(v[i]);
    return NULL;
}
/* fflush(NULL) holds libc's stdio list lock while it flushes every stream; flushing a
 * memory stream calls realloc.  So this thread holds the stdio lock and waits for the
 * allocator while a forking thread may hold the allocator and wait for stdio. */
static void *busy_stdio(void *arg) {
    (void)arg;
    char line[2048];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = 0;
    while (!stop) {
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        for (int i = 0; i < 300 && !stop; i++) {
            fputs(line, m);
            fflush(NULL);
        }
        fclose(m);
        free(buf);
    }
    return NULL;
}

/* Where a fork child got to, in memory the parent shares, so that a child that does not
 * finish in time is reported with the step it was stuck in. */
static volatile int *child_stage;
static const char *const stage_names[] = {"forked", "ebb_stats", "malloc and memset",      "free",
                                          "stdio",  "done",      "after the fork handlers"};
static void stage(int s) {
    if (child_stage) *child_stage = s;
}
/* Registered after ebbmalloc's (its constructor ran first), so it runs after them in the
 * child: a child stuck at "forked" never got out of them (or out of fork itself). */
static void child_handlers_done(void) {
    if (child_stage && *child_stage == 0) *child_stage = 6;
}

static const char *child_step(void) { return child_stage ? stage_names[*child_stage] : "?"; }
static int wait_bounded(pid_t pid) { return ebb_wait_child(pid, child_step); }

static int child_work(void) {
    stage(2);
    char *v[1000];
    for (int i = 0; i < 1000; i++) {
        v[i] = malloc((size_t)i * 97 % 70000 + 1);
        if (!v[i]) return 2;
        memset(v[i], i, (size_t)i * 97 % 70000 + 1);
    }
    stage(3);
    for (int i = 0; i < 1000; i++) free(v[i]);
    stage(4);
    char buf[64];
    snprintf(buf, sizeof buf, "child %d", getpid());
    FILE *f = fopen("/dev/null", "w");
    fprintf(f, "%s\n", buf);
    fclose(f);
    stage(5);
    return 0;
}

static void fork_from_threaded_parent(void **st) {
    (void)st;
    pthread_t t[5];
    stop = 0;
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, busy_alloc, NULL);
    pthread_create(&t[4], NULL, busy_stdio, NULL);
    long forks = knob("EBB_THREADS_FORKS", 150);
    for (long i = 0; i < forks; i++) {
        stage(0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) _exit(child_work());
        int rc = wait_bounded(pid);
        if (ebb_emulator_retry(rc)) {
            i--; /* that fork again */
            continue;
        }
        if (rc != 0)
            fail_msg("child %ld: status %d (-1 = deadlocked, -2 = in the emulator, too often)", i, rc);
    }
    stop = 1;
    for (int i = 0; i < 5; i++) pthread_join(t[i], NULL);
}

static _Atomic int handler_rc;
static void on_usr1(int sig) {
    (void)sig;
    int saved = errno;
    for (;;) {
        stage(0);
        pid_t pid = fork();
        if (pid == 0) {
            void *p = malloc(1000);
            memset(p, 1, 1000);
            free(p);
            _exit(0);
        }
        int rc = pid < 0 ? -1 : wait_bounded(pid);
        if (ebb_emulator_retry(rc)) continue; /* that fork again */
        if (rc != 0) handler_rc = 1;
        break;
    }
    errno = saved;
}

static void fork_from_signal_handler(void **st) {
    (void)st;
    pthread_t t[2];
    stop = 0;
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, busy_alloc, NULL);
    signal(SIGUSR1, on_usr1);
    for (int i = 0; i < 50; i++) raise(SIGUSR1);
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    assert_int_equal(handler_rc, 0);
}

static void *hold_cache(void *arg) {
    (void)arg;
    void *v[500];
    for (int i = 0; i < 500; i++) v[i] = malloc(256);
    for (int i = 0; i < 500; i++) free(v[i]);
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    return NULL;
}

static void fork_child_reclaims_other_threads_caches(void **st) {
    (void)st;
    pthread_t t[4];
    pthread_barrier_init(&bar, NULL, 5);
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hold_cache, NULL);
    pthread_barrier_wait(&bar);
    int rc;
again:
    stage(0);
    pid_t pid = fork();
    if (pid == 0) {
        struct ebb_stats s;
        stage(1);
        ebb_stats(&s);
        /* only this thread's cache is left */
        _exit(s.threads == 1 && child_work() == 0 ? 0 : 1);
    }
    rc = wait_bounded(pid);
    if (ebb_emulator_retry(rc)) goto again;
    assert_int_equal(rc, 0);
    pthread_barrier_wait(&bar);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    pthread_barrier_destroy(&bar);
}

int main(void) {
    child_stage = mmap(NULL, sizeof *child_stage, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (child_stage == MAP_FAILED) child_stage = NULL;
    pthread_atfork(NULL, NULL, child_handlers_done);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cross_thread_stress),
        cmocka_unit_test(thread_exit_returns_cache),
        cmocka_unit_test(all_thread_caches_are_capped),
        cmocka_unit_test(fork_from_threaded_parent),
        cmocka_unit_test(fork_from_signal_handler),
        cmocka_unit_test(fork_child_reclaims_other_threads_caches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
