/* page_heap.c: spans of whole 8 KiB pages.
 *
 * Free spans are kept in two sets that never merge with each other: resident ones (their
 * pages may be in RAM) and released ones (returned with MADV_DONTNEED, reading as zero).
 * Within a set, neighbours coalesce on free.  Allocation takes the best fit from the
 * resident set first, then from the released set, and maps more only when neither fits.
 * Resident free spans are also on an age list, oldest first, which is what the release
 * policy walks: a span's age is the time it was last freed or merged.
 *
 * Everything here runs under ebbi_ph_lock. */
#include <string.h>

#include "internal.h"

#define EXACT_MAX 128 /* free lists for 1..128 pages; longer spans share one list */
#define HUGE_SIZE ((size_t)2 << 20)
/* Resident free memory below this is never traded for a request (see page_alloc). */
#define SWAP_FLOOR ((size_t)16 << 20)

struct free_set {
    struct ebb_span_list exact[EXACT_MAX + 1];
    struct ebb_span_list big;
    uint64_t nonempty[(EXACT_MAX + 1 + 63) / 64]; /* bit k: exact[k] has spans */
};

ebb_lock_t ebbi_ph_lock;
/* SPAN_RELEASING spans (see ebbi_page_release_finish); how many are not in flight. */
static struct ebb_span_list releasing;
static size_t releasing_waiting;
struct ebb_page_heap_stats ebbi_ph_stats;
static struct free_set set_resident, set_released;
/* Age list of resident free spans, oldest at the head.  Invariant: free_since_ms never
 * decreases from head to tail (pieces cut from a span keep its place and its age). */
static struct ebb_span *lru_head, *lru_tail;

#define LRU_PREV(s) ((s)->lru_prev)
#define LRU_NEXT(s) ((s)->lru_next)

/* ---------------------------------------------------------------- span lists */
void ebbi_span_list_push(struct ebb_span_list *l, struct ebb_span *s) {
    s->prev = NULL;
    s->next = l->head;
    if (l->head) l->head->prev = s;
    l->head = s;
    l->count++;
    s->on_list = 1;
}

void ebbi_span_list_remove(struct ebb_span_list *l, struct ebb_span *s) {
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next) s->next->prev = s->prev;
    s->prev = s->next = NULL;
    l->count--;
    s->on_list = 0;
}

/* Where on the age list: after a given span, NULL for the oldest end, AT_TAIL for the
 * youngest end. */
#define AT_TAIL ((struct ebb_span *)-1)

static void lru_insert(struct ebb_span *s, struct ebb_span *after) {
    if (after == AT_TAIL) after = lru_tail;
    LRU_PREV(s) = after;
    LRU_NEXT(s) = after ? LRU_NEXT(after) : lru_head;
    if (LRU_NEXT(s))
        LRU_PREV(LRU_NEXT(s)) = s;
    else
        lru_tail = s;
    if (after)
        LRU_NEXT(after) = s;
    else
        lru_head = s;
}

static void lru_remove(struct ebb_span *s) {
    if (LRU_PREV(s))
        LRU_NEXT(LRU_PREV(s)) = LRU_NEXT(s);
    else
        lru_head = LRU_NEXT(s);
    if (LRU_NEXT(s))
        LRU_PREV(LRU_NEXT(s)) = LRU_PREV(s);
    else
        lru_tail = LRU_PREV(s);
    LRU_PREV(s) = LRU_NEXT(s) = NULL;
}

/* ---------------------------------------------------------------- free sets */
static struct ebb_span_list *set_list(struct free_set *fs, size_t npages) {
    return npages <= EXACT_MAX ? &fs->exact[npages] : &fs->big;
}

/* Insert a FREE span into its set; `lru_after` places a resident span on the age list
 * (see AT_TAIL). */
static void set_insert(struct ebb_span *s, struct ebb_span *lru_after) {
    struct free_set *fs = s->released ? &set_released : &set_resident;
    ebbi_span_list_push(set_list(fs, s->npages), s);
    if (s->npages <= EXACT_MAX) fs->nonempty[s->npages / 64] |= 1ull << (s->npages % 64);
    size_t bytes = s->npages << EBB_PAGE_SHIFT;
    if (s->released) {
        ebbi_ph_stats.released += bytes;
    } else {
        /* the release tick reads free_res without the lock */
        __atomic_store_n(&ebbi_ph_stats.free_res, ebbi_ph_stats.free_res + bytes, __ATOMIC_RELAXED);
        lru_insert(s, lru_after);
    }
}

static void set_remove(struct ebb_span *s) {
    struct free_set *fs = s->released ? &set_released : &set_resident;
    struct ebb_span_list *l = set_list(fs, s->npages);
    ebbi_span_list_remove(l, s);
    if (s->npages <= EXACT_MAX && !l->head) fs->nonempty[s->npages / 64] &= ~(1ull << (s->npages % 64));
    size_t bytes = s->npages << EBB_PAGE_SHIFT;
    if (s->released) {
        ebbi_ph_stats.released -= bytes;
    } else {
        __atomic_store_n(&ebbi_ph_stats.free_res, ebbi_ph_stats.free_res - bytes, __ATOMIC_RELAXED);
        lru_remove(s);
    }
}

/* Pages a span must have so that `npages` pages starting at a multiple of `align_pages`
 * pages fit inside it. */
static bool fits(const struct ebb_span *s, size_t npages, size_t align_pages) {
    if (s->npages < npages) return false;
    if (align_pages <= 1) return true;
    uintptr_t a = (s->start + (align_pages << EBB_PAGE_SHIFT) - 1) &
                  ~((align_pages << EBB_PAGE_SHIFT) - 1);
    return a + (npages << EBB_PAGE_SHIFT) <= s->start + (s->npages << EBB_PAGE_SHIFT);
}

/* Best fit: smallest span that fits, lowest address among equals. */
static struct ebb_span *set_find(struct free_set *fs, size_t npages, size_t align_pages) {
    for (size_t k = npages; k <= EXACT_MAX; k++) {
        uint64_t bits = fs->nonempty[k / 64] >> (k % 64);
        if (!bits) {
            k = (k | 63);
            continue;
        }
        k += (size_t)__builtin_ctzll(bits);
        if (k > EXACT_MAX) break;
        struct ebb_span *best = NULL;
        for (struct ebb_span *s = fs->exact[k].head; s; s = s->next)
            if (fits(s, npages, align_pages) && (!best || s->start < best->start)) best = s;
        if (best) return best;
    }
    struct ebb_span *best = NULL;
    for (struct ebb_span *s = fs->big.head; s; s = s->next)
        if (fits(s, npages, align_pages) &&
            (!best || s->npages < best->npages || (s->npages == best->npages && s->start < best->start)))
            best = s;
    return best;
}

/* ---------------------------------------------------------------- free and coalesce */
static struct ebb_span *free_neighbour(uintptr_t page, bool released) {
    struct ebb_span *n = ebbi_pm_span(page);
    if (!n || n->state != SPAN_FREE || n->released != released) return NULL;
    return n;
}

/* Put a span (any former state, already off every list) into the page heap as FREE,
 * merging with free neighbours of the same residency. */
static void insert_free(struct ebb_span *s, bool released, uint64_t now, struct ebb_span *lru_after) {
    if (s->state == SPAN_SMALL) ebbi_pm_clear_span(s);
    s->state = SPAN_FREE;
    s->cls = 0;
    s->released = released;
    s->free_since_ms = now;
    s->freelist = NULL;
    s->end = NULL;
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    struct ebb_span *prev = free_neighbour(s->start - EBB_PAGE, released);
    if (prev && prev->start + (prev->npages << EBB_PAGE_SHIFT) == s->start) {
        set_remove(prev);
        ebbi_pm_set(prev->start + ((prev->npages - 1) << EBB_PAGE_SHIFT), NULL, 0);
        ebbi_pm_set(s->start, NULL, 0);
        s->start = prev->start;
        s->npages += prev->npages;
        if (prev->free_since_ms > s->free_since_ms) s->free_since_ms = prev->free_since_ms;
        if (lru_after == prev) lru_after = AT_TAIL;
        ebbi_span_delete(prev);
    }
    struct ebb_span *next = free_neighbour(end, released);
    if (next && next->start == end) {
        set_remove(next);
        ebbi_pm_set(end - EBB_PAGE, NULL, 0);
        ebbi_pm_set(end, NULL, 0);
        s->npages += next->npages;
        if (next->free_since_ms > s->free_since_ms) s->free_since_ms = next->free_since_ms;
        if (lru_after == next) lru_after = AT_TAIL;
        ebbi_span_delete(next);
    }
    ebbi_pm_set_span(s);
    set_insert(s, lru_after);
}

/* Resident free pages may be at most 1/EBB_FREE_RATIO of the pages in use, and at least
 * EBB_FREE_FLOOR (1/16 of the cgroup's memory limit if that is less; EBB_TRIM_THRESHOLD
 * if that is more); beyond that the oldest go back at once, whatever their age.  So a
 * burst of frees whose holes the next requests cannot use does not stay resident until
 * the timer.  The floor is generous because pages released here are often faulted in
 * again a moment later: on the arena-creep benchmark (2 CPUs, 5 runs) a floor of 8 MiB
 * made the load phase 1.11x glibc's time, 32 MiB 1.03x, 64 MiB 0.95x, with the same
 * peak RSS (the timer in release.c, not this cap, brings an idle process down). */
static void check_free_ratio(void) {
    size_t floor = EBB_FREE_FLOOR, lim = (size_t)ebbi_cgroup_limit() / 16;
    if (lim && lim < floor) floor = lim;
    if ((size_t)ebbi_opt(EBB_OPT_TRIM_THRESHOLD) > floor) floor = (size_t)ebbi_opt(EBB_OPT_TRIM_THRESHOLD);
    size_t used = ebbi_ph_stats.mapped - ebbi_ph_stats.free_res - ebbi_ph_stats.released;
    size_t cap = used / EBB_FREE_RATIO;
    if (cap < floor) cap = floor;
    if (ebbi_ph_stats.free_res > cap + cap / 4) /* hysteresis: release in chunks */
        ebbi_page_release_locked(UINT64_MAX, ebbi_ph_stats.free_res - cap);
}

void ebbi_page_free_locked(struct ebb_span *s) {
    ebb_assert(s->state == SPAN_SMALL || s->state == SPAN_LARGE);
    ebb_assert(!s->on_list);
    insert_free(s, false, ebbi_now_ms(), AT_TAIL);
    check_free_ratio();
    ebbi_check_soft_limit_locked();
}

void ebbi_page_free(struct ebb_span *s) {
    ebbi_lock(&ebbi_ph_lock);
    ebbi_page_free_locked(s);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish();
}

/* ---------------------------------------------------------------- allocate */
/* Cut [a, a + npages) out of free span s (already removed from its set).  The pieces
 * before and after stay free with s's age and residency, placed on the age list after
 * lru_pos (where s was).  Returns the record for the cut-out part. */
static struct ebb_span *carve(struct ebb_span *s, uintptr_t a, size_t npages,
                              struct ebb_span *lru_pos) {
    uintptr_t s_end = s->start + (s->npages << EBB_PAGE_SHIFT);
    uintptr_t a_end = a + (npages << EBB_PAGE_SHIFT);
    bool released = s->released;
    uint64_t age = s->free_since_ms;
    struct ebb_span *lead = NULL, *tail = NULL, *mid = s;
    ebbi_pm_clear_span(s);
    if (a > s->start) {
        mid = ebbi_span_new();
        if (!mid) return NULL;
        lead = s;
        lead->npages = (a - s->start) >> EBB_PAGE_SHIFT;
    }
    if (a_end < s_end) {
        tail = ebbi_span_new();
        if (!tail) {
            if (lead) ebbi_span_delete(mid);
            return NULL;
        }
    }
    mid->start = a;
    mid->npages = npages;
    mid->zeroed = released;
    if (lead) {
        lead->state = SPAN_FREE;
        lead->free_since_ms = age;
        ebbi_pm_set_span(lead);
        set_insert(lead, lru_pos);
    }
    if (tail) {
        tail->start = a_end;
        tail->npages = (s_end - a_end) >> EBB_PAGE_SHIFT;
        tail->state = SPAN_FREE;
        tail->released = released;
        tail->free_since_ms = age;
        ebbi_pm_set_span(tail);
        set_insert(tail, lead && !released ? lead : lru_pos);
    }
    return mid;
}

/* Map more memory into the released set (fresh pages are not resident). */
static bool grow(size_t npages, size_t align_pages) {
    size_t need = (npages + (align_pages > 1 ? align_pages : 0)) << EBB_PAGE_SHIFT;
    size_t size = need < HUGE_SIZE * 2 ? HUGE_SIZE * 2 : (need + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1);
    void *p = ebbi_os_map_aligned(size, HUGE_SIZE);
    if (!p) { /* the kernel refused a generous chunk: try exactly what is needed */
        size = need;
        p = ebbi_os_map_aligned(size, EBB_PAGE);
        if (!p) return false;
    }
    if (!ebbi_opt(EBB_OPT_HUGEPAGES)) ebbi_os_hugepage_hint(p, size, false);
    struct ebb_span *s = ebbi_span_new();
    if (!s || !ebbi_pm_ensure((uintptr_t)p, size)) {
        if (s) ebbi_span_delete(s);
        ebbi_os.unmap(p, size);
        return false;
    }
    ebbi_ph_stats.mapped += size;
    s->start = (uintptr_t)p;
    s->npages = size >> EBB_PAGE_SHIFT;
    insert_free(s, true, 0, AT_TAIL);
    return true;
}

struct ebb_span *ebbi_page_alloc_locked(size_t npages, size_t align_pages) {
    if (npages == 0 || npages > ((size_t)1 << (EBB_ADDR_BITS - EBB_PAGE_SHIFT - 1))) return NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct ebb_span *s = set_find(&set_resident, npages, align_pages);
        if (!s) {
            s = set_find(&set_released, npages, align_pages);
            /* No resident free span fits, so this raises RSS by npages.  Twice that
             * much of the oldest resident free memory goes back (the caller finishes
             * the release), so that pieces too small for what is asked do not stay
             * resident while RSS grows: on the arena-creep benchmark this took the
             * median of peak RSS over peak live from 1.15 to 1.12, at the same speed. */
            if (s && ebbi_ph_stats.free_res > SWAP_FLOOR) {
                ebbi_page_release_locked(UINT64_MAX, (npages << EBB_PAGE_SHIFT) * 2);
                s = set_find(&set_released, npages, align_pages); /* the sets changed */
            }
        }
        if (s) {
            struct ebb_span *lru_pos = s->released ? NULL : LRU_PREV(s);
            set_remove(s);
            /* The top end of s: the start of a block freed here stays free for longer
             * (unless the same size comes back), so that a second free of it is seen. */
            uintptr_t a = s->start + ((s->npages - npages) << EBB_PAGE_SHIFT);
            if (align_pages > 1) a &= ~((align_pages << EBB_PAGE_SHIFT) - 1);
            struct ebb_span *r = carve(s, a, npages, lru_pos);
            if (!r) { /* out of memory for a record: put s back whole */
                s->state = SPAN_FREE;
                ebbi_pm_set_span(s);
                set_insert(s, lru_pos);
                return NULL;
            }
            r->state = SPAN_LARGE; /* the caller sets the final state */
            r->on_list = 0;
            r->prev = r->next = NULL;
            ebbi_pm_set_span(r);
            size_t used = ebbi_ph_stats.mapped - ebbi_ph_stats.free_res - ebbi_ph_stats.released;
            if (used > ebbi_ph_stats.peak_used) ebbi_ph_stats.peak_used = used;
            return r;
        }
        if (attempt == 0 && !grow(npages, align_pages)) break;
    }
    return NULL;
}

struct ebb_span *ebbi_page_alloc(size_t npages, size_t align_pages) {
    ebbi_lock(&ebbi_ph_lock);
    struct ebb_span *s = ebbi_page_alloc_locked(npages, align_pages);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish();
    return s;
}

/* LARGE span: keep the first npages, free the rest.  False if nothing changed. */
bool ebbi_page_shrink(struct ebb_span *s, size_t npages) {
    if (npages >= s->npages || npages == 0) return false;
    struct ebb_span *t = ebbi_span_new();
    if (!t) return false;
    ebbi_lock(&ebbi_ph_lock);
    ebbi_pm_clear_span(s);
    t->start = s->start + (npages << EBB_PAGE_SHIFT);
    t->npages = s->npages - npages;
    t->state = SPAN_LARGE;
    s->npages = npages;
    ebbi_pm_set_span(s);
    insert_free(t, false, ebbi_now_ms(), AT_TAIL);
    ebbi_unlock(&ebbi_ph_lock);
    return true;
}

/* ---------------------------------------------------------------- own mappings */
struct ebb_span *ebbi_mapped_alloc(size_t size, size_t align) {
    if (size > ((size_t)1 << (EBB_ADDR_BITS - 1))) return NULL;
    size_t len = (size + EBB_PAGE - 1) & ~(EBB_PAGE - 1);
    void *p = ebbi_os_map_aligned(len, align > EBB_PAGE ? align : EBB_PAGE);
    if (!p) return NULL;
    struct ebb_span *s = ebbi_span_new();
    if (!s || !ebbi_pm_ensure((uintptr_t)p, len)) {
        if (s) ebbi_span_delete(s);
        ebbi_os.unmap(p, len);
        return NULL;
    }
    s->start = (uintptr_t)p;
    s->npages = len >> EBB_PAGE_SHIFT;
    s->state = SPAN_MAPPED;
    s->zeroed = 1;
    s->map_size = len;
    ebbi_lock(&ebbi_ph_lock);
    ebbi_pm_set_span(s);
    ebbi_ph_stats.mapped += len;
    ebbi_ph_stats.mapped_count++;
    ebbi_ph_stats.mapped_direct += len;
    size_t used = ebbi_ph_stats.mapped - ebbi_ph_stats.free_res - ebbi_ph_stats.released;
    if (used > ebbi_ph_stats.peak_used) ebbi_ph_stats.peak_used = used;
    ebbi_unlock(&ebbi_ph_lock);
    return s;
}

void ebbi_mapped_free(struct ebb_span *s) {
    ebbi_lock(&ebbi_ph_lock);
    ebbi_pm_clear_span(s);
    ebbi_ph_stats.mapped -= s->map_size;
    ebbi_ph_stats.mapped_count--;
    ebbi_ph_stats.mapped_direct -= s->map_size;
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_os.unmap((void *)s->start, s->map_size);
    ebbi_span_delete(s);
}

/* Grow or shrink a MAPPED span's mapping in place or by moving it (the kernel moves page
 * tables, nothing is copied).  The page map follows. */
bool ebbi_mapped_resize(struct ebb_span *s, size_t size) {
    size_t len = (size + EBB_PAGE - 1) & ~(EBB_PAGE - 1);
    if (len == s->map_size) return true;
    /* In place if the kernel can; else onto a fresh mapping that starts on an ebbmalloc
     * page (mremap alone may pick any kernel page) and that the page map covers. */
    if (!ebbi_pm_ensure(s->start, len)) return false;
    /* Under the lock, the old entries gone first: once the kernel has the old range back
     * it may hand it to another thread's mapping. */
    ebbi_lock(&ebbi_ph_lock);
    ebbi_pm_clear_span(s);
    void *to = NULL, *q = ebbi_os.remap((void *)s->start, s->map_size, len, NULL);
    if (!q && (to = ebbi_os_map_aligned(len, EBB_PAGE)) && ebbi_pm_ensure((uintptr_t)to, len))
        q = ebbi_os.remap((void *)s->start, s->map_size, len, to);
    if (!q) {
        ebbi_pm_set_span(s);
        ebbi_unlock(&ebbi_ph_lock);
        if (to) ebbi_os.unmap(to, len);
        return false;
    }
    ebbi_ph_stats.mapped += len - s->map_size;
    ebbi_ph_stats.mapped_direct += len - s->map_size;
    s->start = (uintptr_t)q;
    s->npages = len >> EBB_PAGE_SHIFT;
    s->map_size = len;
    ebbi_pm_set_span(s);
    size_t used = ebbi_ph_stats.mapped - ebbi_ph_stats.free_res - ebbi_ph_stats.released;
    if (used > ebbi_ph_stats.peak_used) ebbi_ph_stats.peak_used = used;
    ebbi_unlock(&ebbi_ph_lock);
    return true;
}

/* ---------------------------------------------------------------- release */
/* Return one resident free span to the kernel and move it to the released set.  With
 * huge pages allowed, only whole 2 MiB-aligned blocks inside it are released unless
 * `small_too`, so that a huge page is not split for a few kernel pages; the pieces
 * around stay resident with their age. */
static size_t release_span(struct ebb_span *s, bool small_too) {
    uintptr_t start = s->start, end = s->start + (s->npages << EBB_PAGE_SHIFT);
    uintptr_t a = start, b = end;
    if (!small_too && ebbi_thp_active) {
        a = (start + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1);
        b = end & ~(HUGE_SIZE - 1);
        if (a >= b) return 0;
    }
    struct ebb_span *lru_prev = LRU_PREV(s);
    set_remove(s);
    struct ebb_span *mid = carve(s, a, (b - a) >> EBB_PAGE_SHIFT, lru_prev);
    if (!mid) { /* no record for the split: release nothing */
        s->state = SPAN_FREE;
        ebbi_pm_set_span(s);
        set_insert(s, lru_prev);
        return 0;
    }
    /* The madvise runs after the lock is dropped (ebbi_page_release_finish): meanwhile
     * the span is on no free list, its neighbours see a state they do not merge with,
     * and it counts as released already. */
    mid->state = SPAN_RELEASING;
    mid->released = 1;
    mid->in_flight = 0;
    ebbi_pm_set_span(mid);
    ebbi_ph_stats.released += b - a;
    ebbi_ph_stats.release_calls++;
    ebbi_ph_stats.released_total += b - a;
    ebbi_span_list_push(&releasing, mid);
    __atomic_store_n(&releasing_waiting, releasing_waiting + 1, __ATOMIC_RELAXED);
    return b - a;
}

/* Back into the released set, once its pages went back. */
static void release_done(struct ebb_span *s, bool ok) {
    size_t bytes = s->npages << EBB_PAGE_SHIFT;
    ebbi_span_list_remove(&releasing, s);
    ebbi_ph_stats.released -= bytes;
    if (!ok) ebbi_ph_stats.released_total -= bytes; /* e.g. mlockall: still resident, not zero */
    insert_free(s, ok, ok ? 0 : ebbi_now_ms(), AT_TAIL);
}

static bool release_pages(struct ebb_span *s) {
    return ebbi_os.release((void *)s->start, s->npages << EBB_PAGE_SHIFT) == 0;
}

/* Returns to the kernel the spans cut out for release, without holding the page heap
 * lock, so that threads needing the page heap meanwhile do not wait for the system
 * calls.  Called after dropping the lock wherever a release may have happened; several
 * threads may be at it at once, each with the spans it took. */
void ebbi_page_release_finish(void) {
    if (!__atomic_load_n(&releasing_waiting, __ATOMIC_RELAXED)) return;
    struct ebb_span *mine = NULL;
    ebbi_lock(&ebbi_ph_lock);
    for (struct ebb_span *s = releasing.head; s; s = s->next) {
        if (s->in_flight) continue;
        s->in_flight = 1;
        s->lru_next = mine; /* lru links are unused while releasing */
        mine = s;
    }
    __atomic_store_n(&releasing_waiting, 0, __ATOMIC_RELAXED);
    ebbi_unlock(&ebbi_ph_lock);
    for (struct ebb_span *s = mine; s; s = s->lru_next) s->in_flight = release_pages(s) ? 1 : 2;
    ebbi_lock(&ebbi_ph_lock);
    for (struct ebb_span *s = mine, *next; s; s = next) {
        next = s->lru_next;
        release_done(s, s->in_flight == 1);
    }
    ebbi_unlock(&ebbi_ph_lock);
}

/* In a child of fork, the threads that had spans in flight are gone: release them here
 * (they must read as zero once they count as released). */
void ebbi_page_fork_child(void) {
    while (releasing.head) {
        struct ebb_span *s = releasing.head;
        release_done(s, release_pages(s));
    }
    releasing_waiting = 0;
}

size_t ebbi_page_release_locked(uint64_t older_than_ms, size_t goal) {
    size_t done = 0;
    size_t keep = (size_t)ebbi_opt(EBB_OPT_TRIM_THRESHOLD);
    bool everything = older_than_ms == 0 || older_than_ms == UINT64_MAX;
    /* Two passes: first whole huge pages only, then (for spans twice as old, or when
     * releasing everything) whatever is left. */
    for (int pass = 0; pass < 2 && done < goal; pass++) {
        struct ebb_span *s = lru_head;
        while (s && done < goal) {
            struct ebb_span *next = LRU_NEXT(s);
            if (!everything && s->free_since_ms > older_than_ms) break; /* the rest is younger */
            if (!everything && ebbi_ph_stats.free_res <= keep) break;
            bool small_too = pass == 1;
            if (small_too && !everything && ebbi_thp_active &&
                s->free_since_ms + (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) > older_than_ms) {
                s = next;
                continue;
            }
            done += release_span(s, small_too);
            s = next;
            /* release_span may have put pieces of s back on the age list before `next`
             * (they keep their age): they are older than `next` and are seen on the
             * next pass. */
        }
    }
    return done;
}

/* Release the free spans that were freed (or merged) at since_ms or later: memory the
 * release thread itself just took from idle caches. */
size_t ebbi_page_release_since_locked(uint64_t since_ms) {
    size_t done = 0;
    for (struct ebb_span *s = lru_tail, *prev; s && s->free_since_ms >= since_ms; s = prev) {
        prev = LRU_PREV(s);
        done += release_span(s, true);
    }
    return done;
}

uint64_t ebbi_page_oldest_free_ms(void) { return lru_head ? lru_head->free_since_ms : UINT64_MAX; }

void ebbi_page_heap_stats(struct ebb_page_heap_stats *st) {
    ebbi_lock(&ebbi_ph_lock);
    *st = ebbi_ph_stats;
    ebbi_unlock(&ebbi_ph_lock);
}

/* Walks every free list and the age list and checks them against the counters and the
 * page map.  For tests and debugging; caller holds no lock.  Returns NULL or what is wrong. */
const char *ebbi_page_heap_verify(void) {
    const char *err = NULL;
    size_t res = 0, rel = 0, lru = 0;
    ebbi_lock(&ebbi_ph_lock);
    for (int r = 0; r < 2 && !err; r++) {
        struct free_set *fs = r ? &set_released : &set_resident;
        for (size_t k = 0; k <= EXACT_MAX + 1 && !err; k++) {
            struct ebb_span_list *l = k <= EXACT_MAX ? &fs->exact[k] : &fs->big;
            for (struct ebb_span *s = l->head; s; s = s->next) {
                if (s->state != SPAN_FREE) err = "non-free span on a free list";
                else if (s->released != r) err = "span on the wrong free set";
                else if (k <= EXACT_MAX ? s->npages != k : s->npages <= EXACT_MAX) err = "span on the wrong size list";
                else if (ebbi_pm_span(s->start) != s) err = "page map misses a free span's first page";
                else if (ebbi_pm_span(s->start + ((s->npages - 1) << EBB_PAGE_SHIFT)) != s) err = "page map misses a free span's last page";
                if (r) rel += s->npages << EBB_PAGE_SHIFT;
                else res += s->npages << EBB_PAGE_SHIFT;
            }
        }
    }
    uint64_t last = 0;
    for (struct ebb_span *s = lru_head; s && !err; s = s->lru_next) {
        if (s->free_since_ms < last) err = "age list out of order";
        last = s->free_since_ms;
        lru += s->npages << EBB_PAGE_SHIFT;
    }
    if (!err && res != ebbi_ph_stats.free_res) err = "free_res counter differs from the lists";
    for (struct ebb_span *s = releasing.head; s; s = s->next) rel += s->npages << EBB_PAGE_SHIFT;
    if (!err && rel != ebbi_ph_stats.released) err = "released counter differs from the lists";
    if (!err && lru != res) err = "age list differs from the resident free lists";
    ebbi_unlock(&ebbi_ph_lock);
    return err;
}
