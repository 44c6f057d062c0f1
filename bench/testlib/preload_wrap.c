/* Test helper for tests/test_bench_proc.c: a preload library that really takes
 * over malloc (it forwards to glibc's own entry points), so a configuration that
 * preloads it must be accepted by ebb-bench's check. */
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

void *malloc(size_t n) { return __libc_malloc(n); }

void free(void *p) { __libc_free(p); }

void *calloc(size_t n, size_t s) { return __libc_calloc(n, s); }

void *realloc(void *p, size_t n) { return __libc_realloc(p, n); }
