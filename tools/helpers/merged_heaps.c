/* Test helper: a process whose glibc-style arena heaps the kernel has merged with their
 * neighbours, laid out and headed as glibc does it (MAP_NORESERVE reservations at 64 MiB
 * boundaries, made read-write from the start, a heap_info header at each start), in the
 * three ways merging happens:
 *   arena A: a full heap and the next heap's read-write part in one mapping;
 *   arena B: another MAP_NORESERVE read-write mapping merged into the start of its heap;
 *   arena C: one heap as glibc leaves it;
 *   arena D: two full heaps back to back, one 128 MiB read-write mapping.
 * Unmapped holes keep the arenas apart.  Prints "heap 0x... arena 0x..." for each of the
 * six heaps, then "ready", and waits until killed.  Single-threaded: glibc itself makes
 * no arena heaps here. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define MiB ((uintptr_t)1 << 20)
#define HEAP (64 * MiB)

/* glibc's heap_info, the words ebb-inspect checks. */
struct heap_info {
    uintptr_t ar_ptr, prev, size, mprotect_size;
};

static void rw(uintptr_t lo, uintptr_t hi) {
    if (mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) != 0) {
        perror("mprotect");
        exit(1);
    }
}

static void hole(uintptr_t lo, uintptr_t hi) {
    if (munmap((void *)lo, hi - lo) != 0) {
        perror("munmap");
        exit(1);
    }
}

static void head(uintptr_t h, uintptr_t arena, uintptr_t prev, uintptr_t size) {
    struct heap_info *hi = (struct heap_info *)h;
    *hi = (struct heap_info){arena, prev, size, size};
    printf("heap 0x%lx arena 0x%lx\n", (unsigned long)h, (unsigned long)arena);
}

int main(void) {
    /* 11 windows of 64 MiB, a hole of at least one window on either side */
    size_t len = 14 * HEAP;
    void *m = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uintptr_t lo = (uintptr_t)m, end = lo + len;
    uintptr_t base = ((lo + HEAP - 1) & ~(HEAP - 1)) + HEAP;
    hole(lo, base);
    uintptr_t w[11];
    for (int i = 0; i < 11; i++) w[i] = base + (uintptr_t)i * HEAP;

    /* A: windows 0 and 1 */
    rw(w[0], w[1] + 0x21000);
    head(w[0], w[0] + 32, 0, HEAP);
    head(w[1], w[0] + 32, w[0], 0x21000);
    hole(w[2], w[3] + HEAP - MiB);
    /* B: window 4, a mapping of 1 MiB merged into its start */
    rw(w[4] - MiB, w[4] + 4 * MiB);
    head(w[4], w[4] + 32, 0, 4 * MiB);
    hole(w[5], w[6]);
    /* C: window 6 */
    rw(w[6], w[6] + 0x201000);
    head(w[6], w[6] + 32, 0, 0x201000);
    hole(w[7], w[8]);
    /* D: windows 8 and 9 */
    rw(w[8], w[10]);
    head(w[8], w[8] + 32, 0, HEAP);
    head(w[9], w[8] + 32, w[8], HEAP);
    hole(w[10], end);

    printf("ready\n");
    fflush(stdout);
    for (;;) pause();
}
