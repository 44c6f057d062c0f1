/* The memory cgroup of the process: usage, limit, and what the usage is made of.
 *
 * /proc/PID/cgroup gives the cgroup path relative to the process's cgroup namespace;
 * the process's own mountinfo says where that hierarchy is mounted, and /proc/PID/root
 * reaches it (so a process in a container is read in its own view).  If that is not
 * readable, our own mounts are tried.  cgroup v2 (memory.max, memory.current) and v1
 * (memory.limit_in_bytes, memory.usage_in_bytes) are both read. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect.h"

/* Mount point and mount root of the hierarchy, from a mountinfo text. */
static bool find_mount(char *mi, int version, char *mp, size_t mplen, char *root, size_t rootlen)
{
    char *save = NULL;
    for (char *l = strtok_r(mi, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char r[512], m[512], fstype[64], super[512];
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

struct cgdir {
    int base;          /* dirfd to resolve against, AT_FDCWD for our own view */
    char dir[1100];    /* relative to base */
};

static bool read_u64(const struct cgdir *d, const char *file, uint64_t *v, bool *none)
{
    char path[1200], *buf;
    snprintf(path, sizeof(path), "%s/%s", d->dir, file);
    if (read_file_at(d->base, path, &buf, NULL) < 0)
        return false;
    *none = strncmp(buf, "max", 3) == 0;
    *v = *none ? 0 : strtoull(buf, NULL, 10);
    if (*v >= ((uint64_t)1 << 62)) { /* v1 spells "no limit" as a huge number */
        *v = 0;
        *none = true;
    }
    free(buf);
    return true;
}

static uint64_t stat_key(const char *st, const char *key, bool *found)
{
    size_t n = strlen(key);
    for (const char *l = st; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, key, n) && l[n] == ' ') {
            if (found)
                *found = true;
            return strtoull(l + n + 1, NULL, 10);
        }
    return 0;
}

static bool locate(struct inspection *in, int version, const char *cgpath, bool target_view,
                   struct cgdir *d)
{
    char *mi;
    if (target_view) {
        if (read_file_at(in->proc.dirfd, "mountinfo", &mi, NULL) < 0)
            return false;
    } else if (read_file_at(AT_FDCWD, "/proc/self/mountinfo", &mi, NULL) < 0) {
        return false;
    }
    char mp[512], root[512];
    bool ok = find_mount(mi, version, mp, sizeof(mp), root, sizeof(root));
    free(mi);
    if (!ok)
        return false;
    const char *sub = cgpath;
    size_t rl = strlen(root);
    if (strcmp(root, "/") && !strncmp(cgpath, root, rl))
        sub = cgpath + rl;
    d->base = target_view ? in->proc.dirfd : AT_FDCWD;
    snprintf(d->dir, sizeof(d->dir), "%s%s%s", target_view ? "root" : "", mp, sub);
    size_t n = strlen(d->dir);
    while (n > 1 && d->dir[n - 1] == '/')
        d->dir[--n] = '\0';
    /* the directory must hold the controller's files */
    char probe[1200];
    snprintf(probe, sizeof(probe), "%s/%s", d->dir,
             version == 2 ? "memory.current" : "memory.usage_in_bytes");
    if (faccessat(d->base, probe, F_OK, 0) < 0) {
        /* cgroup v2 root has no memory.current; it still holds memory.stat */
        snprintf(probe, sizeof(probe), "%s/memory.stat", d->dir);
        return faccessat(d->base, probe, F_OK, 0) == 0;
    }
    return true;
}

void cgroup_read(struct inspection *in)
{
    struct cgroup_info *cg = &in->cg;
    memset(cg, 0, sizeof(*cg));
    char *txt;
    if (read_file_at(in->proc.dirfd, "cgroup", &txt, NULL) < 0) {
        note_unreadable(in, "/proc/PID/cgroup", strerror(errno));
        return;
    }
    char v1[512] = "", v2[512] = "";
    bool have_v1 = false, have_v2 = false;
    char *save = NULL;
    for (char *l = strtok_r(txt, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *c1 = strchr(l, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctl = c1 + 1;
        if (!strcmp(l, "0") && !*ctl) {
            snprintf(v2, sizeof(v2), "%s", c2 + 1);
            have_v2 = true;
        }
        for (char *t = strtok(strdupa(ctl), ","); t; t = strtok(NULL, ","))
            if (!strcmp(t, "memory")) {
                snprintf(v1, sizeof(v1), "%s", c2 + 1);
                have_v1 = true;
            }
    }
    free(txt);

    struct cgdir d;
    int version = 0;
    /* a v1 memory hierarchy, where mounted, is the one that accounts memory */
    if (have_v1 && (locate(in, 1, v1, true, &d) || locate(in, 1, v1, false, &d)))
        version = 1;
    else if (have_v2 && (locate(in, 2, v2, true, &d) || locate(in, 2, v2, false, &d)))
        version = 2;
    if (!version) {
        note_unreadable(in, "memory cgroup", have_v1 || have_v2
                                                 ? "its hierarchy is not mounted where we can read it"
                                                 : "the process is in no memory cgroup");
        return;
    }
    cg->found = true;
    cg->version = version;
    snprintf(cg->path, sizeof(cg->path), "%s", version == 1 ? v1 : v2);
    bool none;
    cg->have_usage = read_u64(&d, version == 2 ? "memory.current" : "memory.usage_in_bytes",
                              &cg->usage, &none);
    cg->have_limit = read_u64(&d, version == 2 ? "memory.max" : "memory.limit_in_bytes",
                              &cg->limit, &none);
    if (!cg->have_usage && strcmp(cg->path, "/"))
        note_unreadable(in, "cgroup memory usage", strerror(errno));

    char path[1200], *st;
    snprintf(path, sizeof(path), "%s/memory.stat", d.dir);
    if (read_file_at(d.base, path, &st, NULL) == 0) {
        cg->have_stat = true;
        if (version == 2) {
            cg->anon = stat_key(st, "anon", NULL);
            cg->file = stat_key(st, "file", NULL);
            cg->anon_thp = stat_key(st, "anon_thp", NULL);
            cg->shmem = stat_key(st, "shmem", NULL);
            cg->kernel = stat_key(st, "kernel", &cg->have_kernel);
        } else {
            bool tot = false;
            uint64_t t = stat_key(st, "total_rss", &tot);
            cg->anon = tot ? t : stat_key(st, "rss", NULL);
            cg->file = tot ? stat_key(st, "total_cache", NULL) : stat_key(st, "cache", NULL);
            cg->anon_thp = tot ? stat_key(st, "total_rss_huge", NULL) : stat_key(st, "rss_huge", NULL);
            cg->shmem = tot ? stat_key(st, "total_shmem", NULL) : stat_key(st, "shmem", NULL);
            uint64_t h = stat_key(st, "hierarchical_memory_limit", NULL);
            if (h && h < ((uint64_t)1 << 62)) {
                cg->eff_limit = h;
                snprintf(cg->eff_limit_at, sizeof(cg->eff_limit_at), "hierarchical_memory_limit");
            }
        }
        const char *pre = (version == 1 && strstr(st, "total_active_file")) ? "total_" : "";
        char k[64];
        snprintf(k, sizeof(k), "%sactive_file", pre);
        cg->active_file = stat_key(st, k, NULL);
        snprintf(k, sizeof(k), "%sinactive_file", pre);
        cg->inactive_file = stat_key(st, k, NULL);
        free(st);
    } else {
        note_unreadable(in, "cgroup memory.stat", strerror(errno));
    }

    if (version == 2) {
        /* the tightest memory.max from here up to the mount's root */
        struct cgdir up = d;
        for (int depth = 0; depth < 64; depth++) {
            uint64_t lim;
            if (read_u64(&up, "memory.max", &lim, &none) && !none &&
                (!cg->eff_limit || lim < cg->eff_limit)) {
                cg->eff_limit = lim;
                snprintf(cg->eff_limit_at, sizeof(cg->eff_limit_at), "%s", up.dir);
            }
            char *slash = strrchr(up.dir, '/');
            if (!slash || slash == up.dir)
                break;
            *slash = '\0';
            char probe[1200];
            snprintf(probe, sizeof(probe), "%s/cgroup.controllers", up.dir);
            if (faccessat(up.base, probe, F_OK, 0) < 0)
                break;
        }
    } else if (!cg->eff_limit && cg->limit) {
        cg->eff_limit = cg->limit;
    }
}
