/* ebbmalloc's heap profile, read from outside the process without stopping it.
 *
 * The process keeps the file "<its stats page>.heap" mapped MAP_SHARED (layout in
 * include/ebbmalloc.h: the header, slot_count slots at header_size, frames_cap return
 * addresses at frames_offset).  The table is trusted only when every check passes:
 *  1. the process's maps show a mapping of that very name (a file left by an earlier
 *     process with the same pid, which nobody maps, is refused as stale);
 *  2. the file opened is that mapping: same device and inode (through /proc/PID/root, so
 *     a container's /dev/shm is read; if the name now points elsewhere, through
 *     /proc/PID/map_files);
 *  3. the file belongs to the process's user, is a regular file and not absurdly large;
 *  4. magic and version match this reader; pid (as the process sees itself) and
 *     start_time equal /proc/PID/stat's, so a copied or left-over table is refused;
 *  5. header_size holds the header, slot_count is a power of two, the slots and the
 *     frames area lie inside the file and do not overlap;
 *  6. every slot in use has 1..EBB_PROF_MAX_FRAMES frames, all inside the frames area.
 * A failed check refuses the whole table with the reason: a slot that points outside its
 * area means the file is not what this reader understands, and none of it is shown.
 *
 * The process changes the table while we copy it.  Each counter is an aligned 64-bit
 * word, loaded once.  A slot's depth is loaded with acquire before its first index and its
 * frames: the writer stores hash, first and the frames, then depth with release, so a
 * non-zero depth guarantees the frames it covers are written.  After the copy the slot's
 * hash, depth and first are loaded again; a slot that changed meanwhile is read again, at
 * most three times, then skipped and counted.  A file that shrinks under the copy raises
 * SIGBUS, which is caught and refuses the table instead of ending ebb-inspect. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "inspect.h"

#define HEAP_FILE_MAX ((uint64_t)1 << 30) /* far above any table the library makes */
#define SLOT_SIZE ((uint64_t)sizeof(struct ebb_prof_slot))

void heap_file_name(const char *stats_page, char *buf, size_t len) {
    snprintf(buf, len, "%s.heap", stats_page);
}

const char *heap_header_check(const struct ebb_prof_header *h, uint64_t file_size, pid_t nspid,
                              uint64_t start_time) {
    if (h->magic != EBB_PROF_MAGIC) return "wrong magic: not an ebbmalloc heap profile";
    if (h->version != EBB_PROF_VERSION)
        return "unknown heap profile version (ebb-inspect and the library differ)";
    if (h->pid != nspid) return "the profile names another pid: foreign or copied file";
    if (h->start_time != start_time)
        return "start_time differs from the process's: file left by an earlier process";
    if (h->header_size < sizeof(*h) || h->header_size % 8) return "header_size does not hold the header";
    if (h->slot_count == 0 || (h->slot_count & (h->slot_count - 1)))
        return "slot_count is not a power of two";
    uint64_t slots_end = (uint64_t)h->header_size + (uint64_t)h->slot_count * SLOT_SIZE;
    if (slots_end > file_size) return "the slots run past the end of the file";
    if (h->frames_offset % 8 || h->frames_offset < slots_end)
        return "the frames area overlaps the header or the slots";
    if (h->frames_offset > file_size || h->frames_cap > (file_size - h->frames_offset) / 8)
        return "the frames area runs past the end of the file";
    return NULL;
}

static void refuse(struct heap_profile *hp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void refuse(struct heap_profile *hp, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    hp->state = HEAP_REFUSED;
    vsnprintf(hp->reason, sizeof(hp->reason), fmt, ap);
    va_end(ap);
}

static uint64_t ld64(const volatile void *p) {
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_RELAXED);
}

static uint32_t ld32(const volatile void *p, int order) {
    return __atomic_load_n((const uint32_t *)p, order);
}

/* SIGBUS while copying from the mapping: the file was truncated under us. */
static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_armed;

static void on_bus(int sig) {
    if (bus_armed) siglongjmp(bus_jmp, 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int push_stack(struct heap_profile *hp, size_t *cap, const struct heap_stack *s) {
    if (hp->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        struct heap_stack *ns = realloc(hp->st, nc * sizeof(*ns));
        if (!ns) return -1;
        hp->st = ns;
        *cap = nc;
    }
    hp->st[hp->n++] = *s;
    return 0;
}

/* Copy the table out of the mapping m (file_size bytes) into hp.  Runs under the SIGBUS
 * guard; everything it allocates is reachable from hp, so a jump out leaks nothing that
 * heap_free misses. */
static void copy_table(const unsigned char *m, uint64_t file_size, const struct proc *p,
                       struct heap_profile *hp, size_t *cap) {
    struct ebb_prof_header h;
    uint64_t w[sizeof(h) / 8];
    for (size_t i = 0; i < sizeof(h) / 8; i++) w[i] = ld64(m + i * 8);
    memcpy(&h, w, sizeof(h));
    const char *why = heap_header_check(&h, file_size, p->nspid, p->start_time);
    if (why) {
        refuse(hp, "%s: %s", hp->path, why);
        return;
    }
    hp->hdr = h;
    const unsigned char *frames = m + h.frames_offset;
    uint64_t tmp[EBB_PROF_MAX_FRAMES];
    for (uint32_t i = 0; i < h.slot_count; i++) {
        const unsigned char *sl = m + h.header_size + (uint64_t)i * SLOT_SIZE;
        const void *dp = sl + offsetof(struct ebb_prof_slot, depth);
        const void *fp = sl + offsetof(struct ebb_prof_slot, first);
        struct heap_stack s;
        bool stable = false, bad = false;
        uint32_t depth = 0, first = 0;
        for (int tries = 0; tries < 3 && !stable; tries++) {
            depth = ld32(dp, __ATOMIC_ACQUIRE);
            if (!depth) break;
            first = ld32(fp, __ATOMIC_RELAXED);
            uint64_t hash = ld64(sl + offsetof(struct ebb_prof_slot, hash));
            memset(&s, 0, sizeof(s));
            s.live_bytes = (int64_t)ld64(sl + offsetof(struct ebb_prof_slot, live_bytes));
            s.live_objects = (int64_t)ld64(sl + offsetof(struct ebb_prof_slot, live_objects));
            s.total_bytes = ld64(sl + offsetof(struct ebb_prof_slot, total_bytes));
            s.total_objects = ld64(sl + offsetof(struct ebb_prof_slot, total_objects));
            bad = depth > EBB_PROF_MAX_FRAMES || (uint64_t)first + depth > h.frames_cap;
            if (!bad)
                for (uint32_t k = 0; k < depth; k++) tmp[k] = ld64(frames + ((uint64_t)first + k) * 8);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            stable = ld32(dp, __ATOMIC_RELAXED) == depth && ld32(fp, __ATOMIC_RELAXED) == first &&
                     ld64(sl + offsetof(struct ebb_prof_slot, hash)) == hash;
        }
        if (!depth) continue;
        if (!stable) {
            hp->changed++;
            continue;
        }
        if (bad) {
            if (depth > EBB_PROF_MAX_FRAMES)
                refuse(hp,
                       "%s: slot %" PRIu32 " claims %" PRIu32 " frames, more than %d: corrupt "
                       "or foreign table, not read",
                       hp->path, i, depth, EBB_PROF_MAX_FRAMES);
            else
                refuse(hp,
                       "%s: slot %" PRIu32 " points at frames %" PRIu32 "..%" PRIu64
                       ", outside the frames area (%" PRIu64 " frames): corrupt or foreign "
                       "table, not read",
                       hp->path, i, first, (uint64_t)first + depth - 1, h.frames_cap);
            return;
        }
        s.depth = depth;
        s.attr = 0;
        s.pcs = malloc(depth * sizeof(uint64_t));
        if (!s.pcs || push_stack(hp, cap, &s) < 0) {
            free(s.pcs);
            refuse(hp, "out of memory copying the profile");
            return;
        }
        memcpy(s.pcs, tmp, depth * sizeof(uint64_t));
    }
    hp->state = HEAP_OK;
}

void heap_read(const struct inspection *in, struct heap_profile *hp) {
    const struct proc *p = &in->proc;
    memset(hp, 0, sizeof(*hp));
    hp->state = HEAP_ABSENT;
    hp->pid = p->pid;
    hp->start_time = p->start_time;
    char page[256];
    shm_page_path(p, page, sizeof(page));
    heap_file_name(page, hp->path, sizeof(hp->path));

    const struct procfs_vma *v = NULL;
    size_t wl = strlen(hp->path);
    for (size_t i = 0; i < in->maps.n && !v; i++) {
        const char *q = in->maps.v[i].path;
        if (!strncmp(q, hp->path, wl) && (!q[wl] || !strcmp(q + wl, " (deleted)"))) v = &in->maps.v[i];
    }
    if (!v) {
        char rel[sizeof(hp->path) + 8];
        struct stat sb;
        snprintf(rel, sizeof(rel), "root%s", hp->path);
        if (fstatat(p->dirfd, rel, &sb, 0) == 0)
            refuse(hp,
                   "%s exists but the process does not map it: stale (left by an earlier "
                   "process with this pid) or foreign, not read",
                   hp->path);
        else
            snprintf(hp->reason, sizeof(hp->reason),
                     "the process maps no %s: it does not use ebbmalloc, or runs with EBB_PROF=0, "
                     "or its ebbmalloc has no heap profiler",
                     hp->path);
        return;
    }
    int fd = shm_open_mapped(in, v, &hp->via_map_files);
    if (fd < 0) {
        refuse(hp,
               "cannot open the mapped %s (the name now points to another file, and "
               "/proc/PID/map_files needs root)",
               hp->path);
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        refuse(hp, "%s is not a regular file", hp->path);
        return;
    }
    if (sb.st_uid != p->ruid && sb.st_uid != p->euid) {
        close(fd);
        refuse(hp, "%s belongs to another user than the process: foreign, not read", hp->path);
        return;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < sizeof(struct ebb_prof_header) || size > HEAP_FILE_MAX) {
        close(fd);
        refuse(hp, "%s is %s a heap profile (%" PRIu64 " bytes)", hp->path,
               size < sizeof(struct ebb_prof_header) ? "shorter than" : "far larger than", size);
        return;
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        refuse(hp, "cannot map %s: %s", hp->path, strerror(errno));
        return;
    }

    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_bus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old);
    size_t cap = 0;
    if (sigsetjmp(bus_jmp, 1) == 0) {
        bus_armed = 1;
        copy_table(m, size, p, hp, &cap);
    } else {
        refuse(hp, "%s shrank while it was read (SIGBUS): not read", hp->path);
    }
    bus_armed = 0;
    sigaction(SIGBUS, &old, NULL);
    munmap(m, size);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    hp->taken_ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    if (hp->state != HEAP_OK) {
        for (size_t i = 0; i < hp->n; i++) free(hp->st[i].pcs);
        free(hp->st);
        hp->st = NULL;
        hp->n = 0;
        return;
    }
    hp->age_ms = (int64_t)hp->taken_ms - (int64_t)hp->hdr.updated_ms;
    snprintf(hp->reason, sizeof(hp->reason), "%s%s", hp->path,
             hp->via_map_files ? " (read through /proc/PID/map_files: the name was replaced)" : "");
    heap_sort(hp);
}

static int stack_cmp(const void *a, const void *b) {
    const struct heap_stack *x = a, *y = b;
    if (x->live_bytes != y->live_bytes) return x->live_bytes < y->live_bytes ? 1 : -1;
    if (x->total_bytes != y->total_bytes) return x->total_bytes < y->total_bytes ? 1 : -1;
    uint64_t px = x->pcs && x->depth ? x->pcs[0] : 0, py = y->pcs && y->depth ? y->pcs[0] : 0;
    return px < py ? -1 : px > py;
}

int64_t heap_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

int64_t heap_sub(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? INT64_MAX : INT64_MIN;
    return r;
}

void heap_sort(struct heap_profile *hp) {
    if (hp->n) qsort(hp->st, hp->n, sizeof(hp->st[0]), stack_cmp);
    hp->live_bytes = hp->live_objects = 0;
    for (size_t i = 0; i < hp->n; i++) {
        if (hp->st[i].live_bytes > 0) hp->live_bytes = heap_add(hp->live_bytes, hp->st[i].live_bytes);
        if (hp->st[i].live_objects > 0) hp->live_objects = heap_add(hp->live_objects, hp->st[i].live_objects);
    }
}

void heap_free(struct heap_profile *hp) {
    for (size_t i = 0; i < hp->n; i++) {
        struct heap_stack *s = &hp->st[i];
        free(s->pcs);
        free(s->sym);
        if (s->keys)
            for (uint32_t k = 0; k < s->depth; k++) free(s->keys[k]);
        free(s->keys);
    }
    free(hp->st);
    memset(hp, 0, sizeof(*hp));
}
