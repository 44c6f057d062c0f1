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

#include "internal.h"

#ifndef EBB_OVERRIDE
#define EBB_OVERRIDE 0
#endif

/* ---------------------------------------------------------------- fast paths
 * malloc: the class from the cache's own table (n <= 1024; beyond, ebbi_malloc_medium),
 * the head of its list, decoded and checked with its second word (the double-free key:
 * word0 ^ word1 ^ mix must have no tag bit, see free lists in internal.h; the end of a
 * list fails the same check), the profile's countdown, then the pop: head, room, key
 * cleared.
 * free: the class map's entry for p's page (class and span start; no NULL to test, an
 * address ebbmalloc never had finds class 0), the block-start check against the
 * class's reciprocal (0 where the list must not take p: class 0, classes thread caches
 * do not keep, the empty cache), the double-free key, one of the list's room, then the
 * push: both words of p with one 16-byte XOR of the head against (secret, key), and the
 * head, last, so that a stopped free never leaves the head at a half-written object
 * (see idle_detach).
 * On x86-64 each is written out in assembly, so that the instructions and the order of
 * the stores are those described (15 and 25 instructions, 17 for malloc with the
 * countdown); the C below is the same algorithm, for other CPUs and for the sanitizer
 * builds, which must see every access. */
#if defined(__x86_64__) && !EBB_TSAN && !defined(__SANITIZE_ADDRESS__)
#define FAST_ASM 1
#else
#define FAST_ASM 0
#endif
#define STR_(x) #x
#define STR(x) STR_(x)

/* n's list in tc, class cls: the pop, or the slow path. */
static inline __attribute__((always_inline)) void *pop_fast(struct ebb_tcache *tc, size_t cls, size_t n) {
    uint64_t *p = tc->head[cls];
    uint64_t next = p[0] ^ p[1] ^ __atomic_load_n(&ebbi_link_mix, __ATOMIC_RELAXED);
    if (unlikely(next & ebbi_link_tagmask)) return ebbi_malloc_miss(n);
    if (unlikely((tc->prof_left -= (int64_t)n) < 0)) return ebbi_malloc_sample(n);
    tc->head[cls] = (void *)next;
    tc->room[cls] += EBB_TC_ROOM_ONE;
    p[1] = 0; /* no longer free */
    ebbi_tsan_release(tc);
    return p;
}

/* 1024 < n: the class from the shared table (or the slow path for large blocks). */
EBB_NOINLINE void *ebbi_malloc_medium(size_t n) {
    if (n > EBB_SMALL_MAX) return ebbi_malloc_slow(n);
    return pop_fast(ebbi_tc_mine(), ebbi_size_to_class(n), n);
}

#if FAST_ASM
/* malloc's fast path into p, or a jump to one of three labels: n above EBB_TC_DIRECT, the
 * list's end (or a bad head), the profile's countdown run out.  ebb_malloc's own body,
 * and C++'s operator new's (below). */
/* clang-format off */
#define MALLOC_FAST_ASM(p, n, medium, miss, sample)                                                   \
    __asm__ goto("movq ebbi_tc@gottpoff(%%rip), %%rdx\n\t"                                         \
                 "movq %%fs:(%%rdx), %%rdx\n\t"                            /* tc */                  \
                 "cmpq $" STR(EBB_TC_DIRECT) ", %[n]\n\t"                                             \
                 "ja %l[" #medium "]\n\t"                                                            \
                 "movzbl " STR(EBB_TC_CLS_OF_OFF) "(%%rdx,%[n]), %%ecx\n\t" /* class */              \
                 "movq (%%rdx,%%rcx,8), %[p]\n\t"                           /* head */               \
                 "movq (%[p]), %%rsi\n\t"                                                            \
                 "xorq 8(%[p]), %%rsi\n\t"                                                           \
                 "xorq ebbi_link_mix(%%rip), %%rsi\n\t"                     /* next */               \
                 "testq %%rsi, ebbi_link_tagmask(%%rip)\n\t"                                         \
                 "jne %l[" #miss "]\n\t"                                                             \
                 "subq %[n], " STR(EBB_TC_PROF_OFF) "(%%rdx)\n\t"                                    \
                 "js %l[" #sample "]\n\t"                                                            \
                 "movq %%rsi, (%%rdx,%%rcx,8)\n\t"                                                   \
                 "addq $" STR(EBB_TC_ROOM_UNIT) ", " STR(EBB_TC_ROOM_OFF) "(%%rdx,%%rcx,8)\n\t"      \
                 "movq $0, 8(%[p])"                                                                 \
                 : [p] "=&a"(p)                                                                     \
                 : [n] "D"(n)                                                                       \
                 : "rcx", "rdx", "rsi", "cc", "memory"                                              \
                 : medium, miss, sample)
/* clang-format on */

EBB_EXPORT void *ebb_malloc(size_t n) {
    void *p;
    MALLOC_FAST_ASM(p, n, medium, miss, sample);
    return p;
medium:
    return ebbi_malloc_medium(n);
miss:
    return ebbi_malloc_miss(n);
sample:
    return ebbi_malloc_sample(n);
}

EBB_EXPORT void ebb_free(void *p) {
    /* clang-format off */
    __asm__ goto("movq %[p], %%rax\n\t"
                 "shrq $" STR(EBB_CM_ROOT_SHIFT) ", %%rax\n\t"
                 "cmpq ebbi_cm_last(%%rip), %%rax\n\t"
                 "jg %l[slow]\n\t"
                 "leaq ebbi_cm_root(%%rip), %%rcx\n\t"
                 "movq (%%rcx,%%rax,8), %%rax\n\t"                  /* leaf, biased */
                 "movq %[p], %%rcx\n\t"
                 "shrq $" STR(EBB_PAGE_SHIFT) ", %%rcx\n\t"
                 "movl 4(%%rax,%%rcx,8), %%esi\n\t"                 /* class */
                 "movl %k[p], %%edx\n\t"
                 "subl (%%rax,%%rcx,8), %%edx\n\t"                  /* offset in the span */
                 "movq ebbi_tc@gottpoff(%%rip), %%rax\n\t"
                 "movq %%fs:(%%rax), %%rax\n\t"                     /* tc */
                 "imulq " STR(EBB_TC_DIV_OFF) "(%%rax,%%rsi,8), %%rdx\n\t"
                 "cmpq " STR(EBB_TC_ROOM_OFF) "(%%rax,%%rsi,8), %%rdx\n\t"
                 "jae %l[slow]\n\t"                                 /* not a block, or full */
                 "movq 8(%[p]), %%rcx\n\t"
                 "cmpq ebbi_link_keys+8(%%rip), %%rcx\n\t"
                 "je %l[slow]\n\t"                                  /* free already */
                 "subq $" STR(EBB_TC_ROOM_UNIT) ", " STR(EBB_TC_ROOM_OFF) "(%%rax,%%rsi,8)\n\t"
                 "movq (%%rax,%%rsi,8), %%xmm0\n\t"
                 "pxor ebbi_link_keys(%%rip), %%xmm0\n\t"
                 "movups %%xmm0, (%[p])\n\t"
                 "movq %[p], (%%rax,%%rsi,8)"
                 :
                 : [p] "D"(p)
                 : "rax", "rcx", "rdx", "rsi", "xmm0", "cc", "memory"
                 : slow);
    /* clang-format on */
    return;
slow:
    ebbi_free_slow(p);
}
#else
EBB_EXPORT void *ebb_malloc(size_t n) {
    struct ebb_tcache *tc = ebbi_tc_mine();
    if (likely(n <= EBB_TC_DIRECT)) return pop_fast(tc, tc->cls_of[n], n);
    return ebbi_malloc_medium(n);
}

EBB_EXPORT void ebb_free(void *p) {
    uintptr_t a = (uintptr_t)p;
    intptr_t r = (intptr_t)(a >> EBB_CM_ROOT_SHIFT);
    if (likely(r <= __atomic_load_n(&ebbi_cm_last, __ATOMIC_RELAXED))) {
        uintptr_t leaf = __atomic_load_n(&ebbi_cm_root[r], __ATOMIC_RELAXED);
        uint64_t e = __atomic_load_n((const uint64_t *)(leaf + (a >> EBB_PAGE_SHIFT) * 8), __ATOMIC_RELAXED);
        struct ebb_cm_entry ent;
        memcpy(&ent, &e, sizeof ent);
        size_t cls = ent.cls;
        struct ebb_tcache *tc = ebbi_tc_mine();
        uint64_t x = (uint32_t)a - ent.start;
        if (likely(x * tc->div[cls] < (uint64_t)tc->room[cls]) &&
            likely(((uint64_t *)p)[1] != ebbi_free_key)) {
            tc->room[cls] -= EBB_TC_ROOM_ONE;
            ((uint64_t *)p)[1] = ebbi_free_key;
            ebbi_set_next(p, tc->head[cls]);
            atomic_signal_fence(memory_order_seq_cst); /* p's words before the head */
            tc->head[cls] = p;
            ebbi_tsan_release(tc);
            return;
        }
    }
    ebbi_free_slow(p);
}
#endif

/* ---------------------------------------------------------------- large blocks */
struct ebb_span *ebbi_large_span(size_t n, size_t align, bool zero) {
    struct ebb_span *s;
    /* Big requests, and alignments above a huge page (their padding is unmapped again),
     * get a mapping of their own. */
    if (n >= (size_t)ebbi_opt(EBB_OPT_MMAP_THRESHOLD) || align > ((size_t)2 << 20)) {
        s = ebbi_mapped_alloc(n, align);
    } else {
        size_t np = (n + EBB_PAGE - 1) >> EBB_PAGE_SHIFT;
        s = ebbi_page_alloc(np ? np : 1, align > EBB_PAGE ? align >> EBB_PAGE_SHIFT : 1);
        /* The page heap could not serve it (at its limit, os.c, or the kernel refused a
         * chunk): a mapping of its own may still be had. */
        if (!s) s = ebbi_mapped_alloc(n, align);
    }
    if (s && zero && !s->zeroed) memset((void *)s->start, 0, n);
    return s;
}

void *ebbi_large_alloc(size_t n, size_t align, bool zero) {
    if (n > PTRDIFF_MAX) goto oom;
    ebbi_ensure_init();
    struct ebb_span *s = ebbi_large_span(n, align, zero);
    if (!s) goto oom;
    ebbi_prof_count_large(s, n); /* every request above 256 KiB passes here */
    ebbi_release_tick();
    return (void *)s->start;
oom:
    errno = ENOMEM;
    return NULL;
}

void ebbi_large_free(struct ebb_span *s) {
    if (s->state == SPAN_MAPPED) ebbi_mapped_free(s);
    else ebbi_page_free(s);
    ebbi_release_tick();
}

/* The span that p is the start of a large block of, or NULL. */
static struct ebb_span *large_span(void *p) {
    struct ebb_span *s = ebbi_pm_span((uintptr_t)p);
    if (s && s->start == (uintptr_t)p && (s->state == SPAN_LARGE || s->state == SPAN_MAPPED)) return s;
    return NULL;
}

static unsigned small_class(void *p) { return ebbi_pm_class((uintptr_t)p); }
static bool small_start(void *p, unsigned cls) { return ebbi_pm_block_start((uintptr_t)p, cls); }

void ebbi_free_slow(void *p) {
    if (!p) return;
    int saved = errno;
    unsigned cls = small_class(p);
    if (cls) {
        if (!small_start(p, cls) || ((uint64_t *)p)[1] == ebbi_free_key || ebbi_central_routed_free(p, cls))
            ebbi_reject("free()", p);
        ebbi_tc_free_small(p, cls);
    } else {
        struct ebb_span *s = large_span(p);
        if (!s) ebbi_reject("free()", p);
        if (s->cls) ebbi_prof_free(s); /* a sampled block */
        ebbi_large_free(s);
    }
    errno = saved;
}

size_t ebbi_usable_size(void *p) {
    unsigned cls = small_class(p);
    if (cls) return ebbi_classes[cls].size;
    struct ebb_span *s = large_span(p);
    if (!s) return 0;
    /* a sampled small block has the usable size its class would give it */
    if (s->cls && s->cls != EBB_CLS_SAMPLED_LARGE) return ebbi_classes[s->cls].size;
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

/* Failing, it also leaves errno at ENOMEM, as glibc's does (programs check either). */
EBB_EXPORT int ebb_posix_memalign(void **memptr, size_t align, size_t n) {
    if (!pow2(align) || align % sizeof(void *)) return EINVAL;
    int saved = errno;
    void *p = aligned(align, n);
    if (!p) {
        errno = ENOMEM;
        return ENOMEM;
    }
    errno = saved;
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

static size_t os_page(void) { return ebbi_os_page_size(); }

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
        if (!small_start(p, cls) || ((uint64_t *)p)[1] == ebbi_free_key) ebbi_reject("realloc()", p);
        old = ebbi_classes[cls].size;
        if (n <= old && n > old / 2) return p;
    } else {
        struct ebb_span *s = large_span(p);
        if (!s) ebbi_reject("realloc()", p);
        old = ebbi_usable_size(p);
        if (s->cls && s->cls != EBB_CLS_SAMPLED_LARGE) {
            /* a sampled small block stays where a small one would */
            if (n <= old && n > old / 2) {
                ebbi_prof_resize(s, n);
                return p;
            }
            goto move;
        }
        /* A block with its own mapping that stays big moves with mremap: no copy. */
        if (s->state == SPAN_MAPPED && n >= (size_t)ebbi_opt(EBB_OPT_MMAP_THRESHOLD) / 2 &&
            n <= PTRDIFF_MAX && ebbi_mapped_resize(s, n)) {
            /* growing is a request for the new size; shrinking keeps the sample */
            if (n > old) ebbi_prof_regrow(s, n);
            else if (s->cls) ebbi_prof_resize(s, n);
            return (void *)s->start;
        }
        /* Grow in place into the free pages right after it, if there are enough. */
        if (s->state == SPAN_LARGE && n > old && n <= PTRDIFF_MAX &&
            ebbi_page_grow(s, (n + EBB_PAGE - 1) >> EBB_PAGE_SHIFT)) {
            ebbi_prof_regrow(s, n); /* a new request, as the mremap above */
            ebbi_release_tick();
            return p;
        }
        if (n <= old && n > EBB_SMALL_MAX) {
            /* Shrink in place; give back the tail when it is a quarter or more. */
            size_t np = (n + EBB_PAGE - 1) >> EBB_PAGE_SHIFT;
            if (s->state == SPAN_LARGE && (s->npages - np) * 4 >= s->npages) ebbi_page_shrink(s, np);
            if (s->cls) ebbi_prof_resize(s, n);
            return p;
        }
    }
move:
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

/* ---------------------------------------------------------------- C++'s names
 * operator new and delete, so that a C++ program's news and deletes come here directly
 * instead of through libstdc++'s, which call malloc and free: a call, a PLT jump and a
 * loop test more per pair (alloc-test from mimalloc-bench: 1.1 G of its 13.5 G
 * instructions were libstdc++'s operators).  Every delete is ebb_free (a sized or aligned
 * delete's size and alignment are not needed: the class map and the span know).  A new
 * that gets NULL calls the next definition of operator new after this library's
 * (libstdc++'s), which calls malloc again, then the program's new_handler, and throws
 * std::bad_alloc, or returns NULL for the nothrow forms: C cannot throw, and that loop
 * is the C++ runtime's.  The array forms are the same functions (libstdc++'s array new
 * calls operator new, which is this one).  Without any C++ runtime in the process
 * nothing calls these; a program linked with a static libstdc++ keeps its own. */
static EBB_NOINLINE void *cxx_next(const char *name, size_t n, size_t align, const void *nothrow) {
    void *f = ebbi_os_next_definition(name);
    if (!f) ebbi_fatal("operator new: out of memory, and no C++ runtime to throw std::bad_alloc");
    if (align) {
        if (nothrow) return ((void *(*)(size_t, size_t, const void *))f)(n, align, nothrow);
        return ((void *(*)(size_t, size_t))f)(n, align);
    }
    if (nothrow) return ((void *(*)(size_t, const void *))f)(n, nothrow);
    return ((void *(*)(size_t))f)(n);
}

void *ebbi_cxx_new(size_t n) __asm__("_Znwm") EBB_EXPORT;
#if FAST_ASM
/* The slow path the fast path's label named (as ebb_malloc's labels: at `sample` the
 * countdown has taken n already), then the C++ runtime if it found nothing. */
enum cxx_slow { CXX_MEDIUM, CXX_MISS, CXX_SAMPLE };
static EBB_NOINLINE void *cxx_new_slow(size_t n, enum cxx_slow why) {
    void *p = why == CXX_MEDIUM ? ebbi_malloc_medium(n)
              : why == CXX_MISS ? ebbi_malloc_miss(n)
                                : ebbi_malloc_sample(n);
    return p ? p : cxx_next("_Znwm", n, 0, NULL);
}

void *ebbi_cxx_new(size_t n) {
    void *p;
    MALLOC_FAST_ASM(p, n, medium, miss, sample);
    return p;
medium:
    return cxx_new_slow(n, CXX_MEDIUM);
miss:
    return cxx_new_slow(n, CXX_MISS);
sample:
    return cxx_new_slow(n, CXX_SAMPLE);
}
#else
void *ebbi_cxx_new(size_t n) {
    void *p = ebb_malloc(n);
    return likely(p) ? p : cxx_next("_Znwm", n, 0, NULL);
}
#endif
void *ebbi_cxx_new_array(size_t n) __asm__("_Znam") ALIAS(_Znwm);

void *ebbi_cxx_new_nothrow(size_t n, const void *tag) __asm__("_ZnwmRKSt9nothrow_t") EBB_EXPORT;
void *ebbi_cxx_new_nothrow(size_t n, const void *tag) {
    void *p = ebb_malloc(n);
    return likely(p) ? p : cxx_next("_ZnwmRKSt9nothrow_t", n, 0, tag);
}
void *ebbi_cxx_new_array_nothrow(size_t, const void *) __asm__("_ZnamRKSt9nothrow_t")
    ALIAS(_ZnwmRKSt9nothrow_t);

/* std::align_val_t is a power of two (the compiler passes alignof of a type) */
void *ebbi_cxx_new_aligned(size_t n, size_t align) __asm__("_ZnwmSt11align_val_t") EBB_EXPORT;
void *ebbi_cxx_new_aligned(size_t n, size_t align) {
    void *p = pow2(align) ? aligned(align, n) : NULL;
    return likely(p) ? p : cxx_next("_ZnwmSt11align_val_t", n, align, NULL);
}
void *ebbi_cxx_new_array_aligned(size_t, size_t) __asm__("_ZnamSt11align_val_t") ALIAS(_ZnwmSt11align_val_t);

void *ebbi_cxx_new_aligned_nothrow(size_t n, size_t align,
                                   const void *tag) __asm__("_ZnwmSt11align_val_tRKSt9nothrow_t") EBB_EXPORT;
void *ebbi_cxx_new_aligned_nothrow(size_t n, size_t align, const void *tag) {
    void *p = pow2(align) ? aligned(align, n) : NULL;
    return likely(p) ? p : cxx_next("_ZnwmSt11align_val_tRKSt9nothrow_t", n, align, tag);
}
void *ebbi_cxx_new_array_aligned_nothrow(size_t, size_t,
                                         const void *) __asm__("_ZnamSt11align_val_tRKSt9nothrow_t")
    ALIAS(_ZnwmSt11align_val_tRKSt9nothrow_t);

/* delete, delete[], their sized, aligned and nothrow forms */
void ebbi_cxx_delete(void *) __asm__("_ZdlPv") ALIAS(ebb_free);
void ebbi_cxx_delete_array(void *) __asm__("_ZdaPv") ALIAS(ebb_free);
void ebbi_cxx_delete_sized(void *) __asm__("_ZdlPvm") ALIAS(ebb_free);
void ebbi_cxx_delete_array_sized(void *) __asm__("_ZdaPvm") ALIAS(ebb_free);
void ebbi_cxx_delete_aligned(void *) __asm__("_ZdlPvSt11align_val_t") ALIAS(ebb_free);
void ebbi_cxx_delete_array_aligned(void *) __asm__("_ZdaPvSt11align_val_t") ALIAS(ebb_free);
void ebbi_cxx_delete_sized_aligned(void *) __asm__("_ZdlPvmSt11align_val_t") ALIAS(ebb_free);
void ebbi_cxx_delete_array_sized_aligned(void *) __asm__("_ZdaPvmSt11align_val_t") ALIAS(ebb_free);
void ebbi_cxx_delete_nothrow(void *) __asm__("_ZdlPvRKSt9nothrow_t") ALIAS(ebb_free);
void ebbi_cxx_delete_array_nothrow(void *) __asm__("_ZdaPvRKSt9nothrow_t") ALIAS(ebb_free);
void ebbi_cxx_delete_aligned_nothrow(void *) __asm__("_ZdlPvSt11align_val_tRKSt9nothrow_t") ALIAS(ebb_free);
void ebbi_cxx_delete_array_aligned_nothrow(void *) __asm__("_ZdaPvSt11align_val_tRKSt9nothrow_t")
    ALIAS(ebb_free);
#endif
