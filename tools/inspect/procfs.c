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

char *proc_read(const struct proc *p, const char *name, size_t *len) {
    char *buf = NULL;
    size_t cap = 0;
    int r = procfs_read_at(p->dirfd, name, &buf, &cap, len);
    if (r < 0) {
        free(buf);
        errno = -r;
        return NULL;
    }
    return buf;
}

/* Split a NUL-separated buffer into a NULL-terminated vector (pointers into buf). */
static char **split_nul(char *buf, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0') n++;
    if (len && buf[len - 1] != '\0') n++;
    char **v = calloc(n + 1, sizeof(*v));
    if (!v) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len && k < n;) {
        v[k++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    return v;
}

int proc_read_stat(struct proc *p) {
    char *s = proc_read(p, "stat", NULL);
    if (!s) return -1;
    struct procfs_stat st;
    int r = procfs_parse_stat(s, &st);
    free(s);
    if (r < 0) {
        errno = EINVAL;
        return -1;
    }
    memcpy(p->comm, st.comm, sizeof(p->comm));
    p->state = st.state;
    p->start_time = st.start_time;
    return 0;
}

static uint64_t kb_field(const char *status, const char *key) {
    long long kib = procfs_field_kib(status, key);
    return kib < 0 ? 0 : (uint64_t)kib * 1024;
}

int proc_open(struct proc *p, pid_t pid, char *err, size_t errlen) {
    memset(p, 0, sizeof(*p));
    p->pid = pid;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    p->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (p->dirfd < 0) {
        if (errno == ENOENT) snprintf(err, errlen, "no process with pid %d", (int)pid);
        else snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
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
    const char *l = procfs_field(st, "NSpid", ':');
    if (l) {
        /* the last number on the line is the pid in the innermost namespace */
        const char *e = strchr(l, '\n');
        const char *q = l;
        while (q && (!e || q < e)) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q) break;
            p->nspid = (pid_t)v;
            q = end;
        }
    }
    l = procfs_field(st, "Uid", ':');
    if (l) {
        unsigned long r, e;
        if (sscanf(l, "%lu %lu", &r, &e) == 2) {
            p->ruid = (uid_t)r;
            p->euid = (uid_t)e;
        }
    }
    uint64_t threads;
    p->threads = procfs_field_u64(st, "Threads", ':', &threads) ? (long)threads : 0;
    p->vm_rss = kb_field(st, "VmRSS");
    p->rss_anon = kb_field(st, "RssAnon");
    p->rss_file = kb_field(st, "RssFile");
    p->rss_shmem = kb_field(st, "RssShmem");
    p->vm_swap = kb_field(st, "VmSwap");
    free(st);

    size_t len;
    char *cl = proc_read(p, "cmdline", &len);
    if (cl) {
        p->argbuf = cl;
        p->argv = split_nul(cl, len);
        p->cmdline = malloc(len + 1);
        if (p->cmdline) {
            for (size_t i = 0; i < len; i++) p->cmdline[i] = cl[i] ? cl[i] : ' ';
            while (len && p->cmdline[len - 1] == ' ') len--;
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

void proc_close(struct proc *p) {
    if (p->dirfd >= 0) close(p->dirfd);
    p->dirfd = -1;
    free(p->argv);
    free(p->environ);
    free(p->argbuf);
    free(p->envbuf);
    free(p->cmdline);
    p->argv = p->environ = NULL;
    p->argbuf = p->envbuf = p->cmdline = NULL;
}

const char *proc_getenv(const struct proc *p, const char *name) {
    if (!p->environ) return NULL;
    size_t n = strlen(name);
    for (char **e = p->environ; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}
