/* C++'s operator new and delete in the shared library (api.c): the process binds them to
 * ebbmalloc (dladdr), they hand out and take back ebbmalloc's blocks with its checks (a
 * double delete stops the process with ebbmalloc's message), the aligned forms align,
 * and a new that cannot be served goes on to the C++ runtime: the nothrow forms return
 * NULL, and the throwing form throws std::bad_alloc (uncaught in a C child, it ends in
 * std::terminate, whose message names it).
 *
 * Written in C: the operators are declared under their mangled names, and the test links
 * libstdc++ so that the runtime they fall back on is there, as in every C++ program. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_mem.h"

void *cxx_new(size_t) __asm__("_Znwm");
void *cxx_new_array(size_t) __asm__("_Znam");
void *cxx_new_nothrow(size_t, const void *) __asm__("_ZnwmRKSt9nothrow_t");
void *cxx_new_array_nothrow(size_t, const void *) __asm__("_ZnamRKSt9nothrow_t");
void *cxx_new_aligned(size_t, size_t) __asm__("_ZnwmSt11align_val_t");
void *cxx_new_aligned_nothrow(size_t, size_t, const void *) __asm__("_ZnwmSt11align_val_tRKSt9nothrow_t");
void cxx_delete(void *) __asm__("_ZdlPv");
void cxx_delete_array(void *) __asm__("_ZdaPv");
void cxx_delete_sized(void *, size_t) __asm__("_ZdlPvm");
void cxx_delete_aligned_sized(void *, size_t, size_t) __asm__("_ZdlPvmSt11align_val_t");
extern const char cxx_nothrow __asm__("_ZSt7nothrow"); /* std::nothrow */

static bool in_ebbmalloc(void *fn) {
    Dl_info info;
    return dladdr(fn, &info) && info.dli_fname && strstr(info.dli_fname, "libebbmalloc");
}

static void operators_are_ebbmallocs(void **st) {
    (void)st;
    void *fns[] = {(void *)cxx_new,         (void *)cxx_new_array, (void *)cxx_new_nothrow,
                   (void *)cxx_new_aligned, (void *)cxx_delete,    (void *)cxx_delete_array,
                   (void *)cxx_delete_sized};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) assert_true(in_ebbmalloc(fns[i]));
    /* an ebbmalloc block: 100 bytes come from the 112-byte class (glibc would say 104) */
    unsigned char *p = cxx_new(100);
    assert_non_null(p);
    assert_int_equal(malloc_usable_size(p), 112);
    memset(p, 0x5a, 100);
    unsigned char *a = cxx_new_array(3000);
    assert_non_null(a);
    memset(a, 0xa5, 3000);
    for (int i = 0; i < 100; i++) assert_int_equal(p[i], 0x5a);
    cxx_delete_sized(p, 100);
    cxx_delete_array(a);
    /* new of 0 bytes: distinct blocks */
    void *z1 = cxx_new(0), *z2 = cxx_new(0);
    assert_non_null(z1);
    assert_ptr_not_equal(z1, z2);
    cxx_delete(z1);
    cxx_delete(z2);
}

static void aligned_forms_align(void **st) {
    (void)st;
    for (size_t al = 32; al <= ((size_t)1 << 20); al <<= 2) {
        unsigned char *p = cxx_new_aligned(1000, al);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % al, 0);
        assert_true(malloc_usable_size(p) >= 1000);
        memset(p, 1, 1000);
        cxx_delete_aligned_sized(p, 1000, al);
        p = cxx_new_aligned_nothrow(50, al, &cxx_nothrow);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % al, 0);
        cxx_delete(p);
    }
}

static void nothrow_forms_return_null(void **st) {
    (void)st;
    assert_null(cxx_new_nothrow((size_t)1 << 62, &cxx_nothrow));
    assert_null(cxx_new_array_nothrow((size_t)1 << 62, &cxx_nothrow));
    assert_null(cxx_new_aligned_nothrow((size_t)1 << 62, 64, &cxx_nothrow));
}

static void throwing_new(void) {
    void *p = cxx_new((size_t)1 << 62);
    fprintf(stderr, "returned %p\n", p);
}

static void throwing_new_ends_in_bad_alloc(void **st) {
    (void)st;
    char err[1024];
    int status = child_stderr(throwing_new, err, sizeof err);
    printf("# child: %s", err);
    assert_true(died_of_abort(status, err, "std::bad_alloc"));
}

static void double_delete(void) {
    void *p = cxx_new(64);
    cxx_delete(p);
    cxx_delete(p);
}

static void double_delete_is_reported(void **st) {
    (void)st;
    char err[1024];
    int status = child_stderr(double_delete, err, sizeof err);
    printf("# child: %s", err);
    assert_true(died_of_abort(status, err, "double free"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(operators_are_ebbmallocs),  cmocka_unit_test(aligned_forms_align),
        cmocka_unit_test(nothrow_forms_return_null), cmocka_unit_test(throwing_new_ends_in_bad_alloc),
        cmocka_unit_test(double_delete_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
