/* --heap --pprof FILE: the profile as pprof's profile.proto, gzip-compressed.
 *
 * A small protobuf writer (varints and length-delimited fields are all profile.proto
 * needs) builds:
 *   sample_type     [inuse_objects/count, inuse_space/bytes]; default inuse_space
 *   sample          one per stack with live bytes: location ids leaf first, the two values
 *   mapping         one per mapped file range that holds a frame, the main program's first:
 *                   start, limit, file offset, file name, GNU build id (hex)
 *   location        one per distinct frame: address (return address - 1, inside the call),
 *                   its mapping, one line {function, line number}
 *   function        name (demangled), system_name (as in the symbol table), source file
 *   period_type     space/bytes, period = the mean sample interval
 *   time_nanos, a comment naming the process, and the string table (entry 0 is "").
 * Frames are symbolised already, so pprof shows them without the binaries; JIT frames are
 * a function "[jit or anonymous]" without a mapping. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

#include "inspect.h"

/* ---- protobuf encoding ---- */

struct pb {
    unsigned char *b;
    size_t n, cap;
    bool oom;
};

static void pb_put(struct pb *p, const void *d, size_t n) {
    if (p->oom) return;
    if (p->n + n > p->cap) {
        size_t nc = p->cap ? p->cap : 256;
        while (nc < p->n + n) nc *= 2;
        unsigned char *nb = realloc(p->b, nc);
        if (!nb) {
            p->oom = true;
            return;
        }
        p->b = nb;
        p->cap = nc;
    }
    memcpy(p->b + p->n, d, n);
    p->n += n;
}

static void pb_varint(struct pb *p, uint64_t v) {
    unsigned char t[10];
    size_t n = 0;
    do {
        t[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    pb_put(p, t, n);
}

enum { WT_VARINT = 0, WT_LEN = 2 };

static void pb_key(struct pb *p, unsigned field, unsigned wt) { pb_varint(p, (uint64_t)field << 3 | wt); }

/* proto3: a zero scalar is not written */
static void pb_uint(struct pb *p, unsigned field, uint64_t v) {
    if (!v) return;
    pb_key(p, field, WT_VARINT);
    pb_varint(p, v);
}

static void pb_int(struct pb *p, unsigned field, int64_t v) { pb_uint(p, field, (uint64_t)v); }

static void pb_bytes(struct pb *p, unsigned field, const void *d, size_t n) {
    pb_key(p, field, WT_LEN);
    pb_varint(p, n);
    pb_put(p, d, n);
}

/* Append sub as a length-delimited field, then empty sub for reuse. */
static void pb_msg(struct pb *p, unsigned field, struct pb *sub) {
    if (sub->oom) p->oom = true;
    pb_bytes(p, field, sub->b, sub->n);
    sub->n = 0;
}

/* ---- tables: strings and ids ---- */

struct strtab {
    char **s; /* by index */
    size_t n, cap;
    size_t *slot; /* open addressing: index + 1, 0 empty */
    size_t nslot;
    bool oom;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int64_t str_id(struct strtab *t, const char *s) {
    if (!s) s = "";
    if ((t->n + 1) * 2 > t->nslot) {
        size_t ns = t->nslot ? t->nslot * 2 : 1024;
        size_t *nsl = calloc(ns, sizeof(*nsl));
        if (!nsl) {
            t->oom = true;
            return 0;
        }
        for (size_t i = 0; i < t->n; i++) {
            size_t h = (size_t)hash_str(t->s[i]) & (ns - 1);
            while (nsl[h]) h = (h + 1) & (ns - 1);
            nsl[h] = i + 1;
        }
        free(t->slot);
        t->slot = nsl;
        t->nslot = ns;
    }
    size_t h = (size_t)hash_str(s) & (t->nslot - 1);
    while (t->slot[h]) {
        if (!strcmp(t->s[t->slot[h] - 1], s)) return (int64_t)(t->slot[h] - 1);
        h = (h + 1) & (t->nslot - 1);
    }
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 256;
        char **nv = realloc(t->s, nc * sizeof(*nv));
        if (!nv) {
            t->oom = true;
            return 0;
        }
        t->s = nv;
        t->cap = nc;
    }
    if (!(t->s[t->n] = strdup(s))) {
        t->oom = true;
        return 0;
    }
    t->slot[h] = ++t->n;
    return (int64_t)(t->n - 1);
}

/* Pointer -> id (1-based), open addressing. */
struct idmap {
    uintptr_t *key;
    uint64_t *val;
    size_t n, cap;
    bool oom;
};

static uint64_t id_get(struct idmap *m, uintptr_t k, bool *fresh) {
    *fresh = false;
    if ((m->n + 1) * 2 > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 1024;
        uintptr_t *nk = calloc(nc, sizeof(*nk));
        uint64_t *nv = calloc(nc, sizeof(*nv));
        if (!nk || !nv) {
            free(nk);
            free(nv);
            m->oom = true;
            return 0;
        }
        for (size_t i = 0; i < m->cap; i++)
            if (m->key[i]) {
                size_t h = (size_t)((m->key[i] * 0x9e3779b97f4a7c15ull) >> 20) & (nc - 1);
                while (nk[h]) h = (h + 1) & (nc - 1);
                nk[h] = m->key[i];
                nv[h] = m->val[i];
            }
        free(m->key);
        free(m->val);
        m->key = nk;
        m->val = nv;
        m->cap = nc;
    }
    size_t h = (size_t)((k * 0x9e3779b97f4a7c15ull) >> 20) & (m->cap - 1);
    while (m->key[h]) {
        if (m->key[h] == k) return m->val[h];
        h = (h + 1) & (m->cap - 1);
    }
    m->key[h] = k;
    m->val[h] = ++m->n;
    *fresh = true;
    return m->val[h];
}

static void id_free(struct idmap *m) {
    free(m->key);
    free(m->val);
}

/* ---- the profile ---- */

struct mapping {
    uint64_t start, end, offset;
    const char *path, *build_id;
    bool functions, lines;
};

static uint64_t mapping_for(struct mapping **maps, size_t *n, uint64_t start, uint64_t end, uint64_t offset,
                            const char *path, const char *build_id) {
    for (size_t i = 0; i < *n; i++)
        if ((*maps)[i].start == start) return i + 1;
    struct mapping *nm = realloc(*maps, (*n + 1) * sizeof(**maps));
    if (!nm) return 0;
    *maps = nm;
    nm[*n] = (struct mapping){start, end, offset, path, build_id, false, false};
    return ++*n;
}

static void value_type(struct pb *out, unsigned field, struct strtab *st, const char *type, const char *unit,
                       struct pb *tmp) {
    pb_int(tmp, 1, str_id(st, type));
    pb_int(tmp, 2, str_id(st, unit));
    pb_msg(out, field, tmp);
}

/* What a profile is built from: the message being written, scratch messages, the string
 * table, the ids given to locations and functions, and the mappings seen. */
struct pprof_build {
    struct pb out, tmp, sub, locs, funcs;
    struct strtab st;
    struct idmap loc_ids, fn_ids;
    struct mapping *maps;
    size_t nmaps;
};

/* Mapping 1 is the main program, as pprof expects. */
static void add_main_mapping(struct pprof_build *b, const struct inspection *in,
                             const struct heap_profile *hp) {
    for (size_t i = 0; i < in->maps.n && in->proc.exe_known; i++) {
        const struct procfs_vma *v = &in->maps.v[i];
        if (v->perms[2] == 'x' && v->inode == in->proc.exe_ino &&
            makedev(v->dev_major, v->dev_minor) == in->proc.exe_dev) {
            const char *bid = NULL;
            for (size_t s = 0; s < hp->n && !bid; s++)
                for (uint32_t k = 0; hp->st[s].sym && k < hp->st[s].depth; k++)
                    if (hp->st[s].sym[k]->map_start == v->start) {
                        bid = hp->st[s].sym[k]->build_id;
                        break;
                    }
            mapping_for(&b->maps, &b->nmaps, v->start, v->end, v->offset, v->path, bid);
            break;
        }
    }
}

/* The location of a frame seen for the first time (id), with its line and its function
 * (added once: function ids are keyed by name; the key strings live in the string
 * table).  False when out of memory. */
static bool add_location(struct pprof_build *b, const struct frame_sym *fs, uint64_t id) {
    uint64_t mid = 0;
    if (fs->kind == FRAME_FILE || fs->kind == FRAME_SPECIAL)
        mid = mapping_for(&b->maps, &b->nmaps, fs->map_start, fs->map_end, fs->map_offset,
                          fs->path ? fs->path : fs->module, fs->build_id);
    const char *name = fs->function ? fs->function : fs->key;
    pb_uint(&b->tmp, 1, id);
    pb_uint(&b->tmp, 2, mid);
    pb_uint(&b->tmp, 3, fs->pc ? fs->pc - 1 : 0);
    char *fkey;
    if (asprintf(&fkey, "%s\x01%s\x01%s", name, fs->system_name ? fs->system_name : "",
                 fs->src_file ? fs->src_file : "") < 0)
        return false;
    int64_t fk = str_id(&b->st, fkey);
    free(fkey);
    bool fresh;
    uint64_t fid = id_get(&b->fn_ids, (uintptr_t)fk + 1, &fresh);
    if (fresh) {
        pb_uint(&b->sub, 1, fid);
        pb_int(&b->sub, 2, str_id(&b->st, name));
        pb_int(&b->sub, 3, str_id(&b->st, fs->system_name ? fs->system_name : name));
        pb_int(&b->sub, 4, str_id(&b->st, fs->src_file));
        pb_msg(&b->funcs, 5, &b->sub);
    }
    pb_uint(&b->sub, 1, fid);
    pb_int(&b->sub, 2, fs->line);
    pb_msg(&b->tmp, 4, &b->sub);
    if (mid && fs->function) b->maps[mid - 1].functions = true;
    if (mid && fs->src_file) b->maps[mid - 1].lines = true;
    pb_msg(&b->locs, 4, &b->tmp);
    return true;
}

/* One stack with live bytes: its new locations, then the sample (packed location ids,
 * packed values).  False when out of memory. */
static bool add_sample(struct pprof_build *b, const struct heap_stack *s) {
    uint64_t ids[EBB_PROF_MAX_FRAMES];
    for (uint32_t k = 0; k < s->depth; k++) {
        bool fresh;
        ids[k] = id_get(&b->loc_ids, (uintptr_t)s->sym[k], &fresh);
        if (fresh && !add_location(b, s->sym[k], ids[k])) return false;
    }
    struct pb packed = {0};
    for (uint32_t k = 0; k < s->depth; k++) pb_varint(&packed, ids[k]);
    pb_msg(&b->tmp, 1, &packed);
    pb_varint(&packed, (uint64_t)(s->live_objects > 0 ? s->live_objects : 0));
    pb_varint(&packed, (uint64_t)s->live_bytes);
    pb_msg(&b->tmp, 2, &packed);
    free(packed.b);
    pb_msg(&b->out, 2, &b->tmp);
    return true;
}

static void add_mappings(struct pprof_build *b) {
    for (size_t i = 0; i < b->nmaps; i++) {
        const struct mapping *m = &b->maps[i];
        pb_uint(&b->tmp, 1, i + 1);
        pb_uint(&b->tmp, 2, m->start);
        pb_uint(&b->tmp, 3, m->end);
        pb_uint(&b->tmp, 4, m->offset);
        pb_int(&b->tmp, 5, str_id(&b->st, m->path));
        pb_int(&b->tmp, 6, str_id(&b->st, m->build_id));
        pb_uint(&b->tmp, 7, m->functions);
        pb_uint(&b->tmp, 8, m->lines);
        pb_uint(&b->tmp, 9, m->lines);
        pb_msg(&b->out, 3, &b->tmp);
    }
}

/* The profile's own fields after the samples: locations, functions, the comment, the
 * period, the time, the default sample type, and the string table last. */
static void add_trailer(struct pprof_build *b, const struct inspection *in, const struct heap_profile *hp) {
    struct pb *out = &b->out;
    pb_put(out, b->locs.b, b->locs.n);
    pb_put(out, b->funcs.b, b->funcs.n);
    char comment[512];
    snprintf(comment, sizeof(comment), "ebb-inspect --heap: pid %d (%s), %s", (int)in->proc.pid,
             in->proc.comm, hp->path);
    int64_t cid = str_id(&b->st, comment);
    int64_t dflt = str_id(&b->st, "inuse_space");
    value_type(out, 11, &b->st, "space", "bytes", &b->tmp);
    pb_int(out, 12, (int64_t)hp->hdr.sample_interval);
    pb_int(out, 9, (int64_t)hp->taken_ms * 1000000);
    pb_key(out, 13, WT_LEN); /* packed comment ids */
    struct pb c = {0};
    pb_varint(&c, (uint64_t)cid);
    pb_varint(out, c.n);
    pb_put(out, c.b, c.n);
    free(c.b);
    pb_int(out, 14, dflt);
    for (size_t i = 0; i < b->st.n; i++) pb_bytes(out, 6, b->st.s[i], strlen(b->st.s[i]));
}

static bool build_oom(const struct pprof_build *b) {
    return b->out.oom || b->tmp.oom || b->sub.oom || b->locs.oom || b->funcs.oom || b->st.oom ||
           b->loc_ids.oom || b->fn_ids.oom;
}

static void build_free(struct pprof_build *b) {
    free(b->out.b);
    free(b->tmp.b);
    free(b->sub.b);
    free(b->locs.b);
    free(b->funcs.b);
    for (size_t i = 0; i < b->st.n; i++) free(b->st.s[i]);
    free(b->st.s);
    free(b->st.slot);
    id_free(&b->loc_ids);
    id_free(&b->fn_ids);
    free(b->maps);
}

/* The message gzipped into a file beside file, renamed over it once whole. */
static int write_gz(const char *file, const struct pb *out, char *err, size_t errlen) {
    char *tmpname;
    if (asprintf(&tmpname, "%s.tmp.%d", file, (int)getpid()) < 0) return -1;
    gzFile gz = gzopen(tmpname, "wb9");
    if (!gz) {
        snprintf(err, errlen, "cannot write %s: %s", tmpname, strerror(errno));
        free(tmpname);
        return -1;
    }
    bool ok = out->n == 0 || gzwrite(gz, out->b, (unsigned)out->n) == (int)out->n;
    if (gzclose(gz) != Z_OK) ok = false;
    if (!ok || rename(tmpname, file) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", file, strerror(errno));
        unlink(tmpname);
        free(tmpname);
        return -1;
    }
    free(tmpname);
    return 0;
}

int heap_pprof_write(const char *file, const struct inspection *in, const struct heap_profile *hp, char *err,
                     size_t errlen) {
    struct pprof_build b = {0};
    int rc = -1;
    str_id(&b.st, "");
    add_main_mapping(&b, in, hp);
    value_type(&b.out, 1, &b.st, "inuse_objects", "count", &b.tmp);
    value_type(&b.out, 1, &b.st, "inuse_space", "bytes", &b.tmp);
    for (size_t i = 0; i < hp->n; i++) {
        const struct heap_stack *s = &hp->st[i];
        if (s->live_bytes > 0 && s->sym && !add_sample(&b, s)) goto out;
    }
    add_mappings(&b);
    add_trailer(&b, in, hp);
    if (build_oom(&b)) {
        snprintf(err, errlen, "out of memory building the profile");
        goto out;
    }
    rc = write_gz(file, &b.out, err, errlen);
out:
    build_free(&b);
    return rc;
}
