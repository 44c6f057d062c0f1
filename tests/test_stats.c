/* ebb_stats counts both sides of its identity, so the identity can fail.
 *
 * The whole (resident, released, mapped) comes from the OS layer, which counts the heap's
 * memory where it is mapped, unmapped, given back and taken back, plus the metadata's own
 * counts; the parts from the tiers' counters (objects handed out by each central list,
 * each thread cache's lists, central free objects, page heap spans).  Here:
 *   - in one thread, after every kind of step (small, medium, large and mapped blocks,
 *     realloc that grows and shrinks them in place and by moving, frees, flushes,
 *     malloc_trim, pages of pinned spans given back and taken back, a release the kernel
 *     refuses), resident == in_use + thread_cache + central + page_free + metadata
 *     exactly, and in_use and thread_cache are what this thread holds (its blocks' usable
 *     sizes, its cache's lists), and the cross-checks of ebbi_stats_verify and every
 *     verifier pass;
 *   - the kernel's resident set grows and falls with `resident`;
 *   - with threads allocating, every snapshot adds up within a stated tolerance, most
 *     exactly, and exactly again once they stop.
 * Uses the ebb_ API (static library) and internals; EBB_PROF=0 (a sampled small block
 * has pages of its own, which in_use counts, so the usable sizes would not add up),
 * EBB_BACKGROUND=0, EBB_HUGEPAGES=0. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_load.h"
#include "ebb_test_mem.h"

#include "internal.h"

#define MiB ((size_t)1 << 20)

static uint64_t parts(const struct ebb_stats *s) {
    return s->in_use + s->thread_cache + s->central + s->page_free + s->metadata;
}

/* Blocks this test holds, and their usable sizes. */
#define MAXB 20000
static void *blk[MAXB];
static size_t nblk;
static size_t held(void) {
    size_t sum = 0;
    for (size_t i = 0; i < nblk; i++)
        if (blk[i]) sum += ebb_malloc_usable_size(blk[i]);
    return sum;
}

/* What this thread's cache holds, from its lists' lengths. */
static size_t cached_here(void) {
    size_t sum = 0;
    for (unsigned c = 1; c < EBB_NCLASS; c++) sum += ebbi_tc_list_len(c) * ebbi_classes[c].size;
    return sum;
}

static uint64_t in_use0;

static void check_exact(const char *where) {
    struct ebb_stats s;
    ebb_stats(&s);
    if (s.resident != parts(&s))
        fail_msg("%s: resident %llu, the parts add up to %llu (in_use %llu, thread_cache %llu, "
                 "central %llu, page_free %llu, metadata %llu)",
                 where, (unsigned long long)s.resident, (unsigned long long)parts(&s),
                 (unsigned long long)s.in_use, (unsigned long long)s.thread_cache,
                 (unsigned long long)s.central, (unsigned long long)s.page_free,
                 (unsigned long long)s.metadata);
    if (s.mapped != s.resident + s.released) fail_msg("%s: mapped != resident + released", where);
    if (s.in_use - in_use0 != held())
        fail_msg("%s: in_use grew by %lld, the blocks held are %zu bytes", where,
                 (long long)(s.in_use - in_use0), held());
    if (s.thread_cache != cached_here())
        fail_msg("%s: thread_cache %llu, this thread's lists hold %zu", where,
                 (unsigned long long)s.thread_cache, cached_here());
    const char *err = ebbi_stats_verify();
    if (err) fail_msg("%s: %s", where, err);
    if ((err = ebbi_central_verify())) fail_msg("%s: central lists: %s", where, err);
    if ((err = ebbi_page_heap_verify())) fail_msg("%s: page heap: %s", where, err);
    if ((err = ebbi_tc_verify())) fail_msg("%s: thread cache: %s", where, err);
}

static void *take(size_t n) {
    assert_true(nblk < MAXB);
    void *p = ebb_malloc(n);
    assert_non_null(p);
    memset(p, 0x5a, n < 4096 ? n : 4096);
    blk[nblk++] = p;
    return p;
}

static void drop_all(void) {
    for (size_t i = 0; i < nblk; i++) ebb_free(blk[i]);
    nblk = 0;
}

static void start(void) {
    drop_all();
    ebbi_tc_flush_self();
    ebb_malloc_trim(0);
    struct ebb_stats s;
    ebb_stats(&s);
    in_use0 = s.in_use; /* what the test framework holds */
}

/* ---------------------------------------------------------------- one thread */
static void every_kind_of_step(void **st) {
    (void)st;
    start();
    check_exact("start");
    for (size_t n = 1; n <= 1024; n += 7) take(n); /* every class the fast path serves */
    check_exact("small blocks");
    size_t mark = nblk;
    for (int i = 0; i < 2000; i++) take(64);
    for (size_t i = mark; i < nblk; i++) ebb_free(blk[i]);
    nblk = mark;
    ebbi_tc_flush_self(); /* whole batches: into the transfer cache */
    check_exact("batches in the transfer cache");
    for (int i = 0; i < 2000; i++) take(64); /* and out of it again */
    check_exact("batches taken from the transfer cache");
    for (size_t n = 1100; n <= 256 * 1024; n = n * 5 / 4) take(n);
    check_exact("medium blocks");
    for (size_t i = 0; i < nblk; i += 3) {
        ebb_free(blk[i]);
        blk[i] = NULL;
    }
    check_exact("a third freed");
    void *large = take(700 * 1024), *large2 = take(3 * MiB);
    (void)large2;
    check_exact("large blocks");
    void *big = take(80 * MiB); /* above the mapping threshold: a mapping of its own */
    check_exact("a mapped block");
    void *g = ebb_realloc(big, 120 * MiB);
    assert_non_null(g);
    blk[nblk - 1] = g;
    check_exact("the mapped block grown");
    g = ebb_realloc(g, 90 * MiB);
    assert_non_null(g);
    blk[nblk - 1] = g;
    check_exact("the mapped block shrunk");
    void *l = ebb_realloc(large, 500 * 1024);
    assert_true(l == large); /* shrunk in place: the tail goes back to the page heap */
    check_exact("a large block shrunk");
    ebbi_tc_flush_self();
    check_exact("the cache flushed");
    drop_all();
    check_exact("everything freed");
    struct ebb_stats s0, s;
    ebb_stats(&s0);
    ebb_malloc_trim(0);
    check_exact("malloc_trim");
    ebb_stats(&s);
    /* every free span went back, and is counted so on both sides */
    assert_true(s.page_free == 0 && s.released >= s0.released + s0.page_free);
    for (size_t n = 16; n <= 4096; n += 48) take(n); /* from released memory again */
    check_exact("allocated from released spans");
    drop_all();
}

/* Spans pinned by one block each give back the pages of their free objects, then take
 * them back as allocation needs them. */
static void pinned_pages_out_and_back(void **st) {
    (void)st;
    start();
    const size_t n = 256; /* 32 per 8 KiB page */
    for (int i = 0; i < 8000; i++) take(n);
    ebbi_tc_flush_self();
    check_exact("8000 blocks");
    for (size_t i = 0; i < nblk; i++)
        if (i % 512) {
            ebb_free(blk[i]);
            blk[i] = NULL;
        }
    ebbi_tc_flush_self();
    ebb_malloc_trim(0); /* the pinned spans' free pages go back too */
    size_t out = 0;
    for (unsigned c = 1; c < EBB_NCLASS; c++) out += ebbi_central[c].pages_out;
    assert_true(out > 0);
    check_exact("pinned spans' pages given back");
    for (int i = 0; i < 4000; i++) take(n);
    size_t back = 0;
    for (unsigned c = 1; c < EBB_NCLASS; c++) back += ebbi_central[c].pages_back;
    assert_true(back > 0);
    check_exact("pages taken back");
    drop_all();
    ebbi_tc_flush_self();
    check_exact("all freed");
}

/* ebb_flow: every release is counted under the rule that made it, and every way back
 * (new address space, released spans handed out, refaults, pages of live spans taken
 * back) where it happens. */
#define FLOW_D(a, b, f) ((size_t)((b).f - (a).f))
static size_t flow_given(const struct ebb_flow *f) {
    return f->released_timer + f->released_cap + f->released_trade + f->released_trim + f->released_soft;
}
static void flow_counts(void **st) {
    (void)st;
    start(); /* trimmed: every free span of the page heap is released */
    struct ebb_flow f0, f1, f2, f3, f4, f5;
    struct ebb_stats s0, s2;
    struct ebb_page_heap_stats ph0;
    ebbi_page_heap_stats(&ph0);
    ebb_flow(&f0);
    ebb_stats(&s0);
    /* 24 blocks of 1 MiB: every page of them comes from the released set, from memory
     * given back or from new address space */
    for (int i = 0; i < 24; i++) take(MiB);
    ebb_flow(&f1);
    assert_true(FLOW_D(f0, f1, faulted) >= 24 * MiB);
    size_t could_reuse = ph0.released + ph0.free_res;
    assert_true(FLOW_D(f0, f1, grown) + could_reuse >= 24 * MiB);
    assert_int_equal(flow_given(&f1), flow_given(&f0)); /* no room was short */
    /* freed and trimmed: given back by malloc_trim, and released_total says the same */
    drop_all();
    ebb_malloc_trim(0);
    ebb_flow(&f2);
    ebb_stats(&s2);
    assert_true(FLOW_D(f1, f2, released_trim) >= 24 * MiB);
    assert_int_equal(flow_given(&f2) - flow_given(&f0), s2.released_total - s0.released_total);
    assert_int_equal(FLOW_D(f1, f2, released_timer) + FLOW_D(f1, f2, released_cap), 0);
    /* taken again at once: refaults, memory that was not idle after all */
    for (int i = 0; i < 24; i++) take(MiB);
    ebb_flow(&f3);
    assert_true(FLOW_D(f2, f3, faulted) >= 24 * MiB);
    assert_true(FLOW_D(f2, f3, refaulted) >= 24 * MiB);
    assert_true(FLOW_D(f2, f3, refaulted) <= FLOW_D(f2, f3, faulted));
    assert_int_equal(FLOW_D(f2, f3, grown), 0);
    /* freed beyond the free-page cap (64 MiB, and 1/8 of what is in use): the cap gives
     * back what is above it as the frees come */
    for (int i = 0; i < 96; i++) take(MiB);
    drop_all();
    ebb_flow(&f4);
    assert_true(FLOW_D(f3, f4, released_cap) >= (120 - 80) * MiB);
    /* pages of live spans: spans of 256-byte blocks each kept by one block */
    ebb_malloc_trim(0);
    for (int i = 0; i < 8000; i++) take(256);
    ebbi_tc_flush_self();
    for (size_t i = 0; i < nblk; i++)
        if (i % 512) {
            ebb_free(blk[i]);
            blk[i] = NULL;
        }
    ebbi_tc_flush_self();
    size_t out0 = 0, out1 = 0, back0 = 0, back1 = 0;
    for (unsigned c = 1; c < EBB_NCLASS; c++) out0 += ebbi_central[c].pages_out;
    ebb_flow(&f4);
    ebb_malloc_trim(0);
    ebb_flow(&f5);
    for (unsigned c = 1; c < EBB_NCLASS; c++) out1 += ebbi_central[c].pages_out;
    assert_true(out1 > out0);
    assert_int_equal(FLOW_D(f4, f5, released_live), out1 - out0);
    for (unsigned c = 1; c < EBB_NCLASS; c++) back0 += ebbi_central[c].pages_back;
    for (int i = 0; i < 4000; i++) take(256);
    ebb_flow(&f4);
    for (unsigned c = 1; c < EBB_NCLASS; c++) back1 += ebbi_central[c].pages_back;
    assert_true(back1 > back0);
    assert_int_equal(FLOW_D(f5, f4, live_back), back1 - back0);
    drop_all();
    check_exact("after the flow");
}

/* A release the kernel refuses: the memory stays resident, and both sides say so. */
static int refuse(void *p, size_t n) {
    (void)p, (void)n;
    errno = EAGAIN;
    return -1;
}
static void refused_release(void **st) {
    (void)st;
    start();
    for (int i = 0; i < 40; i++) take(MiB);
    drop_all();
    int (*real)(void *, size_t) = ebbi_os.release;
    ebbi_os.release = refuse;
    ebb_malloc_trim(0);
    ebbi_os.release = real;
    check_exact("release refused");
    ebb_malloc_trim(0);
    check_exact("released");
}

/* ---------------------------------------------------------------- the kernel */
static void kernel_agrees(void **st) {
    (void)st;
    start();
    struct ebb_stats s0, s1, s2;
    ebb_stats(&s0);
    size_t rss0 = rss_bytes(), live = 0;
    assert_true(rss0 > 0);
    for (int i = 0; i < 3000; i++) {
        size_t n = i % 10 ? 100 + (size_t)i * 7 : 200000 + (size_t)i * 100;
        void *p = take(n);
        touch(p, n);
        live += n;
    }
    ebb_stats(&s1);
    size_t rss1 = rss_bytes(), grew = s1.resident - s0.resident;
    printf("# %zu KiB live: resident grew %zu KiB, the kernel's RSS %zu KiB\n", live >> 10, grew >> 10,
           (rss1 - rss0) >> 10);
    /* What ebbmalloc counts resident and the program wrote is in RSS; what it counts but
     * nobody touched (the rest of fresh spans, the metadata's bump chunk) may not be. */
    assert_true(rss1 - rss0 + 4 * MiB >= live);
    assert_true(rss1 - rss0 <= grew + 4 * MiB);
    drop_all();
    ebbi_tc_flush_self();
    ebb_malloc_trim(0);
    ebb_stats(&s2);
    size_t rss2 = rss_bytes();
    printf("# freed and trimmed: resident fell %zu KiB, the kernel's RSS %zu KiB\n",
           (s1.resident - s2.resident) >> 10, (rss1 - rss2) >> 10);
    assert_true(s1.resident - s2.resident >= live);
    assert_true(rss1 - rss2 + 4 * MiB >= s1.resident - s2.resident);
    check_exact("after the kernel's check");
}

/* ---------------------------------------------------------------- threads */

/* While threads allocate, each snapshot reads every part at its own moment: the objects
 * a cache takes or gives back during the read of the caches, and spans that move while
 * the central lists are read twice over (ebb_stats repeats the walk then), may be seen on
 * one side only.  Bound: 4 MiB (4 threads, a few spans or blocks each). */
static void racy_within_tolerance(void **st) {
    (void)st;
    start();
    pthread_t t[4];
    ebb_test_load_stop = 0;
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, ebb_test_load, (void *)i);
    int exact = 0;
    int64_t worst = 0;
    for (int i = 0; i < 300; i++) {
        struct ebb_stats s;
        ebb_stats(&s);
        int64_t d = (int64_t)(s.resident - parts(&s));
        if (d == 0) exact++;
        if (d < 0) d = -d;
        if (d > worst) worst = d;
        if ((uint64_t)d > 4 * MiB)
            fail_msg("snapshot %d: resident and its parts %lld bytes apart", i, (long long)d);
        assert_int_equal(s.mapped, s.resident + s.released);
    }
    ebb_test_load_stop = 1;
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("# under load: %d of 300 snapshots exact, the worst %lld bytes apart\n", exact, (long long)worst);
    check_exact("threads joined");
}

/* ---------------------------------------------------------------- beyond 16 TiB
 * Blocks with mappings of their own are counted apart from the page heap's 4 KiB units,
 * so that a program may map more than 16 TiB of them (sparse callocs where the kernel
 * overcommits) and the counts still decode; the page heap itself stops growing at 16 TiB
 * (ebbi_os_heap_room says how much is left, to the unit).  No memory is mapped here: the
 * OS layer's counts are moved as a 20 TiB mapping would move them, then moved back. */
static void counts_beyond_16_tib(void **st) {
    (void)st;
    start();
    size_t m0, g0, m1, g1;
    ebbi_os_heap_counts(&m0, &g0);
    const size_t huge = (size_t)20 << 40;
    ebbi_os_direct_count((int64_t)huge);
    ebbi_os_heap_counts(&m1, &g1);
    ebbi_os_direct_count(-(int64_t)huge);
    assert_int_equal(m1 - m0, huge);
    assert_int_equal(g1, g0);
    ebbi_os_heap_counts(&m1, &g1);
    assert_int_equal(m1, m0);
    /* the page heap's room: 16 TiB less its chunks, to the 4 KiB unit */
    struct ebb_page_heap_stats ph;
    ebbi_page_heap_stats(&ph);
    size_t chunks = ph.mapped - ph.mapped_direct, left = ((size_t)1 << 44) - 4096 - chunks;
    assert_true(ebbi_os_heap_room(left));
    assert_false(ebbi_os_heap_room(left + 4096));
    assert_false(ebbi_os_heap_room((size_t)1 << 44));
    assert_true(ebbi_os_heap_room(2 * MiB));
    check_exact("after the counts went back");

    /* The page heap at its limit (lowered here to the chunks it has): a big block that no
     * free span fits gets a mapping of its own, and blocks of a small class fail with
     * ENOMEM once the free spans are used up, until the limit is back. */
    const size_t small = 200000; /* one block per span */
    size_t most = chunks / small + 64, got = 0;
    void **v = ebb_malloc(most * sizeof *v);
    assert_non_null(v);
    int64_t threshold = ebbi_opt(EBB_OPT_MMAP_THRESHOLD);
    size_t keep = ebbi_os_heap_max, n = chunks + 8 * MiB;
    ebbi_options_set(EBB_OPT_MMAP_THRESHOLD, (int64_t)(2 * n));
    ebbi_os_heap_max = chunks;
    void *big = take(n);
    struct ebb_page_heap_stats ph2;
    ebbi_page_heap_stats(&ph2);
    assert_int_equal(ph2.mapped - ph2.mapped_direct, chunks); /* no new chunk */
    assert_true(ph2.mapped_direct >= ph.mapped_direct + n);   /* its own mapping */
    assert_ptr_equal(ebbi_pm_span((uintptr_t)big)->state, SPAN_MAPPED);
    errno = 0;
    while (got < most && (v[got] = ebb_malloc(small))) got++;
    assert_true(got < most);
    assert_int_equal(errno, ENOMEM);
    ebbi_page_heap_stats(&ph2);
    assert_int_equal(ph2.mapped - ph2.mapped_direct, chunks);
    ebbi_os_heap_max = keep;
    void *more = ebb_malloc(small);
    assert_non_null(more); /* the page heap grows again */
    ebb_free(more);
    for (size_t i = 0; i < got; i++) ebb_free(v[i]);
    ebb_free(v);
    ebbi_options_set(EBB_OPT_MMAP_THRESHOLD, threshold);
    printf("# at the limit: a %zu MiB block mapped on its own, %zu blocks of %zu bytes, then ENOMEM\n",
           n >> 20, got, small);
    drop_all();
    check_exact("after the limit");
}

/* The library's central lists and class table are resident once it is initialised (the
 * kernel says so, page by page) and metadata counts them, beside the records and the page
 * map. */
static size_t resident_pages_over(const void *p, size_t n) {
    size_t k = (size_t)sysconf(_SC_PAGESIZE), res = 0;
    uintptr_t a = (uintptr_t)p / k * k, e = ((uintptr_t)p + n + k - 1) / k * k;
    unsigned char vec[256];
    assert_true((e - a) / k <= sizeof vec);
    assert_int_equal(mincore((void *)a, e - a, vec), 0);
    for (size_t i = 0; i < (e - a) / k; i++) res += vec[i] & 1;
    return res * k;
}

static void static_state_counted(void **state) {
    (void)state;
    ebb_free(ebb_malloc(16)); /* initialised */
    size_t want = resident_pages_over(ebbi_central, sizeof ebbi_central) +
                  resident_pages_over(ebbi_class_lut, sizeof ebbi_class_lut);
    assert_true(want >= sizeof ebbi_central + sizeof ebbi_class_lut);
    assert_int_equal(ebbi_static_bytes(), want);
    struct ebb_stats st;
    ebb_stats(&st);
    assert_true(st.metadata >= ebbi_meta_bytes() + ebbi_pm_bytes() + want);
    assert_int_equal(st.metadata, ebbi_meta_bytes() + ebbi_pm_bytes() + want);
    assert_int_equal(st.resident, parts(&st));
}

int main(void) {
    ebb_free(ebb_malloc(1));
    ebb_mallopt(M_MMAP_THRESHOLD, 64 << 20);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_kind_of_step),    cmocka_unit_test(pinned_pages_out_and_back),
        cmocka_unit_test(refused_release),       cmocka_unit_test(kernel_agrees),
        cmocka_unit_test(racy_within_tolerance), cmocka_unit_test(counts_beyond_16_tib),
        cmocka_unit_test(static_state_counted),  cmocka_unit_test(flow_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
