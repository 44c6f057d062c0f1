/* Out of memory with a real limit: each test forks a child that lowers RLIMIT_AS a few
 * MiB above its current address space, checks that every function of the family returns
 * NULL (posix_memalign: ENOMEM) with errno ENOMEM, that the allocator stays consistent
 * while memory is exhausted, and that once the limit is raised again everything works.
 * Also the kernel refusing mmap outright, through ebbmalloc's OS hooks.
 *
 * Uses the ebb_ API (static library): cmocka and libc keep glibc's malloc, which the limit
 * constrains too, so the children use no stdio while the limit is low. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "internal.h"

#include "../ebb_test_mem.h"

#define MiB ((size_t)1 << 20)

/* ---------------------------------------------------------------- child plumbing */
static void child_fail(int line, const char *what) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "test_oom.c:%d: %s (errno %d)\n", line, what, errno);
    if (write(2, buf, (size_t)n) < 0) _exit(3);
    _exit(1);
}
#define CHECK(c)                            \
    do {                                    \
        if (!(c)) child_fail(__LINE__, #c); \
    } while (0)
#define CHECK_ENOMEM(expr)                                                                  \
    do {                                                                                    \
        errno = 0;                                                                          \
        void *p_ = (expr);                                                                  \
        if (p_ || errno != ENOMEM) child_fail(__LINE__, #expr " did not fail with ENOMEM"); \
    } while (0)

static struct rlimit saved_limit;
/* The address space may grow by `headroom` bytes from now on. */
static void limit_to(size_t headroom) {
    getrlimit(RLIMIT_AS, &saved_limit);
    struct rlimit r = saved_limit;
    r.rlim_cur = vm_size() + headroom;
    CHECK(setrlimit(RLIMIT_AS, &r) == 0);
}
static void unlimit(void) { CHECK(setrlimit(RLIMIT_AS, &saved_limit) == 0); }

static void in_child(void (*fn)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
        if (WIFSIGNALED(st)) fail_msg("child killed by signal %d", WTERMSIG(st));
        fail_msg("child failed (exit %d)", WEXITSTATUS(st));
    }
}

static void fill(void *p, size_t n) {
    uint64_t *w = p, k = (uintptr_t)p * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n / 8; i++) w[i] = k + i;
}
static int intact(const void *p, size_t n) {
    const uint64_t *w = p;
    uint64_t k = (uintptr_t)p * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n / 8; i++)
        if (w[i] != k + i) return 0;
    return 1;
}

static void stats_add_up(void) {
    struct ebb_stats s;
    ebb_stats(&s);
    CHECK(s.resident == s.in_use + s.thread_cache + s.central + s.page_free + s.metadata);
    CHECK(s.mapped == s.resident + s.released);
}

/* Every function of the family refuses n bytes. */
static void all_refuse(size_t n) {
    void *keep = ebb_malloc(100);
    CHECK(keep);
    fill(keep, 96);
    CHECK_ENOMEM(ebb_malloc(n));
    CHECK_ENOMEM(ebb_calloc(1, n));
    CHECK_ENOMEM(ebb_calloc(n / 64, 64));
    CHECK_ENOMEM(ebb_realloc(keep, n));
    CHECK(intact(keep, 96)); /* the old block is left alone */
    CHECK_ENOMEM(ebb_reallocarray(keep, n / 16, 16));
    CHECK(intact(keep, 96));
    CHECK_ENOMEM(ebb_aligned_alloc(4096, n));
    CHECK_ENOMEM(ebb_aligned_alloc(2 * MiB, n));
    CHECK_ENOMEM(ebb_memalign(64, n));
    CHECK_ENOMEM(ebb_valloc(n));
    CHECK_ENOMEM(ebb_pvalloc(n));
    void *q = (void *)&keep;
    errno = 0;
    CHECK(ebb_posix_memalign(&q, 64, n) == ENOMEM);
    CHECK(ebb_posix_memalign(&q, 1 << 16, n) == ENOMEM);
    CHECK(q == (void *)&keep); /* *memptr untouched */
    CHECK(errno == ENOMEM);    /* and errno, as glibc's posix_memalign leaves it */
    ebb_free(keep);
}

/* ---------------------------------------------------------------- tests */
static void big_requests_fail_small_ones_work_child(void) {
    ebb_free(ebb_malloc(100)); /* initialised, with a thread cache */
    limit_to(24 * MiB);
    all_refuse(30 * MiB);  /* from the page heap: more than the limit leaves */
    all_refuse(256 * MiB); /* its own mapping */
    all_refuse(8192 * MiB);
    /* Small requests of every class and a few large ones still fit. */
    void *v[EBB_NCLASS + 4];
    int k = 0;
    for (size_t n = 16; n <= EBB_SMALL_MAX; n = n * 5 / 4 + 16) {
        v[k] = ebb_malloc(n);
        CHECK(v[k]);
        memset(v[k], 0x77, n);
        k++;
    }
    void *big = ebb_malloc(2 * MiB);
    CHECK(big);
    memset(big, 1, 2 * MiB);
    void *al = NULL;
    CHECK(ebb_posix_memalign(&al, 1 << 16, 100000) == 0);
    stats_add_up();
    ebb_free(big);
    ebb_free(al);
    while (k) ebb_free(v[--k]);
    unlimit();
    void *huge = ebb_malloc(256 * MiB);
    CHECK(huge);
    ((char *)huge)[0] = ((char *)huge)[256 * MiB - 1] = 1;
    ebb_free(huge);
    huge = ebb_calloc(1, 30 * MiB);
    CHECK(huge && ((char *)huge)[30 * MiB - 1] == 0);
    ebb_free(huge);
}
static void big_requests_fail_small_ones_work(void **st) {
    (void)st;
    in_child(big_requests_fail_small_ones_work_child);
}

/* Exhaust the address space with 1 MiB blocks, then with small blocks of several
 * classes; everything fails cleanly, frees make room again, raising the limit makes
 * large allocations work again, and no block was damaged on the way. */
#define MAX_BIG 256
static void *bigs[MAX_BIG];
static void exhaust_and_recover_child(void) {
    ebb_free(ebb_malloc(100));
    limit_to(48 * MiB);
    int nb = 0;
    for (; nb < MAX_BIG; nb++) {
        errno = 0;
        bigs[nb] = ebb_malloc(MiB);
        if (!bigs[nb]) break;
        fill(bigs[nb], MiB);
    }
    CHECK(nb > 8 && nb < MAX_BIG);
    CHECK(errno == ENOMEM);
    /* Small blocks, chained through their first word, until they fail too. */
    static const size_t sizes[] = {16, 48, 1000, 5000, 100000, 250000};
    void *chain[6] = {0};
    size_t count[6] = {0};
    for (int c = 0; c < 6; c++) {
        for (;;) {
            errno = 0;
            void **p = ebb_malloc(sizes[c]);
            if (!p) break;
            *p = chain[c];
            chain[c] = p;
            if (++count[c] > (4u << 20)) child_fail(__LINE__, "small allocations never fail");
        }
        CHECK(errno == ENOMEM);
    }
    if (getenv("OOM_VERBOSE")) {
        char buf[200];
        int n = snprintf(buf, sizeof buf, "1 MiB blocks: %d; small: %zu %zu %zu %zu %zu %zu\n", nb, count[0],
                         count[1], count[2], count[3], count[4], count[5]);
        if (write(2, buf, (size_t)n) < 0) _exit(3);
    }
    /* Exhausted: the whole family fails cleanly and the books still balance. */
    all_refuse(MiB);
    stats_add_up();
    for (int i = 0; i < nb; i++) CHECK(intact(bigs[i], MiB));
    /* Freeing makes room within the same limit. */
    for (int i = 0; i < nb; i += 2) ebb_free(bigs[i]), bigs[i] = NULL;
    for (int c = 0; c < 6; c++)
        while (chain[c]) {
            void *next = *(void **)chain[c];
            ebb_free(chain[c]);
            chain[c] = next;
        }
    void *again = ebb_malloc(MiB);
    CHECK(again);
    fill(again, MiB);
    for (int c = 0; c < 6; c++) {
        void *p = ebb_malloc(sizes[c]);
        CHECK(p);
        ebb_free(p);
    }
    /* And once the limit is gone, large requests succeed again. */
    unlimit();
    void *huge = ebb_malloc(128 * MiB);
    CHECK(huge);
    memset(huge, 3, 128 * MiB);
    void *mid = ebb_malloc(20 * MiB);
    CHECK(mid);
    memset(mid, 4, 20 * MiB);
    void *al = ebb_aligned_alloc(2 * MiB, 10 * MiB);
    CHECK(al && (uintptr_t)al % (2 * MiB) == 0);
    CHECK(intact(again, MiB));
    for (int i = 1; i < nb; i += 2) {
        CHECK(intact(bigs[i], MiB));
        ebb_free(bigs[i]);
    }
    ebb_free(again);
    ebb_free(huge);
    ebb_free(mid);
    ebb_free(al);
    stats_add_up();
}
static void exhaust_and_recover(void **st) {
    (void)st;
    in_child(exhaust_and_recover_child);
}

/* Four threads allocate until the limit stops them, check, free, and go again. */
static pthread_barrier_t bar;
static _Atomic int thread_failures;
static void *oom_worker(void *arg) {
    uint64_t r = (uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    enum { N = 4096 };
    static __thread void *held[N];
    static __thread size_t len[N];
    pthread_barrier_wait(&bar); /* the limit is set now */
    for (int round = 0; round < 3; round++) {
        int n = 0, fails = 0;
        while (n < N && fails < 50) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            size_t sz = (r & 7) == 0 ? 256 * 1024 + (r >> 40) % (3 * MiB) : (r >> 32) % 20000 + 1;
            errno = 0;
            void *p = ebb_malloc(sz);
            if (!p) {
                if (errno != ENOMEM) thread_failures++;
                fails++;
                continue;
            }
            fill(p, sz);
            held[n] = p, len[n] = sz, n++;
        }
        if (fails < 50) thread_failures += 1000; /* never reached the limit */
        for (int i = 0; i < n; i++) {
            if (!intact(held[i], len[i])) thread_failures++;
            ebb_free(held[i]);
        }
        pthread_barrier_wait(&bar);
    }
    return NULL;
}
static void threads_hit_the_limit_child(void) {
    pthread_t t[4];
    pthread_barrier_init(&bar, NULL, 5);
    ebb_free(ebb_malloc(100));
    for (long i = 0; i < 4; i++) CHECK(pthread_create(&t[i], NULL, oom_worker, (void *)(i + 1)) == 0);
    limit_to(64 * MiB);
    pthread_barrier_wait(&bar);
    for (int round = 0; round < 3; round++) pthread_barrier_wait(&bar);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    CHECK(thread_failures == 0);
    stats_add_up();
    unlimit();
    void *huge = ebb_malloc(200 * MiB);
    CHECK(huge);
    ebb_free(huge);
}
static void threads_hit_the_limit(void **st) {
    (void)st;
    in_child(threads_hit_the_limit_child);
}

/* The kernel refuses every mmap (through the OS hooks): requests that need new memory
 * fail with ENOMEM, what is already free keeps serving, and all is well afterwards. */
static void *(*real_map)(size_t);
static _Atomic int map_refusals;
static void *refusing_map(size_t n) {
    (void)n;
    map_refusals++;
    return NULL;
}
static void mmap_refused_child(void) {
    void *warm = ebb_malloc(3 * MiB); /* pages the heap can reuse later */
    CHECK(warm);
    ebb_free(warm);
    void *small = ebb_malloc(64);
    real_map = ebbi_os.map;
    ebbi_os.map = refusing_map;
    all_refuse(64 * MiB); /* own mapping */
    all_refuse(300 * MiB);
    CHECK_ENOMEM(ebb_malloc(20 * MiB)); /* page heap must grow */
    CHECK(map_refusals > 0);
    void *reuse = ebb_malloc(2 * MiB); /* fits in what was freed */
    CHECK(reuse);
    memset(reuse, 1, 2 * MiB);
    void *more = ebb_malloc(64); /* same class: from the cache or its span */
    CHECK(more);
    /* New size classes until a span cannot be had: each fails cleanly or works. */
    for (size_t n = 16; n <= EBB_SMALL_MAX; n += 4096) {
        errno = 0;
        void *p = ebb_malloc(n);
        CHECK(p || errno == ENOMEM);
        ebb_free(p);
    }
    stats_add_up();
    ebbi_os.map = real_map;
    void *big = ebb_malloc(64 * MiB);
    CHECK(big);
    memset(big, 2, MiB);
    ebb_free(big);
    ebb_free(reuse);
    ebb_free(more);
    ebb_free(small);
    stats_add_up();
}
static void mmap_refused(void **st) {
    (void)st;
    in_child(mmap_refused_child);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(big_requests_fail_small_ones_work),
        cmocka_unit_test(exhaust_and_recover),
        cmocka_unit_test(threads_hit_the_limit),
        cmocka_unit_test(mmap_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
