/* Lines of "KEY: value" (status, smaps, smaps_rollup, meminfo) and "KEY value"
 * (memory.stat), /proc/PID/stat and /proc/PID/environ. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "procfs.h"

const char *procfs_field(const char *text, const char *key, char sep) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == sep) {
            p += kl + 1;
            while (*p == ' ' || *p == '\t') p++;
            return p;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return NULL;
}

bool procfs_field_u64(const char *text, const char *key, char sep, uint64_t *v) {
    const char *p = procfs_field(text, key, sep);
    if (!p || *p < '0' || *p > '9') return false;
    *v = strtoull(p, NULL, 10);
    return true;
}

long long procfs_field_kib(const char *text, const char *key) {
    uint64_t v;
    return procfs_field_u64(text, key, ':', &v) ? (long long)v : -1;
}

long long procfs_status_kib(pid_t pid, const char *key) {
    char path[64], buf[8192];
    if (pid) snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    else snprintf(path, sizeof path, "/proc/self/status");
    if (!procfs_read_buf(path, buf, sizeof buf)) return -1;
    return procfs_field_kib(buf, key);
}

int procfs_parse_smaps_rollup(const char *text, struct procfs_rollup *out) {
    out->rss_kib = procfs_field_kib(text, "Rss");
    out->pss_kib = procfs_field_kib(text, "Pss");
    out->anon_kib = procfs_field_kib(text, "Anonymous");
    out->anon_huge_kib = procfs_field_kib(text, "AnonHugePages");
    out->swap_kib = procfs_field_kib(text, "Swap");
    return out->rss_kib < 0 ? -1 : 0;
}

int procfs_parse_stat(const char *text, struct procfs_stat *out) {
    memset(out, 0, sizeof *out);
    /* comm may hold spaces and parentheses: the fields resume after the last ')' */
    const char *lp = strchr(text, '('), *rp = strrchr(text, ')');
    if (!lp || !rp || rp < lp || rp[1] != ' ' || !rp[2]) return -1;
    size_t n = (size_t)(rp - lp - 1);
    if (n >= sizeof out->comm) n = sizeof out->comm - 1;
    memcpy(out->comm, lp + 1, n);
    out->comm[n] = '\0';
    const char *f = rp + 2; /* field 3 */
    out->state = *f;
    for (int field = 3; field < 22 && f; field++) {
        f = strchr(f, ' ');
        if (f) f++;
        if (f && field == 13) out->utime = strtoull(f, NULL, 10); /* f is field 14 now */
        if (f && field == 14) out->stime = strtoull(f, NULL, 10);
    }
    if (!f) return -1;
    out->start_time = strtoull(f, NULL, 10);
    return 0;
}

bool procfs_environ_has(const char *buf, size_t len, const char *assignment) {
    size_t al = strlen(assignment);
    for (size_t i = 0; i < len;) {
        const char *s = buf + i;
        size_t sl = strnlen(s, len - i);
        if (sl == al && memcmp(s, assignment, al) == 0) return true;
        i += sl + 1;
    }
    return false;
}
