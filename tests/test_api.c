/* API conformance: every function of the malloc family, at sizes 0, 1, every class
 * boundary +-1, huge sizes and all alignments, with glibc's results and errno values.
 * Built twice: against the ebb_ names (static library, the process keeps glibc's
 * malloc) and against glibc's names in a program linked to libebbmalloc.so. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"
#include "ebbmalloc.h"

#ifdef USE_LIBC_NAMES
#define F(name) name
void free_sized(void *, size_t);
void free_aligned_sized(void *, size_t, size_t);
#else
#define F(name) ebb_##name
#endif

static const size_t boundaries[] = {
    16,      32,    48,    64,    80,     96,     112,    128,    144,           256,     288,
    512,     576,   1024,  1152,  1280,   2048,   4096,   4608,   8192,          9216,    16384,
    32768,   36864, 65536, 73728, 131072, 147456, 245760, 262144, 262144 + 8192, 1 << 20, (1 << 20) + 4096,
    33 << 20};

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 131);
}
static int check(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 131)) return 0;
    return 1;
}

static void malloc_zero_and_one(void **st) {
    (void)st;
    void *a = F(malloc)(0), *b = F(malloc)(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_true(F(malloc_usable_size)(a) >= 16);
    void *c = F(malloc)(1);
    assert_non_null(c);
    assert_int_equal((uintptr_t)c % 16, 0);
    assert_true(F(malloc_usable_size)(c) >= 1);
    F(free)(a), F(free)(b), F(free)(c);
}

static void every_class_boundary(void **st) {
    (void)st;
    for (size_t i = 0; i < sizeof boundaries / sizeof *boundaries; i++) {
        for (int d = -1; d <= 1; d++) {
            size_t n = boundaries[i] + (size_t)d;
            unsigned char *p = F(malloc)(n);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % 16, 0);
            size_t us = F(malloc_usable_size)(p);
            assert_true(us >= n);
            fill(p, us, (unsigned)n); /* the whole usable size is ours */
            assert_true(check(p, us, (unsigned)n));
            F(free)(p);
        }
    }
}

static void huge_sizes_fail_with_enomem(void **st) {
    (void)st;
    size_t bad[] = {SIZE_MAX, SIZE_MAX - 4096, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX};
    for (size_t i = 0; i < 4; i++) {
        errno = 0;
        assert_null(F(malloc)(bad[i]));
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        assert_null(F(calloc)(1, bad[i]));
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        void *p = F(malloc)(10);
        assert_null(F(realloc)(p, bad[i]));
        assert_int_equal(errno, ENOMEM);
        F(free)(p); /* realloc failure leaves the block alive */
        errno = 0;
        assert_null(F(memalign)(64, bad[i]));
        assert_int_equal(errno, ENOMEM);
        errno = 0;
        assert_null(F(aligned_alloc)(64, bad[i]));
        assert_int_equal(errno, ENOMEM);
        void *q = (void *)1;
        assert_int_equal(F(posix_memalign)(&q, 64, bad[i]), ENOMEM);
        assert_ptr_equal(q, (void *)1);
        errno = 0;
        assert_null(F(valloc)(bad[i]));
        assert_int_equal(errno, ENOMEM);
    }
    errno = 0;
    assert_null(F(pvalloc)(SIZE_MAX - 100)); /* rounding up to a page overflows */
    assert_int_equal(errno, ENOMEM);
}

static void calloc_overflow_and_zeroing(void **st) {
    (void)st;
    errno = 0;
    assert_null(F(calloc)(SIZE_MAX / 2, 3));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(F(calloc)((size_t)1 << 32, (size_t)1 << 32));
    assert_int_equal(errno, ENOMEM);
    /* Dirty memory first, so calloc must really clear reused blocks. */
    for (size_t i = 0; i < sizeof boundaries / sizeof *boundaries; i++) {
        size_t n = boundaries[i];
        unsigned char *d = F(malloc)(n);
        memset(d, 0xAB, n);
        F(free)(d);
        unsigned char *p = F(calloc)(1, n);
        assert_non_null(p);
        for (size_t k = 0; k < n; k++)
            if (p[k]) fail_msg("calloc(%zu) byte %zu is %d", n, k, p[k]);
        F(free)(p);
    }
    void *z = F(calloc)(0, 10);
    assert_non_null(z);
    F(free)(z);
}

static void realloc_keeps_content(void **st) {
    (void)st;
    size_t steps[] = {1, 15, 16, 17, 100, 1000, 5000, 70000, 300000, 2 << 20, 40 << 20, 9000, 3, 1};
    size_t cur = 0;
    unsigned char *p = NULL;
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        size_t n = steps[i];
        p = F(realloc)(p, n);
        assert_non_null(p);
        size_t keep = cur < n ? cur : n;
        assert_true(check(p, keep, 7));
        fill(p, n, 7);
        cur = n;
    }
    /* realloc(p, 0) frees and returns NULL, as glibc does; realloc(NULL, n) mallocs. */
    assert_null(F(realloc)(p, 0));
    p = F(realloc)(NULL, 50);
    assert_non_null(p);
    F(free)(p);
    errno = 0;
    p = F(malloc)(8);
    assert_null(F(reallocarray)(p, SIZE_MAX / 2, 3));
    assert_int_equal(errno, ENOMEM);
    p = F(reallocarray)(p, 100, 4);
    assert_non_null(p);
    assert_true(F(malloc_usable_size)(p) >= 400);
    F(free)(p);
}

static void huge_realloc_grows_and_shrinks(void **st) {
    (void)st;
    size_t n = 40u << 20; /* own mapping: moved with mremap, not copied */
    unsigned char *p = F(malloc)(n);
    for (size_t i = 0; i < n; i += 4096) p[i] = (unsigned char)(i >> 12);
    p = F(realloc)(p, 3 * n);
    assert_non_null(p);
    assert_true(F(malloc_usable_size)(p) >= 3 * n);
    for (size_t i = 0; i < n; i += 4096) assert_int_equal(p[i], (unsigned char)(i >> 12));
    memset(p + n, 9, 2 * n);
    p = F(realloc)(p, n / 2);
    assert_non_null(p);
    for (size_t i = 0; i < n / 2; i += 4096) assert_int_equal(p[i], (unsigned char)(i >> 12));
    F(free)(p);
}

static void large_shrink_in_place(void **st) {
    (void)st;
    unsigned char *p = F(malloc)(4 << 20);
    fill(p, 1 << 20, 3);
    unsigned char *q = F(realloc)(p, 1 << 20);
    assert_ptr_equal(p, q);
    assert_true(check(q, 1 << 20, 3));
    assert_true(F(malloc_usable_size)(q) < (2 << 20));
    F(free)(q);
}

static void alignments(void **st) {
    (void)st;
    for (size_t al = sizeof(void *); al <= ((size_t)64 << 20); al <<= 1) {
        size_t sizes[] = {1, al / 2 + 1, al, al + 1, 3000, 300000};
        for (size_t i = 0; i < 6; i++) {
            size_t n = sizes[i];
            void *p = NULL;
            assert_int_equal(F(posix_memalign)(&p, al, n), 0);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % al, 0);
            assert_true(F(malloc_usable_size)(p) >= n);
            memset(p, 0x5A, n);
            F(free)(p);
            p = F(aligned_alloc)(al, n);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % al, 0);
            memset(p, 0x5A, n);
            F(free)(p);
            p = F(memalign)(al, n);
            assert_non_null(p);
            assert_int_equal((uintptr_t)p % al, 0);
            F(free)(p);
        }
    }
}

static void bad_alignments(void **st) {
    (void)st;
    void *p = (void *)1;
    assert_int_equal(F(posix_memalign)(&p, 0, 10), EINVAL);
    assert_int_equal(F(posix_memalign)(&p, 3, 10), EINVAL);
    assert_int_equal(F(posix_memalign)(&p, 4, 10), EINVAL); /* not a multiple of sizeof(void*) */
    assert_int_equal(F(posix_memalign)(&p, 24, 10), EINVAL);
    assert_ptr_equal(p, (void *)1);
    errno = 0;
    assert_null(F(aligned_alloc)(24, 10));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(F(aligned_alloc)(0, 10));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(F(memalign)(SIZE_MAX / 2 + 2, 10));
    assert_int_equal(errno, EINVAL);
    /* memalign rounds a non-power-of-two alignment up, as glibc does */
    p = F(memalign)(48, 10);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    F(free)(p);
}

static void page_functions(void **st) {
    (void)st;
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    void *p = F(valloc)(10);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % ps, 0);
    F(free)(p);
    p = F(pvalloc)(0);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % ps, 0);
    assert_true(F(malloc_usable_size)(p) >= ps);
    F(free)(p);
    p = F(pvalloc)(ps + 1);
    assert_true(F(malloc_usable_size)(p) >= 2 * ps);
    memset(p, 1, 2 * ps);
    F(free)(p);
}

static void free_keeps_errno_and_null_is_fine(void **st) {
    (void)st;
    assert_int_equal(F(malloc_usable_size)(NULL), 0);
    errno = 1234;
    F(free)(NULL);
    assert_int_equal(errno, 1234);
    for (size_t i = 0; i < sizeof boundaries / sizeof *boundaries; i++) {
        void *p = F(malloc)(boundaries[i]);
        errno = 4321;
        F(free)(p);
        assert_int_equal(errno, 4321);
    }
    void *p = F(malloc)(100);
    F(free_sized)(p, 100);
    p = F(aligned_alloc)(256, 1000);
    F(free_aligned_sized)(p, 256, 1000);
    F(free_sized)(NULL, 0);
}

static void mallopt_and_reports(void **st) {
    (void)st;
    assert_int_equal(F(mallopt)(M_ARENA_MAX, 2), 1);
    assert_int_equal(F(mallopt)(M_TRIM_THRESHOLD, 128 * 1024), 1);
    assert_int_equal(F(mallopt)(M_MMAP_THRESHOLD, 64 << 20), 0); /* above glibc's maximum */
    assert_int_equal(F(mallopt)(M_MMAP_THRESHOLD, 32 << 20), 1);
    assert_int_equal(F(mallopt)(M_TRIM_THRESHOLD, 0), 1);
    assert_int_equal(F(mallopt)(12345, 1), 0);
    struct mallinfo2 a = F(mallinfo2)();
    void *blocks[64];
    for (int i = 0; i < 64; i++) blocks[i] = F(malloc)(100000);
    struct mallinfo2 b = F(mallinfo2)();
    assert_true(b.uordblks >= a.uordblks + 64 * 100000);
    assert_true(b.uordblks <= a.uordblks + 64 * 100000 * 9 / 8 + (1 << 20));
    struct mallinfo m = F(mallinfo)();
    assert_true(m.uordblks > 0);
    for (int i = 0; i < 64; i++) F(free)(blocks[i]);
    struct mallinfo2 c = F(mallinfo2)();
    assert_true(c.uordblks < b.uordblks);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_int_equal(F(malloc_info)(0, f), 0);
    fclose(f);
    assert_non_null(strstr(buf, "<malloc version=\"1\">"));
    assert_non_null(strstr(buf, "</malloc>"));
    assert_non_null(strstr(buf, "<ebbmalloc in_use="));
    free(buf);
    errno = 0;
    assert_int_equal(F(malloc_info)(1, stderr), -1);
    assert_int_equal(errno, EINVAL);
    void *big = F(malloc)(4 << 20);
    memset(big, 1, 4 << 20);
    F(free)(big);
    assert_int_equal(F(malloc_trim)(0), 1); /* something was returned */
    assert_int_equal(F(malloc_trim)(0), 0); /* and nothing is left to return */
    assert_non_null(strstr(ebb_version(), "0."));
}

static void many_live_blocks_do_not_overlap(void **st) {
    (void)st;
    enum { N = 20000 };
    static unsigned char *p[N];
    static size_t sz[N];
    unsigned r = 1;
    for (int i = 0; i < N; i++) {
        r = r * 1103515245 + 12345;
        sz[i] = (r >> 8) % (i % 50 == 0 ? 400000 : 3000);
        p[i] = F(malloc)(sz[i]);
        assert_non_null(p[i]);
        fill(p[i], sz[i], (unsigned)i);
    }
    for (int i = 0; i < N; i += 2) F(free)(p[i]);
    for (int i = 1; i < N; i += 2) assert_true(check(p[i], sz[i], (unsigned)i));
    for (int i = 0; i < N; i += 2) {
        p[i] = F(malloc)(sz[i]);
        fill(p[i], sz[i], (unsigned)i);
    }
    for (int i = 0; i < N; i++) {
        assert_true(check(p[i], sz[i], (unsigned)i));
        F(free)(p[i]);
    }
}

#ifdef USE_LIBC_NAMES
static void really_replaced(void **st) {
    (void)st;
    assert_true(maps_mention("libebbmalloc"));
    /* glibc would give 24 usable bytes for malloc(1); ebbmalloc's smallest class is 16 */
    void *p = malloc(1);
    assert_int_equal(malloc_usable_size(p), 16);
    assert_int_equal(malloc_usable_size(p), ebb_malloc_usable_size(p));
    free(p);
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
#ifdef USE_LIBC_NAMES
        cmocka_unit_test(really_replaced),
#endif
        cmocka_unit_test(malloc_zero_and_one),
        cmocka_unit_test(every_class_boundary),
        cmocka_unit_test(huge_sizes_fail_with_enomem),
        cmocka_unit_test(calloc_overflow_and_zeroing),
        cmocka_unit_test(realloc_keeps_content),
        cmocka_unit_test(large_shrink_in_place),
        cmocka_unit_test(huge_realloc_grows_and_shrinks),
        cmocka_unit_test(alignments),
        cmocka_unit_test(bad_alignments),
        cmocka_unit_test(page_functions),
        cmocka_unit_test(free_keeps_errno_and_null_is_fine),
        cmocka_unit_test(mallopt_and_reports),
        cmocka_unit_test(many_live_blocks_do_not_overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
