/* Caches of threads that stopped calling malloc are emptied: by the release thread once
 * they have not run for EBB_RELEASE_MS, by malloc_trim(0) at once; the owner, woken,
 * takes its record back and goes on with intact blocks.  And a race test: threads that
 * allocate in short bursts between short sleeps while another thread empties every
 * sleeping cache as fast as it can.  Uses the ebb_ API (static library) and internals. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbmalloc.h"
#include "internal.h"

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static size_t cached(void) {
    struct ebb_stats st;
    ebb_stats(&st);
    return st.thread_cache;
}

static size_t in_use_now(void) {
    struct ebb_stats st;
    ebb_stats(&st);
    return st.in_use;
}

static uint64_t threads_now(void) {
    struct ebb_stats st;
    ebb_stats(&st);
    return st.threads;
}

/* Blocks of `n` bytes filled with a pattern of their address and a tag. */
static void fill(unsigned char *p, size_t n, unsigned tag) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(((uintptr_t)p >> 4) + i * 7 + tag);
}
static int intact(const unsigned char *p, size_t n, unsigned tag) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(((uintptr_t)p >> 4) + i * 7 + tag)) return 0;
    return 1;
}

/* ---------------------------------------------------------------- a parked worker */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage; /* 1: worker filled its cache and parks; 2: main wakes it; 3: worker done */
static int worker_ok;
static int quiet_exit; /* the worker exits when woken, its emptied record never taken back */

#define KEEP 64
#define CHURN_DEPTH 12
static size_t churn_size(int i, int round) { return 16 + (size_t)i * 24 + (size_t)round % 7; }

/* What an emptied cache may still hold: the first two objects of each list (see
 * idle_detach), here of the classes the worker churned. */
static size_t two_per_list(void) {
    bool seen[EBB_NCLASS] = {0};
    size_t bytes = 0;
    for (int i = 0; i < 40; i++)
        for (int r = 0; r < 7; r++) {
            unsigned c = ebbi_size_to_class(churn_size(i, r));
            if (!seen[c]) bytes += 2 * (size_t)ebbi_classes[c].size;
            seen[c] = true;
        }
    return bytes;
}
static void *parked_worker(void *arg) {
    (void)arg;
    unsigned char *keep[KEEP];
    for (int i = 0; i < KEEP; i++) {
        keep[i] = ebb_malloc(100 + (size_t)i * 13);
        fill(keep[i], 100 + (size_t)i * 13, 1);
    }
    /* Churn through many classes: the cache ends up holding many objects of each. */
    for (int round = 0; round < 200; round++) {
        void *tmp[40][CHURN_DEPTH];
        for (int i = 0; i < 40; i++)
            for (int k = 0; k < CHURN_DEPTH; k++) tmp[i][k] = ebb_malloc(churn_size(i, round));
        for (int i = 0; i < 40; i++)
            for (int k = 0; k < CHURN_DEPTH; k++) ebb_free(tmp[i][k]);
    }
    if (quiet_exit)
        for (int i = 0; i < KEEP; i++) ebb_free(keep[i]);
    pthread_mutex_lock(&mu);
    stage = 1;
    pthread_cond_broadcast(&cv);
    while (stage < 2) pthread_cond_wait(&cv, &mu); /* parked: blocked in futex */
    if (quiet_exit) { /* woken: exits without another malloc or free */
        worker_ok = 1;
        stage = 3;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
        return NULL;
    }
    pthread_mutex_unlock(&mu);
    /* Woken: its cache may be gone; everything still works and nothing was lost. */
    int ok = 1;
    for (int i = 0; i < KEEP; i++) ok &= intact(keep[i], 100 + (size_t)i * 13, 1);
    for (int round = 0; round < 50; round++) {
        unsigned char *p = ebb_malloc(200);
        fill(p, 200, 2);
        ok &= intact(p, 200, 2);
        ebb_free(p);
    }
    for (int i = 0; i < KEEP; i++) ebb_free(keep[i]);
    pthread_mutex_lock(&mu);
    worker_ok = ok;
    stage = 3;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static pthread_t start_parked(void) {
    pthread_t t;
    stage = 0;
    worker_ok = 0;
    assert_int_equal(pthread_create(&t, NULL, parked_worker, NULL), 0);
    pthread_mutex_lock(&mu);
    while (stage < 1) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    usleep(20 * 1000); /* let it reach its wait */
    return t;
}

static void wake_and_join(pthread_t t) {
    pthread_mutex_lock(&mu);
    stage = 2;
    pthread_cond_broadcast(&cv);
    while (stage < 3) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    pthread_join(t, NULL);
    assert_true(worker_ok);
}

/* malloc_trim(0) empties the cache of a thread that sleeps, at once. */
static void trim_empties_a_sleeping_threads_cache(void **st) {
    (void)st;
    uint64_t before = threads_now();
    pthread_t t = start_parked();
    ebbi_tc_flush_self();
    size_t held = cached(), kept = two_per_list();
    printf("# the worker's cache holds %zu bytes; at most %zu may stay\n", held, kept);
    assert_true(held >= 4 * kept); /* the worker's cache holds its churn */
    assert_int_equal(threads_now(), before + 1);
    ebb_malloc_trim(0);
    size_t left = cached();
    printf("# %zu bytes stayed after malloc_trim\n", left);
    assert_true(left <= kept);
    assert_int_equal(threads_now(), before); /* emptied records leave the budget's count */
    wake_and_join(t);
    assert_int_equal(threads_now(), before);
}

/* What an emptied cache kept goes back when its thread exits without taking it back. */
static void exit_returns_what_an_emptied_cache_kept(void **st) {
    (void)st;
    uint64_t before = threads_now();
    ebbi_tc_flush_self();
    size_t in_use0 = in_use_now();
    quiet_exit = 1;
    pthread_t t = start_parked();
    ebbi_tc_flush_self();
    size_t held = cached();
    assert_true(held >= 4 * two_per_list());
    ebb_malloc_trim(0);
    assert_true(cached() > 0 && cached() <= two_per_list()); /* the first two of each list */
    wake_and_join(t);
    quiet_exit = 0;
    assert_int_equal(cached(), 0);
    assert_int_equal(threads_now(), before);
    ebbi_tc_flush_self();
    size_t in_use1 = in_use_now(); /* the kept objects are free again, not lost */
    printf("# in use before the worker %zu, after it exited %zu\n", in_use0, in_use1);
    assert_true(in_use1 <= in_use0 + 1024);
}

/* The release thread empties it once the thread has used no slow path for
 * EBB_RELEASE_MS, and not before. */
static void release_thread_empties_an_idle_cache(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 4000); /* the release thread wakes every 1 s */
    ebb_free(ebb_malloc(4 << 20)); /* pages to release: the release thread starts */
    pthread_t t = start_parked();
    ebbi_tc_flush_self();
    size_t held = cached(), kept = two_per_list();
    assert_true(held >= 4 * kept);
    usleep(2500 * 1000); /* at least one pass of the release thread */
    assert_int_equal(cached(), held); /* idle for less than EBB_RELEASE_MS: kept */
    ebbi_options_set(EBB_OPT_RELEASE_MS, 200);
    uint64_t t0 = ms_now();
    while (cached() > kept && ms_now() - t0 < 10000) usleep(20 * 1000);
    size_t left = cached();
    printf("# idle cache emptied %llu ms after EBB_RELEASE_MS went to 200 (%zu of %zu bytes stayed)\n",
           (unsigned long long)(ms_now() - t0), left, held);
    assert_true(left <= kept);
    wake_and_join(t);
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
}

/* ---------------------------------------------------------------- the race */
static _Atomic int race_stop;
static _Atomic unsigned long race_errors, race_drained;

static void *bursty(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char *live[32] = {0};
    size_t size[32] = {0};
    while (!race_stop) {
        for (int k = 0; k < 200; k++) {
            seed = seed * 1103515245u + 12345u;
            int i = (int)((seed >> 8) % 32);
            if (live[i]) {
                if (!intact(live[i], size[i], (unsigned)i)) race_errors++;
                ebb_free(live[i]);
            }
            size[i] = 16 + (seed >> 16) % 2000;
            live[i] = ebb_malloc(size[i]);
            fill(live[i], size[i], (unsigned)i);
        }
        usleep(1 + (seed >> 20) % 500); /* a system call: the drainer may empty the cache */
    }
    for (int i = 0; i < 32; i++)
        if (live[i]) {
            if (!intact(live[i], size[i], (unsigned)i)) race_errors++;
            ebb_free(live[i]);
        }
    return NULL;
}

static void *drainer(void *arg) {
    (void)arg;
    while (!race_stop) race_drained += ebbi_tc_drain_idle(true);
    return NULL;
}

static void drain_races_with_waking_owners(void **st) {
    (void)st;
    enum { W = 6 };
    pthread_t w[W], d;
    race_stop = 0;
    for (int i = 0; i < W; i++) pthread_create(&w[i], NULL, bursty, (void *)(uintptr_t)(i + 1));
    pthread_create(&d, NULL, drainer, NULL);
    sleep(3);
    race_stop = 1;
    for (int i = 0; i < W; i++) pthread_join(w[i], NULL);
    pthread_join(d, NULL);
    printf("# %lu caches emptied while their owners slept, %lu damaged blocks\n",
           (unsigned long)race_drained, (unsigned long)race_errors);
    assert_int_equal(race_errors, 0);
    assert_true(race_drained > 50); /* the race was really run */
    if (EBB_DEBUG) assert_null(ebbi_page_heap_verify());
}

/* A signal handler that blocks in a system call can interrupt the owner inside a fast
 * path, between reading its list and writing it back: the owner then looks blocked,
 * but its cache must not be touched. */
static _Atomic int sig_stop;
static _Atomic unsigned long handled;
static void blocking_handler(int sig) {
    (void)sig;
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL); /* the owner sits in a system call, maybe mid-malloc */
    handled++;
}

static void *looping(void *arg) {
    (void)arg;
    unsigned char *keep[16] = {0};
    unsigned seed = 7;
    while (!sig_stop) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % 16);
        if (keep[i]) {
            if (!intact(keep[i], 64, (unsigned)i)) race_errors++;
            ebb_free(keep[i]);
        }
        keep[i] = ebb_malloc(64);
        fill(keep[i], 64, (unsigned)i);
    }
    for (int i = 0; i < 16; i++)
        if (keep[i]) {
            if (!intact(keep[i], 64, (unsigned)i)) race_errors++;
            ebb_free(keep[i]);
        }
    return NULL;
}

static void drain_spares_a_fast_path_interrupted_by_a_signal(void **st) {
    (void)st;
    struct sigaction sa = {0};
    sa.sa_handler = blocking_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    race_stop = 0;
    sig_stop = 0;
    race_errors = 0;
    race_drained = 0;
    handled = 0;
    pthread_t w, d;
    pthread_create(&w, NULL, looping, NULL);
    pthread_create(&d, NULL, drainer, NULL);
    uint64_t t0 = ms_now();
    while (ms_now() - t0 < 2000) {
        pthread_kill(w, SIGUSR1);
        usleep(1000);
    }
    sig_stop = 1;
    race_stop = 1;
    pthread_join(w, NULL);
    pthread_join(d, NULL);
    printf("# %lu signals handled in a blocking handler, %lu caches emptied, %lu damaged blocks\n",
           (unsigned long)handled, (unsigned long)race_drained, (unsigned long)race_errors);
    assert_int_equal(race_errors, 0);
    assert_true(handled > 300);
    assert_true(race_drained > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trim_empties_a_sleeping_threads_cache),
        cmocka_unit_test(exit_returns_what_an_emptied_cache_kept),
        cmocka_unit_test(release_thread_empties_an_idle_cache),
        cmocka_unit_test(drain_races_with_waking_owners),
        cmocka_unit_test(drain_spares_a_fast_path_interrupted_by_a_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
