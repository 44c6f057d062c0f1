/* api.c: the malloc family with glibc's semantics, under ebb_ names.  Built into the
 * shared library with EBB_OVERRIDE=1, which also gives every function its glibc name.
 *
 * The two fast paths below are the whole common case: one table lookup for the class
 * and one list pop or push on the calling thread's cache.  Everything rare (first use,
 * an empty or full list, large sizes, bad pointers) is behind a single branch that
 * leads to a noinline slow path. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#ifndef EBB_OVERRIDE
#define EBB_OVERRIDE 0
#endif

/* ---------------------------------------------------------------- fast paths */
EBB_EXPORT void *ebb_malloc(size_t n) {
    if (likely(n <= EBB_SMALL_MAX)) {
        struct ebb_tc_list *l = &ebbi_tc->lists[ebbi_size_to_class(n)];
        void *p = l->head;
        if (likely(p)) {
            void *next = ebbi_next(p);
            /* A free block holds the key in its second word and an aligned link in its
             * first: anything else means it was written after it was freed. */
            if (unlikely(((uint64_t *)p)[1] != ebbi_free_key || ((uintptr_t)next & (EBB_MIN_ALIGN - 1))))
                ebbi_corrupt_link(p);
            l->head = next;
            l->len--;
            ((uint64_t *)p)[1] = 0; /* no longer free: clear the double-free key */
            return p;
        }
    }
    return ebbi_malloc_slow(n);
}

EBB_EXPORT void ebb_free(void *p) {
    uintptr_t a = (uintptr_t)p;
    size_t root = a >> EBB_PM_LEAF_SHIFT; /* out of range above 2^48 */
    if (likely(root < (1u << EBB_PM_ROOT_BITS))) {
        struct ebb_pm_leaf *leaf = ebbi_pm_root[root];
        if (likely(leaf)) {
            size_t slot = ebbi_pm_slot(a);
            size_t cls = leaf->cls[slot];
            struct ebb_tc_list *l = &ebbi_tc->lists[cls];
            /* Class 0 (not a small object) and a thread without a cache have max == 0.
             * p must be where a block begins (which also makes it 16-aligned), and a
             * block that is free already holds the key. */
            uint64_t off = a - leaf->start[slot];
            if (likely(l->len < l->max) && likely(ebbi_div_ok_at(&l->div, off)) &&
                likely(((uint64_t *)p)[1] != ebbi_free_key)) {
                ((uint64_t *)p)[1] = ebbi_free_key;
                ebbi_set_next(p, l->head);
                l->head = p;
                l->len++;
                return;
            }
        }
    }
    ebbi_free_slow(p);
}

/* ---------------------------------------------------------------- misuse */
void ebbi_corrupt_link(void *obj) {
    unsigned cls = 0;
    uintptr_t a = (uintptr_t)obj;
    if (!(a >> EBB_ADDR_BITS) && ebbi_pm_leaf(a)) cls = ebbi_pm_leaf(a)->cls[ebbi_pm_slot(a)];
    ebbi_fatal("malloc(): corrupted free list: the link in free block %p (%u-byte size class) "
               "was overwritten (heap overflow or use after free)",
               obj, ebbi_classes[cls].size);
}


/* ---------------------------------------------------------------- large blocks */
void *ebbi_large_alloc(size_t n, size_t align, bool zero) {
    if (n > PTRDIFF_MAX) goto oom;
    ebbi_ensure_init();
    struct ebb_span *s;
    /* Big requests, and alignments above a huge page (their padding is unmapped again),
     * get a mapping of their own. */
    if (n >= (size_t)ebbi_opt(EBB_OPT_MMAP_THRESHOLD) || align > ((size_t)2 << 20)) {
        s = ebbi_mapped_alloc(n, align);
    } else {
        size_t np = (n + EBB_PAGE - 1) >> EBB_PAGE_SHIFT;
        s = ebbi_page_alloc(np ? np : 1, align > EBB_PAGE ? align >> EBB_PAGE_SHIFT : 1);
    }
    if (!s) goto oom;
    if (zero && !s->zeroed) memset((void *)s->start, 0, n);
    ebbi_release_tick();
    return (void *)s->start;
oom:
    errno = ENOMEM;
    return NULL;
}

void ebbi_large_free(struct ebb_span *s) {
    if (s->state == SPAN_MAPPED)
        ebbi_mapped_free(s);
    else
        ebbi_page_free(s);
    ebbi_release_tick();
}

/* The span that p is the start of a large block of, or NULL. */
static struct ebb_span *large_span(void *p) {
    struct ebb_span *s = ebbi_pm_span((uintptr_t)p);
    if (s && s->start == (uintptr_t)p && (s->state == SPAN_LARGE || s->state == SPAN_MAPPED))
        return s;
    return NULL;
}

static unsigned small_class(void *p) {
    uintptr_t a = (uintptr_t)p;
    if (a >> EBB_ADDR_BITS) return 0;
    struct ebb_pm_leaf *leaf = ebbi_pm_leaf(a);
    return leaf ? leaf->cls[ebbi_pm_slot(a)] : 0;
}

/* p, in a page of a class-cls span, is where one of its blocks begins. */
static bool small_start(void *p, unsigned cls) {
    uintptr_t a = (uintptr_t)p;
    return ebbi_block_start(cls, a - ebbi_pm_leaf(a)->start[ebbi_pm_slot(a)]);
}

/* The span whose pages hold address a, or NULL.  The page map knows every page of a
 * small-object span but only the first and last page of any other, so look back
 * through the leaf for the nearest page it knows (a diagnostic: no lock, and span
 * records are never unmapped, so a racing change gives a wrong answer, not a fault). */
static struct ebb_span *span_around(uintptr_t a) {
    if (a >> EBB_ADDR_BITS) return NULL;
    struct ebb_pm_leaf *leaf = ebbi_pm_leaf(a);
    if (!leaf) return NULL;
    for (size_t i = ebbi_pm_slot(a) + 1; i-- > 0;) {
        struct ebb_span *s = leaf->span[i];
        if (!s) continue;
        return a >= s->start && a < s->start + (s->npages << EBB_PAGE_SHIFT) ? s : NULL;
    }
    return NULL;
}

#define STALE_OR_INTERIOR "not its start: an interior pointer, or a block freed earlier whose memory was reused"

/* Names the fault in p, which free() or realloc() could not accept, and stops. */
static EBB_COLD void reject(const char *what, void *p) {
    unsigned cls = small_class(p);
    if (cls) {
        struct ebb_span *sp = ebbi_pm_span((uintptr_t)p);
        if (sp && (char *)p >= sp->end)
            ebbi_fatal("%s: invalid pointer %p (past the last %u-byte block of its span)", what, p,
                       ebbi_classes[cls].size);
        if (!small_start(p, cls))
            ebbi_fatal("%s: invalid pointer %p (inside a %u-byte block, " STALE_OR_INTERIOR ")", what,
                       p, ebbi_classes[cls].size);
        ebbi_fatal("%s: double free of %p (%u-byte size class)", what, p, ebbi_classes[cls].size);
    }
    struct ebb_span *s = span_around((uintptr_t)p);
    if (s && (s->state == SPAN_FREE || s->state == SPAN_RELEASING))
        ebbi_fatal("%s: double free of %p (large block, or a block whose pages are free already)",
                   what, p);
    if (s)
        ebbi_fatal("%s: invalid pointer %p (inside a large block, " STALE_OR_INTERIOR ")", what, p);
    ebbi_fatal("%s: invalid pointer %p (not a block ebbmalloc handed out, or one already freed "
               "whose memory went back)", what, p);
}

void ebbi_free_slow(void *p) {
    if (!p) return;
    int saved = errno;
    unsigned cls = small_class(p);
    if (cls) {
        if (!small_start(p, cls) || ((uint64_t *)p)[1] == ebbi_free_key) reject("free()", p);
        ebbi_tc_free_small(p, cls);
    } else {
        struct ebb_span *s = large_span(p);
        if (!s) reject("free()", p);
        ebbi_large_free(s);
    }
    errno = saved;
}

size_t ebbi_usable_size(void *p) {
    unsigned cls = small_class(p);
    if (cls) return ebbi_classes[cls].size;
    struct ebb_span *s = large_span(p);
    if (!s) return 0;
    return s->state == SPAN_MAPPED ? s->map_size : s->npages << EBB_PAGE_SHIFT;
}

/* ---------------------------------------------------------------- the family */
EBB_EXPORT void *ebb_calloc(size_t nmemb, size_t size) {
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n) || n > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    if (n > EBB_SMALL_MAX) return ebbi_large_alloc(n, 0, true);
    void *p = ebb_malloc(n);
    if (p) memset(p, 0, n);
    return p;
}

static void *aligned(size_t align, size_t n) {
    if (n > PTRDIFF_MAX || align > ((size_t)1 << (EBB_ADDR_BITS - 2))) {
        errno = ENOMEM;
        return NULL;
    }
    if (align <= EBB_MIN_ALIGN) return ebb_malloc(n);
    ebbi_ensure_init();
    if (n <= EBB_SMALL_MAX && align <= EBB_PAGE) {
        /* Spans start on a page, so objects of a class that is a multiple of align are
         * aligned. */
        for (unsigned c = ebbi_size_to_class(n); c < EBB_NCLASS; c++)
            if (ebbi_classes[c].size % align == 0) return ebb_malloc(ebbi_classes[c].size);
    }
    return ebbi_large_alloc(n > EBB_SMALL_MAX ? n : EBB_SMALL_MAX + 1, align, false);
}

static bool pow2(size_t x) { return x && !(x & (x - 1)); }

EBB_EXPORT int ebb_posix_memalign(void **memptr, size_t align, size_t n) {
    if (!pow2(align) || align % sizeof(void *)) return EINVAL;
    int saved = errno;
    void *p = aligned(align, n);
    errno = saved;
    if (!p) return ENOMEM;
    *memptr = p;
    return 0;
}

/* C11/C17: the alignment must be a power of two (glibc 2.38 and later agree). */
EBB_EXPORT void *ebb_aligned_alloc(size_t align, size_t n) {
    if (!pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, n);
}

/* glibc's memalign: an alignment that is not a power of two is rounded up to one;
 * one above SIZE_MAX/2 + 1 is EINVAL. */
EBB_EXPORT void *ebb_memalign(size_t align, size_t n) {
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!pow2(align)) {
        size_t a = EBB_MIN_ALIGN;
        while (a < align) a <<= 1;
        align = a;
    }
    return aligned(align, n);
}

static size_t os_page(void) {
    static size_t ps; /* the same value whichever thread stores it first */
    size_t v = __atomic_load_n(&ps, __ATOMIC_RELAXED);
    if (!v) {
        v = (size_t)sysconf(_SC_PAGESIZE);
        __atomic_store_n(&ps, v, __ATOMIC_RELAXED);
    }
    return v;
}

EBB_EXPORT void *ebb_valloc(size_t n) { return aligned(os_page(), n); }

EBB_EXPORT void *ebb_pvalloc(size_t n) {
    size_t ps = os_page(), r;
    if (__builtin_add_overflow(n, ps - 1, &r)) {
        errno = ENOMEM;
        return NULL;
    }
    r &= ~(ps - 1);
    return aligned(ps, r ? r : ps);
}

EBB_EXPORT size_t ebb_malloc_usable_size(void *p) { return p ? ebbi_usable_size(p) : 0; }

EBB_EXPORT void *ebb_realloc(void *p, size_t n) {
    if (!p) return ebb_malloc(n);
    if (n == 0) { /* glibc: frees and returns NULL */
        ebb_free(p);
        return NULL;
    }
    unsigned cls = small_class(p);
    size_t old;
    if (cls) {
        if (!small_start(p, cls) || ((uint64_t *)p)[1] == ebbi_free_key) reject("realloc()", p);
        old = ebbi_classes[cls].size;
        if (n <= old && n > old / 2) return p;
    } else {
        struct ebb_span *s = large_span(p);
        if (!s) reject("realloc()", p);
        old = ebbi_usable_size(p);
        /* A block with its own mapping that stays big moves with mremap: no copy. */
        if (s->state == SPAN_MAPPED && n >= (size_t)ebbi_opt(EBB_OPT_MMAP_THRESHOLD) / 2 &&
            n <= PTRDIFF_MAX && ebbi_mapped_resize(s, n))
            return (void *)s->start;
        if (n <= old && n > EBB_SMALL_MAX) {
            /* Shrink in place; give back the tail when it is a quarter or more. */
            size_t np = (n + EBB_PAGE - 1) >> EBB_PAGE_SHIFT;
            if (s->state == SPAN_LARGE && (s->npages - np) * 4 >= s->npages) ebbi_page_shrink(s, np);
            return p;
        }
    }
    if (n > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    void *q = ebb_malloc(n);
    if (!q) return NULL; /* the old block is untouched */
    memcpy(q, p, old < n ? old : n);
    ebb_free(p);
    return q;
}

EBB_EXPORT void *ebb_reallocarray(void *p, size_t nmemb, size_t size) {
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return ebb_realloc(p, n);
}

EBB_EXPORT void ebb_free_sized(void *p, size_t size) {
    (void)size;
    ebb_free(p);
}

EBB_EXPORT void ebb_free_aligned_sized(void *p, size_t align, size_t size) {
    (void)align, (void)size;
    ebb_free(p);
}

EBB_EXPORT int ebb_malloc_trim(size_t pad) {
    (void)pad;
    ebbi_ensure_init();
    return ebbi_release_all() > 0;
}

EBB_EXPORT const char *ebb_version(void) { return "0.1.0"; }

/* ---------------------------------------------------------------- glibc's names */
#if EBB_OVERRIDE
#define ALIAS(name) __attribute__((alias(#name), visibility("default")))
void *malloc(size_t) ALIAS(ebb_malloc);
void free(void *) ALIAS(ebb_free);
void *calloc(size_t, size_t) ALIAS(ebb_calloc);
void *realloc(void *, size_t) ALIAS(ebb_realloc);
void *reallocarray(void *, size_t, size_t) ALIAS(ebb_reallocarray);
int posix_memalign(void **, size_t, size_t) ALIAS(ebb_posix_memalign);
void *aligned_alloc(size_t, size_t) ALIAS(ebb_aligned_alloc);
void *memalign(size_t, size_t) ALIAS(ebb_memalign);
void *valloc(size_t) ALIAS(ebb_valloc);
void *pvalloc(size_t) ALIAS(ebb_pvalloc);
size_t malloc_usable_size(void *) ALIAS(ebb_malloc_usable_size);
void free_sized(void *, size_t) ALIAS(ebb_free_sized);
void free_aligned_sized(void *, size_t, size_t) ALIAS(ebb_free_aligned_sized);
int malloc_trim(size_t) ALIAS(ebb_malloc_trim);
void cfree(void *) ALIAS(ebb_free);
#endif
