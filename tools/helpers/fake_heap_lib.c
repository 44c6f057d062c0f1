/* A library standing where real code allocates, for ebb-inspect's heap profile tests.
 * Each function calls the "allocation function" it is given the way code calls malloc,
 * so the return address that function records lies inside this library, at a known
 * function; each returns its own return address (the frame of its caller).  Built with
 * -O2 -fomit-frame-pointer, as distribution and JNI libraries are: symbolisation must not
 * depend on frame pointers.  The counter after each call keeps it a real call, not a
 * tail jump. */
#include <stdint.h>
#include <stdlib.h>

volatile unsigned long fake_heap_calls;

uintptr_t fake_leak_big(void (*alloc)(void)) {
    alloc();
    fake_heap_calls++;
    return (uintptr_t)__builtin_return_address(0);
}

/* Named like a JNI entry point (the Java class org.ebbmalloc.fake.Native, method grow). */
uintptr_t Java_org_ebbmalloc_fake_Native_grow(void *env, void *cls, void (*alloc)(void)) {
    (void)env;
    (void)cls;
    alloc();
    fake_heap_calls++;
    return (uintptr_t)__builtin_return_address(0);
}

/* Allocates itself, then has libc call back (as strdup or fopen call malloc): the
 * callback's return address lies in libc's qsort. */
uintptr_t fake_sort_site(void (*alloc)(void), int (*alloc_as_cmp)(const void *, const void *)) {
    alloc();
    int v[2] = {2, 1};
    qsort(v, 2, sizeof(v[0]), alloc_as_cmp);
    fake_heap_calls++;
    return (uintptr_t)__builtin_return_address(0);
}
