/* Reading the heap profile a process publishes (struct ebb_prof_header in ebbmalloc.h),
 * for the tests: the process's own table, found the way a reader finds it, through the
 * mapping of a file named ebbmalloc.*.heap in /proc/self/maps. */
#ifndef PROF_READER_H
#define PROF_READER_H

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ebbmalloc.h"

struct prof_view {
    const struct ebb_prof_header *h;
    const struct ebb_prof_slot *slots;
    const uint64_t *frames;
    unsigned long inode;
    char path[256];
};

/* The table this process has mapped, or false if none is. */
static inline bool prof_find(struct prof_view *v) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return false;
    char line[512];
    bool found = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off, ino;
        char perms[8], dev[16], path[256] = "";
        if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %255s", &lo, &hi, perms, &off, dev, &ino, path) < 6)
            continue;
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        size_t n = strlen(base);
        if (strncmp(base, "ebbmalloc.", 10) || n < 5 || strcmp(base + n - 5, ".heap") || off) continue;
        v->h = (const void *)lo;
        v->inode = ino;
        snprintf(v->path, sizeof v->path, "%s", path);
        found = true;
        break;
    }
    fclose(f);
    if (!found || v->h->magic != EBB_PROF_MAGIC) return false;
    v->slots = (const void *)((const char *)v->h + v->h->header_size);
    v->frames = (const void *)((const char *)v->h + v->h->frames_offset);
    return true;
}

static inline int64_t prof_load(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* The slot with the most estimated live bytes, or -1. */
static inline int prof_top(const struct prof_view *v) {
    int best = -1;
    for (unsigned k = 0; k < v->h->slot_count; k++)
        if (__atomic_load_n(&v->slots[k].depth, __ATOMIC_ACQUIRE) &&
            (best < 0 || prof_load(&v->slots[k].live_bytes) > prof_load(&v->slots[best].live_bytes)))
            best = (int)k;
    return best;
}

/* The frame of slot k that lies in the function named `name`, or -1.  dladdr is the
 * test's business, never the allocator's. */
static inline int prof_frame_in(const struct prof_view *v, int k, const char *name) {
    const struct ebb_prof_slot *s = &v->slots[k];
    for (unsigned i = 0; i < s->depth; i++) {
        Dl_info di;
        void *a = (void *)(uintptr_t)(v->frames[s->first + i] - 1);
        if (dladdr(a, &di) && di.dli_sname && !strcmp(di.dli_sname, name)) return (int)i;
    }
    return -1;
}

/* The first slot whose stack passes through `name`, or -1. */
static inline int prof_slot_with(const struct prof_view *v, const char *name) {
    for (unsigned k = 0; k < v->h->slot_count; k++)
        if (v->slots[k].depth && prof_frame_in(v, (int)k, name) >= 0) return (int)k;
    return -1;
}

static inline void prof_dump(const struct prof_view *v, FILE *out) {
    fprintf(out, "samples %llu dropped %llu frames_used %llu\n", (unsigned long long)v->h->samples,
            (unsigned long long)v->h->dropped, (unsigned long long)v->h->frames_used);
    for (unsigned k = 0; k < v->h->slot_count; k++) {
        const struct ebb_prof_slot *s = &v->slots[k];
        if (!s->depth) continue;
        fprintf(out, "slot %u: live %lld bytes %lld objects, total %llu\n", k, (long long)s->live_bytes,
                (long long)s->live_objects, (unsigned long long)s->total_bytes);
        for (unsigned i = 0; i < s->depth && i < 12; i++) {
            Dl_info di;
            uint64_t a = v->frames[s->first + i];
            if (a && dladdr((void *)(uintptr_t)(a - 1), &di) && di.dli_sname)
                fprintf(out, "    %#llx %s\n", (unsigned long long)a, di.dli_sname);
            else fprintf(out, "    %#llx\n", (unsigned long long)a);
        }
    }
}

#endif
