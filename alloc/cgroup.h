/* cgroup.h: which cgroup a process is in and the limits that cgroup sets.
 *
 * These are the rules ebbmalloc shares with its tools: the allocator applies them at start
 * (release.c), and the tools' procfs library (lib/procfs/) compiles cgroup.c as well and
 * applies them to another process.  So cgroup.c needs nothing of the allocator, no stdio
 * and no malloc: every file comes through a reader the caller passes.
 *
 * The rules, in one place:
 *  - /proc/PID/cgroup: the v2 line is "0::PATH"; a v1 controller's line names it in its
 *    comma-separated list ("11:cpu,cpuacct:PATH").
 *  - v1 or v2: a controller counts in v1 when the process has a v1 line for it and that
 *    hierarchy is there (its probe file is readable in the cgroup's directory or one above
 *    it, up to the mount point); otherwise in v2 when there is a "0::" line and the unified
 *    hierarchy is there.  (On a hybrid system memory is accounted by the v1 hierarchy.)
 *  - Mount root: where a hierarchy is mounted from a sub-cgroup (mountinfo's root field,
 *    a container's view), that prefix is taken off the process's path.
 *  - Memory limit: limits nest, so the smallest one from the cgroup's directory up to the
 *    mount point counts; a directory that does not exist (the path of a host outside the
 *    container) just adds nothing, and the mount point's own limit still counts.
 *  - "max", and v1's "no limit" (a huge page-rounded number: anything from 2^60 up), are
 *    no limit.
 *  - CPUs: v2 cpu.max "QUOTA PERIOD" ("max PERIOD": none), v1 cpu.cfs_quota_us over
 *    cpu.cfs_period_us (a quota of -1: none), from the cgroup's directory, else the mount
 *    point's. */
#ifndef EBB_CGROUP_H
#define EBB_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Reads up to n-1 bytes of the file at path into buf and NUL-terminates them; returns the
 * bytes read, 0 when the file cannot be read (the contract of os.c's ebbi_read_file). */
typedef size_t (*ebbi_reader)(const char *path, char *buf, size_t n);

#define EBBI_CGROUP_PATH 1024

/* One hierarchy as the reader sees it. */
struct ebbi_cgroup_mount {
    const char *at;    /* its mount point; NULL: not mounted */
    const char *root;  /* the cgroup mounted there (mountinfo's root); NULL or "/": the top */
    const char *probe; /* a file its cgroups hold, to see that it is there; NULL: trusted */
};

/* The directory of a process's cgroup in the hierarchy that counts for a controller. */
struct ebbi_cgroup_dir {
    int version;                 /* 1 or 2; 0: none found */
    char path[EBBI_CGROUP_PATH]; /* mount point, then the cgroup's path below it */
    size_t mount_len;            /* path[0, mount_len) is the mount point */
};

/* The path of the process's cgroup for a v1 controller, or the v2 path when controller is
 * NULL, from the text of /proc/PID/cgroup.  False when there is no such line or it does
 * not fit in n bytes. */
bool ebbi_cgroup_path(const char *proc_cgroup, const char *controller, char *out, size_t n);

/* The bytes a limit file's text sets: true and *bytes = 0 for no limit, false when the
 * text is not a limit. */
bool ebbi_cgroup_limit_value(const char *text, uint64_t *bytes);

/* Which hierarchy counts for v1_controller ("memory", "cpu") by the rules above, and the
 * process's directory in it.  Returns the version, 0 (out->version too) when none. */
int ebbi_cgroup_find(ebbi_reader rd, const char *proc_cgroup, const char *v1_controller,
                     const struct ebbi_cgroup_mount *v1, const struct ebbi_cgroup_mount *v2,
                     struct ebbi_cgroup_dir *out);

/* The smallest limit that `file` sets from d's directory up to the mount point, 0 for
 * none; *at_len (may be NULL) gets the length of d->path's prefix that set it. */
uint64_t ebbi_cgroup_min_limit(ebbi_reader rd, const struct ebbi_cgroup_dir *d, const char *file,
                               size_t *at_len);

/* The CPUs the quota of d's cgroup allows (1.5 for "150000 100000"), 0 for no quota. */
double ebbi_cgroup_quota(ebbi_reader rd, const struct ebbi_cgroup_dir *d);

/* The allocator's questions, for hierarchies mounted the usual way under `root`
 * (/sys/fs/cgroup: v2 there, v1 controllers in root/memory and root/cpu), for the
 * process described by the text of its /proc/self/cgroup. */
uint64_t ebbi_cgroup_parse_limit(ebbi_reader rd, const char *root, const char *proc_cgroup);
double ebbi_cgroup_parse_cpus(ebbi_reader rd, const char *root, const char *proc_cgroup);

#endif
