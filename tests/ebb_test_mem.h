/* Small helpers shared by the tests: the kernel's view of this process's memory. */
#ifndef EBB_TEST_MEM_H
#define EBB_TEST_MEM_H
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Resident bytes of this process, from /proc/self/statm (0 if unreadable). */
static inline size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size, res;
    int ok = f ? fscanf(f, "%lu %lu", &size, &res) : 0;
    if (f) fclose(f);
    return ok == 2 ? res * (size_t)sysconf(_SC_PAGESIZE) : 0;
}

/* Does this process's /proc/self/maps (its first 64 KiB) mention `name`? */
static inline int maps_mention(const char *name) {
    static char buf[1 << 16];
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return strstr(buf, name) != NULL;
}

/* Writes one byte in every kernel page of [p, p + n) so that all of it is resident. */
static inline void touch(void *p, size_t n) {
    for (size_t i = 0; i < n; i += 4096) ((volatile char *)p)[i] = 1;
}
#endif
