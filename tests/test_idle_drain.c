/* Caches of threads that stopped calling malloc are emptied, by the release thread and by
 * malloc_trim(0), once they have used no slow path and no CPU time for EBB_RELEASE_MS,
 * and not those of threads that work and merely happen to be in a system call; the
 * owner, woken, takes its record back and goes on with intact blocks.  Race tests:
 * threads that allocate in short bursts between short sleeps while another thread
 * empties every sleeping cache as fast as it can; and a thread stopped again and again,
 * anywhere inside malloc and free, by a signal handler that waits in sigsuspend
 * (HotSpot's suspend protocol), while the drainer runs.  Uses the ebb_ API (static
 * library) and internals. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"
#include "ebbmalloc.h"
#include "internal.h"

/* Under the sanitizers the fast paths are instrumented C and ThreadSanitizer delivers
 * signals at its own points: where stops land is only checked in the normal build. */
#define SANITIZED EBB_TEST_SANITIZED

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

static uint64_t counted_threads(void) {
    struct ebb_stats st;
    ebb_stats(&st);
    return st.threads;
}

/* Blocks of `n` bytes filled with a pattern of their address and a tag (a word at a time,
 * the tail byte by byte). */
static uint64_t pattern(const void *p, unsigned tag) {
    return ((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull + tag;
}
static void fill(unsigned char *p, size_t n, unsigned tag) {
    uint64_t k = pattern(p, tag);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) memcpy(p + i, &(uint64_t){k + i}, 8);
    for (; i < n; i++) p[i] = (unsigned char)(k + i);
}
static int intact(const unsigned char *p, size_t n, unsigned tag) {
    uint64_t k = pattern(p, tag), w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (memcpy(&w, p + i, 8), w != k + i) return 0;
    for (; i < n; i++)
        if (p[i] != (unsigned char)(k + i)) return 0;
    return 1;
}

/* ---------------------------------------------------------------- a parked worker */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage; /* 1: worker filled its cache and parks; 2: main wakes it; 3: worker done */
static int worker_ok;
static int quiet_exit;          /* the worker exits when woken, its emptied record never taken back */
static _Atomic int keep_waking; /* the worker wakes every 2 ms without allocating until cleared */
static _Atomic int waking;      /* ... and says it has started to */

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
    if (keep_waking) { /* a timer thread: runs a little every 2 ms, no malloc or free */
        waking = 1;
        volatile unsigned spin = 0;
        while (keep_waking) {
            struct timespec ts = {0, 2 * 1000 * 1000};
            nanosleep(&ts, NULL);
            for (int i = 0; i < 20000; i++) spin += (unsigned)i;
        }
    }
    pthread_mutex_lock(&mu);
    stage = 1;
    pthread_cond_broadcast(&cv);
    while (stage < 2) pthread_cond_wait(&cv, &mu); /* parked: blocked in futex */
    if (quiet_exit) {                              /* woken: exits without another malloc or free */
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

static pthread_t launch_worker(void) {
    pthread_t t;
    stage = 0;
    worker_ok = 0;
    assert_int_equal(pthread_create(&t, NULL, parked_worker, NULL), 0);
    return t;
}

static void wait_parked(void) {
    pthread_mutex_lock(&mu);
    while (stage < 1) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    usleep(20 * 1000); /* let it reach its wait */
}

static pthread_t start_parked(void) {
    pthread_t t = launch_worker();
    wait_parked();
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

/* Calls malloc_trim(0) until the cached bytes are at most `kept` (or 10 s passed);
 * returns the milliseconds it took. */
static uint64_t trim_until_at_most(size_t kept) {
    uint64_t t0 = ms_now();
    do {
        ebb_malloc_trim(0);
        if (cached() <= kept) break;
        usleep(20 * 1000);
    } while (ms_now() - t0 < 10000);
    return ms_now() - t0;
}

/* malloc_trim(0) empties the cache of a thread that sleeps, once it has slept (no slow
 * path, no CPU time) for EBB_RELEASE_MS, and not before. */
static void trim_empties_a_sleeping_threads_cache(void **st) {
    (void)st;
    ebb_free(ebb_malloc(1)); /* initialised: options set now stay set */
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 600);
    uint64_t before = counted_threads();
    pthread_t t = start_parked();
    uint64_t parked_at = ms_now();
    ebbi_tc_flush_self();
    size_t held = cached(), kept = two_per_list();
    printf("# the worker's cache holds %zu bytes; at most %zu may stay\n", held, kept);
    assert_true(held >= 4 * kept); /* the worker's cache holds its churn */
    assert_int_equal(counted_threads(), before + 1);
    ebb_malloc_trim(0);
    if (ms_now() - parked_at < 500) assert_int_equal(cached(), held); /* not idle long enough */
    uint64_t took = trim_until_at_most(kept);
    size_t left = cached();
    printf("# %zu bytes stayed after malloc_trim, %llu ms after the worker parked\n", left,
           (unsigned long long)(ms_now() - parked_at));
    assert_true(left <= kept);
    assert_true(ms_now() - parked_at >= 600);
    assert_true(took < 10000);
    assert_int_equal(counted_threads(), before); /* emptied records leave the budget's count */
    wake_and_join(t);
    assert_int_equal(counted_threads(), before);
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
}

/* What an emptied cache kept goes back when its thread exits without taking it back. */
static void exit_returns_what_an_emptied_cache_kept(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 200);
    uint64_t before = counted_threads();
    ebbi_tc_flush_self();
    size_t in_use0 = in_use_now();
    quiet_exit = 1;
    pthread_t t = start_parked();
    ebbi_tc_flush_self();
    size_t held = cached();
    assert_true(held >= 4 * two_per_list());
    trim_until_at_most(two_per_list());
    assert_true(cached() > 0 && cached() <= two_per_list()); /* the first two of each list */
    wake_and_join(t);
    quiet_exit = 0;
    assert_int_equal(cached(), 0);
    assert_int_equal(counted_threads(), before);
    ebbi_tc_flush_self();
    size_t in_use1 = in_use_now(); /* the kept objects are free again, not lost */
    printf("# in use before the worker %zu, after it exited %zu\n", in_use0, in_use1);
    assert_true(in_use1 <= in_use0 + 1024);
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
}

/* A sleeping thread whose list's first object had its link written over (the program
 * used a block after freeing it, or, in the race the drain's proofs exist for, took it
 * back and wrote it just before the drainer read it): the drainer must not follow the
 * link to where it points (an address ebbmalloc never had), and must leave that cache
 * alone, while a clean sleeping cache beside it is emptied. */
static sem_t bad_parked, bad_wake;
static _Atomic int bad_kept_head;
static void *written_over_worker(void *arg) {
    (void)arg;
    void *b[3];
    for (int i = 0; i < 3; i++) b[i] = ebb_malloc(64);
    for (int i = 0; i < 3; i++) ebb_free(b[i]);
    unsigned cls = ebbi_size_to_class(64);
    uint64_t *head = (uint64_t *)ebbi_tc->head[cls];
    assert_ptr_equal(head, b[2]);
    uint64_t saved = head[0];
    head[0] = ((uint64_t)1 << 46) ^ ebbi_link_secret; /* decodes to 64 TiB: nothing there */
    sem_post(&bad_parked);
    while (sem_wait(&bad_wake) != 0) {}                     /* parked: blocked in futex */
    bad_kept_head = (uint64_t *)ebbi_tc->head[cls] == head; /* its record was not taken */
    head[0] = saved;
    return NULL;
}

static void a_written_over_link_stops_the_drain_not_the_process(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 200);
    sem_init(&bad_parked, 0, 0);
    sem_init(&bad_wake, 0, 0);
    bad_kept_head = 0;
    pthread_t bad;
    assert_int_equal(pthread_create(&bad, NULL, written_over_worker, NULL), 0);
    while (sem_wait(&bad_parked) != 0) {}
    size_t bad_bytes = cached();
    pthread_t good = start_parked();
    ebbi_tc_flush_self();
    size_t held = cached();
    assert_true(held >= bad_bytes + 4 * two_per_list());
    /* the clean cache goes (down to the two objects a list keeps), the other stays */
    uint64_t took = trim_until_at_most(bad_bytes + two_per_list());
    printf("# %zu bytes cached, %zu of them the written-over cache's; %zu after %llu ms of trims\n", held,
           bad_bytes, cached(), (unsigned long long)took);
    assert_true(cached() <= bad_bytes + two_per_list());
    assert_true(cached() >= bad_bytes);
    sem_post(&bad_wake);
    pthread_join(bad, NULL);
    assert_true(bad_kept_head);
    wake_and_join(good);
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
}

/* A thread that works, on its cache's fast paths only, between short sleeps: its lists
 * never need a slow path, so only its CPU time shows it is busy.  malloc_trim(0), called
 * again and again for several times EBB_RELEASE_MS, must never empty its cache. */
static _Atomic int busy_stop, busy_ready;
static _Atomic unsigned long busy_emptied, busy_errors;
static void *busy_worker(void *arg) {
    (void)arg;
    enum { N = 24 };
    unsigned char *keep[N];
    for (int round = 0; round < 4; round++) { /* lists grow until the loop below fits */
        for (int i = 0; i < N; i++) keep[i] = ebb_malloc(48);
        for (int i = 0; i < N; i++) ebb_free(keep[i]);
    }
    struct ebb_tcache *mine;
    for (int i = 0; i < N; i++) {
        keep[i] = ebb_malloc(48);
        fill(keep[i], 48, (unsigned)i);
    }
    busy_ready = 1;
    unsigned seed = 3;
    while (!busy_stop) {
        for (int k = 0; k < 2000; k++) {
            seed = seed * 1103515245u + 12345u;
            int i = (int)((seed >> 8) % N);
            if (!intact(keep[i], 48, (unsigned)i)) busy_errors++;
            ebb_free(keep[i]);
            keep[i] = ebb_malloc(48);
            fill(keep[i], 48, (unsigned)i);
        }
        mine = ebbi_tc_mine();
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL); /* a system call: to /proc it looks like a sleeping thread */
        /* Emptied meanwhile: its pointer is at the empty cache until its next slow path. */
        if (ebbi_tc_mine() != mine) busy_emptied++;
    }
    for (int i = 0; i < N; i++) {
        if (!intact(keep[i], 48, (unsigned)i)) busy_errors++;
        ebb_free(keep[i]);
    }
    return NULL;
}

static void trim_spares_a_busy_threads_cache(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 200);
    busy_stop = busy_ready = 0;
    busy_emptied = busy_errors = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, busy_worker, NULL), 0);
    while (!busy_ready) usleep(1000);
    uint64_t emptied0 = ebbi_tc_idle_emptied(), t0 = ms_now();
    unsigned trims = 0;
    while (ms_now() - t0 < 1500) { /* 7.5 times EBB_RELEASE_MS */
        ebb_malloc_trim(0);
        trims++;
        usleep(10 * 1000);
    }
    busy_stop = 1;
    pthread_join(t, NULL);
    printf("# %u calls of malloc_trim(0): the busy thread's cache was emptied %lu times "
           "(caches emptied in all: %llu)\n",
           trims, (unsigned long)busy_emptied, (unsigned long long)(ebbi_tc_idle_emptied() - emptied0));
    assert_int_equal(busy_errors, 0);
    assert_int_equal(busy_emptied, 0);
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
}

/* The release thread empties it once the thread has used no slow path for
 * EBB_RELEASE_MS, and not before. */
static void release_thread_empties_an_idle_cache(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 4000); /* the release thread wakes every 1 s */
    ebb_free(ebb_malloc(4 << 20));              /* pages to release: the release thread starts */
    pthread_t t = start_parked();
    ebbi_tc_flush_self();
    size_t held = cached(), kept = two_per_list();
    assert_true(held >= 4 * kept);
    /* Passes of the release thread while the thread has been idle for less than
     * EBB_RELEASE_MS (less 500 ms of margin for the pass itself): each must keep the
     * cache.  Polled, so a slow machine makes fewer of them count, not a false fault. */
    uint64_t parked_ms = ms_now(), p0 = ebbi_release_bg_passes(), seen = 0;
    while (ms_now() - parked_ms < 3500) {
        uint64_t p = ebbi_release_bg_passes();
        if (p != p0 && ms_now() - parked_ms < 3500) {
            assert_int_equal(cached(), held); /* idle for less than EBB_RELEASE_MS: kept */
            seen += p - p0;
            p0 = p;
        }
        usleep(20 * 1000);
    }
    printf("# %llu passes of the release thread kept the cache of a thread idle for less than 4 s\n",
           (unsigned long long)seen);
    if (!seen) fail_msg("no pass of the release thread in 3.5 s (it wakes every 1 s)");
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

/* A thread that keeps waking without allocating (a timer thread, a pool thread that
 * polls, a JVM's periodic task) is never idle, and its CPU time is read less and less
 * often: a few reads over 30 passes of the release thread, not one at each pass (with
 * 300 such threads that was 1.7% of a CPU).  Once it stops waking and sleeps, its cache
 * is still emptied, within two of the longest waits between reads (8 times
 * EBB_RELEASE_MS each: 3.2 s here) and a pass; 8 s are allowed for a loaded machine. */
static void a_thread_that_keeps_waking_is_looked_at_less_often(void **st) {
    (void)st;
    ebb_free(ebb_malloc(1)); /* initialised: options set now stay set */
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 200); /* a pass every 100 ms */
    ebb_free(ebb_malloc(4 << 20));             /* the release thread runs */
    keep_waking = 1;
    waking = 0;
    pthread_t t = launch_worker();
    uint64_t t0 = ms_now();
    while (!waking && ms_now() - t0 < 10000) usleep(1000);
    assert_true(waking);
    ebbi_tc_flush_self();
    size_t held = cached(), kept = two_per_list();
    assert_true(held >= 4 * kept);
    uint64_t p0 = ebbi_release_bg_passes(), l0 = ebbi_tc_sched_looks();
    t0 = ms_now();
    while (ebbi_release_bg_passes() - p0 < 30 && ms_now() - t0 < 30000) usleep(20 * 1000);
    uint64_t passes = ebbi_release_bg_passes() - p0, looks = ebbi_tc_sched_looks() - l0;
    printf("# %llu passes of the release thread read a waking thread's CPU time %llu times\n",
           (unsigned long long)passes, (unsigned long long)looks);
    assert_true(passes >= 30);
    assert_true(looks <= 12);     /* at every pass: 28 or more */
    assert_true(cached() > kept); /* it ran all the time: never emptied */
    keep_waking = 0;
    wait_parked();
    uint64_t parked_at = ms_now();
    while (cached() > kept && ms_now() - parked_at < 8000) usleep(20 * 1000);
    printf("# emptied %llu ms after it stopped waking\n", (unsigned long long)(ms_now() - parked_at));
    assert_true(cached() <= kept);
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
    /* At least 3 s of racing, and on until enough caches were emptied while their owners
     * slept for the race to have been run (20 s at most: a slow machine drains fewer a
     * second, which is no fault). */
    const unsigned long want = SANITIZED ? 5 : 50;
    uint64_t t0 = ms_now();
    while (ms_now() - t0 < 3000 || (race_drained <= want && ms_now() - t0 < 20000)) usleep(20 * 1000);
    race_stop = 1;
    for (int i = 0; i < W; i++) pthread_join(w[i], NULL);
    pthread_join(d, NULL);
    printf("# %lu caches emptied while their owners slept, %lu damaged blocks\n", (unsigned long)race_drained,
           (unsigned long)race_errors);
    assert_int_equal(race_errors, 0);
    assert_true(race_drained > want); /* the race was really run */
    if (EBB_DEBUG) assert_null(ebbi_page_heap_verify());
    if (EBB_DEBUG) assert_null(ebbi_tc_verify());
    if (EBB_DEBUG) assert_null(ebbi_central_verify());
}

/* ---------------------------------------------------------------- stopped anywhere
 * HotSpot's suspend protocol: a second thread sends a signal whose handler acknowledges
 * and waits in sigsuspend until a resume signal.  Here the owner is stopped again and
 * again, at whatever instruction it is at (inside malloc's and free's fast paths, inside
 * their slow paths, in its own code), and each time a drainer runs a full pass while it
 * is stopped.  Every block's content is checked, the drain must never take a cache
 * whose owner was stopped inside a slow path (busy), and what the owner allocated must
 * all come back. */
#define SLOTS 48
static _Atomic int susp_acked, susp_resume, susp_stop, susp_request;
static _Atomic uintptr_t susp_pc;  /* where the owner was stopped */
static _Atomic unsigned susp_busy; /* its slow paths under way then */
static struct ebb_tcache *_Atomic owner_tc;
static _Atomic unsigned long drain_passes, drain_done;
static sem_t drain_wanted; /* one pass of the drainer per post, while the owner is stopped */
static _Atomic unsigned long owner_errors, owner_ops;

static uintptr_t context_pc(void *uc) {
#if defined(__x86_64__)
    return (uintptr_t)((ucontext_t *)uc)->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)((ucontext_t *)uc)->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

static void suspend_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si;
    int saved = errno;
    susp_pc = context_pc(uc);
    susp_busy = ebbi_tc_busy;
    sigset_t wait;
    sigfillset(&wait);
    sigdelset(&wait, SIGUSR2);
    susp_acked = 1;
    while (!susp_resume) sigsuspend(&wait);
    susp_acked = 0;
    errno = saved;
}
static void resume_handler(int sig) { (void)sig; }

/* Sizes that take every path: the cache's own table (up to 1 KiB), the shared one (up
 * to 32 KiB, still cached), and the central tier directly (bigger); few classes, so
 * that most calls are fast paths, as in a program's steady state. */
static size_t owner_size(unsigned r) {
    static const size_t small[] = {16, 24, 32, 48, 64, 96, 128}, big[] = {256, 512, 1000, 1500, 4000};
    if (r % 256 == 0) return 40000;
    r /= 256;
    return r % 5 ? small[r % 7] : big[r % 5];
}

static void *stopped_owner(void *arg) {
    (void)arg;
    unsigned char *live[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    unsigned seed = 11;
    owner_tc = ebbi_tc_mine();
    while (!susp_stop) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % SLOTS);
        /* now and then a burst of frees or of mallocs: lists overflow and run dry */
        int burst = (seed >> 20) % 64 == 0 ? SLOTS / 2 : 1;
        for (int b = 0; b < burst; b++, i = (i + 1) % SLOTS) {
            if (live[i]) {
                if (!intact(live[i], size[i], (unsigned)i)) owner_errors++;
                ebb_free(live[i]);
                live[i] = NULL;
            }
            if ((seed >> 12) % 3) {
                size[i] = owner_size(seed >> 4);
                live[i] = ebb_malloc(size[i]);
                if (!live[i]) owner_errors++;
                else fill(live[i], size[i], (unsigned)i);
            }
            owner_ops++;
        }
        /* all lists back to the central tier: slow paths now, and refills after */
        if ((seed >> 18) % 512 == 0) ebbi_tc_flush_self();
        /* ThreadSanitizer runs an asynchronous signal's handler only at points of its own
         * choosing: in sanitizer builds the owner stops itself when asked (outside
         * ebbmalloc, so only the drain itself is checked there). */
        if (SANITIZED && susp_request) {
            susp_request = 0;
            pthread_kill(pthread_self(), SIGUSR1);
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (live[i]) {
            if (!intact(live[i], size[i], (unsigned)i)) owner_errors++;
            ebb_free(live[i]);
        }
    return NULL;
}

static void *drain_loop(void *arg) {
    (void)arg;
    for (;;) {
        sem_wait(&drain_wanted);
        if (susp_stop) break;
        drain_done += ebbi_tc_drain_idle(true);
        drain_passes++;
    }
    return NULL;
}

/* Where a stop landed: in malloc's or free's fast path (the instruction's offset), in a
 * slow path (busy), or elsewhere. */
struct stops {
    unsigned long fast, slow, other, drained_fast, drained_slow, drained_other;
    unsigned char fast_offsets[512];
};

static bool in_function(uintptr_t pc, void *fn, size_t *off) {
    Dl_info info;
    ElfW(Sym) *sym = NULL;
    if (!dladdr1((void *)pc, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || info.dli_saddr != fn)
        return false;
    *off = pc - (uintptr_t)fn;
    return *off < sym->st_size;
}

static void classify(struct stops *s, uintptr_t pc, unsigned busy, bool drained) {
    size_t off;
    if (busy) {
        s->slow++;
        s->drained_slow += drained;
    } else if (in_function(pc, (void *)ebb_malloc, &off) || in_function(pc, (void *)ebb_free, &off)) {
        s->fast++;
        s->drained_fast += drained;
        off += in_function(pc, (void *)ebb_free, &off) ? 256 : 0;
        if (off < sizeof s->fast_offsets) s->fast_offsets[off] = 1;
    } else {
        s->other++;
        s->drained_other += drained;
    }
}

static unsigned distinct(const unsigned char *v, size_t n) {
    unsigned k = 0;
    for (size_t i = 0; i < n; i++) k += v[i];
    return k;
}

static void drain_while_stopped_anywhere(void **st) {
    (void)st;
    struct sigaction sa = {0};
    sa.sa_sigaction = suspend_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    struct sigaction ra = {0};
    ra.sa_handler = resume_handler;
    sigemptyset(&ra.sa_mask);
    sigaction(SIGUSR2, &ra, NULL);
    ebbi_tc_flush_self();
    size_t in_use0 = in_use_now();
    susp_stop = susp_acked = susp_resume = 0;
    owner_errors = owner_ops = drain_passes = drain_done = 0;
    owner_tc = NULL;
    pthread_t ow, dr;
    sem_init(&drain_wanted, 0, 0);
    assert_int_equal(pthread_create(&ow, NULL, stopped_owner, NULL), 0);
    assert_int_equal(pthread_create(&dr, NULL, drain_loop, NULL), 0);
    while (!owner_tc) usleep(1000);
    struct stops s = {0};
    unsigned long stops = 0, missed = 0;
    uint64_t t0 = ms_now();
    /* Until the stops have landed in fast paths at many places, in slow paths and
     * elsewhere, and some drains happened at fast-path stops (20 s at most). */
    for (;;) {
        bool enough = stops >= 600 && s.slow >= 20 && distinct(s.fast_offsets, sizeof s.fast_offsets) >= 16 &&
                      s.drained_fast >= 20 && s.drained_other >= 20;
        if (SANITIZED) enough = stops >= 300;
        if (enough || ms_now() - t0 > 20000) break;
        susp_resume = 0;
        if (SANITIZED) susp_request = 1;
        else pthread_kill(ow, SIGUSR1);
        uint64_t w0 = ms_now();
        while (!susp_acked && ms_now() - w0 < 2000) sched_yield();
        if (!susp_acked) { /* the owner exited its loop? it never does before susp_stop */
            missed++;
            continue;
        }
        /* A whole drain pass while the owner is stopped, unless the drainer waits for a
         * lock the owner holds (then the owner must be resumed first).  Only the owner's
         * cache can be emptied: the other threads run, or have no cache. */
        unsigned long p0 = drain_passes, e0 = drain_done;
        sem_post(&drain_wanted);
        sem_post(&drain_wanted);
        uint64_t d0 = ms_now();
        while (drain_passes < p0 + 2 && ms_now() - d0 < 50) sched_yield();
        while (sem_trywait(&drain_wanted) == 0) continue; /* no passes once it runs again */
        classify(&s, susp_pc, susp_busy, drain_done != e0);
        stops++;
        susp_resume = 1;
        pthread_kill(ow, SIGUSR2);
        while (susp_acked) sched_yield();
        /* Let it get back to its steady state (its cache taken back and refilled) for a
         * while before the next stop, so that stops land where it spends its time; but
         * one stop in four comes at once, while it takes its cache back and refills it
         * (slow paths). */
        unsigned long o0 = owner_ops, more = stops % 4 ? 500 + (unsigned long)(stops * 7919 % 3000) : 0;
        uint64_t r0 = ms_now();
        while (owner_ops < o0 + more && ms_now() - r0 < 100) sched_yield();
    }
    susp_stop = 1;
    sem_post(&drain_wanted);
    pthread_join(ow, NULL);
    pthread_join(dr, NULL);
    printf("# %lu stops in %llu ms (%lu operations): %lu in fast paths at %u places, %lu in slow "
           "paths, %lu elsewhere; caches emptied at fast-path stops %lu, at slow-path stops %lu, "
           "elsewhere %lu; %lu damaged blocks\n",
           stops, (unsigned long long)(ms_now() - t0), (unsigned long)owner_ops, s.fast,
           distinct(s.fast_offsets, sizeof s.fast_offsets), s.slow, s.other, s.drained_fast, s.drained_slow,
           s.drained_other, (unsigned long)owner_errors);
    assert_int_equal(missed, 0);
    assert_int_equal(owner_errors, 0);
    assert_int_equal(s.drained_slow, 0); /* the handshake: a busy owner is never drained */
    if (!SANITIZED) {
        assert_true(distinct(s.fast_offsets, sizeof s.fast_offsets) >= 16);
        assert_true(s.drained_fast >= 20);
        assert_true(s.slow >= 20);
    }
    assert_true(stops >= 300);
    /* Nothing was lost: the owner freed everything and exited, its cache went back. */
    ebbi_tc_flush_self();
    size_t in_use1 = in_use_now();
    printf("# in use before the owner %zu, after it exited %zu\n", in_use0, in_use1);
    assert_true(in_use1 <= in_use0 + 1024);
    if (EBB_DEBUG) assert_null(ebbi_page_heap_verify());
    if (EBB_DEBUG) assert_null(ebbi_tc_verify());
    if (EBB_DEBUG) assert_null(ebbi_central_verify());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trim_empties_a_sleeping_threads_cache),
        cmocka_unit_test(exit_returns_what_an_emptied_cache_kept),
        cmocka_unit_test(a_written_over_link_stops_the_drain_not_the_process),
        cmocka_unit_test(trim_spares_a_busy_threads_cache),
        cmocka_unit_test(release_thread_empties_an_idle_cache),
        cmocka_unit_test(a_thread_that_keeps_waking_is_looked_at_less_often),
        cmocka_unit_test(drain_races_with_waking_owners),
        cmocka_unit_test(drain_while_stopped_anywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
