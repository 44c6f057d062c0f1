/* The thread caches' verifier (ebbi_tc_verify): it passes on the caches of threads that
 * allocate and free at once, on caches parked while their threads sleep and on the
 * records of threads that exited, and it fails when a count, the claimed budget or a
 * link of a cache is broken on purpose.
 *
 * Uses the ebb_ API (static library) and internals. */
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/wait.h>
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

/* The caller's list of `size`-byte blocks holds at least `n` objects (its list grows
 * with each free up to a batch). */
static unsigned fill_list(size_t size, unsigned n) {
    void *p[64];
    assert_true(n <= 64);
    for (unsigned i = 0; i < n; i++) assert_non_null(p[i] = ebb_malloc(size));
    for (unsigned i = 0; i < n; i++) ebb_free(p[i]);
    unsigned cls = ebbi_size_to_class(size);
    assert_true(ebbi_tc_list_len(cls) >= 3);
    return cls;
}

/* NULL, or what went wrong (no cmocka assert: workers call it too, and cmocka's asserts
 * work only on the thread that runs the test). */
static const char *mixed_work(uint64_t seed, unsigned rounds) {
    enum { HELD = 256 };
    void *held[HELD] = {0};
    uint64_t x = seed * 0x9e3779b97f4a7c15u + 1;
    for (unsigned r = 0; r < rounds; r++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned i = (unsigned)(x % HELD);
        if (held[i]) {
            ebb_free(held[i]);
            held[i] = NULL;
        } else {
            size_t n = 1 + (size_t)((x >> 20) % ((x >> 40) & 1 ? 256 : 4096));
            if (!(held[i] = ebb_malloc(n))) return "malloc returned NULL";
            memset(held[i], (int)r, n);
        }
    }
    for (unsigned i = 0; i < HELD; i++) ebb_free(held[i]);
    return NULL;
}

static void own_cache_passes(void **state) {
    (void)state;
    assert_null(mixed_work(1, 20000));
    fill_list(64, 32);
    const char *err = ebbi_tc_verify();
    if (err) fail_msg("thread caches: %s", err);
}

/* Each corruption is undone before the next malloc or free, which would trust it. */
static void broken_count_fails(void **state) {
    (void)state;
    unsigned cls = fill_list(64, 32);
    struct ebb_tcache *tc = ebbi_tc_mine();
    assert_true(tc->real);
    assert_null(ebbi_tc_verify());

    tc->room[cls] += EBB_TC_ROOM_ONE; /* one object fewer than the list holds */
    const char *err = ebbi_tc_verify();
    tc->room[cls] -= EBB_TC_ROOM_ONE;
    assert_non_null(err);
    assert_string_equal(err, "a list's length differs from its room");
    assert_null(ebbi_tc_verify());

    tc->room[cls] -= EBB_TC_ROOM_ONE; /* one object more */
    err = ebbi_tc_verify();
    tc->room[cls] += EBB_TC_ROOM_ONE;
    assert_non_null(err);
    assert_string_equal(err, "a list's length differs from its room");

    tc->claimed += ebbi_classes[cls].size;
    err = ebbi_tc_verify();
    tc->claimed -= ebbi_classes[cls].size;
    assert_non_null(err);
    assert_string_equal(err, "claimed budget differs from the lists' room");
    assert_null(ebbi_tc_verify());
}

static void broken_link_fails(void **state) {
    (void)state;
    unsigned cls = fill_list(64, 32);
    struct ebb_tcache *tc = ebbi_tc_mine();
    uint64_t *first = tc->head[cls], *second = ebbi_next(first);
    assert_true(second != EBB_TC_END);
    uint64_t saved = first[0];

    ebbi_set_next(first, (char *)second + 16); /* inside a block */
    const char *err = ebbi_tc_verify();
    first[0] = saved;
    assert_non_null(err);
    assert_string_equal(err, "an object on a list is no block start");

    first[0] ^= (uint64_t)1 << 52; /* a bit no link may have */
    err = ebbi_tc_verify();
    first[0] = saved;
    assert_non_null(err);
    assert_string_equal(err, "a link on a list does not decode");

    uint64_t saved2 = second[0];
    ebbi_set_next(second, first); /* a cycle of two */
    tc->slow[cls].max += 8;       /* room enough that only the cycle can be seen */
    tc->room[cls] += 8 * EBB_TC_ROOM_ONE;
    err = ebbi_tc_verify();
    tc->slow[cls].max -= 8;
    tc->room[cls] -= 8 * EBB_TC_ROOM_ONE;
    second[0] = saved2;
    assert_non_null(err);
    assert_string_equal(err, "an object is twice on a list");
    assert_null(ebbi_tc_verify());
}

/* ---------------------------------------------------------------- under threads */
enum { T = 4 };
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int phase, waiting;
static struct ebb_tcache *records[T];
static const char *worker_err[T];

static void wait_phase(int want) {
    pthread_mutex_lock(&mu);
    waiting++;
    pthread_cond_broadcast(&cv);
    while (phase < want) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static void *worker(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg;
    for (unsigned k = 0; k < 40 && !worker_err[id]; k++) {
        worker_err[id] = mixed_work(id * 1000 + k, 2000);
        if (!worker_err[id]) worker_err[id] = ebbi_tc_verify(); /* its own cache, while the others run */
    }
    void *p[32];
    for (unsigned i = 0; i < 32; i++) p[i] = ebb_malloc(48);
    for (unsigned i = 0; i < 32; i++) ebb_free(p[i]);
    records[id] = ebbi_tc_mine();
    wait_phase(1);                             /* blocked in the kernel: its cache may be parked */
    const char *e = mixed_work(id + 77, 2000); /* takes the parked record back */
    if (!worker_err[id]) worker_err[id] = e ? e : ebbi_tc_verify();
    return NULL;
}

static void set_phase(int p) {
    pthread_mutex_lock(&mu);
    phase = p;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void threads_pass(void **state) {
    (void)state;
    pthread_t w[T];
    phase = waiting = 0;
    for (int i = 0; i < T; i++) pthread_create(&w[i], NULL, worker, (void *)(uintptr_t)i);
    /* While they work: the caller's own cache and whatever is parked or free. */
    for (;;) {
        const char *err = ebbi_tc_verify();
        if (err) fail_msg("thread caches, workers running: %s", err);
        assert_null(mixed_work(99, 500));
        pthread_mutex_lock(&mu);
        int n = waiting;
        pthread_mutex_unlock(&mu);
        if (n == T) break;
    }
    /* All wait: drain them until every one is parked (each must be, once blocked). */
    size_t parked = 0;
    for (uint64_t end = ms_now() + 20000; parked < T && ms_now() < end;) parked += ebbi_tc_drain_idle(true);
    assert_int_equal(parked, T);
    const char *err = ebbi_tc_verify();
    if (err) fail_msg("thread caches, workers parked: %s", err);
    /* A parked record is checked: its budget, broken on purpose, is seen. */
    assert_true(records[0]->detached);
    records[0]->claimed += 16;
    err = ebbi_tc_verify();
    records[0]->claimed -= 16;
    assert_non_null(err);
    assert_string_equal(err, "claimed budget differs from the lists' room");
    set_phase(1);
    for (int i = 0; i < T; i++) pthread_join(w[i], NULL);
    for (int i = 0; i < T; i++)
        if (worker_err[i]) fail_msg("thread caches, worker %d: %s", i, worker_err[i]);
    /* The workers' records are free now. */
    err = ebbi_tc_verify();
    if (err) fail_msg("thread caches, workers gone: %s", err);
}

/* ---------------------------------------------------------------- fork
 * Forks land anywhere in the other threads' slow paths, also between the two stores of a
 * budget claim or release; in each child, where only the forking thread is left, the
 * budget left plus the one cache's claims must be the total exactly. */
static _Atomic int churn_stop;

static void *churn(void *arg) {
    unsigned id = (unsigned)(uintptr_t)arg, k = 0;
    while (!churn_stop) {
        /* lists grow and shrink: many sizes in turn, and more than a share holds */
        if (mixed_work(id * 7919 + k++, 3000)) return (void *)1;
        ebbi_tc_flush_self();
    }
    return NULL;
}

static void fork_child_budget_is_exact(void **state) {
    (void)state;
    pthread_t w[T];
    churn_stop = 0;
    for (int i = 0; i < T; i++) pthread_create(&w[i], NULL, churn, (void *)(uintptr_t)i);
    const char *env = getenv("EBB_TC_VERIFY_FORKS");
    int forks = env ? atoi(env) : 300;
    for (int i = 0; i < forks; i++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            const char *err = ebbi_tc_verify();
            if (!err) err = mixed_work(5, 500);
            if (!err) err = ebbi_tc_verify();
            if (err) fprintf(stderr, "fork child %d: %s\n", i, err);
            _exit(err ? 1 : 0);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status)) fail_msg("fork child %d: status %#x", i, status);
    }
    churn_stop = 1;
    for (int i = 0; i < T; i++) {
        void *r;
        pthread_join(w[i], &r);
        assert_null(r);
    }
}


/* A fork while another thread is inside a pop, its object's key cleared but its list's
 * head not yet moved on (the order the C fast paths' stores may become visible in on a
 * weakly ordered CPU): the child gives that thread's cache back to the central tier,
 * which checks every block for the key, so the child must leave the half-popped object
 * out, not stop on it.  The other thread makes that state on its own list (its head
 * object's key cleared) and waits; the child checks the central tier and allocates.
 * The other thread puts the key back before it runs on. */
static pthread_mutex_t hp_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hp_cv = PTHREAD_COND_INITIALIZER;
static int hp_state; /* 0 start, 1 cut (the head's key cleared), 2 fork done */
static void *half_pop(void *arg) {
    (void)arg;
    unsigned cls = fill_list(48, 8);
    uint64_t *head = ebbi_tc_mine()->head[cls];
    uint64_t key = head[1];
    pthread_mutex_lock(&hp_mu);
    head[1] = 0;
    hp_state = 1;
    pthread_cond_broadcast(&hp_cv);
    while (hp_state != 2) pthread_cond_wait(&hp_cv, &hp_mu);
    head[1] = key;
    pthread_mutex_unlock(&hp_mu);
    for (int i = 0; i < 100; i++) ebb_free(ebb_malloc(48));
    return NULL;
}

static int half_pop_child(void) {
    if (ebbi_central_verify()) return 10;
    enum { N = 5000 };
    static unsigned char *b[N];
    for (int i = 0; i < N; i++) {
        if (!(b[i] = ebb_malloc(48))) return 11;
        memset(b[i], i & 0xff, 48);
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 48; j++)
            if (b[i][j] != (unsigned char)(i & 0xff)) return 12; /* handed out twice */
    for (int i = 0; i < N; i++) ebb_free(b[i]);
    return ebbi_central_verify() ? 13 : 0;
}

static void fork_child_leaves_out_a_half_popped_object(void **state) {
    (void)state;
    pthread_t t;
    pthread_create(&t, NULL, half_pop, NULL);
    pthread_mutex_lock(&hp_mu);
    while (hp_state != 1) pthread_cond_wait(&hp_cv, &hp_mu);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(half_pop_child());
    hp_state = 2;
    pthread_cond_broadcast(&hp_cv);
    pthread_mutex_unlock(&hp_mu);
    pthread_join(t, NULL);
    assert_true(pid > 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        fail_msg("fork child: status %#x (exit code = the check that failed, or a signal)", status);
}

/* Many busy threads on few CPUs: every thread may claim the 256 KiB floor, and past the
 * most the total gives that many (64 MiB / 256 KiB), each its part of the total, not
 * the first ones everything.  Each thread fills lists of eleven classes of 1-32 KiB
 * (more than its share can hold), then, with every thread still alive, counts the room
 * it claimed. */
#define SHARE_THREADS 320

struct share_worker {
    pthread_barrier_t *filled, *counted;
    size_t claimed;
    const char *err;
};

static void *share_work(void *arg) {
    struct share_worker *w = arg;
    static const size_t sizes[] = {1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576, 32768};
    void *p[24];
    ebb_free(ebb_malloc(16));        /* a cache of its own, ... */
    pthread_barrier_wait(w->filled); /* ... and so has every thread before any claims more */
    for (int round = 0; round < 8 && !w->err; round++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0] && !w->err; k++) {
            for (int i = 0; i < 24; i++)
                if (!(p[i] = ebb_malloc(sizes[k]))) w->err = "malloc returned NULL";
            for (int i = 0; i < 24; i++) ebb_free(p[i]);
        }
    pthread_barrier_wait(w->filled);
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++)
        w->claimed += (size_t)ebbi_tc_list_max(cls) * ebbi_classes[cls].size;
    pthread_barrier_wait(w->counted);
    return NULL;
}

static void every_busy_thread_gets_its_share(void **state) {
    (void)state;
    static struct share_worker w[SHARE_THREADS];
    pthread_t th[SHARE_THREADS];
    pthread_attr_t a;
    pthread_barrier_t filled, counted;
    pthread_barrier_init(&filled, NULL, SHARE_THREADS);
    pthread_barrier_init(&counted, NULL, SHARE_THREADS + 1);
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 << 10);
    for (int i = 0; i < SHARE_THREADS; i++) {
        w[i] = (struct share_worker){&filled, &counted, 0, NULL};
        assert_int_equal(pthread_create(&th[i], &a, share_work, &w[i]), 0);
    }
    pthread_barrier_wait(&counted);
    size_t least = SIZE_MAX, most = 0;
    for (int i = 0; i < SHARE_THREADS; i++) {
        pthread_join(th[i], NULL);
        if (w[i].err) fail_msg("thread %d: %s", i, w[i].err);
        if (w[i].claimed < least) least = w[i].claimed;
        if (w[i].claimed > most) most = w[i].claimed;
    }
    pthread_attr_destroy(&a);
    pthread_barrier_destroy(&filled);
    pthread_barrier_destroy(&counted);
    print_message("%d threads claimed %zu to %zu bytes each\n", SHARE_THREADS, least, most);
    /* 64 MiB over 320 threads is 205 KiB each: every thread has more than the old floor
     * of 128 KiB, and none is left without */
    assert_true(least > (size_t)160 << 10);
    assert_null(ebbi_tc_verify());
}

/* The bound on what all caches hold, counted per list: 400 threads (the stress test's
 * crowd) allocate and free a mix of sizes, hand a quarter of their blocks to each other,
 * and stop at a barrier with their caches full; then every cache is emptied as if its
 * thread slept (the drain keeps two objects a list), and counted again.  With every
 * owner stopped the counts are exact (see the bound in thread_cache.c): no list holds
 * more than its max, each record claims sum(max * size), the claims and budget_left add
 * up to the total, and the bytes cached (what ebb_stats reports) are at most the claims.
 * The total is EBB_THREAD_CACHE_MAX as it grew, not TC_GROWN_MAX: on more than 32 CPUs
 * the CPU-based total is the bigger.  EBB_STRESS_THREADS sets fewer threads (the
 * sanitizer runs, tests/sanitize.sh). */
#define CROWD 400
static pthread_barrier_t crowd_bar;
static pthread_mutex_t crowd_mu = PTHREAD_MUTEX_INITIALIZER;
static void *crowd_x[1024];
static int crowd_n;

static void *crowd_work(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15u + 7;
    enum { LIVE = 32 };
    void *v[LIVE] = {0};
    pthread_barrier_wait(&crowd_bar);
    for (int i = 0; i < 3000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int k = (int)(x % LIVE);
        if (v[k] && x % 7 < 2) { /* ours to the exchange, someone else's back */
            pthread_mutex_lock(&crowd_mu);
            void *q = crowd_n ? crowd_x[--crowd_n] : NULL;
            crowd_x[crowd_n++] = v[k];
            pthread_mutex_unlock(&crowd_mu);
            v[k] = q;
        } else if (v[k]) {
            ebb_free(v[k]);
            v[k] = NULL;
        } else {
            uint64_t r = x >> 20;
            size_t n = x % 16 == 15 ? r % 300000 : x % 16 >= 13 ? r % 20000 : r % 600;
            v[k] = ebb_malloc(n);
        }
    }
    pthread_barrier_wait(&crowd_bar); /* all stopped with their caches: counted */
    pthread_barrier_wait(&crowd_bar); /* emptied and counted again */
    for (int k = 0; k < LIVE; k++) ebb_free(v[k]);
    return NULL;
}

static void census_holds(const char *when) {
    struct ebb_tc_census c;
    struct ebb_stats st;
    ebbi_tc_census(&c);
    ebb_stats(&st);
    print_message("%s: %zu caches, %zu parked; claimed %.2f MiB of %.2f, cached %.2f MiB (stats %.2f); "
                  "%zu lists over their max\n",
                  when, c.records, c.parked, c.claimed / 1048576.0, c.total / 1048576.0,
                  c.held_bytes / 1048576.0, st.thread_cache / 1048576.0, c.over_lists);
    assert_int_equal(c.over_lists, 0);
    assert_int_equal(c.bad_claims, 0);
    assert_true(c.left >= 0);
    assert_int_equal((uint64_t)c.left + c.claimed, (uint64_t)c.total);
    assert_true(c.held_bytes <= c.claimed);
    assert_true(st.thread_cache <= (uint64_t)c.total);
    assert_null(ebbi_tc_verify());
}

static void cached_bytes_within_the_budget(void **state) {
    (void)state;
    static pthread_t th[CROWD];
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 << 10);
    const char *knob = getenv("EBB_STRESS_THREADS");
    long crowd = knob && *knob ? strtol(knob, NULL, 0) : CROWD;
    if (crowd < 1 || crowd > CROWD) crowd = CROWD;
    pthread_barrier_init(&crowd_bar, NULL, (unsigned)crowd + 1);
    for (long i = 0; i < crowd; i++)
        assert_int_equal(pthread_create(&th[i], &a, crowd_work, (void *)(i + 1)), 0);
    pthread_barrier_wait(&crowd_bar);
    pthread_barrier_wait(&crowd_bar);
    census_holds("busy caches");
    size_t emptied = ebbi_tc_drain_idle(true);
    print_message("%zu caches emptied\n", emptied);
    census_holds("emptied caches");
    pthread_barrier_wait(&crowd_bar);
    for (long i = 0; i < crowd; i++) pthread_join(th[i], NULL);
    while (crowd_n) ebb_free(crowd_x[--crowd_n]);
    census_holds("threads gone");
    pthread_attr_destroy(&a);
    pthread_barrier_destroy(&crowd_bar);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(own_cache_passes),
        cmocka_unit_test(broken_count_fails),
        cmocka_unit_test(broken_link_fails),
        cmocka_unit_test(threads_pass),
        cmocka_unit_test(fork_child_budget_is_exact),
        cmocka_unit_test(fork_child_leaves_out_a_half_popped_object),
        cmocka_unit_test(every_busy_thread_gets_its_share),
        cmocka_unit_test(cached_bytes_within_the_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
