/* A library that leaks, built with -O2 -fomit-frame-pointer like most distribution and
 * JNI libraries: the heap profile must find prof_leak_inner (and walk on through
 * prof_leak_outer to its caller) from the unwind tables alone. */
#include <stdlib.h>
#include <string.h>

#define KEEP 65536
static void *kept[KEEP];
static unsigned nkept;

__attribute__((noinline, visibility("default"))) void *prof_leak_inner(size_t n, int salt) {
    char scratch[64]; /* a frame of its own size, no frame pointer */
    memset(scratch, salt, sizeof scratch);
    void *p = malloc(n);
    if (p) memcpy(p, scratch, n < sizeof scratch ? n : sizeof scratch);
    kept[nkept++ % KEEP] = p;
    return p;
}

__attribute__((noinline, visibility("default"))) void *prof_leak_outer(size_t n, int salt) {
    void *p = prof_leak_inner(n, salt + 1);
    __asm__ volatile("" ::: "memory"); /* not a tail call */
    return p;
}

/* Frees everything the library leaked so far. */
__attribute__((visibility("default"))) void prof_leak_release(void) {
    for (unsigned i = 0; i < nkept && i < KEEP; i++) free(kept[i]);
    nkept = 0;
}
