/* ebbmalloc's live stats page, read without stopping or signalling the process.
 *
 * The page is trusted only when every check passes:
 *  1. the process's maps show a mapping of /dev/shm/ebbmalloc.<ns>.<its pid>, where ns
 *     is the inode of the process's PID namespace and the pid is the one the process
 *     has in it (the last NSpid), so a page is found from the host as from inside its
 *     container; ns may be 0 (the process could not read it), and an older library's
 *     /dev/shm/ebbmalloc.<pid> is found too.  A file left by an earlier process with the
 *     same pid, mapped by nobody, is refused;
 *  2. the file opened is that very mapping: same device and inode as in maps (opened
 *     through /proc/PID/root so containers work; if the name was replaced or unlinked,
 *     through /proc/PID/map_files);
 *  3. the file belongs to the process's user and holds a whole page;
 *  4. magic, version and size match this ebb-inspect's header;
 *  5. pid (as the process sees itself) and start_time equal /proc/PID/stat's, so a page
 *     copied from, or left by, another process is refused;
 *  6. seq is even and unchanged across the copy (the writer makes it odd while it
 *     writes), within a bounded number of tries;
 *  7. the identities of struct ebb_stats hold.
 * Anything else leaves the state REFUSED with the reason. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "inspect.h"

#define SHM_PREFIX "/dev/shm/ebbmalloc."

/* The inode of the process's PID namespace, 0 if it cannot be read. */
static uint64_t pid_namespace(const struct proc *p) {
    struct stat sb;
    return fstatat(p->dirfd, "ns/pid", &sb, 0) == 0 ? (uint64_t)sb.st_ino : 0;
}

size_t shm_page_path(const struct proc *p, char *buf, size_t n) {
    int len = snprintf(buf, n, SHM_PREFIX "%" PRIu64 ".%d", pid_namespace(p), (int)p->nspid);
    return len < 0 ? 0 : (size_t)len;
}

/* Is path (from maps, maybe ending in " (deleted)") the stats page of a process with pid
 * nspid in the PID namespace ns (0: unknown, any will do)? */
static bool page_name_matches(const char *path, uint64_t ns, pid_t nspid) {
    if (strncmp(path, SHM_PREFIX, strlen(SHM_PREFIX))) return false;
    const char *q = path + strlen(SHM_PREFIX);
    char *e;
    if (*q < '0' || *q > '9') return false;
    unsigned long long first = strtoull(q, &e, 10);
    if (*e == '.') { /* ebbmalloc.<ns>.<pid> */
        if (e[1] < '0' || e[1] > '9') return false;
        long pid = strtol(e + 1, &e, 10);
        if (pid != nspid || (ns && first && first != ns)) return false;
    } else if ((long long)first != nspid) { /* an older library's ebbmalloc.<pid> */
        return false;
    }
    return !*e || !strcmp(e, " (deleted)");
}

const char *shm_page_check(const struct ebb_shm_page *pg, pid_t nspid, uint64_t start_time) {
    if (pg->magic != EBB_SHM_MAGIC) return "wrong magic: not an ebbmalloc stats page";
    /* Version 1 (an older library) is the same page without the flow counters. */
    if (pg->version != EBB_SHM_VERSION && pg->version != 1)
        return "unknown page version (ebb-inspect and the library differ)";
    if (pg->size != (pg->version == 1 ? offsetof(struct ebb_shm_page, flow) : sizeof(*pg)))
        return "page size field does not match this version's layout";
    if (pg->pid != nspid) return "page names another pid: foreign or copied page";
    if (pg->start_time != start_time)
        return "start_time differs from the process's: page left by an earlier process";
    /* The library counts resident (from its OS layer) and the parts (from its tiers)
     * apart; a snapshot taken while threads allocate may be off by what moved while it
     * was read (ebb_stats in include/ebbmalloc.h): a few spans and blocks.  A page off by
     * more than a sixteenth of resident plus 4 MiB is refused as no snapshot of a
     * working allocator. */
    const struct ebb_stats *s = &pg->stats;
    uint64_t parts = s->in_use + s->thread_cache + s->central + s->page_free + s->metadata;
    uint64_t gap = s->resident > parts ? s->resident - parts : parts - s->resident;
    if (gap > s->resident / 16 + ((uint64_t)4 << 20))
        return "resident != in_use + thread_cache + central + page_free + metadata";
    if (s->mapped != s->resident + s->released) return "mapped != resident + released";
    return NULL;
}

static void refuse(struct shm_result *r, const char *fmt, const char *detail) {
    r->state = STATS_REFUSED;
    snprintf(r->reason, sizeof(r->reason), fmt, detail);
}

/* Seqlock copy: relaxed word loads between two reads of seq.  seq 0 is a page whose
 * header is written but whose first update is not (its stats read as zero): not a copy. */
static bool copy_page(const volatile struct ebb_shm_page *src, struct ebb_shm_page *dst) {
    const uint64_t *w = (const uint64_t *)(const void *)src;
    uint64_t *d = (uint64_t *)(void *)dst;
    for (int tries = 0; tries < 2000; tries++) {
        uint64_t s1 = __atomic_load_n(&src->seq, __ATOMIC_ACQUIRE);
        if (s1 && !(s1 & 1)) {
            for (size_t i = 0; i < sizeof(*dst) / 8; i++) d[i] = __atomic_load_n(&w[i], __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&src->seq, __ATOMIC_RELAXED) == s1) return true;
        }
        if (tries > 20) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        } else {
            sched_yield();
        }
    }
    return false;
}

int shm_open_mapped(const struct inspection *in, const struct procfs_vma *v, bool *via_map_files) {
    const struct proc *p = &in->proc;
    char rel[600];
    *via_map_files = false;
    if (!v->deleted) {
        snprintf(rel, sizeof(rel), "root%s", v->path);
        int fd = openat(p->dirfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) {
            struct stat sb;
            if (fstat(fd, &sb) == 0 && sb.st_ino == v->inode &&
                sb.st_dev == makedev(v->dev_major, v->dev_minor))
                return fd;
            close(fd);
        }
    }
    snprintf(rel, sizeof(rel), "map_files/%" PRIx64 "-%" PRIx64, v->start, v->end);
    int fd = openat(p->dirfd, rel, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) *via_map_files = true;
    return fd;
}

void shm_stats_read(struct inspection *in) {
    struct shm_result *r = &in->stats;
    const struct proc *p = &in->proc;
    char want[96];
    uint64_t ns = pid_namespace(p);
    shm_page_path(p, want, sizeof(want));
    memset(r, 0, sizeof(*r));

    /* The page among the process's mappings of /dev/shm/ebbmalloc.* (its heap profile,
     * the same name plus ".heap", is another file). */
    const struct procfs_vma *v = NULL, *other = NULL;
    for (size_t i = 0; i < in->maps.n && !v; i++) {
        const char *path = in->maps.v[i].path;
        if (page_name_matches(path, ns, p->nspid)) v = &in->maps.v[i];
        else if (!other && !strncmp(path, SHM_PREFIX, strlen(SHM_PREFIX)) && !strstr(path, ".heap"))
            other = &in->maps.v[i];
    }
    if (!v && other) {
        refuse(r, "the process maps %s, which is named for another process", other->path);
        return;
    }
    if (!v) {
        char rel[120];
        struct stat sb;
        snprintf(rel, sizeof(rel), "root%s", want);
        if (fstatat(p->dirfd, rel, &sb, 0) == 0)
            refuse(r,
                   "%s exists but the process does not map it: stale (left by an earlier "
                   "process with this pid) or foreign, not read",
                   want);
        else r->state = STATS_ABSENT;
        return;
    }
    bool via_map_files;
    int fd = shm_open_mapped(in, v, &via_map_files);
    if (fd < 0) {
        refuse(r,
               "cannot open the mapped page %s (the name now points to another file, "
               "and /proc/PID/map_files needs root)",
               v->path);
        return;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        refuse(r, "%s is not a regular file", v->path);
        return;
    }
    if (sb.st_uid != p->ruid && sb.st_uid != p->euid) {
        close(fd);
        refuse(r, "%s belongs to another user than the process: foreign, not read", v->path);
        return;
    }
    if ((uint64_t)sb.st_size < sizeof(struct ebb_shm_page)) {
        close(fd);
        refuse(r, "%s is shorter than a stats page", v->path);
        return;
    }
    void *m = mmap(NULL, sizeof(struct ebb_shm_page), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        refuse(r, "cannot map %s", v->path);
        return;
    }
    bool ok = copy_page(m, &r->page);
    munmap(m, sizeof(struct ebb_shm_page));
    if (!ok) {
        refuse(
            r,
            "%s: seq stayed odd or 0 (the writer is stuck or died while updating, or has not written it yet)",
            v->path);
        return;
    }
    const char *why = shm_page_check(&r->page, p->nspid, p->start_time);
    if (why) {
        refuse(r, "%s", why);
        return;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    r->age_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - (int64_t)r->page.updated_ms;
    r->state = STATS_OK;
    r->has_flow = r->page.version >= 2;
    if (!r->has_flow) memset(&r->page.flow, 0, sizeof(r->page.flow));
    snprintf(r->reason, sizeof(r->reason), "%s%s", v->path,
             via_map_files ? " (read through /proc/PID/map_files: the name was replaced)" : "");
}
