/* pagemap.c: from an address to its span and size class, with no header on objects.
 * Readers (free, malloc_usable_size) take no lock: a leaf is published with a release
 * store after it is mapped, and entries are written before the memory they describe is
 * handed out.  The two maps, why the class map looks the way it does, and the whole
 * ordering argument for weakly ordered CPUs: internal.h.
 *
 * What of the maps is resident.  Both have 8-byte entries, one per page, so the entries
 * one kernel page holds (512 with 4 KiB pages) describe the same G pages in both: a
 * "group" (G pages are 4 MiB of address space with 4 KiB kernel pages, 64 MiB with
 * 64 KiB ones; a span-map leaf's 2 GiB and a class-map leaf's 32 GiB are whole groups).
 * After each span-map leaf, on a kernel page of its own, `touched` has a bit per group of
 * the leaf, set before the first write into the group's entries in either map (atomic,
 * relaxed: a count and a hint, not a publication; set under the page heap lock, or
 * without it only for a span nobody else writes).  pm_touched counts the resident pages
 * the bits stand for: per group its span-map page and its class-map page (none when the
 * class map could not be set up; that is decided at initialisation, before any entry).
 * The class map's shared empty leaf is never written (ebbi_pm_set asserts that a real
 * leaf took its place first), so no bit ever stands for a page of it, and it is never
 * released.
 *
 * Entries strictly inside a free span are all zero (page_heap.c writes only a free span's
 * first and last page), so when a free span goes back to the kernel, the groups that lie
 * strictly inside it go back too (ebbi_pm_release_inside): both their pages, with
 * MADV_DONTNEED, after which they read as zero again.  Why the lock-free readers do not
 * mind, on arm64 as anywhere:
 *   - the value does not change: a reader (free's fast path, with plain loads, or a slow
 *     path) that loads an entry of such a page gets zero before the release (the entry
 *     was zero) and zero after (a fresh zero page, or the kernel's zero page), whichever
 *     translation its load goes through while the kernel tears the old one down; there
 *     is no entry to be seen half-written and nothing to order.  No legitimate pointer
 *     lies in a free span, so only a bad or twice-freed pointer ever reads there, and it
 *     reads class 0 / no span, as it would without the release;
 *   - no write is lost: a page is released only while nothing may write its entries: the
 *     span is RELEASING (on no list; only the releasing thread has it), or the caller
 *     holds the page heap lock and the span is free.  The next write into the group comes
 *     from a span cut out of this memory under the page heap lock, which the releaser
 *     takes after its madvise returned (the kernel has then invalidated the old
 *     translation on every CPU: TLBI and DSB on arm64) and the writer takes after that;
 *     the lock's release/acquire orders the write after the madvise, so it lands on the
 *     fresh page and is seen by readers by the same argument as a first write into a
 *     newly mapped leaf (internal.h). */
#include <stddef.h>

#include "internal.h"

#define CM_LEAF_BYTES ((size_t)sizeof(struct ebb_cm_entry) << EBB_CM_LEAF_BITS)

struct ebb_pm_leaf *ebbi_pm_root[1 << EBB_PM_ROOT_BITS];
uintptr_t ebbi_cm_root[1 << EBB_CM_ROOT_BITS];
intptr_t ebbi_cm_last = -1;
/* A leaf is its own mapping: whole kernel pages of every size (4, 16, 64 KiB). */
_Static_assert(sizeof(struct ebb_pm_leaf) % ((size_t)64 << 10) == 0, "leaf size");
_Static_assert(CM_LEAF_BYTES % ((size_t)64 << 10) == 0, "leaf size");
static uintptr_t cm_empty; /* the shared leaf of zeros, read only */
static ebb_lock_t pm_lock; /* creating leaves */
static size_t pm_leaves, cm_leaves;
static size_t pm_touched; /* resident pages of both maps' leaves, by their bits */

#define PM_MIN_KPAGE 4096
#define PM_SLOTS ((size_t)1 << EBB_PM_LEAF_BITS)
struct pm_bits {
    uint64_t touched[PM_SLOTS / (PM_MIN_KPAGE / 8) / 64];
};
_Static_assert(sizeof(struct pm_bits) <= PM_MIN_KPAGE, "a leaf's bits fit a page");
_Static_assert(sizeof(((struct ebb_pm_leaf *)0)->span[0]) == 8 && sizeof(struct ebb_cm_entry) == 8,
               "a group is the same pages in both maps");
_Static_assert(EBB_CM_LEAF_BITS >= EBB_PM_LEAF_BITS, "a class-map leaf holds whole groups");

/* Set with the first leaf (under pm_lock, before the leaf is published). */
static size_t pm_kpage;    /* the kernel page, at least PM_MIN_KPAGE */
static unsigned pm_gshift; /* log2 of the slots in a group */
static size_t kpage(void) {
    if (!pm_kpage) {
        size_t k = ebbi_os_page_size();
        k = k < PM_MIN_KPAGE ? PM_MIN_KPAGE : k;
        pm_gshift = (unsigned)__builtin_ctzll(k / 8);
        pm_kpage = k;
    }
    return pm_kpage;
}
static struct pm_bits *bits_of(struct ebb_pm_leaf *l) { return (struct pm_bits *)(l + 1); }
/* Pages a group's bit stands for: its span-map page, and its class-map page. */
static size_t group_pages(void) { return cm_empty ? 2 : 1; }

static bool bit_get(const uint64_t *m, size_t i) {
    return __atomic_load_n(&m[i / 64], __ATOMIC_RELAXED) >> (i % 64) & 1;
}
/* Sets bit i; true if it was clear. */
static bool bit_set(uint64_t *m, size_t i) {
    return !(__atomic_fetch_or(&m[i / 64], 1ull << (i % 64), __ATOMIC_RELAXED) >> (i % 64) & 1);
}
/* Clears bit i; true if it was set (the caller's to count, whoever else clears it too). */
static bool bit_clear(uint64_t *m, size_t i) {
    return __atomic_fetch_and(&m[i / 64], ~(1ull << (i % 64)), __ATOMIC_RELAXED) >> (i % 64) & 1;
}

/* What root slot r holds for a leaf at address leaf (see internal.h). */
static uintptr_t cm_slot_value(uintptr_t leaf, size_t r) {
    return leaf - ((uintptr_t)r << (EBB_CM_LEAF_BITS + 3));
}
/* The class-map leaf of root slot r, or 0 for the shared empty one. */
static uintptr_t cm_leaf(size_t r) {
    uintptr_t v = __atomic_load_n(&ebbi_cm_root[r], __ATOMIC_ACQUIRE);
    return !cm_empty || v == cm_slot_value(cm_empty, r) ? 0 : v + ((uintptr_t)r << (EBB_CM_LEAF_BITS + 3));
}

/* At initialisation, before the first small span exists: until it has run, or if the
 * empty leaf cannot be mapped, ebbi_cm_last stays -1 and every free takes the slow path,
 * which does not use the class map. */
void ebbi_pm_init(void) {
    void *empty = ebbi_os.map(CM_LEAF_BYTES); /* never written: the kernel's zero page */
    if (!empty) return;
    cm_empty = (uintptr_t)empty;
    for (size_t r = 0; r < (1u << EBB_CM_ROOT_BITS); r++)
        __atomic_store_n(&ebbi_cm_root[r], cm_slot_value(cm_empty, r), __ATOMIC_RELAXED);
    __atomic_store_n(&ebbi_cm_last, (intptr_t)(1 << EBB_CM_ROOT_BITS) - 1, __ATOMIC_RELEASE);
}

bool ebbi_pm_ensure(uintptr_t start, size_t len) {
    if (!len) return true;
    uintptr_t last = start + len - 1;
    if (last < start || (last >> EBB_ADDR_BITS)) return false;
    bool ok = true;
    ebbi_lock(&pm_lock);
    for (uintptr_t i = start >> EBB_PM_LEAF_SHIFT; ok && i <= last >> EBB_PM_LEAF_SHIFT; i++) {
        if (ebbi_pm_root[i]) continue;
        struct ebb_pm_leaf *l = ebbi_os.map(sizeof(struct ebb_pm_leaf) + kpage()); /* and its bits */
        if (!l) {
            ok = false;
            break;
        }
        __atomic_store_n(&ebbi_pm_root[i], l, __ATOMIC_RELEASE);
        __atomic_store_n(&pm_leaves, pm_leaves + 1, __ATOMIC_RELAXED);
    }
    if (cm_empty) {
        for (uintptr_t r = start >> EBB_CM_ROOT_SHIFT; ok && r <= last >> EBB_CM_ROOT_SHIFT; r++) {
            if (ebbi_cm_root[r] != cm_slot_value(cm_empty, r)) continue;
            void *l = ebbi_os.map(CM_LEAF_BYTES);
            if (!l) {
                ok = false;
                break;
            }
            __atomic_store_n(&ebbi_cm_root[r], cm_slot_value((uintptr_t)l, r), __ATOMIC_RELEASE);
            __atomic_store_n(&cm_leaves, cm_leaves + 1, __ATOMIC_RELAXED);
        }
    }
    ebbi_unlock(&pm_lock);
    return ok;
}

static struct ebb_cm_entry *cm_entry_w(uintptr_t a) {
    return (struct ebb_cm_entry *)(ebbi_cm_root[a >> EBB_CM_ROOT_SHIFT] +
                                   (a >> EBB_PAGE_SHIFT) * sizeof(struct ebb_cm_entry));
}

/* Before writing the entries of slots [i0, i1] of leaf l (in both maps). */
static inline void touch(struct ebb_pm_leaf *l, size_t i0, size_t i1) {
    struct pm_bits *b = bits_of(l);
    kpage();
    for (size_t g = i0 >> pm_gshift; g <= i1 >> pm_gshift; g++) {
        if (bit_get(b->touched, g) || !bit_set(b->touched, g)) continue;
        __atomic_fetch_add(&pm_touched, group_pages(), __ATOMIC_RELAXED);
    }
}

/* A page's class-map entry, as one word: class cls of span s, or 0 (s NULL or cls 0). */
static uint64_t cm_value(const struct ebb_span *s, unsigned cls) {
    union {
        struct ebb_cm_entry e;
        uint64_t w;
    } v = {.e = {s && cls ? (uint32_t)(ebbi_span_blocks(s) - ebbi_classes[cls].size) : 0, cls}};
    return v.w;
}

static void entry_set(struct ebb_pm_leaf *l, uintptr_t page_addr, struct ebb_span *s, unsigned cls) {
    /* release: after the span record it points to (see internal.h) */
    __atomic_store_n(&l->span[ebbi_pm_slot(page_addr)], s, __ATOMIC_RELEASE);
    if (!cm_empty) return;
    ebb_assert(ebbi_cm_root[page_addr >> EBB_CM_ROOT_SHIFT] !=
               cm_slot_value(cm_empty, page_addr >> EBB_CM_ROOT_SHIFT));
    /* One store: a racing reader sees the old entry or the new one, never half of each. */
    __atomic_store_n((uint64_t *)cm_entry_w(page_addr), cm_value(s, cls), __ATOMIC_RELEASE);
}

void ebbi_pm_set(uintptr_t page_addr, struct ebb_span *s, unsigned cls) {
    struct ebb_pm_leaf *l = ebbi_pm_leaf(page_addr);
    ebb_assert(l);
    size_t i = ebbi_pm_slot(page_addr);
    touch(l, i, i);
    entry_set(l, page_addr, s, cls);
}

/* Every page of [start, end) to (s, cls), the leaves' pages marked once per run. */
static void set_range(uintptr_t start, uintptr_t end, struct ebb_span *s, unsigned cls) {
    for (uintptr_t a = start; a < end;) {
        struct ebb_pm_leaf *l = ebbi_pm_leaf(a);
        ebb_assert(l);
        uintptr_t leaf_end = (a | (((uintptr_t)1 << EBB_PM_LEAF_SHIFT) - 1)) + 1;
        uintptr_t e = end < leaf_end ? end : leaf_end;
        size_t i0 = ebbi_pm_slot(a), i1 = i0 + ((e - a) >> EBB_PAGE_SHIFT) - 1;
        touch(l, i0, i1);
        for (; a < e; a += EBB_PAGE) entry_set(l, a, s, cls);
    }
}

/* SMALL spans: every page, with the class.  Others: first and last page, class 0. */
void ebbi_pm_set_span(struct ebb_span *s) {
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    if (s->state == SPAN_SMALL) {
        set_range(s->start, end, s, s->cls);
    } else {
        ebbi_pm_set(s->start, s, 0);
        ebbi_pm_set(end - EBB_PAGE, s, 0);
    }
}

/* The class map's entries of SMALL span s: its class and start (fast) or class 0, which
 * sends every free of its blocks to the slow path.  Only the entries: the span pointers
 * stay.  Called by central.c under the class's lock while s is in the central tier: the
 * page heap writes these entries only when it makes the span (before the central tier
 * has it) and when the span goes back (under that lock too), so the writers are in
 * order.  A free that races reads the old entry or the new one (one 8-byte store each). */
void ebbi_pm_route(struct ebb_span *s, bool fast) {
    if (!cm_empty) return;
    uint64_t v = cm_value(s, fast ? s->cls : 0);
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    for (uintptr_t a = s->start; a < end; a += EBB_PAGE)
        __atomic_store_n((uint64_t *)cm_entry_w(a), v, __ATOMIC_RELEASE);
}

/* Forget every page of the span (its pages become part of another span next). */
void ebbi_pm_clear_span(struct ebb_span *s) {
    uintptr_t end = s->start + (s->npages << EBB_PAGE_SHIFT);
    if (s->state == SPAN_SMALL) {
        set_range(s->start, end, NULL, 0);
    } else {
        ebbi_pm_set(s->start, NULL, 0);
        ebbi_pm_set(end - EBB_PAGE, NULL, 0);
    }
}

/* The groups of [start, end) that lie strictly inside it (not its first or last page)
 * go back to the kernel, in both maps (see the top: the caller guarantees that nothing
 * writes their entries meanwhile). */
static void release_inside(uintptr_t start, uintptr_t end) {
    if (end - start < 3 * EBB_PAGE) return;
    uintptr_t a = start + EBB_PAGE, e_all = end - EBB_PAGE; /* the entries that are zero */
    const size_t k = kpage(), G = (size_t)1 << pm_gshift;
    while (a < e_all) {
        struct ebb_pm_leaf *l = ebbi_pm_leaf(a);
        uintptr_t leaf_base = a & ~(((uintptr_t)1 << EBB_PM_LEAF_SHIFT) - 1);
        uintptr_t leaf_end = leaf_base + ((uintptr_t)1 << EBB_PM_LEAF_SHIFT);
        uintptr_t e = e_all < leaf_end ? e_all : leaf_end;
        size_t i0 = ebbi_pm_slot(a), i1 = i0 + ((e - a) >> EBB_PAGE_SHIFT); /* [i0, i1) */
        a = e;
        if (!l) continue;
        struct pm_bits *b = bits_of(l);
        char *span0 = (char *)l->span;
        /* runs of touched groups wholly inside: one madvise a run in each map */
        for (size_t g = (i0 + G - 1) / G, g1 = i1 / G; g < g1;) {
            if (!bit_get(b->touched, g)) {
                g++;
                continue;
            }
            size_t h = g;
            while (h < g1 && bit_get(b->touched, h)) h++;
            uintptr_t ga = leaf_base + ((uintptr_t)(g * G) << EBB_PAGE_SHIFT); /* the run's first page */
            bool ok = ebbi_os_release(span0 + g * k, (h - g) * k) == 0;
            if (ok && cm_empty) {
                /* a run lies in one class-map leaf (its leaves hold whole span-map leaves) */
                size_t r = ga >> EBB_CM_ROOT_SHIFT;
                uintptr_t cl = cm_leaf(r);
                ebb_assert(cl); /* written entries are in a real leaf */
                ok = cl && ebbi_os_release(cm_entry_w(ga), (h - g) * k) == 0;
            }
            if (ok) {
                for (size_t x = g; x < h; x++)
                    if (bit_clear(b->touched, x))
                        __atomic_fetch_sub(&pm_touched, group_pages(), __ATOMIC_RELAXED);
            }
            g = h;
        }
    }
}

/* [start, end) is a free span on its way back to the kernel (RELEASING: nothing writes
 * entries inside it meanwhile).  Without any lock. */
void ebbi_pm_release_inside(uintptr_t start, uintptr_t end) { release_inside(start, end); }

/* The same for a released free span, with the page heap lock held: groups that came to
 * lie inside it since (it merged with neighbours). */
void ebbi_pm_release_inside_locked(uintptr_t start, uintptr_t end) { release_inside(start, end); }

/* Every entry strictly inside [start, end) is zero in both maps (for
 * ebbi_page_heap_verify).  Groups whose bit is clear read as zero: only the touched ones
 * are looked at. */
bool ebbi_pm_zero_inside(uintptr_t start, uintptr_t end) {
    kpage();
    for (uintptr_t a = start + EBB_PAGE; a + EBB_PAGE < end; a += EBB_PAGE) {
        struct ebb_pm_leaf *l = ebbi_pm_leaf(a);
        size_t i = ebbi_pm_slot(a), G = (size_t)1 << pm_gshift;
        if (!bit_get(bits_of(l)->touched, i >> pm_gshift)) { /* on to the next group */
            size_t skip = G - (i & (G - 1));
            a += (skip - 1) << EBB_PAGE_SHIFT;
            continue;
        }
        if (__atomic_load_n(&l->span[i], __ATOMIC_RELAXED)) return false;
        if (cm_empty && cm_leaf(a >> EBB_CM_ROOT_SHIFT) &&
            __atomic_load_n((uint64_t *)cm_entry_w(a), __ATOMIC_RELAXED))
            return false;
    }
    return true;
}

/* Resident bytes of the page map: the leaves' pages of both maps by their bits, each
 * span-map leaf's bits page and a page of its root (an upper bound), and the class map's
 * root, which is all written at initialisation. */
size_t ebbi_pm_bytes(void) {
    return (__atomic_load_n(&pm_touched, __ATOMIC_RELAXED) +
            2 * __atomic_load_n(&pm_leaves, __ATOMIC_RELAXED)) *
               kpage() +
           (cm_empty ? sizeof ebbi_cm_root : 0);
}

/* [p, p + n) lies inside a leaf's entries of either map, never the shared empty leaf
 * (for tests). */
bool ebbi_pm_owns(const void *p, size_t n) {
    const char *q = p;
    for (size_t i = 0; i < ((size_t)1 << EBB_PM_ROOT_BITS); i++) {
        const char *l = (const char *)__atomic_load_n(&ebbi_pm_root[i], __ATOMIC_ACQUIRE);
        if (l && q >= l && q + n <= l + sizeof(struct ebb_pm_leaf)) return true;
    }
    for (size_t r = 0; cm_empty && r < ((size_t)1 << EBB_CM_ROOT_BITS); r++) {
        const char *l = (const char *)cm_leaf(r);
        if (l && q >= l && q + n <= l + CM_LEAF_BYTES) return true;
    }
    return false;
}

void ebbi_pm_fork_prepare(void) { ebbi_lock_raw(&pm_lock); }
void ebbi_pm_fork_parent(void) { ebbi_unlock_raw(&pm_lock); }
void ebbi_pm_fork_child(void) { ebbi_lock_reset(&pm_lock); }
