/* Spans pinned by one long-lived block give back the pages of their free objects.
 *
 * The pattern of a service with a slowly changing long-lived set: many small-object spans
 * in each of which one block lives on and every other block was freed.  The kernel pages
 * that hold only free objects must go back (seen exactly through a counting fake of the
 * OS layer's release hook, and in the kernel's resident set), the counters must say so,
 * a span idle for EBB_RELEASE_MS must do it by itself while a span taken from stays
 * resident, allocating from those spans again must give whole, distinct, writable blocks
 * without disturbing the pinned ones, and every misuse check must still fire on a block
 * in a page that went back and came back (double free, interior pointer, overwritten
 * link), and on a block freed twice while its page was gone.
 *
 * Uses the ebb_ API (static library) and internals; EBB_RELEASE_MS=300 and
 * EBB_HUGEPAGES=0 (main). */
#define _GNU_SOURCE
#include <pthread.h>
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

#include "ebb_test_mem.h"

#include "internal.h"

#define MiB ((size_t)1 << 20)

static uint64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- the counting fake
 * Every release, recorded (the background thread releases too: appends are atomic). */
#define MAX_REL 200000
static struct { uintptr_t a, b; } rel[MAX_REL];
static _Atomic size_t nrel;
static int (*real_release)(void *, size_t);
static int counting_release(void *p, size_t n) {
    size_t i = atomic_fetch_add(&nrel, 1);
    if (i < MAX_REL) rel[i].a = (uintptr_t)p, rel[i].b = (uintptr_t)p + n;
    return real_release(p, n);
}
static void install_fake(void) {
    if (!real_release) real_release = ebbi_os.release;
    ebbi_os.release = counting_release;
    atomic_store(&nrel, 0);
}

/* Bytes of recorded releases since `from` that fall inside [a, b). */
static size_t released_in(size_t from, uintptr_t a, uintptr_t b) {
    size_t n = atomic_load(&nrel), sum = 0;
    if (n > MAX_REL) n = MAX_REL;
    for (size_t i = from; i < n; i++) {
        uintptr_t x = rel[i].a > a ? rel[i].a : a, y = rel[i].b < b ? rel[i].b : b;
        if (y > x) sum += y - x;
    }
    return sum;
}

/* ---------------------------------------------------------------- contents
 * The bytes of a block depend on its address and a serial, so a block handed out twice,
 * overlapping another or zeroed under the program shows. */
static void fill(unsigned char *p, size_t n, unsigned serial) {
    uint64_t k = ((uintptr_t)p ^ serial) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)((k >> (i % 8 * 8)) + i / 8);
}
static int intact(const unsigned char *p, size_t n, unsigned serial) {
    uint64_t k = ((uintptr_t)p ^ serial) * 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)((k >> (i % 8 * 8)) + i / 8)) return 0;
    return 1;
}

/* ---------------------------------------------------------------- the pinned pattern
 * For each size, blocks enough for `spans` spans are allocated and written; in every span
 * whose blocks are all ours ("whole"), the lowest block is kept and every other block of
 * the size is freed.  Book-keeping lives in static arrays, not on the heap under test. */
#define NSIZES 6
static const size_t sizes[NSIZES] = {48, 256, 1400, 3000, 5000, 20000};
#define MAX_BLOCKS 90000
#define MAX_SPANS 4096
static struct {
    unsigned char *p;
    size_t n;
    unsigned serial;
} blk[MAX_BLOCKS];
static size_t nblk;
static struct pinned {
    struct ebb_span *s;
    uintptr_t start, end; /* the span's pages */
    unsigned char *keep;  /* the block that lives on */
    size_t keep_n;
    unsigned serial;
    size_t expect; /* bytes of kernel pages that must go back */
} pin[MAX_SPANS];
static size_t npin;
static unsigned serials;

static int by_addr(const void *x, const void *y) {
    uintptr_t a = (uintptr_t) * (unsigned char *const *)x, b = (uintptr_t) * (unsigned char *const *)y;
    return a < b ? -1 : a > b;
}

/* Kernel pages of s wholly inside its objects and clear of [k, k + kn). */
static size_t expected_release(struct ebb_span *s, uintptr_t k, size_t kn) {
    size_t kp = ebbi_os_page_size(), sum = 0;
    uintptr_t span_end = s->start + (s->npages << EBB_PAGE_SHIFT);
    if ((s->start | span_end) & (kp - 1)) return 0; /* such spans keep their pages */
    for (uintptr_t a = s->start; a + kp <= (uintptr_t)ebbi_span_end(s); a += kp)
        if (a + kp <= k || a >= k + kn) sum += kp;
    return sum;
}

static void build_pinned(size_t spans_per_size) {
    static unsigned char *tmp[MAX_BLOCKS];
    nblk = npin = 0;
    for (int z = 0; z < NSIZES; z++) {
        unsigned cls = ebbi_size_to_class(sizes[z]);
        size_t per = ebbi_class_objects(cls), n = per * spans_per_size;
        assert_true(n <= MAX_BLOCKS);
        for (size_t i = 0; i < n; i++) {
            tmp[i] = ebb_malloc(sizes[z]);
            assert_non_null(tmp[i]);
            memset(tmp[i], 0x5a, sizes[z]);
        }
        qsort(tmp, n, sizeof tmp[0], by_addr);
        for (size_t i = 0; i < n;) {
            struct ebb_span *s = ebbi_pm_span((uintptr_t)tmp[i]);
            size_t j = i;
            while (j < n && ebbi_pm_span((uintptr_t)tmp[j]) == s) j++;
            if (j - i == per) { /* a whole span: its lowest block stays */
                assert_true(npin < MAX_SPANS);
                struct pinned *pp = &pin[npin++];
                pp->s = s;
                pp->start = s->start;
                pp->end = s->start + (s->npages << EBB_PAGE_SHIFT);
                pp->keep = tmp[i];
                pp->keep_n = sizes[z];
                pp->serial = ++serials;
                fill(pp->keep, pp->keep_n, pp->serial);
                pp->expect = expected_release(s, (uintptr_t)tmp[i], ebbi_classes[cls].size);
                i++;
            }
            for (; i < j; i++) ebb_free(tmp[i]);
        }
    }
}

static size_t expected_total(void) {
    size_t e = 0;
    for (size_t i = 0; i < npin; i++) e += pin[i].expect;
    return e;
}

static size_t released_in_pins(size_t from, size_t *short_spans) {
    size_t sum = 0;
    *short_spans = 0;
    for (size_t i = 0; i < npin; i++) {
        size_t r = released_in(from, pin[i].start, pin[i].end);
        sum += r;
        if (r < pin[i].expect) ++*short_spans;
    }
    return sum;
}

static void pins_intact(void) {
    for (size_t i = 0; i < npin; i++) {
        assert_true(ebbi_pm_span((uintptr_t)pin[i].keep) == pin[i].s);
        assert_true(intact(pin[i].keep, pin[i].keep_n, pin[i].serial));
    }
}

static void free_pins(void) {
    for (size_t i = 0; i < npin; i++) ebb_free(pin[i].keep);
    npin = 0;
}

static void check_structures(void) {
    const char *err = ebbi_central_verify();
    if (err) fail_msg("central tier: %s", err);
    err = ebbi_page_heap_verify();
    if (err) fail_msg("page heap: %s", err);
    err = ebbi_tc_verify();
    if (err) fail_msg("thread caches: %s", err);
}

static void stats_add_up(void) {
    struct ebb_stats st;
    ebb_stats(&st);
    assert_int_equal(st.resident, st.in_use + st.thread_cache + st.central + st.page_free + st.metadata);
    assert_int_equal(st.mapped, st.resident + st.released);
}

/* ---------------------------------------------------------------- the tests */
/* malloc_trim: every page of a pinned span that holds only free objects goes back, no
 * other byte of it; the resident set falls by as much, and the counters follow. */
/* The first two cases measure what malloc_trim gives back: the age rule must not give
 * back pages of spans built early while the rest are still being built (under emulation
 * building them takes longer than EBB_RELEASE_MS).  No thread exists yet, so the rule
 * runs only from this thread's slow paths, which read the option each time. */
static void age_rule_off(bool off) { ebbi_options_set(EBB_OPT_RELEASE_MS, off ? 3600000 : 300); }

static void trim_gives_back_free_pages_of_pinned_spans(void **st) {
    (void)st;
    age_rule_off(true);
    install_fake();
    ebb_malloc_trim(0);
    struct ebb_stats s0, s1, s2;
    build_pinned(160);
    size_t expect = expected_total();
    printf("# %zu pinned spans, %zu KiB of their pages hold only free objects\n", npin, expect >> 10);
    assert_true(npin >= 5 * 100);
    assert_true(expect >= 8 * MiB);
    ebb_stats(&s0);
    size_t rss0 = rss_bytes();
    size_t from = atomic_load(&nrel);
    assert_int_equal(ebb_malloc_trim(0), 1);
    size_t rss1 = rss_bytes(), short_spans;
    size_t got = released_in_pins(from, &short_spans);
    ebb_stats(&s1);
    printf("# released in them %zu KiB (%zu spans short); RSS %zu -> %zu MiB; central %zu -> %zu KiB, "
           "released %zu -> %zu KiB\n",
           got >> 10, short_spans, rss0 >> 20, rss1 >> 20, s0.central >> 10, s1.central >> 10,
           s0.released >> 10, s1.released >> 10);
    assert_int_equal(short_spans, 0);
    assert_int_equal(got, expect);               /* exactly those pages */
    assert_true(rss0 >= rss1 + expect / 10 * 9); /* and the kernel agrees */
    assert_true(s1.released >= s0.released + expect);
    /* what the thread's cache held went to the central tier first */
    assert_true(s0.central + s0.thread_cache >= s1.central + s1.thread_cache + expect);
    stats_add_up();
    pins_intact();
    check_structures();
    /* Nothing changed since: a second trim finds nothing more in them. */
    from = atomic_load(&nrel);
    ebb_malloc_trim(0);
    assert_int_equal(released_in_pins(from, &short_spans), 0);
    ebb_stats(&s2);
    assert_int_equal(s2.released, s1.released);
    free_pins();
    ebb_malloc_trim(0);
    check_structures();
    age_rule_off(false);
}

/* Allocating from the pinned spans again brings their pages back: blocks are whole,
 * distinct and writable, the pinned blocks are untouched, the counters come back. */
static void allocation_brings_pages_back(void **st) {
    (void)st;
    age_rule_off(true);
    install_fake();
    ebb_malloc_trim(0);
    build_pinned(40);
    assert_true(npin >= 5 * 30);
    size_t from = atomic_load(&nrel);
    ebb_malloc_trim(0);
    size_t short_spans, got = released_in_pins(from, &short_spans);
    assert_true(expected_total() >= MiB);
    assert_int_equal(got, expected_total());
    struct ebb_stats s1, s2;
    ebb_stats(&s1);
    size_t rss1 = rss_bytes();
    /* As many blocks again as were freed: they come from the pinned spans first (the
     * fullest spans with free objects, and the only ones). */
    size_t in_gone = 0;
    for (int z = 0; z < NSIZES; z++) {
        unsigned cls = ebbi_size_to_class(sizes[z]);
        size_t per = ebbi_class_objects(cls);
        size_t want = (per - 1) * (npin / NSIZES);
        for (size_t i = 0; i < want && nblk < MAX_BLOCKS; i++) {
            unsigned char *p = ebb_malloc(sizes[z]);
            assert_non_null(p);
            for (size_t k = 0; k < npin; k++) {
                if ((uintptr_t)p < pin[k].start || (uintptr_t)p >= pin[k].end) continue;
                in_gone += released_in(from, (uintptr_t)p, (uintptr_t)p + sizes[z]) > 0;
                break;
            }
            blk[nblk].p = p, blk[nblk].n = sizes[z], blk[nblk].serial = ++serials;
            fill(p, sizes[z], blk[nblk].serial);
            nblk++;
        }
    }
    ebb_stats(&s2);
    size_t rss2 = rss_bytes();
    printf("# %zu blocks again, %zu of them in pages that had gone back; released %zu -> %zu KiB, "
           "RSS %zu -> %zu MiB\n",
           nblk, in_gone, s1.released >> 10, s2.released >> 10, rss1 >> 20, rss2 >> 20);
    assert_true(nblk >= 5000);
    assert_true(in_gone >= nblk / 2);
    assert_true(s2.released + got / 2 <= s1.released); /* they count as resident again */
    assert_true(rss2 >= rss1 + got / 2);               /* and are */
    /* Every block whole and distinct: sorted by address, none overlaps the next. */
    static unsigned char *all[MAX_BLOCKS + MAX_SPANS];
    size_t na = 0;
    for (size_t i = 0; i < nblk; i++) {
        assert_true(intact(blk[i].p, blk[i].n, blk[i].serial));
        all[na++] = blk[i].p;
    }
    for (size_t i = 0; i < npin; i++) all[na++] = pin[i].keep;
    qsort(all, na, sizeof all[0], by_addr);
    for (size_t i = 1; i < na; i++) assert_true(all[i - 1] + ebb_malloc_usable_size(all[i - 1]) <= all[i]);
    pins_intact();
    check_structures();
    stats_add_up();
    for (size_t i = 0; i < nblk; i++) ebb_free(blk[i].p);
    nblk = 0;
    free_pins();
    ebb_malloc_trim(0);
    check_structures();
}

/* Without malloc_trim: a pinned span nothing is taken from gives its pages back once it
 * has been idle for EBB_RELEASE_MS (300 ms here), not before; a span more than half in
 * use keeps them. */
enum { PER = 11 }; /* 1408-byte blocks: 11 in a span of 16 KiB, 4 kernel pages */
static unsigned char *full[4 * PER];
static void *free_on_thread(void *arg) {
    (void)arg;
    build_pinned(30); /* its cache goes back when it exits */
    return NULL;
}
static void idle_pinned_spans_release_on_their_own(void **st) {
    (void)st;
    install_fake();
    ebb_malloc_trim(0);
    /* A span of 1408-byte blocks whose last three are free: they cover its last kernel
     * page, but eight of its eleven blocks are in use. */
    unsigned cls = ebbi_size_to_class(1400);
    assert_int_equal(ebbi_class_objects(cls), PER);
    for (int i = 0; i < 4 * PER; i++) full[i] = ebb_malloc(1400);
    qsort(full, 4 * PER, sizeof full[0], by_addr);
    struct ebb_span *busy = NULL;
    int first = 0;
    for (int i = 0; i + PER <= 4 * PER && !busy; i++) {
        struct ebb_span *s = ebbi_pm_span((uintptr_t)full[i]);
        if ((uintptr_t)full[i] == ebbi_span_blocks(s) && ebbi_pm_span((uintptr_t)full[i + PER - 1]) == s)
            busy = s, first = i;
    }
    assert_non_null(busy);
    size_t kp = ebbi_os_page_size();
    uintptr_t last_page = busy->start + (busy->npages << EBB_PAGE_SHIFT) - kp;
    size_t from = atomic_load(&nrel);
    uint64_t t0 = ms_now();
    pthread_t t;
    pthread_create(&t, NULL, free_on_thread, NULL);
    pthread_join(t, NULL);
    uint64_t t1 = ms_now();
    for (int i = first + 8; i < first + PER; i++) {
        assert_true((uintptr_t)full[i] + 1408 > last_page); /* these three cover it */
        ebb_free(full[i]), full[i] = NULL;
    }
    assert_true((uintptr_t)full[first + 7] + 1408 <= last_page);
    ebbi_tc_flush_self();
    size_t expect = expected_total(), short_spans, got = released_in_pins(from, &short_spans);
    assert_true(npin >= 5 * 20);
    assert_true(expect >= MiB);
    assert_true(got < expect); /* not yet: they are young */
    uint64_t seen = 0;
    while (ms_now() - t0 < 10000) {
        void *q = ebb_malloc(64); /* slow paths tick the release timer too */
        ebb_free(q);
        got = released_in_pins(from, &short_spans);
        if (got >= expect) {
            seen = ms_now();
            break;
        }
        usleep(5000);
    }
    printf("# %zu pinned spans: %zu of %zu KiB back %llu ms after the frees (built in %llu ms)\n", npin,
           got >> 10, expect >> 10, (unsigned long long)(seen ? seen - t1 : 0),
           (unsigned long long)(t1 - t0));
    assert_true(seen != 0);
    assert_int_equal(got, expect);
    assert_true(seen - t0 >= 290); /* no span was taken from before t0 */
    /* The busy span: idle as long, but more than half in use. */
    assert_int_equal(released_in(from, busy->start, busy->start + (busy->npages << EBB_PAGE_SHIFT)), 0);
    pins_intact();
    check_structures();
}

/* ---------------------------------------------------------------- misuse
 * Each case in a child: it builds one pinned span of 48-byte blocks, lets its free pages
 * go back, and commits the misuse; the child must die of SIGABRT after a message that
 * names the fault. */
static unsigned char *pinned_keep;
static struct ebb_span *pinned_span;

/* A span of 48-byte blocks with its lowest block live and its second kernel page gone.
 * Returns an address in the gone page. */
static unsigned char *child_pinned_span(void) {
    install_fake();
    ebb_malloc_trim(0);
    unsigned cls = ebbi_size_to_class(48);
    size_t per = ebbi_class_objects(cls);
    static unsigned char *b[4 * 170];
    for (size_t i = 0; i < 4 * per; i++) b[i] = ebb_malloc(40);
    qsort(b, 4 * per, sizeof b[0], by_addr);
    for (size_t i = 0; i + per <= 4 * per && !pinned_span; i++)
        if ((uintptr_t)b[i] == ebbi_span_blocks(ebbi_pm_span((uintptr_t)b[i])) &&
            ebbi_pm_span((uintptr_t)b[i + per - 1]) == ebbi_pm_span((uintptr_t)b[i]))
            pinned_span = ebbi_pm_span((uintptr_t)b[i]), pinned_keep = b[i];
    if (!pinned_span) _exit(10);
    for (size_t i = 0; i < 4 * per; i++)
        if (b[i] != pinned_keep) ebb_free(b[i]);
    ebb_malloc_trim(0);
    size_t kp = ebbi_os_page_size();
    uintptr_t page = pinned_span->start + kp;
    if (released_in(0, page, page + kp) != kp) _exit(11); /* the second page went */
    return (unsigned char *)page;
}

/* The first block that starts in the page gone (it was freed before the page went). */
static unsigned char *first_block_in(unsigned char *page) {
    uintptr_t base = ebbi_span_blocks(pinned_span);
    return (unsigned char *)(base + ((uintptr_t)page - base + 47) / 48 * 48);
}

/* A block of the pinned span that lies wholly in the page that had gone, handed out
 * again (malloc brings the page back). */
static unsigned char *child_block_in_page_back(unsigned char *page) {
    size_t kp = ebbi_os_page_size();
    for (int i = 0; i < 400; i++) {
        unsigned char *p = ebb_malloc(40);
        if (p >= page && p + 48 <= page + kp) return p;
    }
    _exit(12);
}

static void misuse_double_free(void) {
    unsigned char *p = child_block_in_page_back(child_pinned_span());
    ebb_free(p);
    ebb_free(p);
}
static void misuse_interior(void) {
    unsigned char *p = child_block_in_page_back(child_pinned_span());
    ebb_free(p + 16);
}
static void misuse_overwritten_link(void) {
    unsigned char *page = child_pinned_span();
    unsigned char *a = child_block_in_page_back(page), *q = child_block_in_page_back(page);
    ebb_free(a);
    ebb_free(q); /* the thread's list: q -> a */
    memset(q, 'A', 16);
    void *r1 = ebb_malloc(40), *r2 = ebb_malloc(40);
    printf("malloc returned %p then %p\n", r1, r2);
}
/* The block was freed, its page went back (its key with it), then it is freed again:
 * the key is gone, but while the span has pages gone every free of its blocks takes the
 * slow path, which stops this one at the free itself. */
static void misuse_double_free_while_gone(void) {
    unsigned char *gone = first_block_in(child_pinned_span());
    void *t[8]; /* the thread's list has room, so that the fast path would take the block */
    unsigned cls = ebbi_size_to_class(40);
    for (int i = 0; i < 8; i++) t[i] = ebb_malloc(40);
    for (int i = 0; i < 8; i++) ebb_free(t[i]);
    for (int i = 0; i < 4; i++) t[i] = ebb_malloc(40);
    if (ebbi_tc_list_len(cls) >= ebbi_tc_list_max(cls)) _exit(14);
    ebb_free(gone); /* a block that was freed before its page went */
    fprintf(stderr, "free returned\n");
    ebb_malloc_trim(0);
}
/* A write after free into a block whose page went back: the page shows it when
 * allocation brings the page back (it must read as zero). */
static void misuse_write_while_gone(void) {
    unsigned char *gone = first_block_in(child_pinned_span());
    memset(gone, 1, 40);
    for (int i = 0; i < 400; i++) ebb_malloc(40); /* drains the span's free list */
}

/* A span whose pages went back while it held live blocks (malloc_trim takes busy spans
 * too) sends its frees to the slow path; once its blocks are freed often, it is in use:
 * its pages come back and its frees are fast again.  Exit status 0, or which check failed. */
static int child_busy_span_gets_its_pages_back(void) {
    unsigned char *page = child_pinned_span();
    struct ebb_span *s = pinned_span;
    unsigned cls = ebbi_size_to_class(40);
    uintptr_t a = (uintptr_t)page;
    const struct ebb_cm_entry *e = (const struct ebb_cm_entry *)(ebbi_cm_root[a >> EBB_CM_ROOT_SHIFT] +
                                                                 (a >> EBB_PAGE_SHIFT) * sizeof *e);
    if (!s->gone) return 20;
    if (e->cls != 0) return 21; /* its frees go to the slow path */
    int rounds = 0;
    for (; rounds < 1000 && s->gone; rounds++) {
        unsigned char *p = ebb_malloc(40);
        if (ebbi_pm_span((uintptr_t)p) != s) return 22; /* the only span with free blocks */
        memset(p, 7, 40);
        ebb_free(p);
    }
    printf("# pages back after %d frees into the span\n", rounds);
    fflush(stdout);
    if (s->gone || s->absent) return 23;
    if (e->cls != cls) return 24; /* fast again */
    if (released_in(0, a, a + ebbi_os_page_size()) == 0) return 25;
    /* every block of the span is whole again: take them all, check, give them back */
    enum { N = 200 };
    unsigned char *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = ebb_malloc(40);
        memset(b[i], i, 40);
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 40; j++)
            if (b[i][j] != (unsigned char)i) return 26;
    for (int i = 0; i < N; i++) ebb_free(b[i]);
    return 0;
}

/* fn in a forked child, which must exit 0 (its exit code names the check that failed). */
static void in_child(int (*fn)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fn());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status))
        fail_msg("child: status %#x (exit code = the check that failed)", status);
}

static void busy_span_gets_its_pages_back(void **st) {
    (void)st;
    in_child(child_busy_span_gets_its_pages_back);
}

/* Frees in random order, then a refill: a span keeps its free objects as bits, and a
 * refill takes the lowest free objects of one span, linked in address order, whatever
 * order they were freed in.  Every block that comes back is one the program freed, and
 * the chain is checked against the span and the blocks (in a child, by exit code). */
enum { RANDOM_N = 4096, RANDOM_PIN = 17 };
static unsigned char *rnd_blocks[RANDOM_N];
static int child_refill_in_address_order(void) {
    const unsigned cls = ebbi_size_to_class(40);
    uint32_t order[RANDOM_N], x = 12345;
    for (int i = 0; i < RANDOM_N; i++) {
        rnd_blocks[i] = ebb_malloc(40);
        memset(rnd_blocks[i], 0xab, 40);
        order[i] = (uint32_t)i;
    }
    for (int i = RANDOM_N - 1; i > 0; i--) {
        x = x * 1103515245u + 12345u;
        int j = (int)((x >> 8) % (uint32_t)(i + 1));
        uint32_t t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int i = 0; i < RANDOM_N; i++)
        if (order[i] % RANDOM_PIN) ebb_free(rnd_blocks[order[i]]);
    ebbi_tc_flush_self();
    ebbi_central_trim(true); /* the transfer cache's chains onto their spans */
    if (ebbi_central_verify()) return 10;
    void *head, *tail;
    size_t got = ebbi_central_pop(cls, 32, &head, &tail);
    if (got != 32) return 11;
    struct ebb_span *s = ebbi_pm_span((uintptr_t)head);
    uintptr_t prev = 0;
    size_t n = 0;
    for (void *o = head; o; o = ebbi_next(o), n++) {
        if (ebbi_pm_span((uintptr_t)o) != s) return 12; /* one span */
        if ((uintptr_t)o <= prev) return 13;            /* in address order */
        int idx = -1;
        for (int i = 0; i < RANDOM_N && idx < 0; i++)
            if (rnd_blocks[i] == o) idx = i;
        if (idx < 0 || idx % RANDOM_PIN == 0) return 14; /* one the program freed */
        if (n == 31 && o != tail) return 15;
        prev = (uintptr_t)o;
    }
    if (n != 32) return 16;
    /* the lowest: no freed block of s below the last one taken is still free on s */
    for (int i = 0; i < RANDOM_N; i++) {
        uintptr_t a = (uintptr_t)rnd_blocks[i];
        if (i % RANDOM_PIN == 0 || ebbi_pm_span(a) != s || a >= prev) continue;
        bool taken = false;
        for (void *o = head; o && !taken; o = ebbi_next(o)) taken = (uintptr_t)o == a;
        if (!taken) return 17;
    }
    ebbi_central_push(cls, head, tail, got);
    if (ebbi_central_verify()) return 18;
    for (int i = 0; i < RANDOM_N; i += RANDOM_PIN) ebb_free(rnd_blocks[i]);
    return 0;
}

static void refill_takes_lowest_in_address_order(void **st) {
    (void)st;
    in_child(child_refill_in_address_order);
}

static void expect_abort(void (*fn)(void), const char *want) {
    char msg[2048];
    int status = child_stderr(fn, msg, sizeof msg);
    printf("# %s: %s", want, msg[0] ? msg : "(nothing)\n");
    if (!died_of_abort(status, msg, want)) fail_msg("no SIGABRT naming '%s'", want);
    if (strstr(msg, "free returned")) fail_msg("the fault was seen only after the free returned: %s", msg);
}

static void misuse_fires_on_blocks_of_pages_back(void **st) {
    (void)st;
    expect_abort(misuse_double_free, "double free");
    expect_abort(misuse_interior, "invalid pointer");
    expect_abort(misuse_overwritten_link, "corrupted free list");
    expect_abort(misuse_double_free_while_gone, "double free");
    expect_abort(misuse_write_while_gone, "freed twice or used after free");
}

/* Whatever a test left (it may have stopped at a failed check): freed, and trimmed. */
static int teardown(void **st) {
    (void)st;
    age_rule_off(false);
    for (size_t i = 0; i < nblk; i++) ebb_free(blk[i].p);
    nblk = 0;
    for (int i = 0; i < 4 * PER; i++)
        if (full[i]) ebb_free(full[i]), full[i] = NULL;
    free_pins();
    ebb_malloc_trim(0);
    return 0;
}

int main(void) {
    setenv("EBB_RELEASE_MS", "300", 1);
    setenv("EBB_HUGEPAGES", "0", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(trim_gives_back_free_pages_of_pinned_spans, teardown),
        cmocka_unit_test_teardown(allocation_brings_pages_back, teardown),
        cmocka_unit_test_teardown(idle_pinned_spans_release_on_their_own, teardown),
        cmocka_unit_test(misuse_fires_on_blocks_of_pages_back),
        cmocka_unit_test(busy_span_gets_its_pages_back),
        cmocka_unit_test(refill_takes_lowest_in_address_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
