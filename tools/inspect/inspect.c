/* One inspection of a process: read, classify, add cgroup, stats page and hints. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inspect.h"

void note_unreadable(struct inspection *in, const char *what, const char *why) {
    if (in->nunread == sizeof(in->unread) / sizeof(in->unread[0])) return;
    struct unreadable *u = &in->unread[in->nunread++];
    snprintf(u->what, sizeof(u->what), "%s", what);
    snprintf(u->why, sizeof(u->why), "%s", why);
}

/* The memory cgroup, read in the process's own view through its /proc fd (so only this
 * process's files are read), else in ours. */
static void cgroup_read(struct inspection *in) {
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/self/fd/%d", in->proc.dirfd);
    procfs_cgroup_read(dir, true, &in->cg);
    for (size_t i = 0; i < in->cg.nunread; i++) {
        const struct procfs_unread *u = &in->cg.unread[i];
        note_unreadable(in, u->what, u->why ? u->why : strerror(u->err));
    }
}

static const char *why_text(int e) {
    if (e == EACCES || e == EPERM) return "permission denied (run as root or as the process's user)";
    return strerror(e);
}

int inspect(struct inspection *in, pid_t pid, unsigned flags, char *err, size_t errlen) {
    memset(in, 0, sizeof(*in));
    in->pagemap_fd = in->mem_fd = -1;
    strcpy(in->allocator, "unknown");
    if (proc_open(&in->proc, pid, err, errlen) < 0) return 1;
    char what[64];
    if (!in->proc.cmdline) {
        snprintf(what, sizeof(what), "/proc/%d/cmdline", (int)pid);
        note_unreadable(in, what, why_text(errno));
    }
    if (!in->proc.environ) {
        snprintf(what, sizeof(what), "/proc/%d/environ", (int)pid);
        note_unreadable(
            in, what,
            "permission denied: MALLOC_ARENA_MAX, LD_PRELOAD and Java option variables not checked");
    }

    char *text = NULL;
    bool smaps = true;
    text = proc_read(&in->proc, "smaps", NULL);
    if (!text) {
        int e = errno;
        snprintf(what, sizeof(what), "/proc/%d/smaps", (int)pid);
        note_unreadable(in, what, why_text(e));
        smaps = false;
        text = proc_read(&in->proc, "maps", NULL);
        if (!text) {
            snprintf(what, sizeof(what), "/proc/%d/maps", (int)pid);
            note_unreadable(in, what, why_text(errno));
        }
    }
    if (text) {
        if (procfs_vmas_parse(&in->maps, text, smaps) == 0) {
            in->maps_ok = true;
        } else {
            snprintf(what, sizeof(what), "/proc/%d/smaps", (int)pid);
            note_unreadable(in, what, "unexpected format");
        }
        in->maps_text = text;
    }
    if (in->maps_ok && !in->maps.n) {
        /* a kernel thread, or the process exited while we read */
        if (proc_read_stat(&in->proc) < 0 || in->proc.state == 'Z') {
            snprintf(err, errlen, "process %d exited", (int)pid);
            inspection_free(in);
            return 1;
        }
    }
    if (in->maps_ok) {
        in->pagemap_fd = openat(in->proc.dirfd, "pagemap", O_RDONLY | O_CLOEXEC);
        if (!(flags & INSPECT_NO_MEMORY)) in->mem_fd = openat(in->proc.dirfd, "mem", O_RDONLY | O_CLOEXEC);
        if (in->mem_fd < 0 && !(flags & INSPECT_NO_MEMORY)) {
            snprintf(what, sizeof(what), "/proc/%d/mem", (int)pid);
            note_unreadable(in, what,
                            "not readable: glibc arena heaps recognised by their layout only, not verified");
        }
    }
    cgroup_read(in); /* before classify: a JVM's default heap size follows the limit */
    if (in->maps_ok) {
        shm_stats_read(in);
        classify(in);
    }
    /* everything above came from one process only if it is still the same one */
    if (proc_read_stat(&in->proc) < 0) {
        snprintf(err, errlen, "process %d exited while being inspected", (int)pid);
        inspection_free(in);
        return 1;
    }
    make_hints(in);
    return in->maps_ok ? 0 : 2;
}

void inspection_free(struct inspection *in) {
    proc_close(&in->proc);
    procfs_vmas_free(&in->maps);
    free(in->maps_text);
    if (in->pagemap_fd >= 0) close(in->pagemap_fd);
    if (in->mem_fd >= 0) close(in->mem_fd);
    free(in->heaps);
    free(in->claims);
    for (size_t i = 0; i < in->nhints; i++) free(in->hints[i]);
    memset(in, 0, sizeof(*in));
    in->pagemap_fd = in->mem_fd = -1;
}
