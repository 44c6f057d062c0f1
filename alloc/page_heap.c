/* page_heap.c: spans of whole 8 KiB pages.
 *
 * Free spans are kept in two sets that never merge with each other: resident ones (their
 * pages may be in RAM) and released ones (returned with MADV_DONTNEED, reading as zero).
 * Within a set, neighbours coalesce on free.  Allocation takes the best fit from the
 * resident set first, then from the released set, and maps more only when neither fits.
 * Resident free spans are also on an age list, oldest first, which is what the release
 * policy walks: a span's age is the time it was last freed or merged.
 *
 * Kernel pages bigger than ebbmalloc's (16 or 64 KiB on arm64; `kpage_big`): the kernel
 * drops memory in whole kernel pages, so
 *   - a release covers only the whole kernel pages inside the span (rounded inward):
 *     a kernel page that holds any byte not free is never dropped;
 *   - a resident free span that holds no whole kernel page cannot be released until it
 *     merges with a neighbour: it is kept off the age list (on `stuck` instead), so the
 *     release passes do not walk it again and again;
 *   - every released span starts and ends on a kernel page (invariant, checked by
 *     ebbi_page_heap_verify): a block carved from a released span takes the rest of the
 *     kernel pages it touches out of the released set as resident free memory, which is
 *     what they become when the block is written.  So a kernel page is wholly released or
 *     wholly not, and a freed block merges with the rest of its kernel pages.
 * With 4 KiB kernel pages every ebbmalloc page is two whole kernel pages and none of this
 * changes anything.
 *
 * Everything here runs under ebbi_ph_lock. */
#include <string.h>

#include "internal.h"

#define EXACT_MAX 128 /* free lists for 1..128 pages; longer spans share one list */
/* Resident free memory below this is never traded for a request (see page_alloc). */
#define SWAP_FLOOR ((size_t)16 << 20)

struct free_set {
    struct ebb_span_list exact[EXACT_MAX + 1];
    struct ebb_span_list big;
    uint64_t nonempty[(EXACT_MAX + 1 + 63) / 64]; /* bit k: exact[k] has spans */
};

ebb_lock_t ebbi_ph_lock;
/* SPAN_RELEASING spans (see ebbi_page_release_finish); how many are not in flight.
 * releasing_waiting is written under the lock and read without it, relaxed, as a hint
 * only: every thread that cuts a span out for release calls ebbi_page_release_finish
 * after dropping the lock and so reads its own increment (or a later 0 stored by a
 * thread that took its span), and the spans themselves are taken under the lock. */
static struct ebb_span_list cut_out;
static size_t releasing_waiting;
struct ebb_page_heap_stats ebbi_ph_stats;
static struct free_set set_resident, set_released;
/* Age list of resident free spans, oldest at the head.  Invariant: free_since_ms never
 * decreases from head to tail (pieces cut from a span keep its place and its age). */
static struct ebb_span *lru_head, *lru_tail;
/* Resident free spans that hold no whole kernel page, `stuck` set, linked through their
 * lru fields (in no order): in the resident set for allocation, but not on the age list.
 * Their bytes: ebbi_ph_stats.unreleasable.  Empty with 4 KiB kernel pages. */
static struct ebb_span *stuck_head;

/* The kernel page where it is bigger than an ebbmalloc page, else 0. */
static size_t kpage_big(void) {
    size_t k = ebbi_os_page_size();
    return k > EBB_PAGE ? k : 0;
}

static uintptr_t round_down(uintptr_t a, size_t unit) { return a & ~(uintptr_t)(unit - 1); }
static uintptr_t round_up(uintptr_t a, size_t unit) { return (a + unit - 1) & ~(uintptr_t)(unit - 1); }

/* Sizes of ebbmalloc's own mappings: whole ebbmalloc pages and whole kernel pages. */
static size_t map_round(size_t n) {
    size_t k = kpage_big(), unit = k ? k : EBB_PAGE;
    return n > SIZE_MAX - unit ? 0 : round_up(n, unit);
}

/* The span holds at least one whole kernel page, so a release can return something. */
static bool holds_kpage(const struct ebb_span *s) {
    size_t k = kpage_big();
    return !k || round_up(s->start, k) + k <= s->start + (s->npages << EBB_PAGE_SHIFT);
}

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
    if (s->prev) s->prev->next = s->next;
    else l->head = s->next;
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
    if (LRU_NEXT(s)) LRU_PREV(LRU_NEXT(s)) = s;
    else lru_tail = s;
    if (after) LRU_NEXT(after) = s;
    else lru_head = s;
}

static void lru_remove(struct ebb_span *s) {
    if (LRU_PREV(s)) LRU_NEXT(LRU_PREV(s)) = LRU_NEXT(s);
    else lru_head = LRU_NEXT(s);
    if (LRU_NEXT(s)) LRU_PREV(LRU_NEXT(s)) = LRU_PREV(s);
    else lru_tail = LRU_PREV(s);
    LRU_PREV(s) = LRU_NEXT(s) = NULL;
}

static void stuck_insert(struct ebb_span *s) {
    s->stuck = 1;
    LRU_PREV(s) = NULL;
    LRU_NEXT(s) = stuck_head;
    if (stuck_head) LRU_PREV(stuck_head) = s;
    stuck_head = s;
    ebbi_ph_stats.unreleasable += s->npages << EBB_PAGE_SHIFT;
}

static void stuck_remove(struct ebb_span *s) {
    if (LRU_PREV(s)) LRU_NEXT(LRU_PREV(s)) = LRU_NEXT(s);
    else stuck_head = LRU_NEXT(s);
    if (LRU_NEXT(s)) LRU_PREV(LRU_NEXT(s)) = LRU_PREV(s);
    LRU_PREV(s) = LRU_NEXT(s) = NULL;
    s->stuck = 0;
    ebbi_ph_stats.unreleasable -= s->npages << EBB_PAGE_SHIFT;
}

/* ---------------------------------------------------------------- free sets */
static struct ebb_span_list *set_list(struct free_set *fs, size_t npages) {
    return npages <= EXACT_MAX ? &fs->exact[npages] : &fs->big;
}

/* Insert a FREE span into its set; `lru_after` places a resident span on the age list
 * (see AT_TAIL), unless it holds no whole kernel page (then it is stuck). */
static void set_insert(struct ebb_span *s, struct ebb_span *lru_after) {
    struct free_set *fs = s->released ? &set_released : &set_resident;
    ebbi_span_list_push(set_list(fs, s->npages), s);
    if (s->npages <= EXACT_MAX) fs->nonempty[s->npages / 64] |= 1ull << (s->npages % 64);
    size_t bytes = s->npages << EBB_PAGE_SHIFT;
    if (s->released) {
        ebbi_ph_stats.released += bytes;
    } else {
        /* The release tick reads free_res without the lock, relaxed: a hint whether
         * there is something to release; the release itself runs under the lock. */
        __atomic_store_n(&ebbi_ph_stats.free_res, ebbi_ph_stats.free_res + bytes, __ATOMIC_RELAXED);
        if (holds_kpage(s)) lru_insert(s, lru_after);
        else stuck_insert(s);
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
        if (s->stuck) stuck_remove(s);
        else lru_remove(s);
    }
}

/* Pages a span must have so that `npages` pages starting at a multiple of `align_pages`
 * pages fit inside it. */
static bool fits(const struct ebb_span *s, size_t npages, size_t align_pages) {
    if (s->npages < npages) return false;
    if (align_pages <= 1) return true;
    uintptr_t a = (s->start + (align_pages << EBB_PAGE_SHIFT) - 1) & ~((align_pages << EBB_PAGE_SHIFT) - 1);
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
    s->stuck = 0;                     /* over in_flight, of a RELEASING span */
    s->lru_prev = s->lru_next = NULL; /* over what a SMALL span kept there */
    s->free_since_ms = now;
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

static size_t reuse_floor(uint64_t now);

/* Resident free pages may be at most 1/EBB_FREE_RATIO of the pages in use, and at least
 * EBB_FREE_FLOOR (1/16 of the cgroup's memory limit if that is less; EBB_TRIM_THRESHOLD
 * if that is more; the reuse floor below if that is more); beyond that the oldest go
 * back at once, whatever their age.  So a burst of frees whose holes the next requests
 * cannot use does not stay resident until the timer.  The floor is generous because pages released here are often faulted in
 * again a moment later: on the arena-creep benchmark (2 CPUs, 5 runs) a floor of 8 MiB
 * made the load phase 1.11x glibc's time, 32 MiB 1.03x, 64 MiB 0.95x, with the same
 * peak RSS (the timer in release.c, not this cap, brings an idle process down). */
/* Pages in use, blocks with mappings of their own included. */
static size_t in_use(void) { return ebbi_ph_stats.mapped - ebbi_ph_stats.free_res - ebbi_ph_stats.released; }

static size_t free_cap(void) {
    size_t floor = EBB_FREE_FLOOR, lim = (size_t)ebbi_cgroup_limit() / 16;
    if (lim && lim < floor) floor = lim;
    if ((size_t)ebbi_opt(EBB_OPT_TRIM_THRESHOLD) > floor) floor = (size_t)ebbi_opt(EBB_OPT_TRIM_THRESHOLD);
    size_t cap = in_use() / EBB_FREE_RATIO;
    return cap < floor ? floor : cap;
}

static void check_free_ratio(uint64_t now) {
    size_t cap = free_cap();
    /* Free memory in no whole kernel page cannot go back: it does not drive releases. */
    size_t releasable = ebbi_ph_stats.free_res - ebbi_ph_stats.unreleasable;
    size_t reuse = reuse_floor(now);
    if (reuse > cap) cap = reuse;
    if (releasable > cap + cap / 4) /* hysteresis: release in chunks */
        ebbi_page_release_locked(UINT64_MAX, releasable - cap, EBB_WHY_CAP);
}

static void recent_note(uintptr_t a, uintptr_t b, uint64_t now, bool pressed);

void ebbi_page_free_locked(struct ebb_span *s) {
    ebb_assert(s->state == SPAN_SMALL || s->state == SPAN_LARGE);
    ebb_assert(!s->on_list);
    /* A small-object span central.c gave back whole comes as released: all of it, as the
     * page heap holds every free span (central never returns one partly given back).  Its
     * release is recent, for the refault count, as the page heap's own are. */
    bool released = s->state == SPAN_SMALL && s->released;
    uint64_t now = ebbi_now_ms();
    if (s->state == SPAN_SMALL) ebbi_ph_stats.small -= s->npages << EBB_PAGE_SHIFT;
    else ebbi_ph_stats.large -= s->npages << EBB_PAGE_SHIFT;
    if (released) recent_note(s->start, s->start + (s->npages << EBB_PAGE_SHIFT), now, false);
    insert_free(s, released, released ? 0 : now, AT_TAIL);
    check_free_ratio(now);
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
static struct ebb_span *carve(struct ebb_span *s, uintptr_t a, size_t npages, struct ebb_span *lru_pos) {
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
    }
    if (a_end < s_end) {
        tail = ebbi_span_new();
        if (!tail) { /* s unchanged: the caller puts it back whole */
            if (lead) ebbi_span_delete(mid);
            return NULL;
        }
    }
    if (lead) lead->npages = (a - s->start) >> EBB_PAGE_SHIFT; /* both records in hand */
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
        set_insert(tail, lead && !released && !lead->stuck ? lead : lru_pos);
    }
    return mid;
}

/* carve() from a released span where kernel pages are bigger than ebbmalloc's: the block
 * [a, a + npages) is cut out together with the rest of the kernel pages it touches, and
 * that rest becomes resident free memory (it will be resident once the block is written,
 * and it is still zero).  What stays released starts and ends on kernel pages. */
static struct ebb_span *carve_released(struct ebb_span *s, uintptr_t a, size_t npages) {
    const size_t k = kpage_big();
    uintptr_t s_end = s->start + (s->npages << EBB_PAGE_SHIFT), a_end = a + (npages << EBB_PAGE_SHIFT);
    uintptr_t ka = round_down(a, k), kb = round_up(a_end, k);
    if (ka < s->start) ka = s->start; /* only if the invariant was broken: verify says so */
    if (kb > s_end) kb = s_end;
    struct ebb_span *lead = ka < a ? ebbi_span_new() : NULL, *tail = a_end < kb ? ebbi_span_new() : NULL;
    if ((ka < a && !lead) || (a_end < kb && !tail)) {
        if (lead) ebbi_span_delete(lead);
        if (tail) ebbi_span_delete(tail);
        return NULL;
    }
    struct ebb_span *r = carve(s, ka, (kb - ka) >> EBB_PAGE_SHIFT, NULL);
    if (!r) {
        if (lead) ebbi_span_delete(lead);
        if (tail) ebbi_span_delete(tail);
        return NULL;
    }
    /* r has no page map entries yet: the pieces do not see it as a neighbour. */
    uint64_t now = ebbi_now_ms();
    if (lead) {
        lead->start = ka;
        lead->npages = (a - ka) >> EBB_PAGE_SHIFT;
        insert_free(lead, false, now, AT_TAIL);
        ebbi_os_heap_reuse(a - ka);
    }
    if (tail) {
        tail->start = a_end;
        tail->npages = (kb - a_end) >> EBB_PAGE_SHIFT;
        insert_free(tail, false, now, AT_TAIL);
        ebbi_os_heap_reuse(kb - a_end);
    }
    r->start = a;
    r->npages = npages;
    return r;
}

/* Map more memory into the released set (fresh pages are not resident). */
static bool grow(size_t npages, size_t align_pages) {
    const size_t huge = ebbi_huge_size; /* a multiple of the kernel page */
    size_t need = (npages + (align_pages > 1 ? align_pages : 0)) << EBB_PAGE_SHIFT;
    size_t size = need < huge * 2 ? huge * 2 : round_up(need, huge);
    void *p = ebbi_os_heap_room(size) ? ebbi_os_map_aligned(size, huge) : NULL;
    if (!p) { /* the kernel refused a generous chunk: try exactly what is needed */
        size = map_round(need);
        p = size && ebbi_os_heap_room(size) ? ebbi_os_map_aligned(size, EBB_PAGE) : NULL;
        if (!p) return false;
    }
    if (ebbi_thp_refused) ebbi_os_hugepage_hint(p, size, false);
    struct ebb_span *s = ebbi_span_new();
    if (!s || !ebbi_pm_ensure((uintptr_t)p, size)) {
        if (s) ebbi_span_delete(s);
        ebbi_os.unmap(p, size);
        return false;
    }
    ebbi_ph_stats.mapped += size;
    ebbi_ph_stats.grown_total += size;
    ebbi_os_heap_adopt(size);
    s->start = (uintptr_t)p;
    s->npages = size >> EBB_PAGE_SHIFT;
    insert_free(s, true, 0, AT_TAIL);
    return true;
}

/* ---------------------------------------------------------------- reuse
 * Recent releases, newest last: what a request takes from the released set within
 * EBB_RELEASE_MS of its release is a refault, memory that was not idle after all. */
#define RECENT 64
static struct {
    uintptr_t start, end;
    uint64_t ms;
    bool pressed; /* released by the trade or the cap, not because it was idle */
} recent[RECENT];
static unsigned recent_next;

static void recent_note(uintptr_t a, uintptr_t b, uint64_t now, bool pressed) {
    recent[recent_next % RECENT].start = a;
    recent[recent_next % RECENT].end = b;
    recent[recent_next % RECENT].ms = now;
    recent[recent_next % RECENT].pressed = pressed;
    recent_next++;
}

/* Bytes of [a, b) released less than EBB_RELEASE_MS ago (at most b - a); in *pressed,
 * those the trade or the cap released.  [a, b) is being taken out of the released set,
 * so what was counted leaves the ring: an entry inside it goes, one that overlaps it
 * keeps its bigger piece outside (the smaller one is forgotten: an undercount, never a
 * count twice), and a range released, taken and released again is counted once per
 * release. */
static size_t recent_take(uintptr_t a, uintptr_t b, uint64_t now, size_t *pressed) {
    uint64_t win = (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS);
    size_t sum = 0, by_rule = 0;
    unsigned n = recent_next < RECENT ? recent_next : RECENT;
    for (unsigned i = 0; i < n; i++) {
        unsigned k = (recent_next - 1 - i) % RECENT;
        if (now - recent[k].ms >= win) break; /* older from here on */
        uintptr_t lo = recent[k].start > a ? recent[k].start : a, hi = recent[k].end < b ? recent[k].end : b;
        if (lo >= hi) continue;
        sum += hi - lo;
        if (recent[k].pressed) by_rule += hi - lo;
        uintptr_t below = lo - recent[k].start, above = recent[k].end - hi;
        if (below >= above) recent[k].end = lo;
        else recent[k].start = hi;
    }
    *pressed = by_rule < b - a ? by_rule : b - a;
    return sum < b - a ? sum : b - a;
}

/* The reuse floor: memory that the trade or the cap gave back and that the program then
 * asked for again within EBB_RELEASE_MS was not idle (what the timer, malloc_trim or the
 * soft limit gave back does not count: those rules are not relaxed).  Releasing it cost
 * a system call and a page fault per kernel page, and lowered RSS only until the next
 * request.  So those refaulted bytes add up into the reuse floor, which raises the
 * trade's and the cap's floors to it: while it lasts they keep that much free memory
 * resident.  It lasts two windows of EBB_RELEASE_MS after the last such refault: only a
 * refault feeds it, not memory it held back, so that a floor nothing asks for again ends
 * (under steady reuse it then ends too, the rules release, and the refaults that follow
 * build it again).  The trade and the cap release whole spans, so either may go below it
 * by part of one span; what that gives back and is asked for again feeds it.  A loop
 * that frees and asks again for blocks of 5-25 MiB, 4 live, released and faulted in
 * again 190 MiB of every 340 it faulted in; with the floor 36-67% less is faulted in, at
 * a peak RSS within 0.5% of glibc's (ebb-bench throughput's `large`, see README).  What it keeps is still free
 * memory for every other rule: the timer gives back what stays unused for
 * EBB_RELEASE_MS, the soft limit and malloc_trim all of it (and they end the floor).  It
 * is bounded by the free memory that was released and asked for again (the rules stop
 * releasing once free memory is under it), and in a cgroup by 1/16 of the memory limit,
 * as the cap's floor.  With EBB_RELEASE_MS=0 nothing counts as refaulted and the floor is
 * zero.  Under ebbi_ph_lock, as everything here: no atomics.  A fork child gets the
 * floor as the lock left it (the prepare handler holds the lock across fork); a fork
 * from a signal handler that cut an update short leaves two plain counters a step
 * apart (a floor fed without its time, say), which at worst ends it early. */
static size_t reuse_bytes;    /* the floor, while it lasts */
static uint64_t reuse_fed_ms; /* when it was last fed */

/* Bursts.  A program that works in bursts with pauses longer than EBB_RELEASE_MS between
 * them (a service polled every few seconds, a batch job's rounds) has its free memory
 * given back by the timer in every pause, and pays a fault per kernel page for it again
 * in every burst.  Such a program is recognised when pages the timer gave back in a
 * pause (no pages taken for half a window) are faulted in again within BURST_SPAN
 * (8 x EBB_RELEASE_MS), a quarter of what the pauses gave back and at least 1 MiB (a
 * heartbeat that takes a span is no evidence): the timer then keeps as much free memory
 * resident as the heap's pages in use fell below their highest point of the last
 * BURST_SPAN (the burst floor).  The burst state lasts BURST_SPAN after the last such
 * refault, or the last time a request took free memory older than EBB_RELEASE_MS while
 * the timer's last pass had stopped at the floor (memory only the floor kept: a floor
 * that holds memory back sees no refaults), or twice the
 * longest pause between those if that is longer (up to BURST_SPAN_MAX: bursts 8 s apart
 * keep the state across their pauses), so RSS falls at most that long after the bursts
 * stop instead of after EBB_RELEASE_MS; a program whose load comes once (a load, then
 * idle) never refaults what the timer gave back and keeps nothing.  What the floor keeps
 * is bounded by the cap (free memory above 1/EBB_FREE_RATIO of what is in use, and above
 * 64 MiB, goes back whatever its age) and, in a cgroup, by 1/16 of the memory limit;
 * malloc_trim and the soft limit end the state.  Only the page heap's own timer releases
 * count as evidence.  The central tier keeps the free pages of its live spans too while
 * all its free objects fit in what the cap leaves (ebbi_page_burst_room).
 * rptest (mimalloc-bench: 2 threads, bursts 4-8 s apart) faulted 14-21 thousand pages
 * without it and 9.5-12 thousand with it; ebb-bench throughput's `pauses` 59.5 thousand
 * and 20.6 thousand (README).  Under ebbi_ph_lock, as everything here: plain fields,
 * ordered on every CPU by the lock's acquire and release; a fork child gets them as the
 * lock left them (the prepare handler holds it across fork), and a fork from a signal
 * handler that cut an update short leaves counters a step apart, which at worst starts
 * or ends the state one pass early. */
#define BURST_SPAN(ms) (8 * (ms))
#define BURST_SPAN_MAX(ms) (32 * (ms))
static uint64_t burst_fed_ms;  /* the last refault or use of kept memory; 0: none */
static uint64_t burst_gap_ms;  /* the longest pause between two of those seen lately */
static size_t timer_gave;      /* what the timer released in the BURST_SPAN up to timer_gave_ms... */
static size_t timer_gave_sum;  /* ... of which this much since the count started */
static size_t timer_back;      /* and how much of it was faulted in again */
static bool burst_held;        /* the timer's last pass stopped at the burst floor */
static uint64_t timer_gave_ms; /* its last release */
static uint64_t last_take_ms;  /* pages were last handed out */
static size_t win_peak;        /* the highest pages in use seen in the last BURST_SPAN... */
static uint64_t win_peak_ms;   /* ... when it was seen */

/* 8 windows of EBB_RELEASE_MS, or twice the pause between bursts if that is longer (up
 * to 32 windows): a program whose bursts come every 8 s keeps its state across them. */
static uint64_t burst_span(void) {
    uint64_t w = (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS), span = BURST_SPAN(w);
    if (2 * burst_gap_ms > span) span = 2 * burst_gap_ms;
    return span < BURST_SPAN_MAX(w) ? span : BURST_SPAN_MAX(w);
}
/* Pages of the heap in use (blocks with mappings of their own leave nothing free). */
static size_t used_now(void) { return in_use() - ebbi_ph_stats.mapped_direct; }

/* The count of what the timer gave back in pauses starts again once it is a span old
 * (or at malloc_trim and the soft limit: all). */
static void timer_count_expire(uint64_t now, bool all) {
    if (all || now - timer_gave_ms >= burst_span()) timer_gave = timer_gave_sum = timer_back = 0;
}

static bool bursting(uint64_t now) { return burst_fed_ms && now - burst_fed_ms < burst_span(); }

/* The free memory the timer keeps resident now. */
static size_t burst_floor(uint64_t now) {
    if (!bursting(now)) return 0;
    size_t used = used_now(), peak = now - win_peak_ms < burst_span() ? win_peak : used;
    size_t keep = peak > used ? peak - used : 0;
    size_t lim = (size_t)ebbi_cgroup_limit() / 16;
    return lim && keep > lim ? lim : keep;
}

/* Pages in use after a change: the window's highest point, which ages out. */
static void burst_note_used(uint64_t now) {
    size_t used = used_now();
    if (used >= win_peak || now - win_peak_ms >= burst_span()) win_peak = used, win_peak_ms = now;
}

/* A refault of what the timer gave back, or a use of memory the state kept: a pause of
 * more than a window since the one before is how far apart the bursts are (the longest
 * such pause of the state's life, which starts again with a new state). */
static void burst_fed(uint64_t now) {
    uint64_t w = (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS);
    if (!burst_fed_ms || now - burst_fed_ms >= BURST_SPAN_MAX(w)) burst_gap_ms = 0;
    else if (now - burst_fed_ms >= w && now - burst_fed_ms > burst_gap_ms) burst_gap_ms = now - burst_fed_ms;
    burst_fed_ms = now;
}

/* `bytes` of released pages are faulted in again: if the timer gave back that much
 * lately, the program works in bursts. */
static void burst_refault(size_t bytes, uint64_t now) {
    timer_count_expire(now, false);
    size_t take = bytes < timer_gave ? bytes : timer_gave;
    if (!take) return;
    timer_gave -= take;
    timer_back += take;
    /* evidence: a quarter of what the pauses gave back, and at least 1 MiB (a heartbeat
     * that takes one span does not make a program bursty) */
    if (bursting(now) || (timer_back >= timer_gave_sum / 4 && timer_back >= ((size_t)1 << 20)))
        burst_fed(now);
}

bool ebbi_page_bursting_at(uint64_t now) {
    ebbi_lock(&ebbi_ph_lock);
    bool b = bursting(now);
    ebbi_unlock(&ebbi_ph_lock);
    return b;
}

bool ebbi_page_bursting(void) { return ebbi_page_bursting_at(ebbi_now_ms()); }

/* How much free memory the central tier may keep in its live spans' pages for the next
 * burst: what the free-page cap leaves once the page heap's own free resident memory is
 * counted (the cap bounds all free memory kept); 0 when not bursting. */
size_t ebbi_page_burst_room(void) {
    ebbi_lock(&ebbi_ph_lock);
    size_t cap = free_cap(), room = 0;
    if (bursting(ebbi_now_ms()) && cap > ebbi_ph_stats.free_res) room = cap - ebbi_ph_stats.free_res;
    ebbi_unlock(&ebbi_ph_lock);
    return room;
}

/* The floor at `now`; one that has ended is cleared. */
static size_t reuse_floor(uint64_t now) {
    if (now - reuse_fed_ms >= 2 * (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS)) reuse_bytes = 0;
    size_t lim = (size_t)ebbi_cgroup_limit() / 16;
    return lim && reuse_bytes > lim ? lim : reuse_bytes;
}

/* A block takes released pages [a, b): the kernel faults them in when they are written. */
static void note_faulted(uintptr_t a, uintptr_t b, uint64_t now) {
    size_t pressed, again = recent_take(a, b, now, &pressed);
    ebbi_os_heap_reuse(b - a);
    ebbi_ph_stats.faulted_bytes += b - a;
    ebbi_ph_stats.refault_bytes += again;
    ebbi_ph_stats.refault_pressed += pressed;
    burst_refault(b - a, now);
    if (pressed) {
        reuse_floor(now); /* an ended floor starts again from nothing */
        reuse_bytes += pressed;
        reuse_fed_ms = now;
    }
}

/* ---------------------------------------------------------------- combined runs
 * No resident free span fits: a resident span and its released neighbours may, together.
 * The block is then cut across them and the kernel faults in only the released part. */
#define COMBINE_TRIES 32
struct run {
    struct ebb_span *part[3]; /* neighbours in address order, of which one is resident */
    int n;
    uintptr_t a;     /* where the block starts */
    size_t resident; /* bytes of the block that are resident */
};

static struct ebb_span *released_at(uintptr_t page) { return free_neighbour(page, true); }

static bool try_run(struct ebb_span *r, size_t npages, size_t align_pages, struct run *best) {
    uintptr_t x0 = r->start, x1 = r->start + (r->npages << EBB_PAGE_SHIFT);
    struct ebb_span *p = released_at(x0 - EBB_PAGE), *q = released_at(x1);
    if (p && p->start + (p->npages << EBB_PAGE_SHIFT) != x0) p = NULL;
    if (q && q->start != x1) q = NULL;
    if (!p && !q) return false;
    uintptr_t r0 = p ? p->start : x0, r1 = q ? q->start + (q->npages << EBB_PAGE_SHIFT) : x1;
    size_t n = npages << EBB_PAGE_SHIFT;
    if (r1 - r0 < n) return false;
    uintptr_t a = n >= x1 - x0 ? (x0 < r1 - n ? x0 : r1 - n) : x1 - n;
    if (align_pages > 1) {
        uintptr_t al = align_pages << EBB_PAGE_SHIFT;
        a &= ~(al - 1);
        if (a < r0) a = (r0 + al - 1) & ~(al - 1);
        if (a + n > r1) return false;
    }
    /* What stays of a released neighbour must start and end on kernel pages (see the
     * top): with kernel pages bigger than ebbmalloc's, a run whose block would end inside
     * one is not taken. */
    size_t k = kpage_big();
    if (k && ((p && a < x0 && (a & (k - 1))) || (q && a + n > x1 && ((a + n) & (k - 1))))) return false;
    uintptr_t lo = a > x0 ? a : x0, hi = a + n < x1 ? a + n : x1;
    size_t res = lo < hi ? hi - lo : 0;
    if (res <= best->resident) return false;
    best->n = 0;
    if (p && a < x0) best->part[best->n++] = p;
    if (a < x1 && a + n > x0) best->part[best->n++] = r;
    if (q && a + n > x1) best->part[best->n++] = q;
    best->a = a;
    best->resident = res;
    return true;
}

/* The run with the most resident pages for the request, biggest resident spans first,
 * at most COMBINE_TRIES looked at. */
static bool run_find(size_t npages, size_t align_pages, struct run *best) {
    best->resident = 0;
    best->n = 0;
    int tries = 0;
    for (struct ebb_span *r = set_resident.big.head; r && tries < COMBINE_TRIES; r = r->next, tries++)
        try_run(r, npages, align_pages, best);
    size_t top = npages < EXACT_MAX ? npages : EXACT_MAX;
    for (size_t k = top; k >= 1 && tries < COMBINE_TRIES; k--) {
        if (!(set_resident.nonempty[k / 64] >> (k % 64) & 1)) continue;
        for (struct ebb_span *r = set_resident.exact[k].head; r && tries < COMBINE_TRIES;
             r = r->next, tries++)
            try_run(r, npages, align_pages, best);
        if (best->resident >= (k << EBB_PAGE_SHIFT)) break; /* no smaller span does better */
    }
    return best->n >= 2;
}

/* Cut the block out of the run: what is left of its first and last part stays free with
 * their residency and age.  Returns the block's record, NULL (nothing changed) without
 * records. */
static struct ebb_span *run_take(struct run *run, size_t npages, uint64_t now) {
    uintptr_t a = run->a, b = a + (npages << EBB_PAGE_SHIFT);
    struct ebb_span *first = run->part[0], *last = run->part[run->n - 1];
    uintptr_t f0 = first->start, l1 = last->start + (last->npages << EBB_PAGE_SHIFT);
    bool left = f0 < a, right = b < l1;
    int need = 1 + left + right - run->n;
    struct ebb_span *spare = need > 0 ? ebbi_span_new() : NULL;
    if (need > 0 && !spare) return NULL;
    struct {
        uintptr_t start, end;
        uint8_t released;
        uint64_t age;
        struct ebb_span *lru_pos;
    } was[3];
    for (int i = 0; i < run->n; i++) {
        struct ebb_span *x = run->part[i];
        was[i].start = x->start;
        was[i].end = x->start + (x->npages << EBB_PAGE_SHIFT);
        was[i].released = x->released;
        was[i].age = x->free_since_ms;
        was[i].lru_pos = x->released || x->stuck ? NULL : LRU_PREV(x);
        set_remove(x);
        ebbi_pm_clear_span(x);
    }
    /* the resident part is never first and last at once: lru_pos of a piece that follows
     * it is still valid */
    struct ebb_span *block = run->n == 3 ? run->part[1] : spare;
    if (left) {
        first->start = f0;
        first->npages = (a - f0) >> EBB_PAGE_SHIFT;
        first->state = SPAN_FREE;
        first->free_since_ms = was[0].age;
        ebbi_pm_set_span(first);
        set_insert(first, was[0].lru_pos);
    } else if (!block) {
        block = first;
    } else {
        ebbi_span_delete(first);
    }
    if (right) {
        struct ebb_span *t = last;
        t->start = b;
        t->npages = (l1 - b) >> EBB_PAGE_SHIFT;
        t->state = SPAN_FREE;
        t->released = was[run->n - 1].released;
        t->free_since_ms = was[run->n - 1].age;
        ebbi_pm_set_span(t);
        set_insert(t, was[run->n - 1].lru_pos);
    } else if (!block) {
        block = last;
    } else if (last != block) {
        ebbi_span_delete(last);
    }
    if (spare && spare != block) ebbi_span_delete(spare);
    memset(block, 0, sizeof *block);
    block->start = a;
    block->npages = npages;
    for (int i = 0; i < run->n; i++) {
        uintptr_t lo = was[i].start > a ? was[i].start : a, hi = was[i].end < b ? was[i].end : b;
        if (was[i].released) note_faulted(lo, hi, now);
    }
    return block;
}


/* A request faulted in `faulted` bytes: RSS grew by that much.  Twice that much of the
 * oldest resident free memory goes back (the caller finishes the release), so that pieces
 * too small for what is asked do not stay resident while RSS grows: on the arena-creep
 * benchmark this took the median of peak RSS over peak live from 1.15 to 1.12, at the same
 * speed.  Only above a floor: SWAP_FLOOR, or the biggest request that faulted pages in
 * within the last EBB_RELEASE_MS if that is more, or the reuse floor (above).  A size
 * that keeps coming back then finds its memory still resident: blocks of 5-25 MiB, 4 live, allocated and freed in a loop
 * were released by this trade and faulted in again at every step (37% of what they asked
 * for was memory released less than a second before); with the floor the loop faults in
 * 51 thousand kernel pages instead of 90 thousand (with runs) and keeps 98 MiB at its
 * peak (glibc: 261 thousand and 114 MiB).  Arena-creep's requests are at most 640 KiB:
 * its floor stays 16 MiB.  The timer, the cap, the soft limit and malloc_trim still
 * apply to all of it. */
static size_t big_faulted; /* the biggest `faulted` since big_faulted_ms */
static uint64_t big_faulted_ms;

static void trade(size_t faulted, uint64_t now) {
    if (faulted > big_faulted || now - big_faulted_ms >= (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS)) {
        big_faulted = faulted;
        big_faulted_ms = now;
    }
    size_t floor = big_faulted > SWAP_FLOOR ? big_faulted : SWAP_FLOOR, reuse = reuse_floor(now);
    size_t releasable = ebbi_ph_stats.free_res - ebbi_ph_stats.unreleasable, goal = faulted * 2;
    if (releasable <= floor) return;
    if (reuse > floor) { /* the reuse floor keeps its part: at most what is above it goes */
        if (releasable <= reuse) return;
        if (goal > releasable - reuse) goal = releasable - reuse;
    }
    ebbi_page_release_locked(UINT64_MAX, goal, EBB_WHY_TRADE);
}

/* A free span carve() could not cut (no record for a piece), back as it was. */
static void put_back(struct ebb_span *s, struct ebb_span *lru_pos) {
    s->state = SPAN_FREE;
    ebbi_pm_set_span(s);
    set_insert(s, lru_pos);
}

/* The high-water mark of pages in use, after pages were handed out. */
static void note_peak(uint64_t now) {
    size_t used = in_use();
    if (used > ebbi_ph_stats.peak_used) ebbi_ph_stats.peak_used = used;
    burst_note_used(now);
}

static struct ebb_span *page_alloc(size_t npages, size_t align_pages) {
    if (npages == 0 || npages > ((size_t)1 << (EBB_ADDR_BITS - EBB_PAGE_SHIFT - 1))) return NULL;
    uint64_t now = ebbi_now_ms();
    last_take_ms = now;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct ebb_span *r = NULL, *s = set_find(&set_resident, npages, align_pages);
        size_t faulted = 0;
        struct run run;
        if (!s && run_find(npages, align_pages, &run)) {
            r = run_take(&run, npages, now);
            if (!r) return NULL;
            faulted = (npages << EBB_PAGE_SHIFT) - run.resident;
        }
        if (!r && !s) s = set_find(&set_released, npages, align_pages);
        if (s) {
            struct ebb_span *lru_pos = s->released || s->stuck ? NULL : LRU_PREV(s);
            set_remove(s);
            /* The top end of s: the start of a block freed here stays free for longer
             * (unless the same size comes back), so that a second free of it is seen.
             * (A block realloc moves to grow would find room to grow in place at the low
             * end, but a double free of the block freed there would then free it.) */
            uintptr_t a = s->start + ((s->npages - npages) << EBB_PAGE_SHIFT);
            if (align_pages > 1) a &= ~((align_pages << EBB_PAGE_SHIFT) - 1);
            bool was_released = s->released;
            if (!was_released && burst_held && bursting(now) &&
                s->free_since_ms + (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) <= now)
                burst_fed(now); /* memory only the burst floor kept: it is asked for again */
            r = was_released && kpage_big() ? carve_released(s, a, npages) : carve(s, a, npages, lru_pos);
            if (!r) { /* out of memory for a record: put s back whole */
                put_back(s, lru_pos);
                return NULL;
            }
            if (was_released) {
                note_faulted(a, a + (npages << EBB_PAGE_SHIFT), now);
                faulted = npages << EBB_PAGE_SHIFT;
            }
        }
        if (r) {
            r->state = SPAN_LARGE; /* the caller sets the final state */
            r->on_list = 0;
            r->prev = r->next = NULL;
            ebbi_pm_set_span(r);
            if (faulted) trade(faulted, now);
            note_peak(now);
            return r;
        }
        if (attempt == 0 && !grow(npages, align_pages)) break;
    }
    return NULL;
}

/* central.c's: a span to cut into objects (SMALL), counted as such. */
struct ebb_span *ebbi_page_alloc_locked(size_t npages, size_t align_pages) {
    struct ebb_span *s = page_alloc(npages, align_pages);
    if (s) ebbi_ph_stats.small += npages << EBB_PAGE_SHIFT;
    return s;
}

/* A block of its own (LARGE), counted as such. */
struct ebb_span *ebbi_page_alloc(size_t npages, size_t align_pages) {
    ebbi_lock(&ebbi_ph_lock);
    struct ebb_span *s = page_alloc(npages, align_pages);
    if (s) ebbi_ph_stats.large += npages << EBB_PAGE_SHIFT;
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
    ebbi_ph_stats.large -= t->npages << EBB_PAGE_SHIFT;
    insert_free(t, false, ebbi_now_ms(), AT_TAIL);
    ebbi_unlock(&ebbi_ph_lock);
    return true;
}

/* LARGE span: grow to npages in place, from the resident free span that starts where it
 * ends.  False if nothing changed: no such neighbour, or too small. */
bool ebbi_page_grow(struct ebb_span *s, size_t npages) {
    if (npages <= s->npages) return false;
    const size_t extra = npages - s->npages;
    const uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    ebbi_lock(&ebbi_ph_lock);
    struct ebb_span *n = ebbi_pm_span(end);
    /* Resident free pages only.  Growing into released ones too (when no resident free
     * span could take the moved block) made the realloc benchmark 16% faster than no
     * growth but its peak RSS 6% higher; resident only, 8-11% faster and 1.5-3% higher
     * (two series of 7 interleaved runs, README). */
    if (!n || n->state != SPAN_FREE || n->start != end || n->npages < extra || n->released) {
        ebbi_unlock(&ebbi_ph_lock);
        return false;
    }
    struct ebb_span *lru_pos = n->stuck ? NULL : LRU_PREV(n);
    set_remove(n);
    struct ebb_span *r = carve(n, end, extra, lru_pos); /* n itself: the cut is at its start */
    if (!r) {                                           /* out of memory for a record: put n back whole */
        put_back(n, lru_pos);
        ebbi_unlock(&ebbi_ph_lock);
        return false;
    }
    ebbi_span_delete(r);
    ebbi_pm_clear_span(s);
    s->npages = npages;
    s->zeroed = 0;
    ebbi_pm_set_span(s);
    ebbi_ph_stats.large += extra << EBB_PAGE_SHIFT;
    note_peak(ebbi_now_ms());
    ebbi_unlock(&ebbi_ph_lock);
    return true;
}

/* ---------------------------------------------------------------- own mappings */
struct ebb_span *ebbi_mapped_alloc(size_t size, size_t align) {
    if (size > ((size_t)1 << (EBB_ADDR_BITS - 1))) return NULL;
    size_t len = map_round(size);
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
    ebbi_ph_stats.direct_total += len;
    ebbi_os_direct_count((int64_t)len); /* in use at once */
    size_t used = in_use();
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
    ebbi_os_direct_count(-(int64_t)s->map_size);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_os.unmap((void *)s->start, s->map_size);
    ebbi_span_delete(s);
}

/* Grow or shrink a MAPPED span's mapping in place or by moving it (the kernel moves page
 * tables, nothing is copied).  The page map follows. */
bool ebbi_mapped_resize(struct ebb_span *s, size_t size) {
    size_t len = map_round(size);
    if (!len) return false;
    if (len == s->map_size) return true;
    if (ebbi_os_refused_for_good(EBB_REFUSED_REMAP)) return false; /* the caller copies */
    /* In place if the kernel can; else onto a fresh mapping that starts on an ebbmalloc
     * page (mremap alone may pick any kernel page) and that the page map covers. */
    if (!ebbi_pm_ensure(s->start, len)) return false;
    /* Under the lock, the old entries gone first: once the kernel has the old range back
     * it may hand it to another thread's mapping. */
    ebbi_lock(&ebbi_ph_lock);
    ebbi_pm_clear_span(s);
    void *to = NULL, *q = ebbi_os_direct_remap((void *)s->start, s->map_size, len, NULL);
    if (!q && !ebbi_os_refused_for_good(EBB_REFUSED_REMAP) && (to = ebbi_os_map_aligned(len, EBB_PAGE)) &&
        ebbi_pm_ensure((uintptr_t)to, len))
        q = ebbi_os_direct_remap((void *)s->start, s->map_size, len, to);
    if (!q) {
        ebbi_pm_set_span(s);
        ebbi_unlock(&ebbi_ph_lock);
        if (to) ebbi_os.unmap(to, len);
        return false;
    }
    ebbi_ph_stats.mapped += len - s->map_size;
    ebbi_ph_stats.mapped_direct += len - s->map_size;
    if (len > s->map_size) ebbi_ph_stats.direct_total += len - s->map_size;
    s->start = (uintptr_t)q;
    s->npages = len >> EBB_PAGE_SHIFT;
    s->map_size = len;
    ebbi_pm_set_span(s);
    size_t used = in_use();
    if (used > ebbi_ph_stats.peak_used) ebbi_ph_stats.peak_used = used;
    ebbi_unlock(&ebbi_ph_lock);
    return true;
}

/* ---------------------------------------------------------------- release */
/* Return one resident free span to the kernel and move it to the released set.  With
 * huge pages allowed, only whole huge pages (ebbi_huge_size, aligned) inside it are
 * released unless `small_too`, so that a huge page is not split for a few kernel pages;
 * else the whole kernel pages inside it (with 4 KiB kernel pages: all of it).  The pieces
 * around stay resident with their age (stuck, when they hold no whole kernel page). */
static size_t release_span(struct ebb_span *s, bool small_too, enum ebb_release_why why) {
    uintptr_t start = s->start, end = s->start + (s->npages << EBB_PAGE_SHIFT);
    uintptr_t a = start, b = end;
    size_t unit = !small_too && ebbi_thp_active ? ebbi_huge_size : kpage_big();
    if (unit) {
        a = round_up(start, unit);
        b = round_down(end, unit);
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
    mid->why = (uint8_t)why;
    ebbi_pm_set_span(mid);
    ebbi_ph_stats.released += b - a;
    ebbi_ph_stats.releasing += b - a;
    ebbi_ph_stats.release_calls++;
    ebbi_ph_stats.released_total += b - a;
    ebbi_ph_stats.released_by[why] += b - a;
    uint64_t now = ebbi_now_ms();
    recent_note(a, b, now, why == EBB_WHY_TRADE || why == EBB_WHY_CAP);
    /* Only in a pause: no pages taken for half a window (a busy program's timer gives back
     * old holes it may well fill again, which says nothing about pauses). */
    if (why == EBB_WHY_TIMER && now - last_take_ms >= (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) / 2) {
        timer_count_expire(now, false);
        timer_gave += b - a;
        timer_gave_sum += b - a;
        timer_gave_ms = now;
    }
    ebbi_span_list_push(&cut_out, mid);
    __atomic_store_n(&releasing_waiting, releasing_waiting + 1, __ATOMIC_RELAXED);
    return b - a;
}

/* Back into the released set, once its pages went back; or, if the kernel refused
 * (mlockall, a seccomp filter), back into the resident set, counted as resident: the
 * pages are still there and do not read as zero. */
static void release_done(struct ebb_span *s, bool ok) {
    size_t bytes = s->npages << EBB_PAGE_SHIFT;
    ebbi_span_list_remove(&cut_out, s);
    ebbi_ph_stats.released -= bytes;
    ebbi_ph_stats.releasing -= bytes;
    if (ok) ebbi_os_heap_gave_back(bytes); /* with the counters it changes, under the lock */
    if (!ok) {
        ebbi_ph_stats.released_total -= bytes;
        ebbi_ph_stats.released_by[s->why] -= bytes;
        ebbi_ph_stats.release_calls--;
    }
    insert_free(s, ok, ebbi_now_ms(), AT_TAIL);
}

/* The span's pages, and the page map's pages that describe only its inside. */
static bool release_pages(struct ebb_span *s) {
    size_t n = s->npages << EBB_PAGE_SHIFT;
    if (ebbi_os_release((void *)s->start, n)) return false; /* counted by release_done */
    ebbi_pm_release_inside(s->start, s->start + n);
    return true;
}

/* Returns to the kernel the spans cut out for release, without holding the page heap
 * lock, so that threads needing the page heap meanwhile do not wait for the system
 * calls.  Called after dropping the lock wherever a release may have happened; several
 * threads may be at it at once, each with the spans it took. */
void ebbi_page_release_finish(void) {
    if (!__atomic_load_n(&releasing_waiting, __ATOMIC_RELAXED)) return;
    struct ebb_span *mine = NULL;
    ebbi_lock(&ebbi_ph_lock);
    for (struct ebb_span *s = cut_out.head; s; s = s->next) {
        if (__atomic_load_n(&s->in_flight, __ATOMIC_RELAXED)) continue;
        __atomic_store_n(&s->in_flight, 1, __ATOMIC_RELAXED);
        s->taken_next = mine;
        mine = s;
    }
    __atomic_store_n(&releasing_waiting, 0, __ATOMIC_RELAXED);
    ebbi_work_begin(); /* `mine` in hand without the lock: a fork child leaves it alone */
    ebbi_unlock(&ebbi_ph_lock);
    /* Outside the lock: release_result is this thread's alone (another releasing thread
     * only tests in_flight, which stays 1), read back below after it takes the lock again. */
    for (struct ebb_span *s = mine; s; s = s->taken_next) s->release_result = release_pages(s) ? 1 : 2;
    ebbi_lock(&ebbi_ph_lock);
    ebbi_work_end();
    for (struct ebb_span *s = mine, *next; s; s = next) {
        next = s->taken_next;
        release_done(s, s->release_result == 1);
    }
    ebbi_unlock(&ebbi_ph_lock);
}

/* In a child of fork, the threads that had spans in flight are gone: release them here
 * (they must read as zero once they count as released).  The forking thread has none in
 * hand: a fork that interrupted its ebbi_page_release_finish skips the handlers. */
void ebbi_page_fork_child(void) {
    while (cut_out.head) {
        struct ebb_span *s = cut_out.head;
        release_done(s, release_pages(s));
    }
    releasing_waiting = 0;
}

size_t ebbi_page_release_locked(uint64_t older_than_ms, size_t goal, enum ebb_release_why why) {
    size_t done = 0;
    /* Refused for good: nothing to cut out, and no walk of the age list at every free. */
    if (ebbi_os_refused_for_good(EBB_REFUSED_RELEASE)) return 0;
    /* malloc_trim and the soft limit ask for memory back now: the reuse floor ends, and
     * what the trade and the cap released before no longer raises it */
    if (why == EBB_WHY_TRIM || why == EBB_WHY_SOFT) {
        reuse_bytes = 0;
        timer_count_expire(0, true);
        burst_fed_ms = burst_gap_ms = 0;
        burst_held = false;
        win_peak = used_now(), win_peak_ms = ebbi_now_ms();
        for (unsigned i = 0; i < RECENT; i++) recent[i].pressed = false;
    }
    size_t keep = (size_t)ebbi_opt(EBB_OPT_TRIM_THRESHOLD);
    bool by_burst = false; /* keep is the burst floor */
    if (why == EBB_WHY_TIMER) {
        size_t burst = burst_floor(ebbi_now_ms());
        if (burst > keep) keep = burst, by_burst = true;
        burst_held = false;
    }
    bool everything = older_than_ms == 0 || older_than_ms == UINT64_MAX;
    /* Two passes: first whole huge pages only, then (for spans twice as old, or when
     * releasing everything) whatever is left. */
    for (int pass = 0; pass < 2 && done < goal; pass++) {
        struct ebb_span *s = lru_head;
        while (s && done < goal) {
            struct ebb_span *next = LRU_NEXT(s);
            if (!everything && s->free_since_ms > older_than_ms) break; /* the rest is younger */
            if (!everything && ebbi_ph_stats.free_res <= keep) {
                burst_held = by_burst; /* old memory stays only for the next burst */
                break;
            }
            bool small_too = pass == 1;
            if (small_too && !everything && ebbi_thp_active &&
                s->free_since_ms + (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) > older_than_ms) {
                s = next;
                continue;
            }
            done += release_span(s, small_too, why);
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
    if (ebbi_os_refused_for_good(EBB_REFUSED_RELEASE)) return 0;
    size_t keep = burst_floor(ebbi_now_ms());
    for (struct ebb_span *s = lru_tail, *prev; s && s->free_since_ms >= since_ms; s = prev) {
        prev = LRU_PREV(s);
        if (ebbi_ph_stats.free_res <= keep) break;
        done += release_span(s, true, EBB_WHY_TIMER);
    }
    return done;
}

/* The page map's pages inside released spans go back too: released spans merge after
 * their release, and what lay at their old ends was written then.  Under the lock (the
 * spans could be cut otherwise).  Only spans of the long list can hold a whole page of the
 * map (one describes 512 pages or more), and only pages written since their last release
 * cost a system call. */
void ebbi_page_release_map_locked(void) {
    if (ebbi_os_refused_for_good(EBB_REFUSED_RELEASE)) return;
    for (struct ebb_span *s = set_released.big.head; s; s = s->next)
        ebbi_pm_release_inside_locked(s->start, s->start + (s->npages << EBB_PAGE_SHIFT));
}

uint64_t ebbi_page_oldest_free_ms(void) { return lru_head ? lru_head->free_since_ms : UINT64_MAX; }

size_t ebbi_page_reuse_floor_at(uint64_t now) {
    ebbi_lock(&ebbi_ph_lock);
    size_t saved = reuse_bytes, f = reuse_floor(now);
    reuse_bytes = saved; /* a look ahead in time, for tests: nothing ends */
    ebbi_unlock(&ebbi_ph_lock);
    return f;
}

void ebbi_page_heap_stats(struct ebb_page_heap_stats *st) {
    ebbi_lock(&ebbi_ph_lock);
    *st = ebbi_ph_stats;
    st->reuse_floor = reuse_floor(ebbi_now_ms());
    st->reuse_fed_ms = reuse_fed_ms;
    st->burst_floor = burst_floor(ebbi_now_ms());
    st->burst_fed_ms = burst_fed_ms;
    st->burst_gap_ms = burst_gap_ms;
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
                else if (k <= EXACT_MAX ? s->npages != k : s->npages <= EXACT_MAX)
                    err = "span on the wrong size list";
                else if (ebbi_pm_span(s->start) != s) err = "page map misses a free span's first page";
                else if (ebbi_pm_span(s->start + ((s->npages - 1) << EBB_PAGE_SHIFT)) != s)
                    err = "page map misses a free span's last page";
                else if (!ebbi_pm_zero_inside(s->start, s->start + (s->npages << EBB_PAGE_SHIFT)))
                    err = "page map has entries inside a free span";
                else if (r && kpage_big() && ((s->start | (s->npages << EBB_PAGE_SHIFT)) & (kpage_big() - 1)))
                    err = "released span not on whole kernel pages";
                if (r) rel += s->npages << EBB_PAGE_SHIFT;
                else res += s->npages << EBB_PAGE_SHIFT;
            }
        }
    }
    uint64_t last = 0;
    for (struct ebb_span *s = lru_head; s && !err; s = s->lru_next) {
        if (s->free_since_ms < last) err = "age list out of order";
        else if (s->stuck || !holds_kpage(s)) err = "span on the age list holds no whole kernel page";
        last = s->free_since_ms;
        lru += s->npages << EBB_PAGE_SHIFT;
    }
    size_t stuck = 0;
    for (struct ebb_span *s = stuck_head; s && !err; s = s->lru_next) {
        if (!s->stuck || s->state != SPAN_FREE || s->released || holds_kpage(s))
            err = "stuck span that is not resident free without a whole kernel page";
        stuck += s->npages << EBB_PAGE_SHIFT;
    }
    if (!err && stuck != ebbi_ph_stats.unreleasable) err = "unreleasable counter differs from the stuck list";
    lru += stuck;
    if (!err && res != ebbi_ph_stats.free_res) err = "free_res counter differs from the lists";
    for (struct ebb_span *s = cut_out.head; s; s = s->next) rel += s->npages << EBB_PAGE_SHIFT;
    if (!err && rel != ebbi_ph_stats.released) err = "released counter differs from the lists";
    if (!err && lru != res) err = "age and stuck lists differ from the resident free lists";
    if (!err) err = ebbi_meta_verify(); /* the span records */
    ebbi_unlock(&ebbi_ph_lock);
    return err;
}
