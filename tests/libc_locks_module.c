/* Loaded by test_libc_locks.  Its TLS block is too big for the static TLS that libc
 * keeps spare, so a thread that touches it gets it from malloc (libc allocates dynamic
 * TLS so), and libc frees it when it frees the thread's stack: in pthread_join, for a
 * thread with a stack of its own, under its thread-stack lock.  Its destructor frees
 * memory while dlclose runs it under the dynamic loader's lock: the blocks its
 * constructor took, then large blocks again and again for 300 ms, so that release ticks
 * fall due in there. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__thread char ebb_module_tls[300 << 10];
int *ebb_module_frees; /* set by the test: where the destructor counts its frees */

void ebb_module_touch(void) { memset(ebb_module_tls, 1, sizeof ebb_module_tls); }

static void *held[8];

__attribute__((constructor)) static void module_init(void) {
    for (int i = 0; i < 8; i++) {
        held[i] = malloc(1 << 20);
        if (held[i]) memset(held[i], 3, 1 << 20);
    }
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

__attribute__((destructor)) static void module_fini(void) {
    int n = 0;
    for (int i = 0; i < 8; i++) {
        free(held[i]);
        n++;
    }
    for (uint64_t end = now_ms() + 300; now_ms() < end;) {
        void *volatile p = malloc(300 << 10); /* volatile: the compiler may not drop the pair */
        free(p);
        n++;
    }
    if (ebb_module_frees) *ebb_module_frees = n;
}
