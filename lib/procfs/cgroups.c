/* A process's memory cgroup: usage, limit, the tightest limit above it, and what the
 * usage is made of.
 *
 * Which hierarchy and which directory follow the allocator's rules (alloc/cgroup.c), so
 * ebb-inspect and the library agree on the limit.  What is particular to looking at
 * another process: /proc/PID/mountinfo says where each hierarchy is mounted (and from
 * which cgroup, in a container), reached through /proc/PID/root, so a process in a
 * container is read in its own view; if that is not readable, our own mounts are tried.
 * A v1 memory hierarchy, where it is there, is the one that accounts memory. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "procfs.h"

static void unreadable(struct procfs_cgroup *cg, const char *what, const char *why, int err) {
    if (cg->nunread < sizeof cg->unread / sizeof cg->unread[0])
        cg->unread[cg->nunread++] = (struct procfs_unread){what, why, err};
}

/* Mount point and mount root of the hierarchy, from a mountinfo text (modified). */
static bool find_mount(char *mi, int version, char *mp, size_t mplen, char *root, size_t rootlen) {
    char *save = NULL;
    for (char *l = strtok_r(mi, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char r[512], m[512], fstype[64], super[512] = "";
        char *dash = strstr(l, " - ");
        if (!dash || sscanf(l, "%*s %*s %*s %511s %511s", r, m) != 2 ||
            sscanf(dash + 3, "%63s %*s %511s", fstype, super) < 1)
            continue;
        if (version == 2 ? strcmp(fstype, "cgroup2") != 0
                         : (strcmp(fstype, "cgroup") != 0 || !strstr(super, "memory")))
            continue;
        snprintf(mp, mplen, "%s", m);
        snprintf(root, rootlen, "%s", r);
        return true;
    }
    return false;
}

/* The process's directory in hierarchy `version` seen through prefix ("PROC/root" for the
 * process's own view, "" for ours), its mounts listed in mountinfo_path. */
static bool locate(const char *proc_cgroup, int version, const char *mountinfo_path, const char *prefix,
                   struct ebbi_cgroup_dir *d) {
    char *mi = NULL;
    size_t cap = 0;
    if (procfs_read(mountinfo_path, &mi, &cap, NULL) < 0) {
        free(mi);
        return false;
    }
    char mp[512], root[512], at[1100];
    bool ok = find_mount(mi, version, mp, sizeof mp, root, sizeof root);
    free(mi);
    if (!ok || snprintf(at, sizeof at, "%s%s", prefix, mp) >= (int)sizeof at) return false;
    struct ebbi_cgroup_mount m = {at, root, version == 1 ? "memory.limit_in_bytes" : "memory.stat"};
    return ebbi_cgroup_find(procfs_read_buf, proc_cgroup, "memory", version == 1 ? &m : NULL,
                            version == 2 ? &m : NULL, d) == version;
}

static bool read_u64(const struct ebbi_cgroup_dir *d, const char *file, uint64_t *v) {
    char path[EBBI_CGROUP_PATH + 64], buf[64];
    snprintf(path, sizeof path, "%s/%s", d->path, file);
    if (!procfs_read_buf(path, buf, sizeof buf) || buf[0] < '0' || buf[0] > '9') return false;
    *v = strtoull(buf, NULL, 10);
    return true;
}

static bool read_limit(const struct ebbi_cgroup_dir *d, const char *file, uint64_t *v) {
    char path[EBBI_CGROUP_PATH + 64], buf[64];
    snprintf(path, sizeof path, "%s/%s", d->path, file);
    return procfs_read_buf(path, buf, sizeof buf) && ebbi_cgroup_limit_value(buf, v);
}

static uint64_t stat_key(const char *st, const char *key, bool *found) {
    uint64_t v = 0;
    bool f = procfs_field_u64(st, key, ' ', &v);
    if (found) *found = f;
    return f ? v : 0;
}

static void read_stat(struct procfs_cgroup *cg, const char *st) {
    if (cg->version == 2) {
        cg->anon = stat_key(st, "anon", NULL);
        cg->file = stat_key(st, "file", NULL);
        cg->anon_thp = stat_key(st, "anon_thp", NULL);
        cg->shmem = stat_key(st, "shmem", NULL);
        cg->kernel = stat_key(st, "kernel", &cg->have_kernel);
        cg->active_file = stat_key(st, "active_file", NULL);
        cg->inactive_file = stat_key(st, "inactive_file", NULL);
        return;
    }
    /* v1: the hierarchical totals where the kernel gives them */
    bool tot = false;
    uint64_t t = stat_key(st, "total_rss", &tot);
    cg->anon = tot ? t : stat_key(st, "rss", NULL);
    cg->file = stat_key(st, tot ? "total_cache" : "cache", NULL);
    cg->anon_thp = stat_key(st, tot ? "total_rss_huge" : "rss_huge", NULL);
    cg->shmem = stat_key(st, tot ? "total_shmem" : "shmem", NULL);
    bool totf = procfs_field(st, "total_active_file", ' ') != NULL;
    cg->active_file = stat_key(st, totf ? "total_active_file" : "active_file", NULL);
    cg->inactive_file = stat_key(st, totf ? "total_inactive_file" : "inactive_file", NULL);
}

void procfs_cgroup_read(const char *proc_dir, bool own_view, struct procfs_cgroup *cg) {
    memset(cg, 0, sizeof *cg);
    char path[EBBI_CGROUP_PATH + 64], *txt = NULL;
    size_t cap = 0;
    snprintf(path, sizeof path, "%s/cgroup", proc_dir);
    int r = procfs_read(path, &txt, &cap, NULL);
    if (r < 0) {
        free(txt);
        unreadable(cg, "/proc/PID/cgroup", NULL, -r);
        return;
    }
    char v1[512], v2[512];
    bool have_v1 = ebbi_cgroup_path(txt, "memory", v1, sizeof v1);
    bool have_v2 = ebbi_cgroup_path(txt, NULL, v2, sizeof v2);

    /* v1 before v2; in each, the process's own view before ours */
    char target_mi[EBBI_CGROUP_PATH], target_root[EBBI_CGROUP_PATH];
    snprintf(target_mi, sizeof target_mi, "%s/mountinfo", proc_dir);
    snprintf(target_root, sizeof target_root, "%s/root", proc_dir);
    struct {
        const char *mountinfo, *prefix;
    } views[2] = {{target_mi, target_root}, {"/proc/self/mountinfo", ""}};
    struct ebbi_cgroup_dir d;
    size_t prefix_len = 0;
    for (int version = 1; version <= 2 && !cg->found; version++)
        for (int v = 0; v < (own_view ? 2 : 1) && !cg->found; v++)
            if (locate(txt, version, views[v].mountinfo, views[v].prefix, &d)) {
                cg->found = true;
                cg->version = version;
                prefix_len = strlen(views[v].prefix);
            }
    free(txt);
    if (!cg->found) {
        unreadable(cg, "memory cgroup",
                   have_v1 || have_v2 ? "its hierarchy is not mounted where we can read it"
                                      : "the process is in no memory cgroup",
                   0);
        return;
    }
    snprintf(cg->path, sizeof cg->path, "%s", cg->version == 1 ? v1 : v2);
    const char *limit_file = cg->version == 2 ? "memory.max" : "memory.limit_in_bytes";
    cg->have_usage = read_u64(&d, cg->version == 2 ? "memory.current" : "memory.usage_in_bytes", &cg->usage);
    int usage_errno = errno;
    cg->have_limit = read_limit(&d, limit_file, &cg->limit);
    if (!cg->have_usage && strcmp(cg->path, "/")) unreadable(cg, "cgroup memory usage", NULL, usage_errno);

    size_t at;
    cg->eff_limit = ebbi_cgroup_min_limit(procfs_read_buf, &d, limit_file, &at);
    if (cg->eff_limit)
        snprintf(cg->eff_limit_at, sizeof cg->eff_limit_at, "%.*s", (int)(at - prefix_len),
                 d.path + prefix_len);

    char *st = NULL;
    cap = 0;
    snprintf(path, sizeof path, "%s/memory.stat", d.path);
    r = procfs_read(path, &st, &cap, NULL);
    if (r == 0) {
        cg->have_stat = true;
        read_stat(cg, st);
        /* v1's own word for the tightest limit above, outside the process's view too */
        uint64_t h;
        const char *hl = cg->version == 1 ? procfs_field(st, "hierarchical_memory_limit", ' ') : NULL;
        if (hl && ebbi_cgroup_limit_value(hl, &h) && h && (!cg->eff_limit || h <= cg->eff_limit)) {
            cg->eff_limit = h;
            snprintf(cg->eff_limit_at, sizeof cg->eff_limit_at, "hierarchical_memory_limit");
        }
    } else {
        unreadable(cg, "cgroup memory.stat", NULL, -r);
    }
    free(st);
}
