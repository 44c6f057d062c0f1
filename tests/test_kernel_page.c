/* Kernel pages bigger than ebbmalloc's 8 KiB page (16 and 64 KiB arm64 kernels), tested
 * on a 4 KiB machine with a fake page size: each case runs in a child that sets
 * ebbi_os_page_fake before its first allocation and replaces the OS hooks with checking
 * fakes that behave like such a kernel (mappings aligned to the fake page) and assert
 * that
 *   - every released range (MADV_DONTNEED) is whole fake pages and lies inside free
 *     memory: a free span being released, kernel pages of a small-object span in which
 *     every block is free (on the span's free list, or in a page given back already), a
 *     whole span that just emptied, or ebbmalloc's own record pages or page map, and never
 *     over a block the program holds;
 *   - every mapping, unmapping and remapping is whole fake pages;
 * and that the huge page planned for is 32 MiB with 16 KiB pages and none (2 MiB chunks
 * marked MADV_NOHUGEPAGE) with 64 KiB pages,
 * under a workload that frees and reuses spans of every kind (small classes, pages of
 * free blocks in live spans, large blocks, own mappings, realloc by mremap) with every
 * byte checked.  The
 * releases really happen (the fakes call the real ones, whose 4 KiB kernel accepts any
 * fake-page-aligned range), so a release over live data would also show as lost
 * contents, and the resident set must really fall.  Free memory that holds no whole
 * kernel page must stay off the age list (released by no pass, walked by none).
 * The same workload runs with the real page as the baseline.
 * Uses the ebb_ API (static library) and internals; EBB_BACKGROUND=0 (meson.build):
 * one thread, so the fakes see the page heap standing still. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"

#include "internal.h"

#define MiB ((size_t)1 << 20)

/* ---------------------------------------------------------------- what the child holds */
#define NLIVE 1500
static struct {
    unsigned char *p;
    size_t n;
} live[NLIVE];

/* Contents that depend on the address they were written for (`base`) and the offset:
 * the 8 bytes at offset i (a multiple of 8) hold k + i, as a word or byte by byte. */
static unsigned char byte_at(uint64_t k, size_t i) {
    return (unsigned char)((k + (i & ~(size_t)7)) >> (i % 8 * 8));
}
static void fill(unsigned char *p, size_t n) {
    uint64_t k = (uintptr_t)p * 0x9E3779B97F4A7C15ull, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) w = k + i, memcpy(p + i, &w, 8);
    for (; i < n; i++) p[i] = byte_at(k, i);
}
static int intact_as(const unsigned char *p, size_t n, const void *base) {
    uint64_t k = (uintptr_t)base * 0x9E3779B97F4A7C15ull, w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (memcpy(&w, p + i, 8), w != k + i) return 0;
    for (; i < n; i++)
        if (p[i] != byte_at(k, i)) return 0;
    return 1;
}
static int intact(const unsigned char *p, size_t n) { return intact_as(p, n, p); }

/* ---------------------------------------------------------------- the checking fakes */
static size_t kp; /* the fake kernel page */
static struct ebb_os_hooks real;
static char fault[256]; /* the first thing a fake found wrong */
static size_t faults, release_calls, release_bytes, block_releases, meta_releases, maps, no_huge_hints;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
    if (!faults++) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fault, sizeof fault, fmt, ap);
        va_end(ap);
    }
}

static int whole_pages(const void *p, size_t n) { return n && !(((uintptr_t)p | n) & (kp - 1)); }

/* A mapping that starts on a fake page, as the kernel's would. */
static void *fake_map(size_t size) {
    maps++;
    if (!whole_pages(NULL, size)) note("map of %zu bytes: not whole %zu-byte pages", size, kp);
    char *p = mmap(NULL, size + kp, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)p + kp - 1) & ~(uintptr_t)(kp - 1);
    if (a > (uintptr_t)p) munmap(p, a - (uintptr_t)p);
    munmap((char *)a + size, (uintptr_t)p + kp - a);
    return (void *)a;
}
static void fake_unmap(void *p, size_t size) {
    if (!whole_pages(p, size)) note("munmap(%p, %zu): not whole pages", p, size);
    real.unmap(p, size);
}
static void *fake_remap(void *p, size_t old_size, size_t new_size, void *to) {
    if (!whole_pages(p, old_size) || !whole_pages(NULL, new_size) || (to && !whole_pages(to, new_size)))
        note("mremap(%p, %zu, %zu, %p): not whole pages", p, old_size, new_size, to);
    return real.remap(p, old_size, new_size, to);
}
static int fake_hugepage(void *p, size_t size, bool on) {
    if (!whole_pages(p, size)) note("madvise(%p, %zu, huge %d): not whole pages", p, size, on);
    if (!on) no_huge_hints++;
    return real.hugepage(p, size, on);
}
static void *fake_map_shared(int fd, size_t size) {
    if (!whole_pages(NULL, size)) note("shared mapping of %zu bytes: not whole pages", size);
    return real.map_shared(fd, size);
}

/* Does [a, b), inside small-object span s, hold free blocks only: each block it overlaps
 * free on the span or overlapping a kernel page the span gave back already?  Or
 * is it the whole span, every block free (it goes back to the page heap released)? */
static int only_free_blocks(struct ebb_span *s, uintptr_t a, uintptr_t b) {
    size_t size = ebbi_classes[s->cls].size;
    uintptr_t base = ebbi_span_blocks(s), end = (uintptr_t)ebbi_span_end(s);
    if (s->used == 0 && a == s->start && b == end) return 1;
    for (uintptr_t o = a <= base ? base : base + (a - base) / size * size; o < b && o < end; o += size) {
        int free = 0;
        for (uintptr_t g = s->start; g < end && !free; g += kp)
            free = (s->gone & (1ull << ((g - s->start) / kp))) && g < o + size && g + kp > o;
        if (!free) {
            unsigned j = (unsigned)((o - base) / size);
            free = ebbi_span_free_bits(s)[j / 64] >> (j % 64) & 1;
        }
        if (!free) return 0;
    }
    return 1;
}

static int fake_release(void *p, size_t size) {
    uintptr_t a = (uintptr_t)p, b = a + size;
    release_calls++;
    release_bytes += size;
    if (!whole_pages(p, size)) note("release(%p, %zu): not whole %zu-byte pages", p, size, kp);
    struct ebb_span *s = ebbi_pm_span(a);
    if (s && s->state == SPAN_RELEASING && s->start == a && (s->npages << EBB_PAGE_SHIFT) == size) {
        /* a free span cut out for release: the page heap's own release */
    } else if (s && s->state == SPAN_SMALL && ebbi_pm_span(b - 1) == s && only_free_blocks(s, a, b)) {
        block_releases++;
    } else if (ebbi_meta_owns(p, size) || ebbi_pm_owns(p, size)) {
        meta_releases++; /* span records or the page map of memory given back */
    } else {
        note("release(%p, %zu): not a releasing span, free blocks' pages or metadata (span %p, state %d)", p,
             size, (void *)s, s ? s->state : -1);
    }
    for (int i = 0; i < NLIVE; i++)
        if (live[i].p && (uintptr_t)live[i].p < b && (uintptr_t)live[i].p + live[i].n > a)
            note("release(%p, %zu) over a live block %p of %zu bytes", p, size, live[i].p, live[i].n);
    return real.release(p, size);
}

/* ---------------------------------------------------------------- the workload */
static uint64_t rng = 88172645463325252ull;
static uint64_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}
static size_t pick_size(void) {
    uint64_t r = rnd() % 100;
    if (r < 60) return 1 + rnd() % 2048;             /* 1-page spans of small classes */
    if (r < 80) return 16384 + rnd() % (24 * 1024);  /* 2-object spans: pages of free blocks */
    if (r < 92) return 65536 + rnd() % (200 * 1024); /* big classes */
    if (r < 99) return 300 * 1024 + rnd() % MiB;     /* large spans */
    return 4 * MiB + rnd() % MiB;                    /* own mappings (EBB_MMAP_THRESHOLD=4M) */
}

#define CHILD_CHECK(c)                                                           \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "kernel page %zu: line %d: %s\n", kp, __LINE__, #c); \
            _exit(1);                                                            \
        }                                                                        \
    } while (0)

static void check_all_live(void) {
    for (int i = 0; i < NLIVE; i++)
        if (live[i].p) CHILD_CHECK(intact(live[i].p, live[i].n));
}

static void drop(int i) {
    CHILD_CHECK(intact(live[i].p, live[i].n));
    unsigned char *p = live[i].p;
    live[i].p = NULL; /* before the free: a release during it may cover p */
    ebb_free(p);
}

static void put(int i, size_t n) {
    unsigned char *p = ebb_malloc(n);
    CHILD_CHECK(p);
    fill(p, n);
    live[i].p = p, live[i].n = n;
}

static size_t unreleasable(void) {
    struct ebb_page_heap_stats st;
    ebbi_page_heap_stats(&st);
    return st.unreleasable;
}

/* Every byte freed, everything trimmed: the resident set falls by nearly all of it. */
static void rss_falls(void) {
    enum { N = 48 };
    static unsigned char *big[N];
    ebb_malloc_trim(0);
    size_t r0 = rss_bytes();
    for (int i = 0; i < N; i++) {
        size_t n = i % 2 ? MiB + (size_t)i * 4096 : 3000; /* large spans and small classes */
        for (int k = 0; k < (i % 2 ? 1 : 300); k++) {
            unsigned char *p = ebb_malloc(n);
            CHILD_CHECK(p);
            memset(p, i, n);
            if (i % 2) big[i] = p;
            else ebb_free(p); /* the small ones churn one span set */
        }
    }
    size_t r1 = rss_bytes();
    for (int i = 1; i < N; i += 2) ebb_free(big[i]);
    ebb_malloc_trim(0);
    size_t r2 = rss_bytes();
    printf("kernel page %zu: RSS %.1f MiB, with %d MiB written %.1f MiB, after free and trim %.1f MiB\n", kp,
           r0 / 1048576.0, N / 2, r1 / 1048576.0, r2 / 1048576.0);
    CHILD_CHECK(r1 >= r0 + 20 * MiB); /* it was written */
    CHILD_CHECK(r2 + 20 * MiB <= r1); /* and it went back */
}

static void workload(void) {
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < NLIVE; i++) {
            if (live[i].p && rnd() % 3 == 0) drop(i);
            if (!live[i].p && rnd() % 2 == 0) put(i, pick_size());
        }
        /* Two-object spans with one object free: the pages of the free one go back. */
        for (int i = 0; i < NLIVE; i += 2)
            if (live[i].p && live[i].n >= 16384 && live[i].n < 40960) drop(i);
        /* Grow own mappings (mremap) and shrink large blocks in place. */
        for (int i = 0; i < NLIVE; i++) {
            if (!live[i].p || live[i].n < 300 * 1024 || rnd() % 4) continue;
            unsigned char *p = live[i].p;
            size_t n = live[i].n, m = n >= 4 * MiB ? n + MiB + 4096 : n / 2 + 1;
            CHILD_CHECK(intact(p, n));
            live[i].p = NULL; /* what realloc gives back may be released meanwhile */
            unsigned char *q = ebb_realloc(p, m);
            CHILD_CHECK(q);
            CHILD_CHECK(intact_as(q, m < n ? m : n, p));
            fill(q, m);
            live[i].p = q, live[i].n = m;
            if (m >= 4 * MiB) CHILD_CHECK(ebb_malloc_usable_size(q) % kp == 0);
        }
        ebb_malloc_trim(0);
        if (faults) fprintf(stderr, "kernel page %zu: %zu faults, the first: %s\n", kp, faults, fault);
        CHILD_CHECK(faults == 0);
        check_all_live();
        const char *err = ebbi_page_heap_verify();
        if (err) fprintf(stderr, "page heap: %s\n", err);
        CHILD_CHECK(err == NULL);
        /* What is left resident and free holds no whole kernel page: off the age list, so
         * no pass walks it, and a second trim has nothing to do. */
        ebbi_lock(&ebbi_ph_lock);
        uint64_t oldest = ebbi_page_oldest_free_ms();
        ebbi_unlock(&ebbi_ph_lock);
        CHILD_CHECK(oldest == UINT64_MAX);
        size_t calls = release_calls;
        ebb_malloc_trim(0);
        CHILD_CHECK(release_calls == calls);
    }
    ebbi_shm_publish(); /* the stats page: whole kernel pages too */
    ebbi_shm_unlink();
}

static int child(size_t page) {
    if (page) ebbi_os_page_fake = page;
    kp = page ? page : (size_t)sysconf(_SC_PAGESIZE);
    real = ebbi_os;
    if (page) {
        ebbi_os.map = fake_map;
        ebbi_os.unmap = fake_unmap;
        ebbi_os.remap = fake_remap;
        ebbi_os.hugepage = fake_hugepage;
        ebbi_os.map_shared = fake_map_shared;
    }
    ebbi_os.release = fake_release;
    workload();
    size_t stuck = unreleasable();
    struct ebb_stats st;
    ebb_stats(&st);
    printf("kernel page %zu: %zu releases (%zu of free blocks in live spans, %zu of metadata), %.1f MiB "
           "released, %zu maps through the fake; after the last trim %.1f MiB in use, %.1f MiB resident "
           "free, %.1f MiB of it in no whole kernel page\n",
           kp, release_calls, block_releases, meta_releases, release_bytes / 1048576.0, maps,
           st.in_use / 1048576.0, st.page_free / 1048576.0, stuck / 1048576.0);
    for (int i = 0; i < NLIVE; i++)
        if (live[i].p) drop(i);
    rss_falls();
    fflush(stdout);
    if (faults) fprintf(stderr, "kernel page %zu: %zu faults, the first: %s\n", kp, faults, fault);
    CHILD_CHECK(faults == 0);
    CHILD_CHECK(release_calls > 0);
    if (kp <= 16384) CHILD_CHECK(block_releases > 0);
    if (kp <= EBB_PAGE) CHILD_CHECK(stuck == 0);
    /* The huge page: 32 MiB with 16 KiB pages, planned for; 512 MiB with 64 KiB pages is
     * not: 2 MiB chunks, each marked MADV_NOHUGEPAGE. */
    if (kp == 16384) CHILD_CHECK(ebbi_huge_size == 32 * MiB && no_huge_hints == 0);
    if (kp == 65536) CHILD_CHECK(ebbi_huge_size == 2 * MiB && no_huge_hints > 0 && !ebbi_thp_active);
    return 0;
}

static void run(size_t page) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(child(page));
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void real_page(void **st) {
    (void)st;
    run(0);
}
static void fake_16k_page(void **st) {
    (void)st;
    run(16384);
}
static void fake_64k_page(void **st) {
    (void)st;
    run(65536);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(real_page),
        cmocka_unit_test(fake_16k_page),
        cmocka_unit_test(fake_64k_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
