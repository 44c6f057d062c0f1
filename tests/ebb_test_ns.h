/* A tmpfs of the calling process's own at /dev/shm (what a container has): a mount
 * namespace, and without root a user namespace whose root the process is, so that the
 * tmpfs takes its files.  Shared by the tests that need one (test_shm_namespaces,
 * test_refusals; test_background hides /proc the same way).  Returns 0, or -1 with errno and *what naming the step that failed. */
#ifndef EBB_TEST_NS_H
#define EBB_TEST_NS_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

static inline int ebb_ns_write(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* A mount namespace of the process's own (and a user namespace without root), with
 * mounts that do not propagate back.  Only while the process has one thread. */
static inline int ebb_private_mounts(const char **what) {
    uid_t uid = geteuid();
    gid_t gid = getegid();
    *what = uid ? "unshare(CLONE_NEWNS | CLONE_NEWUSER)" : "unshare(CLONE_NEWNS)";
    if (unshare(CLONE_NEWNS | (uid ? CLONE_NEWUSER : 0))) return -1;
    if (uid) {
        char map[64];
        *what = "the user namespace's uid and gid maps";
        if (ebb_ns_write("/proc/self/setgroups", "deny")) return -1;
        snprintf(map, sizeof map, "0 %d 1", (int)uid);
        if (ebb_ns_write("/proc/self/uid_map", map)) return -1;
        snprintf(map, sizeof map, "0 %d 1", (int)gid);
        if (ebb_ns_write("/proc/self/gid_map", map)) return -1;
    }
    *what = "private mounts";
    return mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

static inline int ebb_private_dev_shm(const char *opts, const char **what) {
    if (ebb_private_mounts(what)) return -1;
    *what = "a tmpfs of its own at /dev/shm";
    return mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts);
}
#endif
