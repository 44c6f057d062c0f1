/* /proc/PID/maps and smaps: one line parser, an iterator over text, the array of
 * mappings ebb-inspect classifies, and the checks for a mapped file or library. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "procfs.h"

static const char *parse_hex(const char *p, const char *end, uint64_t *v) {
    uint64_t x = 0;
    const char *s = p;
    while (p < end) {
        unsigned d;
        char c = *p;
        if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
        else break;
        x = x * 16 + d;
        p++;
    }
    if (p == s) return NULL;
    *v = x;
    return p;
}

static const char *parse_dec(const char *p, const char *end, uint64_t *v) {
    uint64_t x = 0;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9') x = x * 10 + (uint64_t)(*p++ - '0');
    if (p == s) return NULL;
    *v = x;
    return p;
}

int procfs_maps_line(const char *line, size_t len, struct procfs_map *e) {
    const char *p = line, *end = line + len;
    uint64_t maj, min;
    memset(e, 0, sizeof *e);
    if (!(p = parse_hex(p, end, &e->start)) || p >= end || *p++ != '-') return -1;
    if (!(p = parse_hex(p, end, &e->end)) || p >= end || *p++ != ' ') return -1;
    if (end - p < 5 || p[4] != ' ') return -1;
    memcpy(e->perms, p, 4);
    e->perms[4] = '\0';
    p += 5;
    if (!(p = parse_hex(p, end, &e->offset)) || p >= end || *p++ != ' ') return -1;
    if (!(p = parse_hex(p, end, &maj)) || p >= end || *p++ != ':') return -1;
    if (!(p = parse_hex(p, end, &min)) || p >= end || *p++ != ' ') return -1;
    if (!(p = parse_dec(p, end, &e->inode))) return -1;
    if (e->end < e->start) return -1;
    e->dev_major = (unsigned)maj;
    e->dev_minor = (unsigned)min;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    size_t pl = (size_t)(end - p);
    static const char deleted[] = " (deleted)";
    if (pl >= sizeof deleted - 1 && memcmp(end - (sizeof deleted - 1), deleted, sizeof deleted - 1) == 0) {
        pl -= sizeof deleted - 1;
        e->deleted = true;
    }
    e->path = p;
    e->path_len = pl;
    return 0;
}

/* The line at *cursor (its length in *len), *cursor moved past it; false at the end. */
static bool next_line(const char **cursor, const char **line, size_t *len) {
    const char *p = *cursor;
    if (!p || !*p) return false;
    const char *nl = strchr(p, '\n');
    *line = p;
    *len = nl ? (size_t)(nl - p) : strlen(p);
    *cursor = nl ? nl + 1 : p + *len;
    return true;
}

bool procfs_maps_next(const char **cursor, struct procfs_map *e) {
    const char *line;
    size_t len;
    while (next_line(cursor, &line, &len))
        if (len && procfs_maps_line(line, len, e) == 0) return true;
    return false;
}

bool procfs_maps_has_file(const char *maps_text, const char *real_path, unsigned dev_major,
                          unsigned dev_minor, uint64_t inode) {
    size_t rl = real_path ? strlen(real_path) : 0;
    struct procfs_map e;
    for (const char *c = maps_text; procfs_maps_next(&c, &e);) {
        if (e.path_len == 0 || e.path[0] != '/') continue;
        if (real_path && rl == e.path_len && memcmp(real_path, e.path, rl) == 0) return true;
        if (inode && e.inode == inode && e.dev_major == dev_major && e.dev_minor == dev_minor) return true;
    }
    return false;
}

bool procfs_lib_named(const char *path, size_t len, const char *prefix) {
    const char *base = path + len;
    while (base > path && base[-1] != '/') base--;
    size_t bl = (size_t)(path + len - base), pl = strlen(prefix);
    return bl >= pl && memcmp(base, prefix, pl) == 0;
}

bool procfs_maps_find_lib(const char *maps_text, const char *const *prefixes, char *out, size_t out_len) {
    if (out && out_len) out[0] = '\0';
    struct procfs_map e;
    for (const char *c = maps_text; procfs_maps_next(&c, &e);) {
        if (e.path_len == 0 || e.path[0] != '/') continue;
        for (const char *const *p = prefixes; *p; p++) {
            if (!procfs_lib_named(e.path, e.path_len, *p)) continue;
            if (out && out_len) {
                size_t n = e.path_len < out_len - 1 ? e.path_len : out_len - 1;
                memcpy(out, e.path, n);
                out[n] = '\0';
            }
            return true;
        }
    }
    return false;
}

/* ---- the array ---- */

bool procfs_vma_anon(const struct procfs_vma *v) {
    return v->inode == 0 && v->path[0] == '\0' && v->perms[3] == 'p';
}

bool procfs_vma_is(const struct procfs_vma *v, const char *perms) { return memcmp(v->perms, perms, 4) == 0; }

static struct procfs_vma *push(struct procfs_vmas *m) {
    if (m->n == m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 256;
        struct procfs_vma *nv = realloc(m->v, nc * sizeof *nv);
        if (!nv) return NULL;
        m->v = nv;
        m->cap = nc;
    }
    struct procfs_vma *v = &m->v[m->n++];
    memset(v, 0, sizeof *v);
    return v;
}

/* One "Key:   value kB" line of smaps, for the mapping above it. */
static void smaps_field(struct procfs_vma *v, const char *line) {
    const char *colon = strchr(line, ':');
    if (!colon) return;
    size_t klen = (size_t)(colon - line);
    uint64_t val = strtoull(colon + 1, NULL, 10) * 1024;
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(line, k, klen) == 0)
    if (KEY("Rss")) v->rss = val;
    else if (KEY("Pss")) v->pss = val;
    else if (KEY("Swap")) v->swap = val;
    else if (KEY("Anonymous")) v->anon = val;
    else if (KEY("AnonHugePages")) v->anon_huge = val;
    else if (KEY("VmFlags")) {
        v->nr = strstr(colon, " nr") != NULL;
        v->nh = strstr(colon, " nh") != NULL;
    }
#undef KEY
}

int procfs_vmas_parse(struct procfs_vmas *out, char *text, bool smaps) {
    out->have_smaps = smaps;
    const char *cursor = text, *cline;
    size_t len;
    while (next_line(&cursor, &cline, &len)) {
        char *line = (char *)cline;
        if (!len) continue;
        struct procfs_map e;
        bool header = (line[0] >= '0' && line[0] <= '9') || (line[0] >= 'a' && line[0] <= 'f');
        if (header && procfs_maps_line(line, len, &e) < 0) {
            errno = EINVAL;
            return -1;
        }
        line[len] = '\0';
        if (!header) {
            if (out->n) smaps_field(&out->v[out->n - 1], line);
            continue;
        }
        struct procfs_vma *v = push(out);
        if (!v) {
            errno = ENOMEM;
            return -1;
        }
        v->start = e.start;
        v->end = e.end;
        v->offset = e.offset;
        v->inode = e.inode;
        v->dev_major = e.dev_major;
        v->dev_minor = e.dev_minor;
        memcpy(v->perms, e.perms, sizeof v->perms);
        ((char *)e.path)[e.path_len] = '\0';
        v->path = e.path;
        v->deleted = e.deleted;
    }
    return 0;
}

void procfs_vmas_free(struct procfs_vmas *m) {
    free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}
