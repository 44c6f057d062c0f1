/* procfs: how ebbmalloc's tools, benchmark and tests read /proc and the cgroup tree.
 *
 * One reader of whole files, one field parser, one maps parser, one glibc arena detector,
 * one "is this file mapped" check and one cgroup reader (built on the allocator's own
 * cgroup rules, alloc/cgroup.c, which this library compiles as well).  The parsers work
 * on text in memory, so the tests feed them sample files (tests/data/procfs/).
 *
 * The library may call malloc (it is never part of the allocator), except where a
 * function says "no malloc": those read into the caller's buffer, so that a test can
 * sample its own process without disturbing the allocator it measures.
 *
 *  file.c     whole files, and bounded reads into a buffer
 *  fields.c   "Name: value" lines (status, smaps_rollup, meminfo, memory.stat), stat, environ
 *  maps.c     maps and smaps lines, mapped files and libraries
 *  heaps.c    glibc's 64 MiB arena heaps
 *  cgroups.c  a process's memory cgroup: usage, limits, what the usage is made of
 */
#ifndef EBB_PROCFS_H
#define EBB_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---------------------------------------------------------------- file.c */

/* Reads the whole file at path (relative to dirfd; AT_FDCWD for a plain path) into *buf,
 * growing it with realloc (start with *buf NULL and *cap 0; the caller frees *buf).  A
 * /proc file has no useful size, so this reads until the end.  The text is NUL-terminated;
 * *len (may be NULL) excludes the NUL.  Returns 0 or -errno. */
int procfs_read_at(int dirfd, const char *path, char **buf, size_t *cap, size_t *len);
int procfs_read(const char *path, char **buf, size_t *cap, size_t *len);

/* Reads up to n-1 bytes of path into buf and NUL-terminates them; returns the bytes read,
 * 0 when it cannot be read.  The contract of the allocator's ebbi_read_file (and of
 * ebbi_reader, which the cgroup rules take).  No malloc. */
size_t procfs_read_buf(const char *path, char *buf, size_t n);

/* ---------------------------------------------------------------- fields.c */

/* The value of the line "KEY<sep>value" of text: KEY at the start of a line, directly
 * followed by sep (':' in status, smaps, smaps_rollup and meminfo; ' ' in memory.stat),
 * blanks after it skipped.  NULL when there is no such line. */
const char *procfs_field(const char *text, const char *key, char sep);
/* The first decimal number of that value; false when the line or the number is missing. */
bool procfs_field_u64(const char *text, const char *key, char sep, uint64_t *v);
/* "Name:   1234 kB" -> 1234; -1 when the field is absent. */
long long procfs_field_kib(const char *text, const char *key);

/* A kB field of /proc/PID/status (pid 0: this process), -1 when unreadable.  No malloc. */
long long procfs_status_kib(pid_t pid, const char *key);

struct procfs_rollup {
    long long rss_kib, pss_kib, anon_kib, anon_huge_kib, swap_kib;
};
/* smaps_rollup text.  Returns 0, or -1 when it has no Rss line. */
int procfs_parse_smaps_rollup(const char *text, struct procfs_rollup *out);

struct procfs_stat {
    char comm[64];
    char state;          /* 'R', 'S', 'Z', ... */
    uint64_t utime;      /* field 14, clock ticks in user mode */
    uint64_t stime;      /* field 15, in the kernel */
    uint64_t start_time; /* field 22, clock ticks after boot */
};
/* /proc/PID/stat text (comm may hold spaces and parentheses).  0 or -1. */
int procfs_parse_stat(const char *text, struct procfs_stat *out);

/* Does a /proc/PID/environ buffer (NUL-separated) hold exactly NAME=VALUE? */
bool procfs_environ_has(const char *buf, size_t len, const char *assignment);

/* ---------------------------------------------------------------- maps.c */

/* One line of /proc/PID/maps: "start-end perms offset major:minor inode   path". */
struct procfs_map {
    uint64_t start, end, offset, inode;
    unsigned dev_major, dev_minor;
    char perms[5];
    const char *path; /* into the line, not NUL-terminated; length 0 for anonymous memory */
    size_t path_len;  /* without a trailing " (deleted)" */
    bool deleted;     /* the file was unlinked (or replaced) after it was mapped */
};
/* Parses one line (without its newline).  Returns 0 or -1. */
int procfs_maps_line(const char *line, size_t len, struct procfs_map *e);
/* The next mapping of maps or smaps text from *cursor (other lines are passed over);
 * false at the end.  Start with *cursor = text. */
bool procfs_maps_next(const char **cursor, struct procfs_map *e);

/* Is the file mapped: the same path (pass it through realpath first), or the same device
 * and inode (inode 0: path only; real_path NULL: device and inode only)? */
bool procfs_maps_has_file(const char *maps_text, const char *real_path, unsigned dev_major,
                          unsigned dev_minor, uint64_t inode);
/* Does the base name of path (len bytes) start with prefix ("libjemalloc")? */
bool procfs_lib_named(const char *path, size_t len, const char *prefix);
/* The first mapped file whose base name starts with one of the NULL-terminated prefixes,
 * copied into out (may be NULL); false if none. */
bool procfs_maps_find_lib(const char *maps_text, const char *const *prefixes, char *out, size_t out_len);

/* A mapping with what smaps says of it. */
struct procfs_vma {
    uint64_t start, end, offset, inode;
    unsigned dev_major, dev_minor;
    char perms[5];
    const char *path; /* NUL-terminated, in the parsed text; "" for anonymous memory */
    bool deleted;
    uint64_t rss, pss, swap, anon, anon_huge; /* bytes; 0 from maps */
    bool nr;                                  /* VmFlags "nr": mapped MAP_NORESERVE */
    bool nh;                                  /* VmFlags "nh": MADV_NOHUGEPAGE / MAP_STACK */
};

/* Mappings in address order. */
struct procfs_vmas {
    struct procfs_vma *v;
    size_t n, cap;
    bool have_smaps; /* sizes and VmFlags known */
};
/* Parses smaps (or, smaps false, maps) text, writing NULs into it: the paths point into
 * it, so the caller keeps it.  0, or -1 with errno (ENOMEM; EINVAL for a line that starts
 * like a mapping and is not one). */
int procfs_vmas_parse(struct procfs_vmas *out, char *text, bool smaps);
void procfs_vmas_free(struct procfs_vmas *m);
bool procfs_vma_anon(const struct procfs_vma *v); /* private anonymous, no name */
bool procfs_vma_is(const struct procfs_vma *v, const char *perms);

/* ---------------------------------------------------------------- heaps.c */

#define PROCFS_HEAP_SIZE ((uint64_t)64 << 20) /* glibc's non-main heap on 64-bit */

/* One glibc arena heap: [start, start + PROCFS_HEAP_SIZE). */
struct procfs_heap {
    uint64_t start; /* 64 MiB aligned */
    uint64_t rw;    /* bytes read-write: its header's mprotect_size, else the layout's */
    uint64_t arena; /* the malloc_state it belongs to (from its header), 0 if not read */
};

struct procfs_heaps {
    struct procfs_heap *h; /* in address order */
    size_t n;
    unsigned arenas; /* distinct arenas (verified heaps only), 0 when not verified */
    bool verified;   /* the heap headers were read and checked */
};

/* What the detector may use besides the mappings. */
struct procfs_heap_probe {
    /* Reads len bytes of the process's memory at addr; NULL: layout only. */
    bool (*read_mem)(void *ctx, uint64_t addr, void *buf, size_t len);
    /* Does [lo, hi) belong to something recognised already (a JVM region)?  NULL: no. */
    bool (*taken)(void *ctx, uint64_t lo, uint64_t hi);
    void *ctx;
};

/* glibc's arena heaps among the mappings (the rule: heaps.c).  probe may be NULL.
 * Returns 0, or -1 when out of memory. */
int procfs_find_heaps(const struct procfs_vmas *m, const struct procfs_heap_probe *probe,
                      struct procfs_heaps *out);
void procfs_heaps_free(struct procfs_heaps *h);
/* How many heaps maps text shows, by the same rule (layout only): ebb-bench's count.
 * -1 when out of memory. */
int procfs_count_heaps(const char *maps_text);

/* ---------------------------------------------------------------- cgroups.c */

/* Something that could not be read, and why (why NULL: strerror(err)). */
struct procfs_unread {
    const char *what;
    const char *why;
    int err;
};

/* A process's memory cgroup, as ebb-inspect shows it. */
struct procfs_cgroup {
    bool found;
    int version;    /* 1 or 2 */
    char path[512]; /* the cgroup's path as the process sees it */
    bool have_usage, have_limit, have_stat;
    uint64_t usage, limit;   /* limit 0: none of its own */
    uint64_t eff_limit;      /* the smallest limit on the way up, 0: none */
    char eff_limit_at[1100]; /* the directory that sets it, as the process sees it */
    uint64_t anon, file, anon_thp, shmem, active_file, inactive_file, kernel; /* memory.stat */
    bool have_kernel;
    struct procfs_unread unread[3]; /* what could not be read (found false: why) */
    size_t nunread;
};

/* Reads the memory cgroup of the process whose /proc directory is proc_dir ("/proc/1234",
 * "/proc/self/fd/N" for an open one, or a sample tree laid out the same way): its
 * "cgroup" file, the mount points of its "mountinfo" reached through its "root".  With
 * own_view, hierarchies not reachable that way are looked for in our own mounts. */
void procfs_cgroup_read(const char *proc_dir, bool own_view, struct procfs_cgroup *cg);

#endif
