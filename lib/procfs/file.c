/* Reading files of /proc (and of the cgroup tree): their size says nothing, so both
 * readers read until the end or until the buffer is full. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "procfs.h"

/* read() until room bytes, the end or an error; -1 with errno on an error. */
static ssize_t read_upto(int fd, char *p, size_t room) {
    size_t got = 0;
    while (got < room) {
        ssize_t r = read(fd, p + got, room - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

int procfs_read_at(int dirfd, const char *path, char **buf, size_t *cap, size_t *len) {
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    size_t n = 0;
    for (;;) {
        if (*cap < n + 4096 + 1) {
            size_t nc = *cap ? *cap * 2 : 16384;
            while (nc < n + 4096 + 1) nc *= 2;
            char *nb = realloc(*buf, nc);
            if (!nb) {
                close(fd);
                return -ENOMEM;
            }
            *buf = nb;
            *cap = nc;
        }
        ssize_t r = read_upto(fd, *buf + n, *cap - n - 1);
        if (r < 0) {
            int e = -errno;
            close(fd);
            return e;
        }
        n += (size_t)r;
        if (n + 1 < *cap) break; /* it stopped short of the room it had: the end */
    }
    close(fd);
    (*buf)[n] = '\0';
    if (len) *len = n;
    return 0;
}

int procfs_read(const char *path, char **buf, size_t *cap, size_t *len) {
    return procfs_read_at(AT_FDCWD, path, buf, cap, len);
}

size_t procfs_read_buf(const char *path, char *buf, size_t n) {
    if (!n) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t got = fd < 0 ? -1 : read_upto(fd, buf, n - 1);
    int e = errno; /* a caller may say why it failed */
    if (fd >= 0) close(fd);
    errno = e;
    if (got < 0) got = 0;
    buf[got] = '\0';
    return (size_t)got;
}
