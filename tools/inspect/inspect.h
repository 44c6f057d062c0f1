/* ebb-inspect internals: where a process's resident memory sits.
 *
 * One inspection reads /proc/PID (through a directory fd held for the whole run, so a
 * recycled pid is never mixed in), classifies every mapping into a category, finds
 * glibc arena heaps and JVM regions, reads ebbmalloc's stats page and the cgroup, and
 * keeps a list of everything it could not read.  report.c prints it.
 *
 * Files:  procfs.c   reading /proc/PID files, status, stat, cmdline, environ
 *         maps.c     smaps/maps parsing, resident bytes of part of a mapping (pagemap)
 *         classify.c categories, glibc arenas, thread stacks, JVM regions
 *         cgroup.c   the cgroup's memory usage, limit and stat
 *         shmstats.c ebbmalloc's live stats page, validated
 *         report.c   text and JSON output, hints, --watch growth
 *         inspect.c  one inspection, in that order
 */
#ifndef EBB_INSPECT_H
#define EBB_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "ebbmalloc.h"

#define GLIBC_HEAP_MAX ((uint64_t)64 << 20) /* HEAP_MAX_SIZE on 64-bit */

/* ---- procfs.c ---- */

struct unreadable {
    char what[160];  /* file or source that could not be read */
    char why[160];   /* errno text or reason */
};

struct proc {
    pid_t pid;
    int dirfd;              /* open /proc/PID: every read goes through it */
    pid_t nspid;            /* pid inside the process's own pid namespace */
    char comm[64];
    char state;             /* from /proc/PID/stat */
    uint64_t start_time;    /* field 22 of /proc/PID/stat */
    uid_t ruid, euid;
    long threads;
    uint64_t vm_rss, rss_anon, rss_file, rss_shmem, vm_swap; /* bytes, from status */
    char *cmdline;          /* arguments joined by spaces, NULL if unreadable */
    char **argv;            /* NULL-terminated, NULL if unreadable */
    char **environ;         /* NULL-terminated, NULL if unreadable */
    char *argbuf, *envbuf;  /* the buffers argv and environ point into */
    dev_t exe_dev;
    ino_t exe_ino;
    bool exe_known;
};

int proc_open(struct proc *p, pid_t pid, char *err, size_t errlen);
void proc_close(struct proc *p);
/* Whole file below /proc/PID as a NUL-terminated buffer; NULL with errno set. */
char *proc_read(const struct proc *p, const char *name, size_t *len);
int proc_read_stat(struct proc *p);      /* state and start_time; -1 if gone */
const char *proc_getenv(const struct proc *p, const char *name);
int read_file_at(int dirfd, const char *path, char **out, size_t *len);

/* ---- maps.c ---- */

struct vma {
    uint64_t start, end;
    char perms[5];
    uint64_t offset;
    unsigned dev_major, dev_minor;
    uint64_t inode;
    char *path;              /* "" for anonymous */
    uint64_t rss, pss, swap, anon, anon_huge;
    bool nr;                 /* VmFlags "nr": mapped MAP_NORESERVE */
    bool nh;                 /* VmFlags "nh": MADV_NOHUGEPAGE / MAP_STACK */
};

struct vmas {
    struct vma *v;
    size_t n, cap;
    bool have_smaps;         /* false: only maps was readable, no sizes */
};

int maps_parse(struct vmas *out, char *text, bool smaps);
void maps_free(struct vmas *m);
bool vma_anon(const struct vma *v);          /* private anonymous, no name */
bool vma_is(const struct vma *v, const char *perms);

/* Resident / swapped bytes of [lo,hi) of v.  Whole mapping: smaps numbers;
 * part of one: the page map, or a proportional share (sets *approx). */
struct range_use {
    uint64_t rss, swap, anon_huge;
};
struct inspection;
void range_usage(struct inspection *in, const struct vma *v, uint64_t lo, uint64_t hi,
                 struct range_use *u);

/* ---- classify.c ---- */

enum category {
    CAT_MAIN_HEAP,
    CAT_ARENAS,
    CAT_STACKS,
    CAT_JAVA_HEAP,
    CAT_JVM_CLASS,
    CAT_JVM_CODE,
    CAT_EBBMALLOC,
    CAT_LIBS,
    CAT_FILES,
    CAT_SHMEM,
    CAT_ANON_OTHER,
    CAT_COUNT
};

struct cat_total {
    uint64_t rss, size, swap, anon_huge;
    unsigned count;          /* mappings, heaps or stacks, as the category counts */
};

struct arena_heap {
    uint64_t start;          /* 64 MiB aligned */
    uint64_t rw;             /* bytes made read-write (mprotect_size or the rw mapping) */
    uint64_t rss, swap;
    uint64_t arena;          /* the malloc_state it belongs to, 0 if unknown */
};

/* A recognised JVM region. */
struct jvm_region {
    uint64_t start, end;
    uint64_t rss;
    bool found;
    bool confirmed;          /* size matched a flag or a known default exactly */
    char how[200];           /* how it was recognised, in words */
};

struct claim {
    uint64_t lo, hi;
    enum category cat;
    int heap;                /* index in arena_heaps for CAT_ARENAS, else -1 */
};

enum stats_state { STATS_ABSENT, STATS_OK, STATS_REFUSED };

struct shm_result {
    enum stats_state state;
    char reason[256];        /* why it was refused, or where it was read from */
    struct ebb_shm_page page;
    int64_t age_ms;          /* now - updated_ms */
};

struct cgroup_info {
    bool found;
    int version;             /* 1 or 2 */
    char path[512];          /* cgroup path as the process sees it */
    bool have_usage, have_limit, have_stat;
    uint64_t usage, limit;   /* limit 0: none */
    uint64_t eff_limit;      /* smallest limit on the way up, 0: none */
    char eff_limit_at[1100];
    uint64_t anon, file, anon_thp, shmem, active_file, inactive_file, kernel;
    bool have_kernel;
};

struct inspection {
    struct proc proc;
    struct vmas maps;
    char *maps_text;         /* smaps text: mapping paths point into it */
    bool maps_ok;
    int pagemap_fd;          /* -1 when unreadable */
    int mem_fd;              /* -1 when unreadable */
    bool approx;             /* some resident figure is a proportional estimate */

    char allocator[64];      /* glibc, ebbmalloc, jemalloc, ... */
    bool uses_ebbmalloc;
    bool is_jvm;

    struct cat_total cat[CAT_COUNT];
    uint64_t rss, size, swap, anon_huge;

    struct arena_heap *heaps;
    size_t nheaps;
    unsigned narenas;        /* distinct malloc_state pointers (verified heaps only) */
    bool heaps_verified;     /* heap headers were read and checked */

    uint64_t xmx;            /* -Xmx in bytes, 0 unknown */
    char xmx_source[64];
    struct jvm_region java_heap, class_space, code_cache;
    unsigned metaspace_nodes;

    struct claim *claims;
    size_t nclaims, capclaims;

    struct shm_result stats;
    struct cgroup_info cg;

    struct unreadable unread[16];
    size_t nunread;
    char *hints[12];
    size_t nhints;
};

/* Run one inspection of pid.  Returns 0 (complete), 2 (partial: maps unreadable),
 * or 1 (no such process / exited) with err filled. */
#define INSPECT_NO_MEMORY 1u /* never read the process's memory (arena heap headers) */
int inspect(struct inspection *in, pid_t pid, unsigned flags, char *err, size_t errlen);
void inspection_free(struct inspection *in);
void note_unreadable(struct inspection *in, const char *what, const char *why);
void classify(struct inspection *in);
const char *cat_key(enum category c);
const char *cat_label(const struct inspection *in, enum category c);

/* ---- cgroup.c ---- */
void cgroup_read(struct inspection *in);

/* ---- shmstats.c ---- */
/* Read and validate the stats page of the inspected process. */
void shm_stats_read(struct inspection *in);
/* Validation of one candidate page against the process (exposed for tests). */
const char *shm_page_check(const struct ebb_shm_page *pg, pid_t nspid, uint64_t start_time);

/* ---- report.c ---- */
void make_hints(struct inspection *in);
void report_text(FILE *f, const struct inspection *in);
void report_json(FILE *f, const struct inspection *in, const struct inspection *base,
                 double elapsed);
void report_growth(FILE *f, const struct inspection *in, const struct inspection *base,
                   double elapsed);
char *fmt_bytes(char *buf, size_t len, uint64_t b);
uint64_t parse_size(const char *s, bool *ok);

#endif
