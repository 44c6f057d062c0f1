/* Hostile sizes and alignments: every call is made to glibc's function and to the ebb_
 * one in the same process (the static library leaves glibc's malloc in place), and the
 * results must agree: NULL or not, errno, posix_memalign's return value and *memptr
 * left alone on failure.  No expectation is written down by hand, so what is compared is
 * what glibc really does on this machine.
 *
 *   test_compat            SIZE_MAX and near it, PTRDIFF_MAX +-1, 2^47 and up, overflowing
 *                          calloc/reallocarray products, invalid alignments
 *   test_compat --pending  also sizes and alignments from 2^34 to 2^46, which glibc refuses
 *                          when they exceed what the kernel will commit (the default
 *                          overcommit heuristic) and ebbmalloc grants (MAP_NORESERVE)
 *
 * One deliberate difference: aligned_alloc with an alignment that is not a power of two
 * fails with EINVAL in ebbmalloc (C17; glibc 2.38 and later do the same), glibc 2.36
 * treats it like memalign.  Checked as such. */
#define _GNU_SOURCE
#include <errno.h>
#include <gnu/libc-version.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ebbmalloc.h"

struct result {
    bool null;
    int err; /* errno after the call, or the return value of posix_memalign */
};

enum fn { MALLOC, CALLOC, REALLOC, REALLOCARRAY, POSIX_MEMALIGN, ALIGNED_ALLOC, MEMALIGN, VALLOC, PVALLOC };
static const char *names[] = {"malloc",        "calloc",   "realloc", "reallocarray", "posix_memalign",
                              "aligned_alloc", "memalign", "valloc",  "pvalloc"};

static struct result call(bool ebb, enum fn f, size_t a, size_t b) {
    void *p = NULL, *old = NULL;
    int rc = 0;
    if (f == REALLOC || f == REALLOCARRAY) old = ebb ? ebb_malloc(10) : malloc(10);
    errno = 0;
    switch (f) {
    case MALLOC: p = ebb ? ebb_malloc(a) : malloc(a); break;
    case CALLOC: p = ebb ? ebb_calloc(a, b) : calloc(a, b); break;
    case REALLOC: p = ebb ? ebb_realloc(old, a) : realloc(old, a); break;
    case REALLOCARRAY: p = ebb ? ebb_reallocarray(old, a, b) : reallocarray(old, a, b); break;
    case POSIX_MEMALIGN: {
        void *q = (void *)&rc;
        rc = ebb ? ebb_posix_memalign(&q, a, b) : posix_memalign(&q, a, b);
        if (rc && q != (void *)&rc) rc = -1000; /* *memptr must stay untouched */
        p = rc ? NULL : q;
        break;
    }
    case ALIGNED_ALLOC: p = ebb ? ebb_aligned_alloc(a, b) : aligned_alloc(a, b); break;
    case MEMALIGN: p = ebb ? ebb_memalign(a, b) : memalign(a, b); break;
    case VALLOC: p = ebb ? ebb_valloc(a) : valloc(a); break;
    case PVALLOC: p = ebb ? ebb_pvalloc(a) : pvalloc(a); break;
    }
    struct result r = {p == NULL, f == POSIX_MEMALIGN ? rc : (p ? 0 : errno)};
    if (p) {
        ebb ? ebb_free(p) : free(p);
    } else if (old && !(f == REALLOC && a == 0) &&
               !(f == REALLOCARRAY && !__builtin_mul_overflow(a, b, &(size_t){0}) && a * b == 0)) {
        ebb ? ebb_free(old) : free(old); /* a failed realloc leaves the block alive */
    }
    return r;
}

static int failures, checked;

static void compare(enum fn f, size_t a, size_t b) {
    struct result g = call(false, f, a, b), e = call(true, f, a, b);
    bool pow2 = a && !(a & (a - 1));
    checked++;
    if (f == ALIGNED_ALLOC && !pow2) { /* the deliberate difference */
        if (!e.null || e.err != EINVAL) {
            printf("not ok: aligned_alloc(%#zx, %#zx): ebbmalloc %s errno %d, want NULL EINVAL\n", a, b,
                   e.null ? "NULL" : "a block", e.err);
            failures++;
        }
        return;
    }
    if (g.null != e.null || g.err != e.err) {
        if (failures++ >= 12) return; /* the count at the end says how many */
        printf("not ok: %s(%#zx, %#zx): glibc %s (%d), ebbmalloc %s (%d)\n", names[f], a, b,
               g.null ? "NULL" : "a block", g.err, e.null ? "NULL" : "a block", e.err);
    }
}

int main(int argc, char **argv) {
    bool pending = argc > 1 && !strcmp(argv[1], "--pending");
    mallopt(M_PERTURB, 0); /* meson sets MALLOC_PERTURB_: glibc would fill 4 GiB blocks */
    const size_t hostile[] = {SIZE_MAX,
                              SIZE_MAX - 1,
                              SIZE_MAX - 4095,
                              SIZE_MAX - 8192,
                              SIZE_MAX / 2,
                              SIZE_MAX / 2 + 1,
                              (size_t)PTRDIFF_MAX,
                              (size_t)PTRDIFF_MAX + 1,
                              (size_t)PTRDIFF_MAX - 4096,
                              (size_t)1 << 62,
                              (size_t)1 << 48,
                              (size_t)1 << 47,
                              0,
                              1,
                              4096};
    const size_t huge[] = {(size_t)1 << 34, (size_t)1 << 36, (size_t)1 << 40,
                           (size_t)1 << 44, (size_t)1 << 46, ((size_t)1 << 47) - 4096};
    const size_t *sizes = pending ? huge : hostile;
    size_t nsizes = pending ? sizeof huge / sizeof *huge : sizeof hostile / sizeof *hostile;
    const size_t aligns[] = {0,
                             1,
                             2,
                             3,
                             4,
                             8,
                             16,
                             24,
                             48,
                             64,
                             4095,
                             4096,
                             4097,
                             SIZE_MAX,
                             SIZE_MAX / 2,
                             SIZE_MAX / 2 + 1,
                             SIZE_MAX / 2 + 2,
                             (size_t)1 << 47,
                             (size_t)1 << 62};
    const size_t huge_aligns[] = {(size_t)1 << 34, (size_t)1 << 40, (size_t)1 << 46};

    for (size_t i = 0; i < nsizes; i++) {
        size_t n = sizes[i];
        compare(MALLOC, n, 0);
        compare(REALLOC, n, 0);
        compare(VALLOC, n, 0);
        compare(PVALLOC, n, 0);
        compare(POSIX_MEMALIGN, 64, n);
        compare(POSIX_MEMALIGN, 1 << 20, n);
        compare(ALIGNED_ALLOC, 4096, n);
        compare(MEMALIGN, 256, n);
        for (size_t k = 0; k < 4; k++) { /* products: overflowing, or n itself */
            static const size_t m[] = {1, 2, 3, 1 << 20};
            compare(CALLOC, n, m[k]);
            compare(CALLOC, m[k], n);
            compare(REALLOCARRAY, m[k], n);
        }
    }
    if (pending) {
        for (size_t i = 0; i < sizeof huge_aligns / sizeof *huge_aligns; i++) {
            compare(POSIX_MEMALIGN, huge_aligns[i], 100);
            compare(ALIGNED_ALLOC, huge_aligns[i], 100);
            compare(MEMALIGN, huge_aligns[i], 100);
        }
        compare(CALLOC, 1 << 20, 1 << 20); /* 1 TiB */
    } else {
        for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
            compare(POSIX_MEMALIGN, aligns[i], 100);
            compare(ALIGNED_ALLOC, aligns[i], 100);
            compare(MEMALIGN, aligns[i], 100);
        }
        compare(CALLOC, (size_t)1 << 32, (size_t)1 << 32);
        compare(CALLOC, SIZE_MAX / 3 + 1, 3);
        compare(REALLOCARRAY, (size_t)1 << 32, (size_t)1 << 32);
    }
    printf("%s: %d calls compared with glibc %s, %d differ\n",
           pending ? "test_compat --pending" : "test_compat", checked, gnu_get_libc_version(), failures);
    return failures ? 1 : 0;
}
