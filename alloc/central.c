/* central.c: the tier between thread caches and the page heap, one per size class.
 *
 * Batches freed by one thread land in the transfer cache and go whole to the next thread
 * that runs dry, so the common producer/consumer case never walks objects.  Beyond the
 * transfer cache, objects go back to their spans; a span whose objects are all back
 * returns to the page heap.  Spans with free objects sit on EBB_BUCKETS lists by how
 * full they are, and objects are taken from the fullest, so that lightly used spans
 * empty out instead of a few long-lived objects pinning many spans.
 *
 * Lock order: a central lock, then the page heap lock.  Never the other way. */
#include "internal.h"

struct ebb_central ebbi_central[EBB_NCLASS];

#define TAIL_MIN_CLASS 8192 /* see "released tails" below */

/* Per class, a reciprocal that replaces a division: used times bucket_mul, shifted by
 * 32, is the fullness bucket. */
static uint64_t bucket_mul[EBB_NCLASS];

void ebbi_central_init(void) {
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        bucket_mul[c] = ((uint64_t)EBB_BUCKETS << 32) / ebbi_class_objects(c);
        size_t batch_bytes = (size_t)ebbi_classes[c].batch * ebbi_classes[c].size;
        /* A transfer cache of 64 KiB at most, none for classes whose batch is bigger
         * (their objects go back to their spans, and empty spans to the page heap, where
         * any size can reuse the pages: 0.03 less peak RSS over peak live on the
         * arena-creep benchmark, and no slower). */
        size_t lim = ((size_t)64 << 10) / batch_bytes;
        ebbi_central[c].tc_limit = (uint32_t)(lim > EBB_TC_SLOTS ? EBB_TC_SLOTS : lim);
    }
}

static unsigned bucket_of(const struct ebb_span *s) {
    unsigned b = (unsigned)(((uint64_t)s->used * bucket_mul[s->cls]) >> 32);
    return b >= EBB_BUCKETS ? EBB_BUCKETS - 1 : b;
}

static bool span_has_free(const struct ebb_span *s) { return s->freelist != NULL; }

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

/* Set up under the page heap lock: a neighbour's free looks at this span's state. */
static struct ebb_span *new_span(unsigned cls) {
    const struct ebb_class_info *ci = &ebbi_classes[cls];
    ebbi_lock(&ebbi_ph_lock);
    struct ebb_span *s = ebbi_page_alloc_locked(ci->pages, 1);
    if (!s) {
        ebbi_unlock(&ebbi_ph_lock);
        ebbi_page_release_finish();
        return NULL;
    }
    s->state = SPAN_SMALL;
    s->cls = (uint8_t)cls;
    s->used = 0;
    s->objects = (uint32_t)ebbi_class_objects(cls);
    s->end = (char *)s->start + (size_t)s->objects * ci->size;
    ebbi_pm_set_span(s);
    ebbi_unlock(&ebbi_ph_lock);
    ebbi_page_release_finish(); /* what the allocation traded away (see page_alloc) */
    /* The unused tail, if any (a multiple of 16 bytes), holds the key where a block
     * there would: a pointer to it is a multiple of the size from the span's start and
     * passes free's block-start check, but not its double-free check. */
    if ((char *)s->start + (ci->pages << EBB_PAGE_SHIFT) > s->end) ((uint64_t *)s->end)[1] = ebbi_free_key;
    /* Every object on the free list, with the key, lowest address first. */
    void *next = NULL;
    for (char *o = s->end - ci->size; o >= (char *)s->start; o -= ci->size) {
        uint64_t *w = (uint64_t *)o;
        w[1] = ebbi_free_key;
        if (ci->size >= TAIL_MIN_CLASS) w[2] = 0;
        ebbi_set_next(o, next);
        next = o;
    }
    s->freelist = next;
    return s;
}

/* ---------------------------------------------------------------- released tails
 * A free object of a big class (8 KiB and more) that sits in a span kept alive by its
 * neighbours can give its pages back, all but the kernel page holding its first bytes
 * (the free-list link, the double-free key and this mark).  Done for classes that saw
 * no allocation since the previous release pass. */
#define TAIL_MARK 0x6c696174ull /* in word 2 of a free object whose tail is released */

static void tail_range(void *o, size_t size, uintptr_t *a, uintptr_t *b) {
    *a = ((uintptr_t)o + 64 + 4095) & ~(uintptr_t)4095;
    *b = ((uintptr_t)o + size) & ~(uintptr_t)4095;
}

/* An object leaves a span's free list: it is whole again (its tail refaults as zero). */
static void tail_taken(struct ebb_central *c, void *o, size_t size) {
    uint64_t *w = o;
    if (w[2] != TAIL_MARK) return;
    uintptr_t a, b;
    tail_range(o, size, &a, &b);
    c->tail_released -= b - a;
    w[2] = 0;
}

size_t ebbi_central_release_tails(bool all) {
    size_t done = 0;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        const size_t size = ebbi_classes[cls].size;
        if (size < TAIL_MIN_CLASS) continue;
        struct ebb_central *c = &ebbi_central[cls];
        ebbi_lock(&c->lock);
        bool idle = c->pops == c->pops_seen;
        c->pops_seen = c->pops;
        if (idle || all) {
            for (int bk = 0; bk < EBB_BUCKETS; bk++) {
                for (struct ebb_span *s = c->buckets[bk].head; s; s = s->next) {
                    if (s->tails_released) continue;
                    for (void *o = s->freelist; o; o = ebbi_next(o)) {
                        uint64_t *w = o;
                        if (w[2] == TAIL_MARK) continue;
                        uintptr_t a, b;
                        tail_range(o, size, &a, &b);
                        if (b <= a) continue;
                        ebbi_os.release((void *)a, b - a);
                        w[2] = TAIL_MARK;
                        c->tail_released += b - a;
                        done += b - a;
                    }
                    s->tails_released = 1;
                }
            }
        }
        ebbi_unlock(&c->lock);
    }
    return done;
}

size_t ebbi_central_pop(unsigned cls, size_t n, void **head) {
    struct ebb_central *c = &ebbi_central[cls];
    const size_t size = ebbi_classes[cls].size;
    ebbi_lock(&c->lock);
    if (c->tc_used) {
        --c->tc_used;
        *head = c->tc_slots[c->tc_used].head;
        uint32_t got = c->tc_slots[c->tc_used].n;
        c->tc_objects -= got;
        if (c->tc_used < c->tc_low) c->tc_low = c->tc_used;
        ebbi_unlock(&c->lock);
        return got;
    }
    void *chain = NULL;
    size_t got = 0;
    while (got < n) {
        struct ebb_span *s = NULL;
        for (int b = EBB_BUCKETS - 1; b >= 0 && !s; b--) s = c->buckets[b].head;
        if (!s) {
            ebbi_unlock(&c->lock);
            s = new_span(cls);
            ebbi_lock(&c->lock);
            if (!s) break;
            c->spans++;
            c->free_objects += s->objects;
        }
        ebb_assert(s->state == SPAN_SMALL && s->cls == cls && s->used <= s->objects);
        while (got < n && span_has_free(s)) {
            void *o = s->freelist;
            void *next = ebbi_next_checked(o);
            if (unlikely(next && ((uintptr_t)next < s->start || (char *)next >= s->end)))
                ebbi_corrupt_link(o); /* a span's free list stays inside the span */
            s->freelist = next;
            if (size >= TAIL_MIN_CLASS) tail_taken(c, o, size);
            ebbi_set_next(o, chain);
            chain = o;
            s->used++;
            got++;
        }
        rebucket(c, s);
    }
    c->free_objects -= got;
    c->pops += got;
    ebbi_unlock(&c->lock);
    *head = chain;
    return got;
}

/* Return one object to its span.  Caller holds c->lock.  Every object reaching the
 * central tier was checked when it was freed (see release_objects). */
static void to_span(struct ebb_central *c, unsigned cls, void *o) {
    struct ebb_span *s = ebbi_pm_span((uintptr_t)o);
    ebb_assert(s && s->state == SPAN_SMALL && s->cls == cls);
    if (ebbi_classes[cls].size >= TAIL_MIN_CLASS) {
        ((uint64_t *)o)[2] = 0;
        s->tails_released = 0;
    }
    ebb_assert(s->used > 0);
    ebbi_set_next(o, s->freelist);
    s->freelist = o;
    s->used--;
    c->free_objects++;
    if (s->used == 0) {
        if (ebbi_classes[cls].size >= TAIL_MIN_CLASS)
            for (void *f = s->freelist; f; f = ebbi_next(f)) tail_taken(c, f, ebbi_classes[cls].size);
        if (s->on_list) ebbi_span_list_remove(&c->buckets[s->bucket], s);
        c->spans--;
        c->free_objects -= s->objects;
        ebbi_page_free(s);
    } else {
        rebucket(c, s);
    }
}

void ebbi_central_push(unsigned cls, void *head, size_t n) {
    struct ebb_central *c = &ebbi_central[cls];
    ebbi_lock(&c->lock);
    if (c->tc_used < c->tc_limit && n <= ebbi_classes[cls].batch) {
        c->tc_slots[c->tc_used].head = head;
        c->tc_slots[c->tc_used].n = (uint32_t)n;
        c->tc_used++;
        c->tc_objects += (uint32_t)n;
        ebbi_unlock(&c->lock);
        return;
    }
    for (size_t i = 0; i < n && head; i++) {
        void *next = ebbi_next_checked(head);
        to_span(c, cls, head);
        head = next;
    }
    ebbi_unlock(&c->lock);
}

/* Move transfer-cache batches back to their spans: all of them, or those not used since
 * the last call (below the low-water mark).  Returns objects moved. */
size_t ebbi_central_trim(bool all) {
    size_t moved = 0;
    for (unsigned cls = 1; cls < EBB_NCLASS; cls++) {
        struct ebb_central *c = &ebbi_central[cls];
        ebbi_lock(&c->lock);
        uint32_t drop = all ? c->tc_used : c->tc_low;
        for (uint32_t k = 0; k < drop && c->tc_used; k++) {
            --c->tc_used;
            void *o = c->tc_slots[c->tc_used].head;
            c->tc_objects -= c->tc_slots[c->tc_used].n;
            while (o) {
                void *next = ebbi_next_checked(o);
                to_span(c, cls, o);
                o = next;
                moved++;
            }
        }
        c->tc_low = c->tc_used;
        ebbi_unlock(&c->lock);
    }
    return moved;
}

void ebbi_central_fork_prepare(void) {
    for (unsigned c = 0; c < EBB_NCLASS; c++) ebbi_lock(&ebbi_central[c].lock);
}
void ebbi_central_fork_parent(void) {
    for (unsigned c = 0; c < EBB_NCLASS; c++) ebbi_unlock(&ebbi_central[c].lock);
}
void ebbi_central_fork_child(void) {
    for (unsigned c = 0; c < EBB_NCLASS; c++) ebbi_lock_reset(&ebbi_central[c].lock);
}
