/* central.c: the tier between thread caches and the page heap, one per size class.
 *
 * Batches freed by one thread land in the transfer cache and go whole to the next thread
 * that runs dry, so the common producer/consumer case never walks objects.  Beyond the
 * transfer cache, objects go back to their spans; a span whose objects are all back
 * returns to the page heap.  A span keeps its free objects as bits, one per object, not
 * as a list through them: giving an object back sets its bit (a bit set already is a
 * double free), and taking objects links the lowest free ones in address order, so that
 * neither reads the objects' memory.  After frees in random order a list would be a
 * chase through memory in random order, one cache miss after another; the bits are one
 * record, and the links written are stores the processor overlaps.  Spans with free
 * objects sit on EBB_BUCKETS lists by how full they are, and objects are taken from the
 * fullest, so that lightly used spans empty out instead of a few long-lived objects
 * pinning many spans.
 *
 * A span that a few long-lived objects keep alive still gives back the kernel pages that
 * hold only free objects ("released pages" below), and takes them back when allocation
 * needs its objects again.
 *
 * Lock order: a central lock, then the page heap lock.  Never the other way. */
#include "internal.h"

struct ebb_central ebbi_central[EBB_NCLASS];

/* Per class, a reciprocal that replaces a division: used times bucket_mul, shifted by
 * 32, is the fullness bucket. */
static uint64_t bucket_mul[EBB_NCLASS];
static size_t kpage;    /* the kernel's page */
static unsigned kshift; /* its log2 */

void ebbi_central_init(void) {
    kpage = ebbi_os_page_size();
    kshift = (unsigned)__builtin_ctzll(kpage);
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        /* "released pages" keeps a span's kernel pages in one word and its free objects in
         * a bitmap of EBB_PAGE / EBB_MIN_ALIGN bits */
        ebb_assert(((size_t)ebbi_classes[c].pages << EBB_PAGE_SHIFT) >> kshift <= 64);
        ebb_assert(ebbi_class_objects(c) <= EBB_PAGE / EBB_MIN_ALIGN);
        bucket_mul[c] = ((uint64_t)EBB_BUCKETS << 32) / ebbi_class_objects(c);
        size_t batch_bytes = (size_t)ebbi_classes[c].batch * ebbi_classes[c].size;
        /* A transfer cache of 64 KiB at most, counted in objects (thread caches move
         * half their room at a time, so chains come in any length up to a batch), none
         * for classes whose batch is bigger (their objects go back to their spans, and
         * empty spans to the page heap, where any size can reuse the pages: 0.03 less
         * peak RSS over peak live on the arena-creep benchmark, and no slower). */
        ebbi_central[c].xfer_limit =
            batch_bytes > ((size_t)64 << 10) ? 0 : (uint32_t)(((size_t)64 << 10) / ebbi_classes[c].size);
    }
}

static unsigned bucket_of(const struct ebb_span *s) {
    unsigned b = (unsigned)(((uint64_t)s->used * bucket_mul[s->cls]) >> 32);
    return b >= EBB_BUCKETS ? EBB_BUCKETS - 1 : b;
}

/* Free on it or in a released page: objects == used + |free bits| + absent. */
static bool span_has_free(const struct ebb_span *s) { return s->used < s->objects; }

/* Put s on the bucket matching its fullness, or on none when it has no free object. */
static void rebucket(struct ebb_central *c, struct ebb_span *s) {
    bool want = span_has_free(s);
    unsigned b = want ? bucket_of(s) : 0;
    if (s->on_list) {
        if (want && s->bucket == b) return;
        ebbi_span_list_remove(&c->buckets[s->bucket], s);
    }
    if (want) {
        s->bucket = (uint8_t)b;
        ebbi_span_list_push(&c->buckets[b], s);
    }
}

/* Set up under the page heap lock: a neighbour's free looks at this span's state.  The
 * span's unused bytes (less than one object) come first and its objects end with it:
 * every kernel page then holds objects only or nothing, and a pointer into the unused
 * part is not a block start for free's check (see ebbi_span_blocks). */
static struct ebb_span *new_span(unsigned cls, uint64_t now) {
    const struct ebb_class_info *ci = &ebbi_classes[cls];
    const unsigned nobj = (unsigned)ebbi_class_objects(cls);
    uint64_t *ext = NULL; /* the free bits of a span of more than 64 objects */
    if (nobj > 64 && !(ext = (uint64_t *)ebbi_span_new())) return NULL;
    ebbi_lock(&ebbi_ph_lock);
    struct ebb_span *s = ebbi_page_alloc_locked(ci->pages, 1);
    if (!s) {
        ebbi_unlock(&ebbi_ph_lock);
        ebbi_page_release_finish();
        if (ext) ebbi_span_delete((struct ebb_span *)ext);
        return NULL;
    }
    s->state = SPAN_SMALL;
    s->cls = (uint8_t)cls;
    s->used = 0;
    s->objects = nobj;
    if (ext) s->free_ext = ext;
    /* Every object free, before the page map publishes the span: a double free of a
     * block of the span that was here before finds its bit set. */
    uint64_t *bits = ebbi_span_free_bits(s);
    for (unsigned w = 0; w * 64 < nobj; w++)
        bits[w] = nobj - w * 64 >= 64 ? ~0ull : (1ull << (nobj - w * 64)) - 1;
    s->released = 0;
    s->gone = 0;
    s->absent = 0;
    s->pages_seen = 0;
    s->pop_ms = now;
    ebbi_pm_set_span(s);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish(); /* what the allocation traded away (see page_alloc) */
    /* Every object with the key. */
    for (char *o = (char *)ebbi_span_blocks(s); o < ebbi_span_end(s); o += ci->size)
        ((uint64_t *)o)[1] = ebbi_free_key;
    return s;
}

/* The words of s's free bits. */
static unsigned free_words(const struct ebb_span *s) { return (s->objects + 63) / 64; }

/* The span that leaves the central tier gives its free bits' record back first. */
static void drop_free_bits(struct ebb_span *s) {
    if (s->objects > 64) ebbi_span_delete((struct ebb_span *)s->free_ext);
}

/* ---------------------------------------------------------------- released pages
 * Kernel page k of a span is [start + k * kpage, start + (k + 1) * kpage); bit k of
 * `gone` is set while that page is given back (MADV_DONTNEED: it reads as zero and is not
 * resident).  A page goes back only when every object overlapping it is free on the
 * span, so no byte of a block the program or a cache holds is ever dropped; the
 * span's unused bytes, at its start, hold nothing.  An object that overlaps a page gone
 * is "absent": not free on the span, its key gone with the page; `absent` counts them, and
 * they are still free objects for the counters (free_objects, bucket fullness).
 * c->released is the sum of the gone pages' bytes.
 *
 * Which spans: a span that nothing was taken from for EBB_RELEASE_MS (the age at which
 * free spans go back too; twice that where the kernel backs memory with huge pages, which
 * a page given back splits) and that has at most half of its objects in use (allocation
 * takes from the fullest spans, so these are the last to be drawn on); malloc_trim takes
 * every span.  A span is looked at again only after a free into it (pages_seen), so a
 * quiet span costs a pass one test, and a span objects are being taken from costs
 * nothing: busy spans are never looked at, and the fast paths do not know about any of it.
 * The pass reads the span's free bits, not its objects' memory; allocation takes the
 * lowest objects first, so that the lowest pages fill first and the highest stay free.
 *
 * When a span has no object free on it and has objects absent, the lowest gone page that
 * holds objects comes back, with the pages its objects straddle into: it must read as
 * zero (a write after free would show there; so would a double free of an absent object
 * that raced with the span's first page going, see set_gone), and its objects are made
 * again with keys.  While a span has pages gone, its frees take the slow path, which
 * refuses an absent object (its key went with the page).  A span that empties with pages
 * gone is checked the same way and goes back to the page heap released as a whole.  With kernel pages bigger than ebbmalloc's
 * (16 and 64 KiB on arm64) only spans that start and end on a kernel page take part. */

/* Pages of s that [a, a + len) overlaps (len > 0, inside the span). */
static uint64_t pages_of(const struct ebb_span *s, uintptr_t a, size_t len) {
    unsigned k0 = (unsigned)((a - s->start) >> kshift), k1 = (unsigned)((a + len - 1 - s->start) >> kshift);
    return (~0ull >> (63 - k1)) & (~0ull << k0);
}

/* Every change of `gone`, under c->lock.  While a span has pages gone, the class map
 * sends every free of its blocks to the slow path (ebbi_pm_route), which asks
 * ebbi_central_routed_free: a double free of an absent object is stopped there, at the
 * free, instead of being taken by a thread cache (its key went with the page) and found
 * only when the page comes back and must read as zero.  gone is stored atomically
 * because ebbi_central_routed_free reads it without the lock (see there). */
static void set_gone(struct ebb_span *s, uint64_t gone) {
    uint64_t was = s->gone;
    __atomic_store_n(&s->gone, gone, __ATOMIC_RELAXED);
    if (!was && gone) __atomic_store_n(&s->routed_frees, 0, __ATOMIC_RELAXED);
    if (!was != !gone) ebbi_pm_route(s, !gone);
}

/* A span whose blocks are freed this often while pages of it are gone is in use again
 * (malloc_trim takes the pages of busy spans too): its pages come back, so that its
 * frees are fast again.  The cost is bounded: this many slow frees per release. */
#define ROUTED_FREES_BACK 64

static void bring_all_back(struct ebb_central *c, struct ebb_span *s);

/* A free that the class map sent to the slow path, of block o of class cls
 * (ebbi_pm_class said so): true if o is absent, freed already, its page given back.
 * Read without the class's lock: for a block the program legitimately frees, none of its
 * pages is gone, nor can become so while the program holds it (only pages whose every
 * object is free go), and the store that cleared a bit before the block was handed out
 * again happened before the caller got it (the class's lock, then the program's own hand
 * over), so no false fault.  A double free of an absent block finds its bits set: they
 * stay so until its page comes back, and a racing change of other bits of the same span
 * is one atomic word either way.  A legitimate free counts towards ROUTED_FREES_BACK;
 * the thread whose count reaches it brings the span's pages back, under the lock, if
 * they are still gone then. */
bool ebbi_central_routed_free(const void *o, unsigned cls) {
    struct ebb_span *s = ebbi_pm_span((uintptr_t)o);
    uint64_t g = s ? __atomic_load_n(&s->gone, __ATOMIC_RELAXED) : 0;
    if (!g) return false;
    if (pages_of(s, (uintptr_t)o, ebbi_classes[cls].size) & g) return true;
    if (__atomic_add_fetch(&s->routed_frees, 1, __ATOMIC_RELAXED) == ROUTED_FREES_BACK) {
        struct ebb_central *c = &ebbi_central[cls];
        ebbi_lock(&c->lock);
        if (s->gone) bring_all_back(c, s); /* o is held: s is still this class's span */
        ebbi_unlock(&c->lock);
    }
    return false;
}

static uint64_t obj_pages(const struct ebb_span *s, uintptr_t base, size_t size, unsigned j) {
    return pages_of(s, base + (uintptr_t)j * size, size);
}

/* The objects overlapping page k: [*j0, *j1]; false if none (the page is all unused). */
static bool objects_in(const struct ebb_span *s, uintptr_t base, size_t size, unsigned k, unsigned *j0,
                       unsigned *j1) {
    uintptr_t pa = s->start + ((uintptr_t)k << kshift), pb = pa + kpage;
    if (pb <= base) return false;
    *j0 = (unsigned)(((pa > base ? pa : base) - base) / size);
    *j1 =
        (unsigned)(((pb < (uintptr_t)ebbi_span_end(s) ? pb : (uintptr_t)ebbi_span_end(s)) - 1 - base) / size);
    return true;
}

static bool pages_apply(const struct ebb_span *s) {
    return (((uintptr_t)s->start | (uintptr_t)ebbi_span_end(s)) & (kpage - 1)) == 0;
}

static unsigned span_kpages(const struct ebb_span *s) {
    return (unsigned)(((uintptr_t)ebbi_span_end(s) - s->start) >> kshift);
}

/* A page that was given back must read as zero until it comes back. */
static void check_untouched(const struct ebb_span *s, unsigned k) {
    const uint64_t *w = (const uint64_t *)(s->start + ((uintptr_t)k << kshift));
    uint64_t any = 0;
    for (size_t i = 0; i < kpage / 8; i++) any |= w[i];
    if (any)
        ebbi_fatal("malloc(): the page at %p, given back to the kernel while it held only free "
                   "%u-byte blocks, was written: one of them was freed twice or used after free",
                   (void *)w, ebbi_classes[s->cls].size);
}

/* s has no object free on it and objects of it are absent: the lowest gone page that
 * holds objects comes back, with the pages its objects straddle into, and the objects
 * wholly back are free on it again. */
static void bring_back(struct ebb_central *c, struct ebb_span *s) {
    const size_t size = ebbi_classes[s->cls].size;
    const uintptr_t base = ebbi_span_blocks(s);
    uint64_t holding = s->gone & pages_of(s, base, (size_t)s->objects * size);
    ebb_assert(holding && s->absent);
    unsigned k = (unsigned)__builtin_ctzll(holding), j0 = 0, j1 = 0;
    objects_in(s, base, size, k, &j0, &j1);
    uint64_t back = pages_of(s, base + (uintptr_t)j0 * size, (size_t)(j1 - j0 + 1) * size) & s->gone;
    for (uint64_t m = back; m; m &= m - 1) check_untouched(s, (unsigned)__builtin_ctzll(m));
    uint64_t before = s->gone;
    set_gone(s, s->gone & ~back);
    unsigned lo = (unsigned)__builtin_ctzll(back), hi = 63 - (unsigned)__builtin_clzll(back), jlo = 0,
             jhi = 0, x;
    objects_in(s, base, size, lo, &jlo, &x);
    objects_in(s, base, size, hi, &x, &jhi);
    uint64_t *bits = ebbi_span_free_bits(s);
    for (unsigned j = jlo; j <= jhi; j++) {
        uint64_t m = obj_pages(s, base, size, j);
        if (!(m & before) || (m & s->gone)) continue; /* was not absent, or still is */
        ((uint64_t *)(base + (uintptr_t)j * size))[1] = ebbi_free_key;
        bits[j / 64] |= 1ull << (j % 64);
        s->absent--;
    }
    size_t bytes = (size_t)__builtin_popcountll(back) << kshift;
    c->released -= bytes;
    c->pages_back += bytes;
    ebbi_os_heap_reuse(bytes);
}

/* s is in use again (ROUTED_FREES_BACK): every page of it that is gone comes back,
 * checked as bring_back checks them, with its objects free on it again. */
static void bring_all_back(struct ebb_central *c, struct ebb_span *s) {
    const uintptr_t base = ebbi_span_blocks(s);
    while (s->absent && (s->gone & pages_of(s, base, (size_t)s->objects * ebbi_classes[s->cls].size)))
        bring_back(c, s);
    if (s->gone) { /* pages that hold no object (the span's unused start) */
        for (uint64_t m = s->gone; m; m &= m - 1) check_untouched(s, (unsigned)__builtin_ctzll(m));
        size_t bytes = (size_t)__builtin_popcountll(s->gone) << kshift;
        c->released -= bytes;
        c->pages_back += bytes;
        ebbi_os_heap_reuse(bytes);
        set_gone(s, 0);
    }
}

/* s is empty: every page of it goes back, so that the page heap can hold it as released
 * (the pages gone already were checked first).  Where the kernel refuses, the span goes
 * back as resident. */
static void release_whole(struct ebb_central *c, struct ebb_span *s) {
    for (uint64_t m = s->gone; m; m &= m - 1) check_untouched(s, (unsigned)__builtin_ctzll(m));
    size_t gone = (size_t)__builtin_popcountll(s->gone) << kshift;
    c->released -= gone;
    ebbi_os_heap_reuse(gone); /* given back again below, with the rest of the span */
    /* not set_gone: the class map keeps sending its frees to the slow path until the
     * page heap clears the entries (the span goes back next) */
    __atomic_store_n(&s->gone, 0, __ATOMIC_RELAXED);
    s->absent = 0;
    s->released = ebbi_os_heap_release((void *)s->start, s->npages << EBB_PAGE_SHIFT) == 0;
}

/* s's free bits from the free objects (isfree, by index), without those in pages gone,
 * which are counted as absent. */
static void rebuild_free_bits(struct ebb_span *s, const uint64_t *isfree) {
    const size_t size = ebbi_classes[s->cls].size;
    const uintptr_t base = ebbi_span_blocks(s);
    uint64_t *bits = ebbi_span_free_bits(s);
    unsigned absent = 0;
    for (unsigned w = 0; w < free_words(s); w++) bits[w] = isfree[w];
    for (unsigned j = 0; j < s->objects && s->gone; j++) {
        if (!(isfree[j / 64] & (1ull << (j % 64))) || !(obj_pages(s, base, size, j) & s->gone)) continue;
        bits[j / 64] &= ~(1ull << (j % 64));
        absent++;
    }
    s->absent = absent;
}

/* Give back the pages of s that hold only free objects (or none).  Caller holds c->lock.
 * Returns bytes released. */
static size_t release_span_pages(struct ebb_central *c, struct ebb_span *s) {
    const unsigned cls = s->cls;
    const size_t size = ebbi_classes[cls].size;
    const uintptr_t base = ebbi_span_blocks(s);
    const unsigned n = s->objects;
    uint64_t isfree[(EBB_PAGE / EBB_MIN_ALIGN + 63) / 64] = {0}; /* 512 objects at most */
    ebb_assert(n <= EBB_PAGE / EBB_MIN_ALIGN);
    const uint64_t *bits = ebbi_span_free_bits(s);
    for (unsigned w = 0; w < free_words(s); w++) isfree[w] = bits[w];
    if (s->gone)
        for (unsigned j = 0; j < n; j++)
            if (obj_pages(s, base, size, j) & s->gone) isfree[j / 64] |= 1ull << (j % 64);
    /* Pages not gone yet whose every object is free. */
    const unsigned np = span_kpages(s);
    uint64_t want = 0;
    for (unsigned k = 0; k < np; k++) {
        if (s->gone & (1ull << k)) continue;
        unsigned j0, j1;
        bool all = true;
        if (objects_in(s, base, size, k, &j0, &j1))
            for (unsigned j = j0; j <= j1 && all; j++) all = isfree[j / 64] & (1ull << (j % 64));
        if (all) want |= 1ull << k;
    }
    /* The pages count as gone, and their objects are no longer free on the span, before
     * the kernel is asked: so nothing is taken from a page being dropped. */
    set_gone(s, s->gone | want);
    rebuild_free_bits(s, isfree);
    uint64_t refused = 0;
    for (uint64_t left = want; left;) { /* one call per run of pages */
        unsigned k = (unsigned)__builtin_ctzll(left), e = k;
        while (e < 64 && (left & (1ull << e))) e++;
        uint64_t run = (e == 64 ? ~0ull : (1ull << e) - 1) & ~((1ull << k) - 1);
        left &= ~run;
        if (ebbi_os_heap_release((void *)(s->start + ((uintptr_t)k << kshift)), (size_t)(e - k) << kshift)) {
            refused = run | left; /* the rest stays resident, and is counted so */
            break;
        }
    }
    if (refused) { /* their objects are whole: free on the span again */
        set_gone(s, s->gone & ~refused);
        rebuild_free_bits(s, isfree);
    }
    size_t done = (size_t)__builtin_popcountll(want & ~refused) << kshift;
    c->released += done;
    c->pages_out += done;
    return done;
}

/* Not looked at since objects last came back, and its pages can go: malloc_trim takes
 * it; the timer too once it is at most half in use (candidate) and idle long enough. */
static bool unseen(const struct ebb_span *s) { return !s->pages_seen && pages_apply(s); }
static bool candidate(const struct ebb_span *s) { return unseen(s) && s->used * 2 <= s->objects; }
static bool qualifies(const struct ebb_span *s, uint64_t now, uint64_t idle_ms, bool all) {
    return all ? unseen(s) : candidate(s) && now - s->pop_ms >= idle_ms;
}

/* A span that may qualify once it has been idle long enough (it was just made, or
 * objects came back to it): the class's due time is no later than then.  Its pop_ms only
 * grows after this (a later pop), which makes the bound early, never late. */
static void may_qualify(struct ebb_central *c, const struct ebb_span *s) {
    uint64_t t = s->pop_ms + (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS);
    if (t < c->release_due_ms) c->release_due_ms = t;
}

size_t ebbi_central_release_pages(bool all) {
    if (ebbi_os_refused_for_good(EBB_REFUSED_RELEASE)) return 0;
    size_t done = 0;
    /* Inside a huge page, a kernel page given back splits it: twice as long, as for the
     * page heap's free ranges smaller than a huge page. */
    uint64_t idle_ms = (uint64_t)ebbi_opt(EBB_OPT_RELEASE_MS) * (ebbi_thp_active ? 2 : 1);
    /* A program that works in bursts uses these pages again in its next one: they stay
     * while every free object of the tier fits in the room the free-page cap leaves
     * (page_heap.c), read before any central lock is taken (the page heap lock comes
     * after a central one). */
    size_t room = all ? 0 : ebbi_page_burst_room();
    if (room) {
        size_t free_bytes = 0;
        for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
            ebbi_lock(&ebbi_central[cls].lock);
            free_bytes += ebbi_central[cls].free_objects * ebbi_classes[cls].size;
            ebbi_unlock(&ebbi_central[cls].lock);
        }
        if (free_bytes <= room) return 0;
    }
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_central *c = &ebbi_central[cls];
        ebbi_lock(&c->lock);
        uint64_t now = ebbi_now_ms();
        /* Nothing changed that could make a span qualify yet (an idle process's passes
         * end here, instead of walking every span of every class each time). */
        if (!all && now < c->release_due_ms) {
            ebbi_unlock(&c->lock);
            continue;
        }
        /* The walk looks at every span that could qualify: what it leaves for later is
         * a span not idle long enough yet, whose time it keeps.  A span more than half
         * in use, or looked at already, can only come to qualify when objects come back
         * to it (span_refilled), which lowers the due time again (may_qualify). */
        uint64_t due = UINT64_MAX;
        /* At most half in use: bucket 2 at most (used * EBB_BUCKETS / objects). */
        for (int bk = 0; bk < EBB_BUCKETS; bk++) {
            if (!all && bk > EBB_BUCKETS / 2) break;
            for (struct ebb_span *s = c->buckets[bk].head; s; s = s->next) {
                if (!qualifies(s, now, idle_ms, all)) {
                    if (candidate(s) && s->pop_ms + idle_ms < due) due = s->pop_ms + idle_ms;
                    continue;
                }
                done += release_span_pages(c, s);
                s->pages_seen = 1;
            }
        }
        c->release_due_ms = due;
        ebbi_unlock(&c->lock);
    }
    return done;
}

/* ---------------------------------------------------------------- taking and giving back */
size_t ebbi_central_pop(unsigned cls, size_t n, void **head, void **tail) {
    struct ebb_central *c = &ebbi_central[cls];
    ebbi_lock(&c->lock);
    if (c->xfer_used) {
        --c->xfer_used;
        *head = c->xfer_slots[c->xfer_used].head;
        *tail = c->xfer_slots[c->xfer_used].tail;
        uint32_t got = c->xfer_slots[c->xfer_used].n;
        c->xfer_objects -= got;
        c->handed_out += got;
        if (c->xfer_used < c->xfer_low) c->xfer_low = c->xfer_used;
        ebbi_unlock(&c->lock);
        return got;
    }
    const uint64_t now = ebbi_now_ms();
    void *chain = NULL, *last = NULL;
    size_t got = 0;
    while (got < n) {
        struct ebb_span *s = NULL;
        for (int b = EBB_BUCKETS - 1; b >= 0 && !s; b--) s = c->buckets[b].head;
        if (!s) {
            c->growing++;
            ebbi_unlock(&c->lock);
            s = new_span(cls, now);
            ebbi_lock(&c->lock);
            c->growing--;
            if (!s) break;
            c->spans++;
            c->free_objects += s->objects;
            may_qualify(c, s);
        }
        ebb_assert(s->state == SPAN_SMALL && s->cls == cls && s->used <= s->objects);
        if (now > s->pop_ms) s->pop_ms = now; /* never back: `now` is from before a growth's unlock */
        const uintptr_t base = ebbi_span_blocks(s);
        const size_t size = ebbi_classes[cls].size;
        uint64_t *bits = ebbi_span_free_bits(s);
        while (got < n && span_has_free(s)) {
            size_t on_span = s->objects - s->used - s->absent;
            if (!on_span) {
                bring_back(c, s);
                continue;
            }
            /* The lowest free objects, linked in address order (the links are stores, not
             * a chase through the objects' memory), the last one to the chain so far. */
            const size_t want = n - got < on_span ? n - got : on_span;
            char *first = NULL, *o = NULL;
            size_t k = 0;
            for (unsigned w = 0; k < want; w++) {
                if (unlikely(w >= free_words(s))) /* the bits hold on_span objects */
                    ebbi_fatal(
                        "internal check failed: a span's free bits hold fewer objects than its counts");
                uint64_t m = bits[w];
                for (; m && k < want; m &= m - 1, k++) {
                    char *x = (char *)base + (size_t)(w * 64 + (unsigned)__builtin_ctzll(m)) * size;
                    if (o) ebbi_set_next(o, x);
                    else first = x;
                    o = x;
                }
                bits[w] = m;
            }
            ebbi_set_next(o, chain);
            if (!chain) last = o;
            chain = first;
            s->used += (uint32_t)k;
            got += k;
        }
        rebucket(c, s);
    }
    c->free_objects -= got;
    c->handed_out += got;
    ebbi_unlock(&c->lock);
    *head = chain;
    *tail = last;
    return got;
}

/* A span that objects came back to: `back` of them since it was last looked at. */
static inline __attribute__((always_inline)) void span_refilled(struct ebb_central *c, struct ebb_span *s,
                                                                uint32_t back) {
    c->free_objects += back;
    if (s->used == 0) {
        if (s->gone) release_whole(c, s);
        if (s->on_list) ebbi_span_list_remove(&c->buckets[s->bucket], s);
        c->spans--;
        c->free_objects -= s->objects;
        drop_free_bits(s);
        ebbi_page_free(s);
    } else {
        s->pages_seen = 0;
        may_qualify(c, s);
        rebucket(c, s);
    }
}

/* Return a chain of n objects (or up to NULL) to their spans.  Caller holds c->lock.
 * Objects of one span often come in a row (a thread cache gives back what it took in one
 * run): the span is looked up in the page map only when an object lies in another page
 * than the one before, and its counters and bucket are updated once per row.  Every object reaching
 * the central tier was checked when it was freed (see release_objects), and against the
 * pages gone too unless its free raced with the span's first page going (set_gone): such
 * a double free of an absent object shows here. */
static inline __attribute__((always_inline)) void to_spans(struct ebb_central *c, unsigned cls, void *o,
                                                           size_t n) {
    const size_t size = ebbi_classes[cls].size;
    const uint64_t div = ebbi_class_div[cls];
    struct ebb_span *s = NULL; /* the next row's span, when the row before found it */
    void *prev = NULL;         /* the object whose link led to o */
    size_t i = 0;
    while (i < n && o) { /* a row: objects of one span */
        if (!s) s = ebbi_pm_span((uintptr_t)o);
        if (unlikely(!s || s->state != SPAN_SMALL || s->cls != cls)) ebbi_corrupt_link(prev ? prev : o);
        /* s's free bits, first block, objects in use and pages gone, held here for the
         * row; the page of the object before, which is in s */
        uint64_t *bits = ebbi_span_free_bits(s);
        const uintptr_t base = ebbi_span_blocks(s);
        const uint32_t objects = s->objects;
        uint32_t used = s->used, back = 0;
        const uint64_t gone = s->gone;
        uintptr_t page = (uintptr_t)o >> EBB_PAGE_SHIFT;
        struct ebb_span *t = NULL;
        for (;;) {
            /* One multiply: its low half says whether o is a block start (see
             * ebbi_class_div), its high half which one.  A link to anything else was
             * overwritten, and must not set a bit outside the span's. */
            const unsigned __int128 pr = (unsigned __int128)((uintptr_t)o - base) * div;
            const uint64_t j = (uint64_t)(pr >> 64);
            if (unlikely((uint64_t)pr >= div || j >= objects)) ebbi_corrupt_link(prev ? prev : o);
            if (unlikely(gone) && (pages_of(s, (uintptr_t)o, size) & gone)) ebbi_reject("free()", o);
            /* Every object a cache gives back has the key: one without it is a block
             * the program holds, reached through a link that was overwritten. */
            if (unlikely(((const uint64_t *)o)[1] != ebbi_free_key)) ebbi_corrupt_link(prev ? prev : o);
            void *next = ebbi_next_checked(o);
            /* A block free on the span already came back twice: a double free that the
             * key did not show (the block was written after its first free, say). */
            const uint64_t bit = 1ull << (j % 64);
            if (unlikely(bits[j / 64] & bit)) ebbi_reject("free()", o);
            bits[j / 64] |= bit;
            ebb_assert(used > 0);
            back++, i++, used--;
            prev = o, o = next;
            /* An emptied span goes back to the page heap: no later object is in it. */
            if (!used || i == n || !o) break;
            if (((uintptr_t)o >> EBB_PAGE_SHIFT) != page) {
                if ((t = ebbi_pm_span((uintptr_t)o)) != s) break;
                t = NULL, page = (uintptr_t)o >> EBB_PAGE_SHIFT;
            }
        }
        s->used = used;
        span_refilled(c, s, back);
        s = t;
    }
}

void ebbi_central_push(unsigned cls, void *head, void *tail, size_t n) {
    struct ebb_central *c = &ebbi_central[cls];
    ebbi_lock(&c->lock);
    c->handed_out -= n;
    if (c->xfer_used < EBB_XFER_SLOTS && c->xfer_objects + n <= c->xfer_limit &&
        n <= ebbi_classes[cls].batch) {
        c->xfer_slots[c->xfer_used].head = head;
        c->xfer_slots[c->xfer_used].tail = tail;
        c->xfer_slots[c->xfer_used].n = (uint32_t)n;
        c->xfer_used++;
        c->xfer_objects += (uint32_t)n;
        ebbi_unlock(&c->lock);
        return;
    }
    to_spans(c, cls, head, n);
    ebbi_unlock(&c->lock);
}

/* Move transfer-cache batches back to their spans: all of them, or those not used since
 * the last call (below the low-water mark).  Returns objects moved. */
size_t ebbi_central_trim(bool all) {
    size_t moved = 0;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_central *c = &ebbi_central[cls];
        ebbi_lock(&c->lock);
        uint32_t drop = all ? c->xfer_used : c->xfer_low;
        for (uint32_t k = 0; k < drop && c->xfer_used; k++) {
            --c->xfer_used;
            uint32_t n = c->xfer_slots[c->xfer_used].n;
            c->xfer_objects -= n;
            to_spans(c, cls, c->xfer_slots[c->xfer_used].head, n);
            moved += n;
        }
        c->xfer_low = c->xfer_used;
        ebbi_unlock(&c->lock);
    }
    return moved;
}

/* ---------------------------------------------------------------- checks */
/* Every span of every class against its invariants and the class's counters, and the
 * transfer cache's chains against theirs: each chain as long as its slot says, through
 * block starts of spans of the class, each object with the key, and the class's objects
 * all accounted for (spans * objects == handed_out + free_objects + xfer_objects).  For
 * tests and debugging (it reads the pages gone, which brings in the kernel's zero page);
 * takes each central lock in turn.  Returns NULL or what is wrong. */
const char *ebbi_central_verify(void) {
    const char *err = NULL;
    for (unsigned cls = 1; cls < EBB_NCLASS && !err; cls++) {
        struct ebb_central *c = &ebbi_central[cls];
        const size_t size = ebbi_classes[cls].size;
        size_t free_objects = 0, released = 0, spans_listed = 0;
        ebbi_lock(&c->lock);
        for (int bk = 0; bk < EBB_BUCKETS && !err; bk++) {
            for (struct ebb_span *s = c->buckets[bk].head; s && !err; s = s->next) {
                spans_listed++;
                size_t listed = 0;
                const uintptr_t base = ebbi_span_blocks(s);
                const uint64_t *bits = ebbi_span_free_bits(s);
                for (unsigned j = 0; j < free_words(s) * 64 && !err; j++) {
                    if (!(bits[j / 64] >> (j % 64) & 1)) continue;
                    const uint64_t *o = (const uint64_t *)(base + (uintptr_t)j * size);
                    listed++;
                    if (j >= s->objects) err = "a free bit past the span's last object";
                    else if (s->gone && (obj_pages(s, base, size, j) & s->gone))
                        err = "a free object in a page gone";
                    else if (o[1] != ebbi_free_key) err = "free object without the key";
                }
                unsigned absent = 0;
                for (unsigned j = 0; j < s->objects && s->gone; j++)
                    absent += (obj_pages(s, base, size, j) & s->gone) != 0;
                for (uint64_t m = s->gone; m && !err; m &= m - 1) {
                    const uint64_t *w =
                        (const uint64_t *)(s->start + ((uintptr_t)__builtin_ctzll(m) << kshift));
                    for (size_t i = 0; i < kpage / 8 && !err; i++)
                        if (w[i]) err = "a page gone was written";
                }
                if (err) break;
                if (s->state != SPAN_SMALL || s->cls != cls) err = "span of another kind on a bucket";
                else if (!s->on_list || s->bucket != bk || bucket_of(s) != (unsigned)bk)
                    err = "span on the wrong bucket";
                else if (absent != s->absent) err = "absent count differs from the pages gone";
                else if (s->objects != s->used + listed + s->absent) err = "objects != used + free + absent";
                else if (s->gone && !pages_apply(s)) err = "pages gone in a span that may not release";
                free_objects += s->objects - s->used;
                released += (size_t)__builtin_popcountll(s->gone) << kshift;
            }
        }
        size_t in_chains = 0;
        if (!err &&
            (c->xfer_used > EBB_XFER_SLOTS || c->xfer_objects > c->xfer_limit || c->xfer_low > c->xfer_used))
            err = "transfer cache slots out of range";
        for (uint32_t k = 0; k < c->xfer_used && !err; k++) {
            size_t len = 0;
            void *last = NULL;
            for (void *o = c->xfer_slots[k].head; o && !err; last = o, o = ebbi_next(o)) {
                struct ebb_span *s = ((uintptr_t)o & (EBB_MIN_ALIGN - 1)) ? NULL : ebbi_pm_span((uintptr_t)o);
                if (!s || s->state != SPAN_SMALL || s->cls != cls)
                    err = "transfer chain leaves the class's spans";
                else if ((uintptr_t)o < ebbi_span_blocks(s) ||
                         !ebbi_block_start(cls, (uintptr_t)o - ebbi_span_blocks(s)))
                    err = "transfer chain holds no block start";
                else if (((uint64_t *)o)[1] != ebbi_free_key)
                    err = "object in a transfer chain without the key";
                else if (++len > c->xfer_slots[k].n) err = "transfer chain longer than its count";
            }
            if (!err && len != c->xfer_slots[k].n) err = "transfer chain shorter than its count";
            if (!err && last != c->xfer_slots[k].tail) err = "transfer chain's tail is not its last object";
            in_chains += len;
        }
        if (!err && in_chains != c->xfer_objects) err = "xfer_objects differs from the chains";
        if (!err && c->spans * ebbi_class_objects(cls) != c->handed_out + c->free_objects + c->xfer_objects)
            err = "spans * objects != handed out + free + in transfer";
        /* Spans with no free object are on no bucket and count nothing. */
        if (!err && free_objects != c->free_objects) err = "free_objects differs from the spans";
        if (!err && released != c->released) err = "released bytes differ from the pages gone";
        if (!err && spans_listed > c->spans) err = "more spans on buckets than the class has";
        ebbi_unlock(&c->lock);
    }
    return err;
}

/* ---------------------------------------------------------------- fork */
void ebbi_central_fork_prepare(void) {
    for (unsigned c = 0; c < EBB_NCLASS; c++) ebbi_lock_raw(&ebbi_central[c].lock);
}
void ebbi_central_fork_parent(void) {
    for (unsigned c = 0; c < EBB_NCLASS; c++) ebbi_unlock_raw(&ebbi_central[c].lock);
}
/* A thread that was making a span for a class (growing, between the class's lock and the
 * page heap's) is gone in the child: the mark goes, so that ebb_stats does not wait for
 * it, and the span it was making is lost, as are the chains other threads held between
 * the tiers (counted in use). */
void ebbi_central_fork_child(void) {
    for (unsigned c = 0; c < EBB_NCLASS; c++) {
        ebbi_lock_reset(&ebbi_central[c].lock);
        ebbi_central[c].growing = 0;
    }
}
