/* Many threads: hundreds alive at once with cross-thread frees, 10,000 thread lifetimes
 * with bounded RSS and no thread cache left behind, and fork from many threads at once
 * while others allocate.  Built twice: against the ebb_ names (static library; also the
 * build that runs under ThreadSanitizer) and with glibc's names in a program linked to
 * libebbmalloc.so, where libc's own allocations (thread structures, stdio) are
 * ebbmalloc's too.
 *
 * Knobs (environment): EBB_STRESS_THREADS (400), EBB_STRESS_LIFETIMES (10000),
 * EBB_STRESS_FORKERS (32), EBB_STRESS_RSS (1; 0 leaves out the bound on the resident set
 * of the lifetimes test, for a run whose resident set is not only the program's: under
 * qemu-user the emulator keeps memory of every thread that ever ran, see tests/arm64.sh). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebbmalloc.h"

#include "../ebb_test_fork.h"
#include "../ebb_test_mem.h"

#ifdef USE_LIBC_NAMES
#define F(name) name
#else
#define F(name) ebb_##name
#endif

#define SANITIZED EBB_TEST_SANITIZED

static long knob(const char *name, long def) {
    const char *s = getenv(name);
    return s && *s ? strtol(s, NULL, 0) : def;
}

/* The pattern depends on the block's address (`base`) and its size. */
static unsigned char pat(uintptr_t base, size_t n, size_t i) {
    uint64_t k = base * 0x9E3779B97F4A7C15ull + n;
    return (unsigned char)(k >> (i % 8 * 8)) ^ (unsigned char)i;
}
static void fill(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = pat((uintptr_t)p, n, i);
}
/* Does p hold, over n bytes, the pattern written at `base`? */
static int intact_from(const unsigned char *p, size_t n, uintptr_t base) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(base, n, i)) return 0;
    return 1;
}
static int intact(const unsigned char *p, size_t n) { return intact_from(p, n, (uintptr_t)p); }

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}
static size_t rand_size(uint64_t *s) {
    uint64_t r = rnd(s);
    switch (r % 16) {
    case 15: return (size_t)(r >> 20) % 300000; /* now and then a large block */
    case 13:
    case 14: return (size_t)(r >> 20) % 20000;
    default: return (size_t)(r >> 20) % 600;
    }
}

/* ---------------------------------------------------------------- shared exchange */
#define XCAP 1024
static pthread_mutex_t xmu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *xp[XCAP];
static size_t xn[XCAP];
static int xcount;
static _Atomic long corrupt;

/* Put (p, n) into the exchange and take out someone else's block, if any. */
static void exchange(unsigned char **p, size_t *n) {
    pthread_mutex_lock(&xmu);
    unsigned char *q = NULL;
    size_t qn = 0;
    if (xcount) {
        int k = xcount - 1;
        q = xp[k], qn = xn[k];
        xcount--;
    }
    if (xcount < XCAP) {
        xp[xcount] = *p, xn[xcount] = *n, xcount++;
        *p = q, *n = qn;
    } else if (q) { /* full: keep ours, and take theirs too (free it right away) */
        pthread_mutex_unlock(&xmu);
        if (!intact(q, qn)) corrupt++;
        F(free)(q);
        return;
    }
    pthread_mutex_unlock(&xmu);
}

static void drain_exchange(void) {
    pthread_mutex_lock(&xmu);
    while (xcount) {
        xcount--;
        if (!intact(xp[xcount], xn[xcount])) corrupt++;
        F(free)(xp[xcount]);
    }
    pthread_mutex_unlock(&xmu);
}

/* ---------------------------------------------------------------- hundreds at once */
/* The most all thread caches may claim (thread_cache.c): EBB_THREAD_CACHE_MAX if given;
 * without it, the CPU-based total (2 MiB a CPU, at least 4 MiB), grown with the threads
 * (256 KiB each) to at most 64 MiB, so 64 MiB unless the CPUs give more.  CPUs are
 * counted by the affinity mask: a cgroup quota only lowers the total. */
static uint64_t cache_budget_total(void) {
    const char *s = getenv("EBB_THREAD_CACHE_MAX");
    if (s && *s) {
        char *e;
        uint64_t v = strtoull(s, &e, 0);
        int shift = *e == 'K' || *e == 'k'   ? 10
                    : *e == 'M' || *e == 'm' ? 20
                    : *e == 'G' || *e == 'g' ? 30
                                             : 0;
        if (v) return v << shift;
    }
    cpu_set_t set;
    uint64_t cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? (uint64_t)CPU_COUNT(&set) : 1;
    uint64_t base = cpus * (2u << 20);
    if (base < (4u << 20)) base = 4u << 20;
    return base > (64u << 20) ? base : 64u << 20;
}


static pthread_barrier_t bar;
static void *crowd_worker(void *arg) {
    uint64_t s = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 7;
    enum { LIVE = 32 };
    unsigned char *v[LIVE] = {0};
    size_t n[LIVE] = {0};
    pthread_barrier_wait(&bar); /* everyone starts together */
    for (int i = 0; i < 3000; i++) {
        int k = (int)(rnd(&s) % LIVE);
        if (v[k]) {
            if (!intact(v[k], n[k])) corrupt++;
            if (rnd(&s) % 4 == 0) {
                exchange(&v[k], &n[k]); /* ours out, someone else's in */
                if (v[k] && !intact(v[k], n[k])) corrupt++;
                continue;
            }
            F(free)(v[k]);
            v[k] = NULL;
        } else {
            n[k] = rand_size(&s);
            v[k] = F(malloc)(n[k]);
            if (!v[k]) {
                corrupt++;
                continue;
            }
            fill(v[k], n[k]);
        }
    }
    pthread_barrier_wait(&bar); /* all alive here: main looks at the stats */
    pthread_barrier_wait(&bar);
    for (int k = 0; k < LIVE; k++)
        if (v[k]) {
            if (!intact(v[k], n[k])) corrupt++;
            F(free)(v[k]);
        }
    return NULL;
}

static void hundreds_of_threads_at_once(void **st) {
    (void)st;
    int T = (int)knob("EBB_STRESS_THREADS", 400);
    pthread_t *t = calloc((size_t)T, sizeof *t);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, SANITIZED ? 1 << 20 : 128 << 10);
    pthread_barrier_init(&bar, NULL, (unsigned)T + 1);
    struct ebb_stats s0, s1, s2;
    ebb_stats(&s0);
    for (long i = 0; i < T; i++)
        assert_int_equal(pthread_create(&t[i], &at, crowd_worker, (void *)(i + 1)), 0);
    pthread_barrier_wait(&bar);
    pthread_barrier_wait(&bar);
    ebb_stats(&s1);
    pthread_barrier_wait(&bar);
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    drain_exchange();
    ebb_stats(&s2);
    uint64_t emptied = s1.idle_caches_emptied - s0.idle_caches_emptied;
    print_message("%d threads: %llu thread caches at the peak (and %llu emptied while their "
                  "threads waited), %.1f MiB cached, %.1f MiB in use\n",
                  T, (unsigned long long)s1.threads, (unsigned long long)emptied, s1.thread_cache / 1048576.0,
                  s1.in_use / 1048576.0);
    assert_int_equal(corrupt, 0);
    /* most did get a cache (those that waited long at the barrier lost it again) */
    assert_true(s1.threads + emptied >= s0.threads + (uint64_t)T / 2);
    /* the global cap, with every owner stopped at the barrier (so no slow path's moment
     * over a list's max, see the bound in thread_cache.c): the budget total */
    assert_true(s1.thread_cache <= cache_budget_total());
    assert_true(s2.threads <= s0.threads + 1); /* all gone again */
    pthread_attr_destroy(&at);
    pthread_barrier_destroy(&bar);
    free(t);
}

/* ---------------------------------------------------------------- lifetimes */
#define KEEP 16
struct life {
    pthread_t t;
    uint64_t seed;
    unsigned char *kept[KEEP]; /* freed by main after the thread is gone */
    size_t kn[KEEP];
};
static void *short_life(void *arg) {
    struct life *l = arg;
    uint64_t s = l->seed;
    enum { N = 96 };
    unsigned char *v[N];
    size_t n[N];
    for (int i = 0; i < N; i++) {
        n[i] = rand_size(&s) % 5000;
        v[i] = F(malloc)(n[i]);
        if (!v[i]) {
            corrupt++;
            n[i] = 0;
            continue;
        }
        fill(v[i], n[i]);
    }
    for (int i = 0; i < N; i++) {
        if (!v[i]) continue;
        if (!intact(v[i], n[i])) corrupt++;
        if (i < KEEP) {
            l->kept[i] = v[i], l->kn[i] = n[i];
        } else if (i % 8 == 0) { /* someone else frees it, maybe after we are gone */
            exchange(&v[i], &n[i]);
            if (v[i]) {
                if (!intact(v[i], n[i])) corrupt++;
                F(free)(v[i]);
            }
        } else {
            F(free)(v[i]);
        }
    }
    return NULL;
}

static void run_lifetimes(long count, struct life *wave, int W) {
    static uint64_t seed = 1;
    for (long done = 0; done < count; done += W) {
        for (int i = 0; i < W; i++) {
            memset(&wave[i], 0, sizeof wave[i]);
            wave[i].seed = ++seed * 0x9E3779B97F4A7C15ull;
            if (pthread_create(&wave[i].t, NULL, short_life, &wave[i])) fail_msg("pthread_create");
        }
        for (int i = 0; i < W; i++) {
            pthread_join(wave[i].t, NULL);
            for (int k = 0; k < KEEP; k++)
                if (wave[i].kept[k]) {
                    if (!intact(wave[i].kept[k], wave[i].kn[k])) corrupt++;
                    F(free)(wave[i].kept[k]);
                }
        }
    }
}

static void ten_thousand_thread_lifetimes(void **st) {
    (void)st;
    long total = knob("EBB_STRESS_LIFETIMES", 10000);
    enum { W = 50 }; /* threads alive at a time */
    static struct life wave[W];
    struct ebb_stats s0, s1, s2;
    ebb_stats(&s0);
    long warm = total / 10;
    run_lifetimes(warm, wave, W); /* libc's stack cache and ebbmalloc's records fill up */
    drain_exchange();
    ebb_stats(&s1);
    size_t rss1 = rss_bytes();
    run_lifetimes(total - warm, wave, W);
    drain_exchange();
    ebb_stats(&s2);
    size_t rss2 = rss_bytes();
    print_message("%ld thread lifetimes: RSS %.1f MiB after %ld, %.1f MiB after all; "
                  "metadata %.2f -> %.2f MiB; caches alive %llu -> %llu; cached %.2f MiB\n",
                  total, rss1 / 1048576.0, warm, rss2 / 1048576.0, s1.metadata / 1048576.0,
                  s2.metadata / 1048576.0, (unsigned long long)s0.threads, (unsigned long long)s2.threads,
                  s2.thread_cache / 1048576.0);
    assert_int_equal(corrupt, 0);
    assert_true(s2.threads <= s0.threads + 1); /* no cache left behind */
    assert_true(s2.thread_cache <= s0.thread_cache + (1u << 20));
    assert_true(s2.metadata <= s1.metadata + (256u << 10)); /* cache records recycled */
    assert_true(s2.in_use <= s1.in_use + (1u << 20));
    if (!SANITIZED && knob("EBB_STRESS_RSS", 1)) assert_true(rss2 <= rss1 + (8u << 20)); /* bounded RSS */
}

/* ---------------------------------------------------------------- fork from many */
static _Atomic int stop_busy;
static void *busy(void *arg) {
    uint64_t s = (uintptr_t)arg + 99;
    unsigned char *v[64] = {0};
    size_t n[64] = {0};
    while (!stop_busy) {
        int k = (int)(rnd(&s) % 64);
        if (v[k]) {
            if (!intact(v[k], n[k])) corrupt++;
            F(free)(v[k]);
        }
        n[k] = rand_size(&s);
        v[k] = F(malloc)(n[k]);
        if (v[k]) fill(v[k], n[k]);
    }
    for (int k = 0; k < 64; k++) F(free)(v[k]);
    return NULL;
}

/* In the child: only this thread exists; the allocator must work normally. */
static int child_work(void) {
    uint64_t s = (uint64_t)getpid() * 77 + 1;
    unsigned char *v[200];
    size_t n[200];
    for (int i = 0; i < 200; i++) {
        n[i] = rand_size(&s);
        v[i] = i % 3 ? F(malloc)(n[i]) : F(calloc)(1, n[i]);
        if (!v[i]) return 2;
        fill(v[i], n[i]);
    }
    for (int i = 0; i < 200; i += 2) {
        uintptr_t base = (uintptr_t)v[i];
        unsigned char *q = F(realloc)(v[i], n[i] + 100);
        if (!q || !intact_from(q, n[i], base)) return 3;
        F(free)(q);
    }
    for (int i = 1; i < 200; i += 2) {
        if (!intact(v[i], n[i])) return 4;
        F(free)(v[i]);
    }
    struct ebb_stats st;
    ebb_stats(&st);
    if (st.threads > 1) return 5; /* the other threads' caches went back */
#ifdef USE_LIBC_NAMES
    char buf[64];
    snprintf(buf, sizeof buf, "child %d", getpid());
    FILE *f = fopen("/dev/null", "w");
    if (!f) return 6;
    fprintf(f, "%s\n", buf);
    fclose(f);
#endif
    return 0;
}

#define FORKS_PER_THREAD 4
static _Atomic int child_failures, hung;
static void *forker(void *arg) {
    (void)arg;
    pthread_barrier_wait(&bar);
    for (int i = 0; i < FORKS_PER_THREAD; i++) {
        pid_t pid = fork();
        if (pid == 0) _exit(child_work());
        if (pid < 0) {
            child_failures++;
            continue;
        }
        int rc = ebb_wait_child(pid, NULL);
        if (ebb_emulator_retry(rc)) {
            i--; /* that fork again */
            continue;
        }
        if (rc < 0) hung++;
        if (rc != 0) {
            child_failures++;
            fprintf(stderr, "child %d: status %d\n", pid, rc);
        }
    }
    return NULL;
}

static void fork_from_many_threads_at_once(void **st) {
    (void)st;
    int T = (int)knob("EBB_STRESS_FORKERS", 32);
    pthread_t busy_t[4], *t = calloc((size_t)T, sizeof *t);
    stop_busy = 0;
    for (long i = 0; i < 4; i++) pthread_create(&busy_t[i], NULL, busy, (void *)i);
    pthread_barrier_init(&bar, NULL, (unsigned)T);
    for (int i = 0; i < T; i++) assert_int_equal(pthread_create(&t[i], NULL, forker, NULL), 0);
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    stop_busy = 1;
    for (int i = 0; i < 4; i++) pthread_join(busy_t[i], NULL);
    print_message("%d forks from %d threads at once: %d failed, %d hung\n", T * FORKS_PER_THREAD, T,
                  (int)child_failures, (int)hung);
    assert_int_equal(hung, 0);
    assert_int_equal(child_failures, 0);
    assert_int_equal(corrupt, 0);
    pthread_barrier_destroy(&bar);
    free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hundreds_of_threads_at_once),
        cmocka_unit_test(ten_thousand_thread_lifetimes),
        cmocka_unit_test(fork_from_many_threads_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
