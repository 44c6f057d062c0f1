/* Test helper for ebb-inspect: THREADS threads, each allocating MIB mebibytes through
 * glibc malloc in 64 KiB blocks (below the mmap threshold, so they come from the
 * thread's arena) and touching them.  With BIG_MIB, the first thread allocates that
 * much instead, which makes its arena span several 64 MiB heaps.
 *
 * When every thread is done it prints, for each glibc heap its blocks live in (the
 * block address rounded down to 64 MiB, as glibc finds a block's heap), a line
 * "heap 0x... thread N", then "ready", and waits until killed.  The threads stay
 * alive so that each keeps its own arena.  With GROW_MIB_PER_S, the main thread then
 * keeps allocating at that rate (from glibc's main heap) until killed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK (64 * 1024)
#define HEAP ((uintptr_t)64 << 20)
#define MAXHEAPS 64

struct worker {
    int id;
    size_t mib;
    uintptr_t heaps[MAXHEAPS];
    int nheaps;
};

static pthread_barrier_t done;

static void *work(void *arg) {
    struct worker *w = arg;
    size_t n = w->mib * 1024 * 1024 / BLOCK;
    for (size_t i = 0; i < n; i++) {
        char *p = malloc(BLOCK);
        if (!p) abort();
        memset(p, 0x5a, BLOCK);
        uintptr_t h = (uintptr_t)p & ~(HEAP - 1);
        int k;
        for (k = 0; k < w->nheaps && w->heaps[k] != h; k++)
            ;
        if (k == w->nheaps && w->nheaps < MAXHEAPS) w->heaps[w->nheaps++] = h;
    }
    pthread_barrier_wait(&done);
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: arena-hog THREADS MIB [BIG_MIB [GROW_MIB_PER_S]]\n");
        return 2;
    }
    int nt = atoi(argv[1]);
    size_t mib = (size_t)atol(argv[2]);
    size_t big = argc > 3 ? (size_t)atol(argv[3]) : mib;
    struct worker *w = calloc((size_t)nt, sizeof(*w));
    pthread_barrier_init(&done, NULL, (unsigned)nt + 1);
    for (int i = 0; i < nt; i++) {
        w[i].id = i;
        w[i].mib = i == 0 ? big : mib;
        pthread_t t;
        if (pthread_create(&t, NULL, work, &w[i]) != 0) abort();
    }
    pthread_barrier_wait(&done);
    for (int i = 0; i < nt; i++)
        for (int k = 0; k < w[i].nheaps; k++)
            printf("heap 0x%lx thread %d\n", (unsigned long)w[i].heaps[k], i);
    printf("ready\n");
    fflush(stdout);
    long grow = argc > 4 ? atol(argv[4]) : 0;
    while (grow > 0) {
        /* 1/100 of the rate every 10 ms, in blocks below the mmap threshold */
        for (long b = 0; b < grow * 1024 * 1024 / 100 / BLOCK; b++) {
            char *p = malloc(BLOCK);
            if (!p) abort();
            memset(p, 0x5b, BLOCK);
        }
        usleep(10000);
    }
    for (;;) pause();
}
