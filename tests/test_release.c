/* Memory really goes back: exact pages through a counting fake of the OS layer, the time
 * policy, the kernel's resident set falling, malloc_trim, cgroup parsing, and stats that
 * add up under a multi-threaded load.  Uses the ebb_ API (static library) and internals. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"

#include "internal.h"

/* ---------------------------------------------------------------- helpers */
static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- counting fake */
static _Atomic size_t fake_calls, fake_bytes;
static int (*real_release)(void *, size_t);
static int counting_release(void *p, size_t n) {
    fake_calls++;
    fake_bytes += n;
    return real_release(p, n);
}
static void install_fake(void) {
    if (!real_release) real_release = ebbi_os.release;
    ebbi_os.release = counting_release;
}

static void trim_returns_exactly_the_freed_pages(void **st) {
    (void)st;
    install_fake();
    ebb_malloc_trim(0); /* start from nothing free */
    fake_calls = fake_bytes = 0;
    size_t n = 64 * EBB_PAGE; /* 512 KiB: a large block of exactly 64 pages */
    void *p = ebb_malloc(n);
    touch(p, n);
    ebb_free(p);
    assert_int_equal(fake_calls, 0); /* not released at once: it is young */
    assert_int_equal(ebb_malloc_trim(0), 1);
    assert_int_equal(fake_calls, 1);
    assert_int_equal(fake_bytes, n);
    assert_int_equal(ebb_malloc_trim(0), 0);
    assert_int_equal(fake_calls, 1);
}

static void released_after_release_ms_not_before(void **st) {
    (void)st;
    install_fake();
    ebb_malloc_trim(0);
    void *keep = ebb_malloc(64); /* holds a span: the loop below needs no new pages */
    fake_calls = fake_bytes = 0;
    size_t n = 2u << 20;
    void *p = ebb_malloc(n);
    touch(p, n);
    uint64_t t0 = ms_now();
    ebb_free(p);
    /* EBB_RELEASE_MS=300 for this program (main).  Keep the allocator busy so the slow-path
     * tick runs too, and poll for the release. */
    uint64_t seen = 0;
    while (ms_now() - t0 < 5000) {
        void *q = ebb_malloc(64);
        ebb_free(q);
        if (fake_bytes >= n) {
            seen = ms_now();
            break;
        }
        usleep(5000);
    }
    ebb_free(keep);
    assert_true(seen != 0);
    assert_true(seen - t0 >= 290);
    assert_true(seen - t0 <= 300 + 2000);
}

/* A request that no resident free span fits raises RSS; twice its size of the oldest
 * resident free memory goes back at once (above 16 MiB of it), so holes too small for
 * what is asked do not stay resident while RSS grows. */
static void unfit_holes_traded_for_growth(void **st) {
    (void)st;
    install_fake();
    ebb_malloc_trim(0);
    enum { N = 48 };
    void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = ebb_malloc(1 << 20);
        touch(b[i], 1 << 20);
    }
    for (int i = 0; i < N; i += 2) ebb_free(b[i]); /* 24 holes of 1 MiB between live blocks */
    struct ebb_page_heap_stats before, after;
    ebbi_page_heap_stats(&before);
    assert_true(before.free_res >= (24u << 20));
    fake_bytes = 0;
    void *big = ebb_malloc(4 << 20); /* fits no hole */
    ebbi_page_heap_stats(&after);
    printf("# resident free %zu -> %zu KiB, %zu KiB released\n", before.free_res >> 10,
           after.free_res >> 10, (size_t)fake_bytes >> 10);
    assert_true(fake_bytes >= (8u << 20));
    assert_true(after.free_res + (8u << 20) <= before.free_res);
    ebb_free(big);
    for (int i = 1; i < N; i += 2) ebb_free(b[i]);
}

/* Blocks above EBB_THREAD_CACHE_BLOCK (32 KiB) skip the thread cache: a freed one goes
 * to its span at once, and a span of one block back to the page heap.  Smaller ones stay
 * in the freeing thread's list. */
static void big_blocks_skip_the_thread_cache(void **st) {
    (void)st;
    unsigned small = ebbi_size_to_class(16000), big = ebbi_size_to_class(100000);
    assert_true(ebbi_classes[small].size <= 32 * 1024);
    assert_true(ebbi_classes[big].size > 32 * 1024);
    assert_int_equal(ebbi_class_objects(big), 1);
    void *keep = ebb_malloc(64); /* this thread has a cache */
    void *p = ebb_malloc(16000), *q = ebb_malloc(100000);
    touch(p, 16000);
    touch(q, 100000);
    uint32_t small_len = ebbi_tc->lists[small].len;
    struct ebb_page_heap_stats before, after;
    ebbi_page_heap_stats(&before);
    ebb_free(p);
    ebb_free(q);
    ebbi_page_heap_stats(&after);
    assert_int_equal(ebbi_tc->lists[small].len, small_len + 1); /* cached */
    assert_int_equal(ebbi_tc->lists[big].len, 0);
    assert_int_equal(ebbi_tc->lists[big].max, 0);
    /* q's span went back: its pages are free (resident, or released by the cap) */
    assert_true((after.free_res + after.released) - (before.free_res + before.released) >=
                (size_t)ebbi_classes[big].pages * EBB_PAGE);
    assert_true(ebbi_pm_span((uintptr_t)q)->state == SPAN_FREE);
    ebb_free(keep);
}

/* ---------------------------------------------------------------- real kernel */
static void rss_falls_after_free(void **st) {
    (void)st;
    ebbi_os.release = real_release ? real_release : ebbi_os.release;
    ebb_malloc_trim(0);
    size_t base = rss_bytes();
    enum { BIG = 160, SMALL = 60000 };
    void *big[BIG], **small = ebb_malloc(SMALL * sizeof(void *));
    for (int i = 0; i < BIG; i++) {
        big[i] = ebb_malloc((size_t)(i % 4 + 1) << 19); /* 0.5 to 2 MiB */
        touch(big[i], (size_t)(i % 4 + 1) << 19);
    }
    for (int i = 0; i < SMALL; i++) {
        small[i] = ebb_malloc(700 + (size_t)(i % 9) * 100);
        memset(small[i], 1, 700);
    }
    size_t peak = rss_bytes();
    assert_true(peak > base + (200u << 20));
    for (int i = 0; i < BIG; i++) ebb_free(big[i]);
    for (int i = 0; i < SMALL; i++) ebb_free(small[i]);
    ebb_free(small);
    /* EBB_RELEASE_MS=300: within a generous bound the resident set must be back. */
    uint64_t t0 = ms_now();
    size_t now = rss_bytes();
    while (now > base + (16u << 20) && ms_now() - t0 < 6000) {
        usleep(20000);
        now = rss_bytes();
    }
    if (now > base + (16u << 20))
        fail_msg("RSS %zu MiB, was %zu before and %zu at peak", now >> 20, base >> 20, peak >> 20);
}

static void malloc_trim_drops_rss_now(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 3600 * 1000); /* the timer will not help here */
    assert_int_equal(ebb_mallopt(M_TRIM_THRESHOLD, 256 << 20), 1); /* nor the free-page cap */
    ebb_malloc_trim(0);
    size_t base = rss_bytes();
    void *p[100];
    for (int i = 0; i < 100; i++) {
        p[i] = ebb_malloc(1 << 20);
        touch(p[i], 1 << 20);
    }
    for (int i = 0; i < 100; i++) ebb_free(p[i]);
    usleep(100000);
    assert_true(rss_bytes() > base + (80u << 20)); /* still resident: kept for reuse */
    assert_int_equal(ebb_malloc_trim(0), 1);
    assert_true(rss_bytes() < base + (8u << 20));
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
    assert_int_equal(ebb_mallopt(M_TRIM_THRESHOLD, 0), 1);
}

/* Without a threshold, free resident pages stay below an eighth of the pages in use
 * (at least EBB_FREE_FLOOR, with a quarter of hysteresis): more is released at once,
 * without waiting for the timer. */
static void free_pages_capped_by_pages_in_use(void **st) {
    (void)st;
    int64_t keep_ms = ebbi_opt(EBB_OPT_RELEASE_MS);
    ebbi_options_set(EBB_OPT_RELEASE_MS, 3600 * 1000);
    ebb_malloc_trim(0);
    enum { N = 2 * (EBB_FREE_FLOOR >> 20) + 64 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = ebb_malloc(1 << 20);
        touch(p[i], 1 << 20);
    }
    for (int i = 0; i < N; i += 2) ebb_free(p[i]); /* N/2 MiB free, N/2 MiB in use */
    struct ebb_stats s;
    ebb_stats(&s);
    size_t cap = (size_t)(N / 2) << 20 >> 3;
    if (cap < EBB_FREE_FLOOR) cap = EBB_FREE_FLOOR;
    assert_true(s.page_free <= cap * 5 / 4 + (1 << 20));
    assert_true(s.released_total >= ((size_t)(N / 2) << 20) - cap * 5 / 4 - (2 << 20));
    for (int i = 1; i < N; i += 2) ebb_free(p[i]);
    ebbi_options_set(EBB_OPT_RELEASE_MS, keep_ms);
}

/* ---------------------------------------------------------------- cgroups */
static char tmpdir[256];
static void put(const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, rel);
    for (char *s = path + strlen(tmpdir) + 1; (s = strchr(s, '/')); s++) {
        *s = 0;
        mkdir(path, 0755);
        *s = '/';
    }
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void cgroup_limits_v1_v2_none_max(void **st) {
    (void)st;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ebb-cgroup-%d", getpid());
    mkdir(tmpdir, 0755);
    char v2[300], v1[300];
    snprintf(v2, sizeof v2, "%s/v2", tmpdir);
    snprintf(v1, sizeof v1, "%s/v1", tmpdir);
    /* v2: a pod's limit */
    put("v2/memory.max", "max\n");
    put("v2/kubepods/pod1/memory.max", "1073741824\n");
    put("v2/kubepods/pod1/app/memory.max", "max\n");
    assert_int_equal(ebbi_cgroup_parse_limit(v2, "0::/kubepods/pod1/app\n"), 1073741824ull);
    /* a parent's smaller limit wins */
    put("v2/kubepods/memory.max", "536870912\n");
    assert_int_equal(ebbi_cgroup_parse_limit(v2, "0::/kubepods/pod1/app\n"), 536870912ull);
    /* "max" all the way up: no limit */
    assert_int_equal(ebbi_cgroup_parse_limit(v2, "0::/\n"), 0);
    /* inside a container the path may not exist under the mount: the mount's root counts */
    put("v2/memory.max", "268435456\n");
    assert_int_equal(ebbi_cgroup_parse_limit(v2, "0::/some/host/path\n"), 268435456ull);
    /* v1 */
    put("v1/memory/memory.limit_in_bytes", "9223372036854771712\n");
    put("v1/memory/docker/abc/memory.limit_in_bytes", "536870912\n");
    const char *proc_v1 = "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n1:name=systemd:/x\n";
    assert_int_equal(ebbi_cgroup_parse_limit(v1, proc_v1), 536870912ull);
    assert_int_equal(ebbi_cgroup_parse_limit(v1, "12:memory:/\n"), 0); /* v1's "unlimited" */
    assert_int_equal(ebbi_cgroup_parse_limit(v1, "2:cpu:/\n"), 0);      /* no memory controller */
    /* CPU quota */
    put("v2/kubepods/pod1/app/cpu.max", "150000 100000\n");
    assert_true(ebbi_cgroup_parse_cpus(v2, "0::/kubepods/pod1/app\n") == 1.5);
    put("v2/kubepods/pod1/app/cpu.max", "max 100000\n");
    assert_true(ebbi_cgroup_parse_cpus(v2, "0::/kubepods/pod1/app\n") == 0);
    put("v1/cpu/docker/abc/cpu.cfs_quota_us", "200000\n");
    put("v1/cpu/docker/abc/cpu.cfs_period_us", "100000\n");
    assert_true(ebbi_cgroup_parse_cpus(v1, proc_v1) == 2.0);
    put("v1/cpu/docker/abc/cpu.cfs_quota_us", "-1\n");
    assert_true(ebbi_cgroup_parse_cpus(v1, proc_v1) == 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
}

static void size_options_parse(void **st) {
    (void)st;
    int64_t v;
    assert_true(ebbi_parse_size("64M", &v, false) && v == 64 << 20);
    assert_true(ebbi_parse_size("1g", &v, false) && v == 1 << 30);
    assert_true(ebbi_parse_size("512KB", &v, false) && v == 512 << 10);
    assert_true(ebbi_parse_size("90%", &v, true) && v == -90);
    assert_false(ebbi_parse_size("90%", &v, false));
    assert_false(ebbi_parse_size("12Q", &v, false));
    assert_false(ebbi_parse_size("", &v, false));
    assert_false(ebbi_parse_size("99999999999999999999", &v, false));
}

/* ---------------------------------------------------------------- stats identity */
static _Atomic int stop;
static void *load(void *arg) {
    unsigned r = (unsigned)(uintptr_t)arg + 1;
    void *v[512] = {0};
    while (!stop) {
        r = r * 1103515245 + 12345;
        int k = (r >> 8) % 512;
        ebb_free(v[k]);
        v[k] = ebb_malloc((r >> 4) % ((r & 7) ? 3000 : 600000));
    }
    for (int i = 0; i < 512; i++) ebb_free(v[i]);
    return NULL;
}

static void stats_add_up_under_load(void **st) {
    (void)st;
    pthread_t t[4];
    stop = 0;
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, load, (void *)i);
    for (int i = 0; i < 200; i++) {
        struct ebb_stats s;
        ebb_stats(&s);
        assert_int_equal(s.resident, s.in_use + s.thread_cache + s.central + s.page_free + s.metadata);
        assert_int_equal(s.mapped, s.resident + s.released);
        assert_true(s.peak_in_use >= s.in_use);
        usleep(2000);
    }
    stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    /* Quiet now: live blocks are known exactly. */
    ebb_malloc_trim(0);
    struct ebb_stats s0, s1;
    ebb_stats(&s0);
    size_t rss0 = rss_bytes();
    void *p[300];
    size_t live = 0;
    for (int i = 0; i < 300; i++) {
        size_t n = i % 3 ? 1000 + (size_t)i * 10 : 300000 + (size_t)i;
        p[i] = ebb_malloc(n);
        touch(p[i], n);
        live += n;
    }
    ebb_stats(&s1);
    size_t grew = s1.in_use - s0.in_use;
    assert_true(grew >= live);
    assert_true(grew <= live + live / 8 + (1 << 20));
    assert_int_equal(s1.resident, s1.in_use + s1.thread_cache + s1.central + s1.page_free + s1.metadata);
    /* The kernel agrees within what ebbmalloc counts as resident but is not touched. */
    size_t rss_grew = rss_bytes() - rss0;
    assert_true(rss_grew <= s1.resident - s0.resident + (4u << 20));
    assert_true(rss_grew + (4u << 20) >= live);
    for (int i = 0; i < 300; i++) ebb_free(p[i]);
}

int main(void) {
    setenv("EBB_RELEASE_MS", "300", 1);
    setenv("EBB_HUGEPAGES", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(size_options_parse),
        cmocka_unit_test(trim_returns_exactly_the_freed_pages),
        cmocka_unit_test(big_blocks_skip_the_thread_cache),
        cmocka_unit_test(unfit_holes_traded_for_growth),
        cmocka_unit_test(released_after_release_ms_not_before),
        cmocka_unit_test(rss_falls_after_free),
        cmocka_unit_test(malloc_trim_drops_rss_now),
        cmocka_unit_test(free_pages_capped_by_pages_in_use),
        cmocka_unit_test(cgroup_limits_v1_v2_none_max),
        cmocka_unit_test(stats_add_up_under_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
