/* real-leak LIB TOTAL BLOCK: a program under the real ebbmalloc whose dlopen'ed library
 * LIB leaks.  It loads LIB, churns (allocates and frees) and keeps a small set of its own
 * (noise from other stacks), has LIB leak TOTAL bytes in blocks of BLOCK, says
 * "ready 1 <bytes>", and waits for a line on stdin; then LIB leaks as much again, the
 * program churns again, and it says "ready 2 <bytes>" and waits for the end of its input. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *noise_kept[1024];

/* The program's own live set: 1 MiB in blocks of 1 KiB, the same in both phases. */
__attribute__((noinline)) static void noise_keep(void) {
    for (int i = 0; i < 1024; i++) {
        noise_kept[i] = malloc(1024);
        memset(noise_kept[i], 1, 1024);
    }
}

/* Allocated and freed again: nothing of it stays live. */
__attribute__((noinline)) static void noise_churn(unsigned seed) {
    void *v[256] = {0};
    for (unsigned r = 0; r < 200000; r++) {
        seed = seed * 1103515245u + 12345u;
        unsigned i = (seed >> 8) % 256;
        free(v[i]);
        v[i] = malloc(16 + (seed >> 16) % 4096);
    }
    for (int i = 0; i < 256; i++) free(v[i]);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: real-leak LIB TOTAL BLOCK\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) {
        fprintf(stderr, "real-leak: %s\n", dlerror());
        return 1;
    }
    size_t (*grow)(size_t, size_t) = (size_t(*)(size_t, size_t))dlsym(h, "real_leak_grow");
    if (!grow) {
        fprintf(stderr, "real-leak: no real_leak_grow in %s\n", argv[1]);
        return 1;
    }
    size_t total = strtoull(argv[2], NULL, 0), block = strtoull(argv[3], NULL, 0);
    noise_keep();
    noise_churn(1);
    size_t leaked = grow(total, block);
    printf("ready 1 %zu\n", leaked);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;
    noise_churn(2);
    leaked += grow(total, block);
    printf("ready 2 %zu\n", leaked);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
