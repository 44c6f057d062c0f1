/* cgroup.c: the cgroup rules of cgroup.h, on text and paths only.
 *
 * No stdio, no malloc, nothing of the allocator: the tools' procfs library compiles this
 * file too.  Paths are built with join() and numbers read with dec(), both bounded by the
 * caller's buffers. */
#include "cgroup.h"

#include <string.h>

#define NO_LIMIT_FROM ((uint64_t)1 << 60) /* v1 spells "no limit" as ~2^63, page-rounded */

/* out = a b c (NULL parts are empty); false when it does not fit in n bytes. */
static bool join(char *out, size_t n, const char *a, const char *b, const char *c) {
    const char *part[3] = {a, b, c};
    size_t k = 0;
    for (int i = 0; i < 3; i++)
        for (const char *s = part[i]; s && *s; s++) {
            if (k + 1 >= n) return false;
            out[k++] = *s;
        }
    if (!n) return false;
    out[k] = 0;
    return true;
}

static const char *skip_blank(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

/* The decimal number at s (saturating at UINT64_MAX); *end just after it.  False when s
 * holds no digit. */
static bool dec(const char *s, uint64_t *v, const char **end) {
    uint64_t x = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
    }
    if (p == s) return false;
    *v = x;
    if (end) *end = p;
    return true;
}

/* ---------------------------------------------------------------- /proc/PID/cgroup */
bool ebbi_cgroup_path(const char *text, const char *controller, char *out, size_t n) {
    size_t cl = controller ? strlen(controller) : 0;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        const char *end = nl ? nl : line + strlen(line);
        const char *c1 = memchr(line, ':', (size_t)(end - line));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
        bool match = false;
        if (c2 && !controller) {
            match = c1 - line == 1 && line[0] == '0' && c2 == c1 + 1; /* "0::PATH" */
        } else if (c2) {
            for (const char *p = c1 + 1; p < c2 && !match;) {
                const char *comma = memchr(p, ',', (size_t)(c2 - p));
                const char *e = comma ? comma : c2;
                match = (size_t)(e - p) == cl && !memcmp(p, controller, cl);
                p = e + 1;
            }
        }
        if (match) {
            size_t len = (size_t)(end - (c2 + 1));
            if (len >= n) return false;
            memcpy(out, c2 + 1, len);
            out[len] = 0;
            return true;
        }
        line = nl ? nl + 1 : NULL;
    }
    return false;
}

/* ---------------------------------------------------------------- values */
bool ebbi_cgroup_limit_value(const char *text, uint64_t *bytes) {
    const char *s = skip_blank(text);
    uint64_t v;
    if (!strncmp(s, "max", 3)) {
        *bytes = 0;
        return true;
    }
    if (!dec(s, &v, NULL)) return false;
    *bytes = v >= NO_LIMIT_FROM ? 0 : v;
    return true;
}

/* The file `name` in dir, read into buf; false when unreadable. */
static bool read_in(ebbi_reader rd, const char *dir, const char *name, char *buf, size_t n) {
    char path[EBBI_CGROUP_PATH + 64];
    return join(path, sizeof path, dir, "/", name) && rd(path, buf, n) > 0;
}

/* Calls visit for d's directory, then each one above it up to and including the mount
 * point, until visit returns true (then true). */
static bool walk_up(const struct ebbi_cgroup_dir *d, bool (*visit)(const char *dir, size_t len, void *arg),
                    void *arg) {
    char dir[EBBI_CGROUP_PATH];
    size_t l = strlen(d->path);
    memcpy(dir, d->path, l + 1);
    for (;;) {
        while (l > d->mount_len && dir[l - 1] == '/') dir[--l] = 0;
        if (visit(dir, l, arg)) return true;
        if (l <= d->mount_len) return false;
        while (l > d->mount_len && dir[l - 1] != '/') l--;
        dir[l] = 0;
    }
}

struct probe {
    ebbi_reader rd;
    const char *file;
};

static bool probe_visit(const char *dir, size_t len, void *arg) {
    (void)len;
    const struct probe *p = arg;
    char buf[64];
    return read_in(p->rd, dir, p->file, buf, sizeof buf);
}

/* ---------------------------------------------------------------- which hierarchy */
/* d = the process's directory in hierarchy m, if the process is in it and it is there. */
static bool find_in(ebbi_reader rd, const char *proc_cgroup, const char *controller,
                    const struct ebbi_cgroup_mount *m, struct ebbi_cgroup_dir *d) {
    char rel[EBBI_CGROUP_PATH];
    if (!m || !m->at || !ebbi_cgroup_path(proc_cgroup, controller, rel, sizeof rel)) return false;
    const char *sub = rel;
    if (m->root && strcmp(m->root, "/")) {
        size_t rl = strlen(m->root);
        if (!strncmp(rel, m->root, rl) && (rel[rl] == '/' || !rel[rl])) sub = rel + rl;
    }
    if (!join(d->path, sizeof d->path, m->at, sub, NULL)) return false;
    size_t ml = strlen(m->at);
    while (ml > 1 && m->at[ml - 1] == '/') ml--;
    d->mount_len = ml;
    if (m->probe) {
        struct probe p = {rd, m->probe};
        if (!walk_up(d, probe_visit, &p)) return false;
    }
    return true;
}

int ebbi_cgroup_find(ebbi_reader rd, const char *proc_cgroup, const char *v1_controller,
                     const struct ebbi_cgroup_mount *v1, const struct ebbi_cgroup_mount *v2,
                     struct ebbi_cgroup_dir *out) {
    out->version = 0;
    if (find_in(rd, proc_cgroup, v1_controller, v1, out)) out->version = 1;
    else if (find_in(rd, proc_cgroup, NULL, v2, out)) out->version = 2;
    return out->version;
}

/* ---------------------------------------------------------------- limits */
struct smallest {
    ebbi_reader rd;
    const char *file;
    uint64_t best;
    size_t at;
};

static bool smallest_visit(const char *dir, size_t len, void *arg) {
    struct smallest *s = arg;
    char buf[64];
    uint64_t v;
    if (read_in(s->rd, dir, s->file, buf, sizeof buf) && ebbi_cgroup_limit_value(buf, &v) && v &&
        (!s->best || v < s->best)) {
        s->best = v;
        s->at = len;
    }
    return false; /* every level: limits nest */
}

uint64_t ebbi_cgroup_min_limit(ebbi_reader rd, const struct ebbi_cgroup_dir *d, const char *file,
                               size_t *at_len) {
    struct smallest s = {rd, file, 0, 0};
    walk_up(d, smallest_visit, &s);
    if (at_len) *at_len = s.at;
    return s.best;
}

/* The quota of one directory: -1 when its files are not there, 0 for none. */
static double quota_in(ebbi_reader rd, int version, const char *dir) {
    char buf[128];
    const char *e;
    uint64_t q, p;
    if (version == 2) {
        if (!read_in(rd, dir, "cpu.max", buf, sizeof buf)) return -1;
        const char *s = skip_blank(buf);
        if (!dec(s, &q, &e) || !dec(skip_blank(e), &p, NULL)) return 0; /* "max 100000" */
    } else {
        char pb[64];
        if (!read_in(rd, dir, "cpu.cfs_quota_us", buf, sizeof buf) ||
            !read_in(rd, dir, "cpu.cfs_period_us", pb, sizeof pb))
            return -1;
        if (!dec(skip_blank(buf), &q, NULL) || !dec(skip_blank(pb), &p, NULL)) return 0; /* -1 */
    }
    return q && p ? (double)q / (double)p : 0;
}

double ebbi_cgroup_quota(ebbi_reader rd, const struct ebbi_cgroup_dir *d) {
    if (!d->version) return 0;
    double c = quota_in(rd, d->version, d->path);
    if (c < 0) {
        char mount[EBBI_CGROUP_PATH];
        memcpy(mount, d->path, d->mount_len);
        mount[d->mount_len] = 0;
        c = quota_in(rd, d->version, mount);
    }
    return c < 0 ? 0 : c;
}

/* ---------------------------------------------------------------- the allocator's view */
static int find_under(ebbi_reader rd, const char *root, const char *proc_cgroup, const char *controller,
                      const char *v1_probe, struct ebbi_cgroup_dir *d) {
    char v1_at[EBBI_CGROUP_PATH];
    if (!join(v1_at, sizeof v1_at, root, "/", controller)) return 0;
    struct ebbi_cgroup_mount v1 = {v1_at, NULL, v1_probe}, v2 = {root, NULL, NULL};
    return ebbi_cgroup_find(rd, proc_cgroup, controller, &v1, &v2, d);
}

uint64_t ebbi_cgroup_parse_limit(ebbi_reader rd, const char *root, const char *proc_cgroup) {
    struct ebbi_cgroup_dir d;
    switch (find_under(rd, root, proc_cgroup, "memory", "memory.limit_in_bytes", &d)) {
    case 1: return ebbi_cgroup_min_limit(rd, &d, "memory.limit_in_bytes", NULL);
    case 2: return ebbi_cgroup_min_limit(rd, &d, "memory.max", NULL);
    default: return 0;
    }
}

double ebbi_cgroup_parse_cpus(ebbi_reader rd, const char *root, const char *proc_cgroup) {
    struct ebbi_cgroup_dir d;
    if (!find_under(rd, root, proc_cgroup, "cpu", "cpu.cfs_period_us", &d)) return 0;
    return ebbi_cgroup_quota(rd, &d);
}
