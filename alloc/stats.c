/* stats.c: where the memory is: ebb_stats and glibc's reports (mallinfo, mallinfo2,
 * malloc_stats, malloc_info).  The live stats page that publishes it is shm.c.
 *
 * Every byte ebbmalloc holds from the kernel is in exactly one place:
 *   page heap: free resident (page_free, with spans whose madvise is under way) or free
 *   released (released), or handed out as a span; a SMALL span's bytes are objects with
 *   the program (in_use), objects in thread caches (thread_cache), or free objects,
 *   transfer-cache batches and the span's unusable head (central), less the kernel pages
 *   of free objects that central.c gave back (released); LARGE and MAPPED spans are
 *   in_use.  Metadata is ebbmalloc's own records.
 * Two sides are counted, each where it changes, and neither is derived from the other:
 *   the whole: os.c keeps the kernel's side of the heap's memory (the page heap's chunks
 *   as they are mapped, blocks' own mappings as they are mapped, resized and unmapped,
 *   pages given back and taken back: ebbi_os_heap_counts); metadata is counted
 *   by meta.c and pagemap.c where their records are mapped and given back.  resident =
 *   heap mapped - heap not resident + metadata, released = heap not resident, mapped =
 *   heap mapped + metadata (with the library's own central lists and class table,
 *   ebbi_static_bytes).
 *   the parts: objects handed out by each central list (pop and push, under its lock),
 *   objects in thread caches (each list's max - room, which the fast paths keep), free
 *   and transfer-cache objects of each central list and its spans' heads, SMALL and
 *   LARGE span bytes as the page heap hands them out and takes them back, MAPPED spans'
 *   bytes, the page heap's free resident bytes.  in_use = handed out - cached + LARGE +
 *   MAPPED.
 * So resident = in_use + thread_cache + central + page_free + metadata holds only if
 * every counter is right, and the tests check it: exactly in a snapshot no other thread
 * changes, within what moved meanwhile otherwise (each part is read at its own moment),
 * and against the kernel's resident set.  ebbi_stats_verify checks the counters the sum
 * does not see (the page heap's against the OS layer's, its SMALL bytes against the
 * central lists'). */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

struct class_totals {
    size_t span_bytes; /* of SMALL spans, as the central lists count them */
    size_t out_bytes;  /* objects handed out (caches and program) */
    size_t free_bytes; /* free objects, transfer caches, and the spans' unusable heads */
    size_t released;   /* kernel pages of live spans given back */
    size_t growing;    /* spans being made, counted by the page heap only */
    size_t free_count[EBB_NCLASS];
};

static void central_totals(struct class_totals *t) {
    memset(t, 0, sizeof *t);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        struct ebb_central *ce = &ebbi_central[c];
        const struct ebb_class_info *ci = &ebbi_classes[c];
        ebbi_lock(&ce->lock);
        size_t spans = ce->spans;
        size_t free_obj = ce->free_objects + ce->xfer_objects;
        size_t out = ce->handed_out;
        size_t released = ce->released;
        t->growing += ce->growing;
        ebbi_unlock(&ce->lock);
        t->released += released;
        size_t sb = spans * ci->pages * EBB_PAGE;
        t->span_bytes += sb;
        t->out_bytes += out * ci->size;
        t->free_bytes += free_obj * ci->size + (sb - spans * ebbi_class_objects(c) * ci->size);
        t->free_count[c] = free_obj;
    }
}

/* The page heap's counters that change when spans move between it, the central lists,
 * the program and the kernel. */
static bool ph_same(const struct ebb_page_heap_stats *a, const struct ebb_page_heap_stats *b) {
    return a->mapped == b->mapped && a->free_res == b->free_res && a->released == b->released &&
           a->small == b->small && a->large == b->large && a->mapped_direct == b->mapped_direct &&
           a->releasing == b->releasing;
}

/* The page heap's counters, the OS layer's and the central lists', read so that they
 * agree where they can.  The central lists are read one lock at a time: a span that
 * moved to or from the page heap meanwhile, or a page given back, would be counted on
 * neither side or on both.  So the page heap and the OS layer are read before and after,
 * and the walk is repeated (32 times at most) until they did not change across it and
 * no span was being made for a class (the page heap's SMALL before the class counts
 * it). */
static void snapshot(struct ebb_page_heap_stats *ph, struct class_totals *ct, size_t *heap_mapped,
                     size_t *heap_gone) {
    struct ebb_page_heap_stats ph2;
    size_t m2, g2;
    for (int tries = 0;; tries++) {
        ebbi_os_heap_counts(heap_mapped, heap_gone);
        ebbi_page_heap_stats(ph);
        central_totals(ct);
        ebbi_page_heap_stats(&ph2);
        ebbi_os_heap_counts(&m2, &g2);
        if (ph_same(ph, &ph2) && !ct->growing && m2 == *heap_mapped && g2 == *heap_gone) return;
        if (tries == 31) return;
    }
}

/* ebbmalloc's own variables that initialisation writes across (ebbi_central_init sets
 * every class's limit, each record shorter than a kernel page; the size-to-class table is
 * filled), so that every kernel page they overlap is resident from then on: counted in
 * metadata with the records and the page map (which counts its roots itself).  The rest
 * of the library's variables are a few pages. */
static size_t pages_over(const void *p, size_t n) {
    size_t k = ebbi_os_page_size();
    uintptr_t a = (uintptr_t)p;
    return ((a + n + k - 1) / k - a / k) * k;
}
size_t ebbi_static_bytes(void) {
    return pages_over(ebbi_central, sizeof ebbi_central) + pages_over(ebbi_class_lut, sizeof ebbi_class_lut);
}

EBB_EXPORT void ebb_stats(struct ebb_stats *st) {
    memset(st, 0, sizeof *st);
    if (atomic_load(&ebbi_init_state) != 2) return;
    struct ebb_page_heap_stats ph;
    struct class_totals ct;
    size_t threads, heap_mapped, heap_gone;
    snapshot(&ph, &ct, &heap_mapped, &heap_gone);
    size_t tc = ebbi_tc_cached_bytes(&threads);
    /* The whole, from the OS layer and the metadata's own counts. */
    st->metadata = ebbi_meta_bytes() + ebbi_pm_bytes() + ebbi_static_bytes();
    st->released = heap_gone;
    st->resident = heap_mapped - heap_gone + st->metadata;
    st->mapped = heap_mapped + st->metadata;
    /* The parts, each from its own counter.  Objects a cache takes or gives back while
     * this reads may be seen cached and not yet handed out: the difference would wrap,
     * so there it reads as none in use (no snapshot taken alone can show it). */
    size_t small_in_use = ct.out_bytes > tc ? ct.out_bytes - tc : 0;
    st->in_use = small_in_use + ph.large + ph.mapped_direct;
    st->thread_cache = tc;
    st->central = ct.free_bytes - ct.released;
    /* spans whose madvise is under way are still resident */
    st->page_free = ph.free_res + ph.releasing;
    st->peak_in_use = ph.peak_used > st->in_use ? ph.peak_used : st->in_use;
    st->threads = threads;
    st->release_calls = ph.release_calls;
    st->released_total = ph.released_total;
    st->cgroup_limit = ebbi_cgroup_limit();
    st->soft_limit = ebbi_soft_limit();
    st->idle_caches_emptied = ebbi_tc_idle_emptied();
}

EBB_EXPORT void ebb_flow(struct ebb_flow *f) {
    memset(f, 0, sizeof *f);
    if (atomic_load(&ebbi_init_state) != 2) return;
    struct ebb_page_heap_stats ph;
    ebbi_page_heap_stats(&ph);
    f->grown = ph.grown_total;
    f->direct = ph.direct_total;
    f->released_timer = ph.released_by[EBB_WHY_TIMER];
    f->released_cap = ph.released_by[EBB_WHY_CAP];
    f->released_trade = ph.released_by[EBB_WHY_TRADE];
    f->released_trim = ph.released_by[EBB_WHY_TRIM];
    f->released_soft = ph.released_by[EBB_WHY_SOFT];
    f->faulted = ph.faulted_bytes;
    f->refaulted = ph.refault_bytes;
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        struct ebb_central *ce = &ebbi_central[c];
        ebbi_lock(&ce->lock);
        f->released_live += ce->pages_out;
        f->live_back += ce->pages_back;
        ebbi_unlock(&ce->lock);
    }
}

/* The counters the identity does not see, each against another counted elsewhere.  Exact
 * only while no other thread allocates, frees or releases (the background thread too). */
const char *ebbi_stats_verify(void) {
    struct ebb_page_heap_stats ph;
    struct class_totals ct;
    size_t heap_mapped, heap_gone;
    snapshot(&ph, &ct, &heap_mapped, &heap_gone);
    if (ph.mapped != heap_mapped) return "the page heap's mapped bytes differ from the OS layer's";
    if (ph.mapped_direct != ebbi_os_direct_bytes())
        return "the bytes of blocks with mappings of their own differ from the OS layer's";
    if (ph.released - ph.releasing + ct.released != heap_gone)
        return "released bytes differ from the OS layer's";
    if (ph.small != ct.span_bytes) return "SMALL span bytes differ between page heap and central lists";
    if (ph.small + ph.large + ph.mapped_direct + ph.free_res + ph.released != ph.mapped)
        return "the page heap's spans do not add up to what it mapped";
    if (ct.out_bytes + ct.free_bytes != ct.span_bytes)
        return "the central lists' objects do not fill their spans";
    return NULL;
}

/* ---------------------------------------------------------------- glibc's reports */
EBB_EXPORT struct mallinfo2 ebb_mallinfo2(void) {
    struct ebb_stats st;
    struct ebb_page_heap_stats ph;
    ebb_stats(&st);
    ebbi_page_heap_stats(&ph);
    struct mallinfo2 mi = {0};
    mi.arena = st.mapped - ph.mapped_direct;
    mi.ordblks = 1;
    mi.hblks = ph.mapped_count;
    mi.hblkhd = ph.mapped_direct;
    mi.usmblks = 0;
    mi.fsmblks = st.thread_cache + st.central;
    mi.uordblks = st.in_use;
    mi.fordblks = st.thread_cache + st.central + st.page_free;
    mi.keepcost = st.page_free;
    return mi;
}

static int clamp_int(size_t v) { return v > INT32_MAX ? INT32_MAX : (int)v; }

EBB_EXPORT struct mallinfo ebb_mallinfo(void) {
    struct mallinfo2 m2 = ebb_mallinfo2();
    struct mallinfo mi = {0};
    mi.arena = clamp_int(m2.arena);
    mi.ordblks = clamp_int(m2.ordblks);
    mi.hblks = clamp_int(m2.hblks);
    mi.hblkhd = clamp_int(m2.hblkhd);
    mi.fsmblks = clamp_int(m2.fsmblks);
    mi.uordblks = clamp_int(m2.uordblks);
    mi.fordblks = clamp_int(m2.fordblks);
    mi.keepcost = clamp_int(m2.keepcost);
    return mi;
}

static size_t line(char *b, size_t n, const char *label, size_t v) {
    char num[32];
    int l = ebbi_snprintf(num, sizeof num, "%zu", v);
    size_t o = (size_t)ebbi_snprintf(b, n, "%s= ", label);
    for (int i = l; i < 10 && o + 1 < n; i++) b[o++] = ' ';
    o += (size_t)ebbi_snprintf(b + o, n - o, "%s\n", num);
    return o;
}

/* glibc's fields (one "arena": ebbmalloc has none), then ebbmalloc's breakdown.  Written
 * without stdio so it works anywhere, even at exit. */
static void stats_report(int fd) {
    struct ebb_stats st;
    struct ebb_page_heap_stats ph;
    ebb_stats(&st);
    ebbi_page_heap_stats(&ph);
    char b[2048];
    size_t o = 0, n = sizeof b;
    o += (size_t)ebbi_snprintf(b + o, n - o, "Arena 0:\n");
    o += line(b + o, n - o, "system bytes     ", st.resident);
    o += line(b + o, n - o, "in use bytes     ", st.in_use);
    o += (size_t)ebbi_snprintf(b + o, n - o, "Total (incl. mmap):\n");
    o += line(b + o, n - o, "system bytes     ", st.resident);
    o += line(b + o, n - o, "in use bytes     ", st.in_use);
    o += line(b + o, n - o, "max mmap regions ", ph.mapped_count);
    o += line(b + o, n - o, "max mmap bytes   ", ph.mapped_direct);
    o += (size_t)ebbi_snprintf(b + o, n - o, "ebbmalloc %s:\n", ebb_version());
    o += line(b + o, n - o, "in use           ", st.in_use);
    o += line(b + o, n - o, "thread caches    ", st.thread_cache);
    o += line(b + o, n - o, "central          ", st.central);
    o += line(b + o, n - o, "free resident    ", st.page_free);
    o += line(b + o, n - o, "metadata         ", st.metadata);
    size_t records, record_bytes;
    ebbi_meta_records(&records, &record_bytes);
    o += line(b + o, n - o, " span records    ", records);
    o += line(b + o, n - o, " their pages     ", record_bytes);
    o += line(b + o, n - o, " page map        ", ebbi_pm_bytes());
    o += line(b + o, n - o, " static          ", ebbi_static_bytes());
    o += line(b + o, n - o, "resident         ", st.resident);
    o += line(b + o, n - o, "released         ", st.released);
    o += line(b + o, n - o, "mapped           ", st.mapped);
    o += line(b + o, n - o, "peak in use      ", st.peak_in_use);
    o += line(b + o, n - o, "threads          ", st.threads);
    o += line(b + o, n - o, "release calls    ", st.release_calls);
    o += line(b + o, n - o, "released total   ", st.released_total);
    o += line(b + o, n - o, " by the timer    ", ph.released_by[EBB_WHY_TIMER]);
    o += line(b + o, n - o, " by the cap      ", ph.released_by[EBB_WHY_CAP]);
    o += line(b + o, n - o, " by the trade    ", ph.released_by[EBB_WHY_TRADE]);
    o += line(b + o, n - o, " by malloc_trim  ", ph.released_by[EBB_WHY_TRIM]);
    o += line(b + o, n - o, " by soft limit   ", ph.released_by[EBB_WHY_SOFT]);
    o += line(b + o, n - o, "faulted in       ", ph.faulted_bytes);
    o += line(b + o, n - o, " refaulted       ", ph.refault_bytes);
    o += line(b + o, n - o, "reuse floor      ", ph.reuse_floor);
    o += line(b + o, n - o, "burst floor      ", ph.burst_floor);
    o += line(b + o, n - o, "cgroup limit     ", st.cgroup_limit);
    o += line(b + o, n - o, "soft limit       ", st.soft_limit);
    o += line(b + o, n - o, "cgroup cpus x100 ", (size_t)(ebbi_cgroup_cpus() * 100));
    ebbi_write_fd(fd, b, o);
}

EBB_EXPORT void ebb_malloc_stats(void) { stats_report(2); }

/* EBB_STATS=1: the report at exit goes to a copy of stderr taken at start, because many
 * programs close stderr on their way out (coreutils do). */
static int exit_fd = 2;
void ebbi_stats_init(void) {
    if (!ebbi_opt(EBB_OPT_STATS)) return;
    int fd = ebbi_os_dup_fd(2, 100);
    if (fd >= 0) exit_fd = fd;
}

EBB_EXPORT int ebb_malloc_info(int options, FILE *fp) {
    if (options != 0) {
        errno = EINVAL;
        return -1;
    }
    struct ebb_stats st;
    struct class_totals ct;
    struct ebb_page_heap_stats ph;
    ebb_stats(&st);
    central_totals(&ct);
    ebbi_page_heap_stats(&ph);
    size_t free_count = 0;
    fputs("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", fp);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        if (!ct.free_count[c]) continue;
        size_t sz = ebbi_classes[c].size;
        fprintf(fp, "  <size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\"/>\n",
                (size_t)ebbi_classes[c - 1].size + 1, sz, sz * ct.free_count[c], ct.free_count[c]);
        free_count += ct.free_count[c];
    }
    fputs("</sizes>\n", fp);
    fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
    fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", free_count,
            (size_t)(st.central + st.page_free));
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", (size_t)st.resident);
    fprintf(fp, "<system type=\"max\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fputs("</heap>\n", fp);
    fprintf(fp, "<total type=\"fast\" count=\"0\" size=\"0\"/>\n");
    fprintf(fp, "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n", free_count,
            (size_t)(st.central + st.page_free));
    fprintf(fp, "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n", ph.mapped_count, ph.mapped_direct);
    fprintf(fp, "<system type=\"current\" size=\"%zu\"/>\n", (size_t)st.resident);
    fprintf(fp, "<system type=\"max\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"total\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp, "<aspace type=\"mprotect\" size=\"%zu\"/>\n", (size_t)st.mapped);
    fprintf(fp,
            "<ebbmalloc in_use=\"%llu\" thread_cache=\"%llu\" central=\"%llu\" page_free=\"%llu\" "
            "released=\"%llu\" metadata=\"%llu\" resident=\"%llu\" mapped=\"%llu\" threads=\"%llu\"/>\n",
            (unsigned long long)st.in_use, (unsigned long long)st.thread_cache,
            (unsigned long long)st.central, (unsigned long long)st.page_free, (unsigned long long)st.released,
            (unsigned long long)st.metadata, (unsigned long long)st.resident, (unsigned long long)st.mapped,
            (unsigned long long)st.threads);
    fputs("</malloc>\n", fp);
    return 0;
}

/* EBB_STATS=2: also one line per size class that holds memory or gave pages back: the
 * bytes of its live spans' kernel pages given back now, ever, and brought back ever. */
static void class_report(int fd) {
    char b[200];
    int n = ebbi_snprintf(b, sizeof b,
                          "class     size  spans  span-bytes  free-objects  in-transfer"
                          "  released  released-ever  brought-back\n");
    ebbi_write_fd(fd, b, (size_t)n);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        struct ebb_central *ce = &ebbi_central[c];
        ebbi_lock(&ce->lock);
        size_t spans = ce->spans, fo = ce->free_objects, tco = ce->xfer_objects;
        size_t rel = ce->released, out = ce->pages_out, back = ce->pages_back;
        ebbi_unlock(&ce->lock);
        if (!spans && !out) continue;
        n = ebbi_snprintf(b, sizeof b, "%u %zu %zu %zu %zu %zu %zu %zu %zu\n", c,
                          (size_t)ebbi_classes[c].size, spans, spans * ebbi_classes[c].pages * EBB_PAGE, fo,
                          tco, rel, out, back);
        ebbi_write_fd(fd, b, (size_t)n);
    }
}

void ebbi_stats_at_exit(void) {
    stats_report(exit_fd);
    if (ebbi_opt(EBB_OPT_STATS) >= 2) class_report(exit_fd);
}

#if EBB_OVERRIDE
struct mallinfo2 mallinfo2(void) __attribute__((alias("ebb_mallinfo2"), visibility("default")));
struct mallinfo mallinfo(void) __attribute__((alias("ebb_mallinfo"), visibility("default")));
void malloc_stats(void) __attribute__((alias("ebb_malloc_stats"), visibility("default")));
int malloc_info(int, FILE *) __attribute__((alias("ebb_malloc_info"), visibility("default")));
#endif
