/* Reading /proc/PID through one directory fd.
 *
 * Once /proc/PID is open, reads through that fd fail with ESRCH when the process
 * exits, even if the pid is reused meanwhile: every figure of one inspection comes
 * from the same process. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inspect.h"

int read_file_at(int dirfd, const char *path, char **out, size_t *len)
{
    int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t cap = 16384, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                close(fd);
                errno = ENOMEM;
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            free(buf);
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

char *proc_read(const struct proc *p, const char *name, size_t *len)
{
    char *buf;
    if (read_file_at(p->dirfd, name, &buf, len) < 0)
        return NULL;
    return buf;
}

/* Split a NUL-separated buffer into a NULL-terminated vector (pointers into buf). */
static char **split_nul(char *buf, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0')
            n++;
    if (len && buf[len - 1] != '\0')
        n++;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len && k < n;) {
        v[k++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    return v;
}

int proc_read_stat(struct proc *p)
{
    char *s = proc_read(p, "stat", NULL);
    if (!s)
        return -1;
    /* comm may hold spaces and parentheses: fields resume after the last ')'. */
    char *rp = strrchr(s, ')');
    if (!rp) {
        free(s);
        errno = EINVAL;
        return -1;
    }
    char *lp = strchr(s, '(');
    if (lp && lp < rp) {
        size_t n = (size_t)(rp - lp - 1);
        if (n >= sizeof(p->comm))
            n = sizeof(p->comm) - 1;
        memcpy(p->comm, lp + 1, n);
        p->comm[n] = '\0';
    }
    char *f = rp + 2;
    p->state = *f;
    /* f is field 3; start_time is field 22 */
    for (int field = 3; field < 22 && f; field++) {
        f = strchr(f, ' ');
        if (f)
            f++;
    }
    p->start_time = f ? strtoull(f, NULL, 10) : 0;
    free(s);
    return 0;
}

static uint64_t kb_field(const char *status, const char *key)
{
    const char *l = strstr(status, key);
    if (!l)
        return 0;
    return strtoull(l + strlen(key), NULL, 10) * 1024;
}

int proc_open(struct proc *p, pid_t pid, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->pid = pid;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    p->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (p->dirfd < 0) {
        if (errno == ENOENT)
            snprintf(err, errlen, "no process with pid %d", (int)pid);
        else
            snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (proc_read_stat(p) < 0) {
        snprintf(err, errlen, "process %d exited", (int)pid);
        close(p->dirfd);
        p->dirfd = -1;
        return -1;
    }
    if (p->state == 'Z' || p->state == 'X') {
        snprintf(err, errlen, "process %d has exited (zombie, not yet reaped): no memory left to inspect",
                 (int)pid);
        close(p->dirfd);
        p->dirfd = -1;
        return -1;
    }
    char *st = proc_read(p, "status", NULL);
    if (!st) {
        snprintf(err, errlen, "cannot read /proc/%d/status: %s", (int)pid,
                 errno == ESRCH ? "process exited" : strerror(errno));
        close(p->dirfd);
        p->dirfd = -1;
        return -1;
    }
    p->nspid = pid;
    const char *l = strstr(st, "\nNSpid:");
    if (l) {
        /* the last number on the line is the pid in the innermost namespace */
        const char *e = strchr(l + 1, '\n');
        const char *q = l + 7;
        while (q && (!e || q < e)) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q)
                break;
            p->nspid = (pid_t)v;
            q = end;
        }
    }
    l = strstr(st, "\nUid:");
    if (l) {
        unsigned long r, e;
        if (sscanf(l + 5, "%lu %lu", &r, &e) == 2) {
            p->ruid = (uid_t)r;
            p->euid = (uid_t)e;
        }
    }
    l = strstr(st, "\nThreads:");
    p->threads = l ? strtol(l + 9, NULL, 10) : 0;
    p->vm_rss = kb_field(st, "\nVmRSS:");
    p->rss_anon = kb_field(st, "\nRssAnon:");
    p->rss_file = kb_field(st, "\nRssFile:");
    p->rss_shmem = kb_field(st, "\nRssShmem:");
    p->vm_swap = kb_field(st, "\nVmSwap:");
    free(st);

    size_t len;
    char *cl = proc_read(p, "cmdline", &len);
    if (cl) {
        p->argbuf = cl;
        p->argv = split_nul(cl, len);
        p->cmdline = malloc(len + 1);
        if (p->cmdline) {
            for (size_t i = 0; i < len; i++)
                p->cmdline[i] = cl[i] ? cl[i] : ' ';
            while (len && p->cmdline[len - 1] == ' ')
                len--;
            p->cmdline[len] = '\0';
        }
    }
    char *env = proc_read(p, "environ", &len);
    if (env) {
        p->envbuf = env;
        p->environ = split_nul(env, len);
    }
    struct stat sb;
    if (fstatat(p->dirfd, "exe", &sb, 0) == 0) {
        p->exe_dev = sb.st_dev;
        p->exe_ino = sb.st_ino;
        p->exe_known = true;
    }
    return 0;
}

void proc_close(struct proc *p)
{
    if (p->dirfd >= 0)
        close(p->dirfd);
    p->dirfd = -1;
    free(p->argv);
    free(p->environ);
    free(p->argbuf);
    free(p->envbuf);
    free(p->cmdline);
    p->argv = p->environ = NULL;
    p->argbuf = p->envbuf = p->cmdline = NULL;
}

const char *proc_getenv(const struct proc *p, const char *name)
{
    if (!p->environ)
        return NULL;
    size_t n = strlen(name);
    for (char **e = p->environ; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}
