/* meta.c: memory for ebbmalloc's own records.  ebbmalloc never calls malloc for itself.
 *
 * Two kinds:
 *   - span records (struct ebb_span, 80 bytes), of which there are as many as spans and
 *     which come and go with every split and merge of the page heap (and one more for
 *     each small-object span of more than 64 blocks, which keeps its free bits in a slot
 *     of its own: central.c): slots in record
 *     chunks, lowest address first, whose whole kernel pages of free slots go back to the
 *     kernel at the release passes (ebbi_meta_release), so that the records of spans long
 *     gone do not stay resident;
 *   - everything else (thread-cache records, which thread_cache.c recycles itself): carved
 *     from mappings of 1 MiB with a bump pointer, never returned.
 *
 * A record chunk is REC_CHUNK bytes at a REC_CHUNK-aligned address (so a record finds its
 * chunk by masking).  Each kernel page of it holds `per` = kpage / REC_SLOT slots from its
 * start (a record never straddles two pages, so a page with no record can go back; the
 * rest of the page, 16 bytes with 4 KiB pages, is unused): slot i is at kernel page
 * i / per, (i % per) * REC_SLOT into it.  The chunk's header fills its first slots.  Bit i
 * of `free` is set when slot i is free (no bit at or past the chunk's slot count is ever
 * set); bit k of `gone` when kernel page k of the chunk is not resident (never touched,
 * or released): its slots are free and read as zero.  Invariants (ebbi_meta_verify):
 * `nfree` counts the bits of `free`; no slot below word `hint` is free; the header's
 * slots are never free; a page in `gone` has all its slots free; rec_resident counts the
 * pages of all chunks not in `gone`.
 * Everything under meta_lock.
 *
 * Record reuse and ordering: a record is freed and taken again under meta_lock, so its
 * last use (under the page heap lock, by the thread that deletes it) happens before its
 * next life.  free() and realloc() also read records without any lock, for the span the
 * page map names: for a block they may legitimately be given, that span is alive and its
 * record cannot be recycled meanwhile (the argument is in internal.h, pagemap.c).  For a
 * pointer freed twice the record may be recycled, or its page released, while it is
 * read; record chunks are never unmapped (a released page reads as zero), so the read is
 * safe, and free's checks of state and start refuse a record that does not describe the
 * pointer. */
#include <string.h>

#include "internal.h"

#define META_CHUNK ((size_t)1 << 20)
#define REC_CHUNK ((size_t)1 << 20)
#define REC_SLOT 80
#define REC_SLOTS_MAX (REC_CHUNK / REC_SLOT) /* bounds the slots of every kernel page size */
#define REC_MIN_KPAGE 4096                   /* the smallest kernel page: bounds the size of `gone` */
_Static_assert(sizeof(struct ebb_span) <= REC_SLOT && REC_SLOT % 16 == 0, "a span record is one slot");

struct rec_chunk {
    struct rec_chunk *next; /* chunks in the order they were mapped */
    size_t nfree;
    size_t hint;
    uint64_t free[REC_SLOTS_MAX / 64 + 1];
    uint64_t gone[REC_CHUNK / REC_MIN_KPAGE / 64 + 1];
};
#define REC_HEADER_SLOTS ((sizeof(struct rec_chunk) + REC_SLOT - 1) / REC_SLOT)
_Static_assert(REC_HEADER_SLOTS *REC_SLOT <= REC_MIN_KPAGE, "the header is in the first page's slots");

static ebb_lock_t meta_lock;
static char *meta_bump, *meta_end;
static size_t meta_mapped; /* bytes of bump chunks, for stats */
static struct rec_chunk *rec_chunks;
static size_t rec_resident; /* kernel pages of record chunks that may be resident */
static size_t rec_live;     /* records handed out */
static size_t rec_taken;    /* free slots ebbi_meta_release has in hand (or lost them to a fork) */

static void *meta_alloc_locked(size_t size) {
    size = (size + 63) & ~(size_t)63;
    if ((size_t)(meta_end - meta_bump) < size) {
        size_t chunk = size > META_CHUNK ? size : META_CHUNK;
        char *c = ebbi_os.map(chunk);
        if (!c) return NULL;
        meta_bump = c, meta_end = c + chunk;
        meta_mapped += chunk;
    }
    void *p = meta_bump;
    meta_bump += size;
    return p;
}

void *ebbi_meta_alloc(size_t size) {
    ebbi_lock(&meta_lock);
    void *p = meta_alloc_locked(size);
    ebbi_unlock(&meta_lock);
    return p;
}

/* ---------------------------------------------------------------- span records */
static size_t kpage(void) {
    size_t k = ebbi_os_page_size();
    return k < REC_MIN_KPAGE ? REC_MIN_KPAGE : k > REC_CHUNK ? REC_CHUNK : k;
}
static size_t kpages_per_chunk(void) { return REC_CHUNK / kpage(); }
static size_t slots_per_kpage(void) { return kpage() / REC_SLOT; }
static size_t slots_per_chunk(void) { return kpages_per_chunk() * slots_per_kpage(); }
static char *slot_addr(struct rec_chunk *c, size_t i) {
    return (char *)c + i / slots_per_kpage() * kpage() + i % slots_per_kpage() * REC_SLOT;
}

static bool bit(const uint64_t *m, size_t i) { return m[i / 64] >> (i % 64) & 1; }
static void bit_set(uint64_t *m, size_t i) { m[i / 64] |= 1ull << (i % 64); }
static void bit_clear(uint64_t *m, size_t i) { m[i / 64] &= ~(1ull << (i % 64)); }
/* The bits [i, i + n) of m, as a mask of word w. */
static uint64_t range_mask(size_t w, size_t i, size_t n) {
    size_t lo = i > w * 64 ? i - w * 64 : 0, hi = i + n < (w + 1) * 64 ? i + n - w * 64 : 64;
    return (hi == 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
}

/* Are slots [i, i + n) all free? */
static bool all_free(const struct rec_chunk *c, size_t i, size_t n) {
    for (size_t w = i / 64; w <= (i + n - 1) / 64; w++) {
        uint64_t m = range_mask(w, i, n);
        if ((c->free[w] & m) != m) return false;
    }
    return true;
}
static void range_free(struct rec_chunk *c, size_t i, size_t n, bool set) {
    for (size_t w = i / 64; w <= (i + n - 1) / 64; w++)
        c->free[w] = set ? c->free[w] | range_mask(w, i, n) : c->free[w] & ~range_mask(w, i, n);
}

static struct rec_chunk *chunk_new(void) {
    struct rec_chunk *c = ebbi_os_map_aligned(REC_CHUNK, REC_CHUNK);
    if (!c) return NULL;
    range_free(c, REC_HEADER_SLOTS, slots_per_chunk() - REC_HEADER_SLOTS,
               true); /* the kernel zeroed the rest */
    c->nfree = slots_per_chunk() - REC_HEADER_SLOTS;
    c->hint = REC_HEADER_SLOTS / 64;
    /* untouched: every page but the header's reads as zero without being resident */
    const size_t header_pages = 1;
    for (size_t k = header_pages; k < kpages_per_chunk(); k++) bit_set(c->gone, k);
    rec_resident += header_pages;
    c->next = NULL;
    struct rec_chunk **tail = &rec_chunks;
    while (*tail) tail = &(*tail)->next;
    *tail = c;
    return c;
}

/* The lowest free slot of the first chunk that has one: records that live long gather
 * at the low end, and the high end empties and goes back. */
static struct ebb_span *record_take(void) {
    struct rec_chunk *c = rec_chunks;
    while (c && !c->nfree) c = c->next;
    if (!c && !(c = chunk_new())) return NULL;
    size_t w = c->hint;
    while (!c->free[w]) w++;
    c->hint = w;
    size_t i = w * 64 + (size_t)__builtin_ctzll(c->free[w]);
    bit_clear(c->free, i);
    c->nfree--;
    size_t k = i / slots_per_kpage();
    if (bit(c->gone, k)) { /* the page comes back (zero) */
        bit_clear(c->gone, k);
        rec_resident++;
    }
    rec_live++;
    return (struct ebb_span *)slot_addr(c, i);
}

struct ebb_span *ebbi_span_new(void) {
    ebbi_lock(&meta_lock);
    struct ebb_span *s = record_take();
    ebbi_unlock(&meta_lock);
    if (s) memset(s, 0, sizeof *s);
    return s;
}

void ebbi_span_delete(struct ebb_span *s) {
    s->state = 0;
    struct rec_chunk *c = (struct rec_chunk *)((uintptr_t)s & ~(REC_CHUNK - 1));
    size_t off = (size_t)((char *)s - (char *)c),
           i = off / kpage() * slots_per_kpage() + off % kpage() / REC_SLOT;
    ebb_assert(slot_addr(c, i) == (char *)s);
    ebbi_lock(&meta_lock);
    ebb_assert(i >= REC_HEADER_SLOTS && !bit(c->free, i));
    bit_set(c->free, i);
    c->nfree++;
    if (i / 64 < c->hint) c->hint = i / 64;
    rec_live--;
    ebbi_unlock(&meta_lock);
}

/* Kernel pages of records whose slots are all free go back to the kernel.  They are
 * taken out of the free bits while madvise runs without the lock (no record can be put
 * there meanwhile), then given back as `gone`.  Called from the release passes and
 * malloc_trim; returns the bytes released. */
size_t ebbi_meta_release(void) {
    enum { BATCH = 64 };
    struct {
        struct rec_chunk *c;
        size_t k;
    } take[BATCH];
    size_t done = 0;
    const size_t per = slots_per_kpage(), kp = kpage();
    for (;;) {
        size_t n = 0;
        ebbi_lock(&meta_lock);
        for (struct rec_chunk *c = rec_chunks; c && n < BATCH; c = c->next) {
            if (c->nfree < per) continue;
            for (size_t k = 0; k < kpages_per_chunk() && n < BATCH; k++) {
                if (bit(c->gone, k) || !all_free(c, k * per, per)) continue;
                range_free(c, k * per, per, false);
                c->nfree -= per;
                rec_taken += per;
                take[n].c = c, take[n].k = k, n++;
            }
        }
        if (n) ebbi_work_begin(); /* slots in hand without the lock: a fork child leaves them */
        ebbi_unlock(&meta_lock);
        if (!n) return done;
        bool ok[BATCH];
        for (size_t j = 0; j < n; j++) ok[j] = ebbi_os_release((char *)take[j].c + take[j].k * kp, kp) == 0;
        ebbi_lock(&meta_lock);
        ebbi_work_end();
        for (size_t j = 0; j < n; j++) {
            struct rec_chunk *c = take[j].c;
            range_free(c, take[j].k * per, per, true);
            c->nfree += per;
            rec_taken -= per;
            if (take[j].k * per / 64 < c->hint) c->hint = take[j].k * per / 64;
            if (ok[j]) {
                bit_set(c->gone, take[j].k);
                rec_resident--;
                done += kp;
            }
        }
        ebbi_unlock(&meta_lock);
        if (n < BATCH || ebbi_os_refused_for_good(EBB_REFUSED_RELEASE)) return done;
    }
}

/* Checks the invariants of the record chunks (see the top); NULL or what is wrong. */
const char *ebbi_meta_verify(void) {
    const char *err = NULL;
    size_t resident = 0, taken = 0;
    const size_t per = slots_per_kpage();
    ebbi_lock(&meta_lock);
    for (struct rec_chunk *c = rec_chunks; c && !err; c = c->next) {
        size_t nfree = 0;
        for (size_t w = 0; w < sizeof c->free / 8; w++) {
            nfree += (size_t)__builtin_popcountll(c->free[w]);
            if (w < c->hint && c->free[w]) err = "record chunk: a free slot below the hint";
        }
        for (size_t i = 0; i < REC_HEADER_SLOTS; i++)
            if (bit(c->free, i)) err = "record chunk: a header slot is free";
        for (size_t i = slots_per_chunk(); i < REC_SLOTS_MAX / 64 * 64 + 64; i++)
            if (bit(c->free, i)) err = "record chunk: a slot past the last is free";
        for (size_t k = 0; k < kpages_per_chunk(); k++) {
            if (!bit(c->gone, k)) resident++;
            else if (!all_free(c, k * per, per)) err = "record chunk: a page released with a record on it";
        }
        if (nfree != c->nfree) err = "record chunk: free count differs from its bits";
        taken += slots_per_chunk() - REC_HEADER_SLOTS - nfree;
    }
    if (!err && resident != rec_resident) err = "record pages: resident count differs from the chunks";
    if (!err && taken != rec_live + rec_taken) err = "records: live count differs from the chunks";
    ebbi_unlock(&meta_lock);
    return err;
}

/* [p, p + n) lies in the record pages of a chunk, past its header: where
 * ebbi_meta_release returns pages (for tests). */
bool ebbi_meta_owns(const void *p, size_t n) {
    uintptr_t a = (uintptr_t)p, c0 = a & ~(REC_CHUNK - 1);
    bool yes = false;
    ebbi_lock(&meta_lock);
    for (struct rec_chunk *c = rec_chunks; c && !yes; c = c->next)
        yes = (uintptr_t)c == c0 && a >= c0 + REC_HEADER_SLOTS * REC_SLOT && a + n <= c0 + REC_CHUNK;
    ebbi_unlock(&meta_lock);
    return yes;
}

/* ---------------------------------------------------------------- stats */
size_t ebbi_meta_bytes(void) {
    ebbi_lock(&meta_lock);
    /* The untouched part of the current bump chunk is not resident: count what was carved;
     * record chunks by their pages that may be resident. */
    size_t b = meta_mapped - (size_t)(meta_end - meta_bump) + rec_resident * kpage();
    ebbi_unlock(&meta_lock);
    return b;
}

void ebbi_meta_records(size_t *live, size_t *resident_bytes) {
    ebbi_lock(&meta_lock);
    *live = rec_live;
    *resident_bytes = rec_resident * kpage();
    ebbi_unlock(&meta_lock);
}

void ebbi_meta_fork_prepare(void) { ebbi_lock_raw(&meta_lock); }
void ebbi_meta_fork_parent(void) { ebbi_unlock_raw(&meta_lock); }
void ebbi_meta_fork_child(void) { ebbi_lock_reset(&meta_lock); }
