/* The heap profile printed: top stacks, the summary by library, hints, collapsed stacks
 * for flame graphs, JSON, and growth (against a baseline file or the first --watch sample).
 *
 * Attribution rule: a stack counts under its first frame, innermost first, that lies
 * outside the allocator (libebbmalloc), libc, the dynamic loader and the C++ runtime
 * (libstdc++, libgcc_s): those frames say how memory was asked for (operator new, strdup,
 * std::string's growth), the next one says who asked.  A stack made only of such frames
 * counts under its innermost frame.  JIT-compiled code counts as "[jit or anonymous]".
 *
 * Identity across time: two stacks are the same when their frames' keys are (struct
 * frame_sym): library!function+offset, which survives a restart and a different load
 * address, and one "[jit or anonymous]" for all JIT frames.  Growth adds up the stacks
 * of one identity on each side. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "inspect.h"

#define MiB ((int64_t)1 << 20)

const char *heap_frame_key(const struct heap_stack *s, uint32_t i) {
    if (s->keys) return s->keys[i] ? s->keys[i] : "?";
    return s->sym && s->sym[i] ? s->sym[i]->key : "?";
}

static const char *frame_text(const struct heap_stack *s, uint32_t i) {
    if (s->sym && s->sym[i]) return s->sym[i]->text;
    return heap_frame_key(s, i);
}

void heap_attribute(struct heap_profile *hp) {
    for (size_t i = 0; i < hp->n; i++) {
        struct heap_stack *s = &hp->st[i];
        s->attr = 0;
        for (uint32_t k = 0; s->sym && k < s->depth; k++)
            if (!s->sym[k]->runtime) {
                s->attr = (int)k;
                break;
            }
    }
}

const char *heap_library(const struct heap_stack *s) {
    if (!s->sym || !s->depth) return "?";
    const struct frame_sym *f = s->sym[s->attr];
    switch (f->kind) {
    case FRAME_FILE:
    case FRAME_SPECIAL: return f->module;
    case FRAME_ANON: return "[jit or anonymous]";
    default: return "[unmapped]";
    }
}

bool jni_java_name(const char *name, char *buf, size_t len) {
    if (!name || strncmp(name, "Java_", 5) || !name[5] || len < 2) return false;
    size_t o = 0;
    for (const char *c = name + 5; *c && o + 1 < len; c++) {
        if (*c != '_') {
            buf[o++] = *c;
            continue;
        }
        switch (c[1]) {
        case '1':
            buf[o++] = '_';
            c++;
            break;
        case '2':
            buf[o++] = ';';
            c++;
            break;
        case '3':
            buf[o++] = '[';
            c++;
            break;
        case '0':
            buf[o++] = '?'; /* a non-ASCII character, _0xxxx */
            c += strlen(c) > 5 ? 5 : strlen(c) - 1;
            break;
        case '_': /* "__": the overloaded method's signature follows */ buf[o] = '\0'; return o > 0;
        default: buf[o++] = '.';
        }
    }
    buf[o] = '\0';
    return o > 0 && strchr(buf, '.');
}

/* The innermost JNI entry point of a stack, or NULL. */
static const struct frame_sym *jni_frame(const struct heap_stack *s) {
    for (uint32_t k = 0; s->sym && k < s->depth; k++)
        if (s->sym[k]->function && !strncmp(s->sym[k]->function, "Java_", 5)) return s->sym[k];
    return NULL;
}

/* ---- the summary by library ---- */

struct lib_total {
    const char *lib;
    int64_t bytes, objects;
    size_t stacks;
};

static int lib_cmp(const void *a, const void *b) {
    const struct lib_total *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return strcmp(x->lib, y->lib);
}

static struct lib_total *by_library(const struct heap_profile *hp, size_t *n) {
    struct lib_total *t = calloc(hp->n ? hp->n : 1, sizeof(*t));
    *n = 0;
    for (size_t i = 0; t && i < hp->n; i++) {
        const struct heap_stack *s = &hp->st[i];
        if (s->live_bytes <= 0) continue;
        const char *lib = heap_library(s);
        size_t k = 0;
        while (k < *n && strcmp(t[k].lib, lib)) k++;
        if (k == *n) t[(*n)++].lib = lib;
        t[k].bytes = heap_add(t[k].bytes, s->live_bytes);
        t[k].objects = heap_add(t[k].objects, s->live_objects > 0 ? s->live_objects : 0);
        t[k].stacks++;
    }
    if (t && *n) qsort(t, *n, sizeof(*t), lib_cmp);
    return t;
}

/* ---- growth ---- */

struct keyed {
    char *key;
    const struct heap_stack *s;
};

static int keyed_cmp(const void *a, const void *b) {
    const struct keyed *x = a, *y = b;
    return strcmp(x->key, y->key);
}

static struct keyed *keyed_stacks(const struct heap_profile *hp) {
    struct keyed *k = calloc(hp->n ? hp->n : 1, sizeof(*k));
    for (size_t i = 0; k && i < hp->n; i++) {
        const struct heap_stack *s = &hp->st[i];
        size_t len = 1;
        for (uint32_t f = 0; f < s->depth; f++) len += strlen(heap_frame_key(s, f)) + 1;
        char *p = k[i].key = malloc(len);
        if (!p) continue;
        for (uint32_t f = 0; f < s->depth; f++) {
            size_t l = strlen(heap_frame_key(s, f));
            memcpy(p, heap_frame_key(s, f), l);
            p += l;
            *p++ = '\n';
        }
        *p = '\0';
        k[i].s = s;
    }
    if (k && hp->n)
        for (size_t i = 0; i < hp->n; i++)
            if (!k[i].key) {
                k[i].key = strdup("");
                k[i].s = &hp->st[i];
            }
    if (k && hp->n) qsort(k, hp->n, sizeof(*k), keyed_cmp);
    return k;
}

static int delta_cmp(const void *a, const void *b) {
    const struct heap_delta *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return x->now_bytes < y->now_bytes ? 1 : x->now_bytes > y->now_bytes ? -1 : 0;
}

int heap_growth(const struct heap_profile *base, const struct heap_profile *cur, struct heap_growth *g) {
    memset(g, 0, sizeof(*g));
    struct keyed *kb = keyed_stacks(base), *kc = keyed_stacks(cur);
    g->d = calloc(cur->n ? cur->n : 1, sizeof(*g->d));
    if (!kb || !kc || !g->d) {
        free(g->d);
        g->d = NULL;
        for (size_t i = 0; kb && i < base->n; i++) free(kb[i].key);
        for (size_t i = 0; kc && i < cur->n; i++) free(kc[i].key);
        free(kb);
        free(kc);
        return -1;
    }
    size_t ib = 0;
    for (size_t ic = 0; ic < cur->n;) {
        size_t end = ic;
        struct heap_delta d = {0};
        int64_t objs = 0;
        while (end < cur->n && !strcmp(kc[end].key, kc[ic].key)) {
            const struct heap_stack *s = kc[end].s;
            d.now_bytes = heap_add(d.now_bytes, s->live_bytes);
            objs = heap_add(objs, s->live_objects);
            if (!d.cur || s->live_bytes > d.cur->live_bytes) d.cur = s;
            end++;
        }
        while (ib < base->n && strcmp(kb[ib].key, kc[ic].key) < 0) ib++;
        int64_t bobjs = 0;
        while (ib < base->n && !strcmp(kb[ib].key, kc[ic].key)) {
            d.base_bytes = heap_add(d.base_bytes, kb[ib].s->live_bytes);
            bobjs = heap_add(bobjs, kb[ib].s->live_objects);
            ib++;
        }
        d.bytes = heap_sub(d.now_bytes, d.base_bytes);
        d.objects = heap_sub(objs, bobjs);
        if (d.bytes > 0) g->d[g->n++] = d;
        ic = end;
    }
    if (g->n) qsort(g->d, g->n, sizeof(*g->d), delta_cmp);
    g->total_now = cur->live_bytes;
    g->total_base = base->live_bytes;
    if (cur->taken_ms && base->taken_ms)
        g->elapsed_s = ((double)cur->taken_ms - (double)base->taken_ms) / 1000.0;
    for (size_t i = 0; i < base->n; i++) free(kb[i].key);
    for (size_t i = 0; i < cur->n; i++) free(kc[i].key);
    free(kb);
    free(kc);
    return 0;
}

void heap_growth_free(struct heap_growth *g) {
    free(g->d);
    memset(g, 0, sizeof(*g));
}

/* ---- hints ---- */

static char *delta_str(char *buf, size_t len, int64_t d) {
    char t[24];
    fmt_bytes(t, sizeof(t), d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d);
    snprintf(buf, len, "%s%s", d < 0 ? "-" : "+", t);
    return buf;
}

/* The JNI function under which most of the bytes (live, or growth) lie. */
static const struct frame_sym *top_jni(const struct heap_profile *hp, const struct heap_growth *g,
                                       int64_t *bytes) {
    size_t n = g ? g->n : hp->n;
    const struct frame_sym **fn = calloc(n ? n : 1, sizeof(*fn));
    int64_t *sum = calloc(n ? n : 1, sizeof(*sum));
    size_t nf = 0;
    for (size_t i = 0; fn && sum && i < n; i++) {
        const struct heap_stack *s = g ? g->d[i].cur : &hp->st[i];
        int64_t b = g ? g->d[i].bytes : s->live_bytes;
        const struct frame_sym *j = jni_frame(s);
        if (!j || b <= 0) continue;
        size_t k = 0;
        while (k < nf && strcmp(fn[k]->function, j->function)) k++;
        if (k == nf) fn[nf++] = j;
        sum[k] = heap_add(sum[k], b);
    }
    const struct frame_sym *best = NULL;
    *bytes = 0;
    for (size_t k = 0; k < nf; k++)
        if (sum[k] > *bytes) {
            *bytes = sum[k];
            best = fn[k];
        }
    free(fn);
    free(sum);
    return best;
}

size_t heap_hints(const struct inspection *in, const struct heap_profile *hp, const struct heap_growth *g,
                  char **out, size_t max) {
    char a[32], b[32], c[32];
    size_t n = 0;
#define HINT(...)                                               \
    do {                                                        \
        if (n < max && (out[n] = str_printf(__VA_ARGS__))) n++; \
    } while (0)
    if (!hp->n || hp->live_bytes <= 0)
        HINT("No live allocation is in the profile yet: ebbmalloc samples one allocation every %s "
             "allocated, on average.",
             fmt_bytes(a, sizeof(a), hp->hdr.sample_interval));
    int64_t total = hp->live_bytes;
    if (g) {
        int64_t grown = 0;
        for (size_t i = 0; i < g->n; i++) grown = heap_add(grown, g->d[i].bytes);
        total = grown; /* what grew, not the net change: stacks that shrank do not hide it */
    }
    int64_t jb;
    const struct frame_sym *j = top_jni(hp, g, &jb);
    const char *jlib = NULL;
    if (j && total >= MiB && (double)jb * 2 >= (double)total) {
        char java[512];
        if (!jni_java_name(j->function, java, sizeof(java))) snprintf(java, sizeof(java), "?");
        jlib = j->module;
        if (g)
            HINT("%s of the %s growth (%.0f%%) is under one JNI function, %s (in %s), that is the "
                 "Java method %s() calling native code: that native code allocates and does not "
                 "free. Look at what the Java side does with what %s() returns, and at the "
                 "library's own release call.",
                 fmt_bytes(a, sizeof(a), (uint64_t)jb), fmt_bytes(b, sizeof(b), (uint64_t)total),
                 100.0 * (double)jb / (double)total, j->function, j->module, java, java);
        else
            HINT("%s of the %s estimated live (%.0f%%) was allocated under one JNI function, %s "
                 "(in %s): the Java method %s() calling native code. If it keeps growing "
                 "(ebb-inspect --heap --diff), that native memory is not released.",
                 fmt_bytes(a, sizeof(a), (uint64_t)jb), fmt_bytes(b, sizeof(b), (uint64_t)total),
                 100.0 * (double)jb / (double)total, j->function, j->module, java);
    }
    if (!g) {
        size_t nl;
        struct lib_total *t = by_library(hp, &nl);
        if (t && nl && total >= MiB && (double)t[0].bytes * 2 >= (double)total &&
            (!jlib || strcmp(jlib, t[0].lib)))
            HINT("%s holds %.0f%% of the estimated live bytes (%s of %s): its stacks above are "
                 "where to look first.",
                 t[0].lib, 100.0 * (double)t[0].bytes / (double)total,
                 fmt_bytes(a, sizeof(a), (uint64_t)t[0].bytes), fmt_bytes(b, sizeof(b), (uint64_t)total));
        free(t);
    } else if (g->n && !jlib && total >= MiB && (double)g->d[0].bytes * 10 >= (double)total * 8) {
        const struct heap_stack *s = g->d[0].cur;
        HINT("One call stack holds %.0f%% of the growth (%s), allocated at %s.",
             100.0 * (double)g->d[0].bytes / (double)total, delta_str(a, sizeof(a), g->d[0].bytes),
             frame_text(s, (uint32_t)s->attr));
    }
    bool jit = false;
    for (size_t i = 0; i < hp->n && !jit; i++)
        for (uint32_t k = 0; hp->st[i].sym && k < hp->st[i].depth; k++)
            if (hp->st[i].sym[k]->kind == FRAME_ANON) jit = true;
    if (jit && in->is_jvm)
        HINT("Frames shown as [jit or anonymous ...] lie in memory that no file backs: in a JVM, "
             "JIT-compiled Java code, which has no symbols. A JNI function (Java_...) next to them "
             "names the Java method that called into native code.");
    if (hp->hdr.dropped)
        HINT("%" PRIu64 " samples could not be recorded (the profile's table or frame area was "
             "full): the figures above undercount, and stacks first seen after it filled are "
             "missing.",
             hp->hdr.dropped);
    if (hp->changed)
        HINT("%zu stacks were being rewritten while they were read and are left out; run again to "
             "see them.",
             hp->changed);
    if (in->stats.state == STATS_OK && hp->live_bytes > 0 && !g) {
        uint64_t used = in->stats.page.stats.in_use;
        if ((uint64_t)hp->live_bytes * 2 < used && used > 8 * (uint64_t)MiB)
            HINT("The profile estimates %s live, ebbmalloc has %s in use: the estimate is "
                 "statistical (one sample per %s) and converges as more is allocated.",
                 fmt_bytes(a, sizeof(a), (uint64_t)hp->live_bytes), fmt_bytes(b, sizeof(b), used),
                 fmt_bytes(c, sizeof(c), hp->hdr.sample_interval));
    }
#undef HINT
    return n;
}

static void print_hints(FILE *f, const struct inspection *in, const struct heap_profile *hp,
                        const struct heap_growth *g) {
    char *h[8];
    size_t n = heap_hints(in, hp, g, h, 8);
    if (n) fprintf(f, "\nhints:\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "  - %s\n", h[i]);
        free(h[i]);
    }
}

/* ---- text ---- */

static void print_frames(FILE *f, const struct heap_stack *s) {
    for (uint32_t k = 0; k < s->depth; k++)
        fprintf(f, "      %s %s\n", (int)k == s->attr ? "*" : " ", frame_text(s, k));
}

static void header(FILE *f, const struct inspection *in, const struct heap_profile *hp) {
    char a[32], b[32];
    const struct ebb_prof_header *h = &hp->hdr;
    fprintf(f, "heap profile of pid %d (%s): %s, updated %.1f s ago\n", (int)in->proc.pid, in->proc.comm,
            hp->reason, (double)(hp->age_ms > 0 ? hp->age_ms : 0) / 1000.0);
    fprintf(f,
            "one sample per %s allocated on average; %" PRIu64 " samples, %" PRIu64
            " dropped; %zu stacks (table of %" PRIu32 " slots, %" PRIu64 " of %" PRIu64 " frames used)\n",
            fmt_bytes(a, sizeof(a), h->sample_interval), h->samples, h->dropped, hp->n, h->slot_count,
            h->frames_used, h->frames_cap);
    fprintf(f, "estimated live: %s in %" PRId64 " objects", fmt_bytes(a, sizeof(a), (uint64_t)hp->live_bytes),
            hp->live_objects);
    if (in->stats.state == STATS_OK)
        fprintf(f, " (ebbmalloc's stats page: %s in use)",
                fmt_bytes(b, sizeof(b), in->stats.page.stats.in_use));
    fputc('\n', f);
}

void heap_report_text(FILE *f, const struct inspection *in, const struct heap_profile *hp, size_t top) {
    char a[32], b[32];
    header(f, in, hp);
    size_t live = 0;
    for (size_t i = 0; i < hp->n; i++) live += hp->st[i].live_bytes > 0;
    size_t shown = live < top ? live : top;
    if (shown) {
        fprintf(f,
                "\ntop %zu stack%s by estimated live bytes, of %zu (frames innermost first; "
                "* the frame the stack is counted under):\n",
                shown, shown == 1 ? "" : "s", live);
        for (size_t i = 0; i < shown; i++) {
            const struct heap_stack *s = &hp->st[i];
            fprintf(f,
                    "  #%zu  %s live in %" PRId64 " object%s (allocated since start: %s in %" PRIu64
                    " object%s)\n",
                    i + 1, fmt_bytes(a, sizeof(a), (uint64_t)s->live_bytes), s->live_objects,
                    s->live_objects == 1 ? "" : "s", fmt_bytes(b, sizeof(b), s->total_bytes),
                    s->total_objects, s->total_objects == 1 ? "" : "s");
            print_frames(f, s);
        }
        size_t nl;
        struct lib_total *t = by_library(hp, &nl);
        if (t && nl) {
            fprintf(f, "\nby library (each stack under its first frame outside the allocator, libc, "
                       "the loader and the C++ runtime):\n");
            fprintf(f, "  %-32s %10s %6s %10s %7s\n", "library", "live", "share", "objects", "stacks");
            for (size_t k = 0; k < nl; k++)
                fprintf(f, "  %-32s %10s %5.1f%% %10" PRId64 " %7zu\n", t[k].lib,
                        fmt_bytes(a, sizeof(a), (uint64_t)t[k].bytes),
                        hp->live_bytes ? 100.0 * (double)t[k].bytes / (double)hp->live_bytes : 0.0,
                        t[k].objects, t[k].stacks);
        }
        free(t);
    }
    print_hints(f, in, hp, NULL);
}

void heap_report_diff(FILE *f, const struct inspection *in, const struct heap_profile *hp,
                      const struct heap_growth *g, const char *from, size_t top) {
    char a[32], b[32], c[32];
    header(f, in, hp);
    fprintf(f, "\ngrowth since %s (%.1f s earlier): estimated live %s -> %s (%s); %zu stack%s grew\n", from,
            g->elapsed_s, fmt_bytes(a, sizeof(a), (uint64_t)(g->total_base > 0 ? g->total_base : 0)),
            fmt_bytes(b, sizeof(b), (uint64_t)(g->total_now > 0 ? g->total_now : 0)),
            delta_str(c, sizeof(c), heap_sub(g->total_now, g->total_base)), g->n, g->n == 1 ? "" : "s");
    size_t shown = g->n < top ? g->n : top;
    for (size_t i = 0; i < shown; i++) {
        const struct heap_delta *d = &g->d[i];
        fprintf(f, "  #%zu  %s, %+" PRId64 " objects (%s -> %s)\n", i + 1, delta_str(a, sizeof(a), d->bytes),
                d->objects, fmt_bytes(b, sizeof(b), (uint64_t)(d->base_bytes > 0 ? d->base_bytes : 0)),
                fmt_bytes(c, sizeof(c), (uint64_t)(d->now_bytes > 0 ? d->now_bytes : 0)));
        print_frames(f, d->cur);
    }
    if (shown < g->n) fprintf(f, "  ... %zu more stacks grew less\n", g->n - shown);
    print_hints(f, in, hp, g);
}

void heap_report_watch(FILE *f, const struct heap_profile *hp, const struct heap_growth *g, size_t top) {
    char a[32], b[32], c[32];
    fprintf(f, "\n+%.1fs  estimated live %s (%s since the first sample), %zu stack%s grew\n", g->elapsed_s,
            fmt_bytes(a, sizeof(a), (uint64_t)(hp->live_bytes > 0 ? hp->live_bytes : 0)),
            delta_str(b, sizeof(b), heap_sub(g->total_now, g->total_base)), g->n, g->n == 1 ? "" : "s");
    size_t shown = g->n < top ? g->n : top;
    for (size_t i = 0; i < shown; i++) {
        const struct heap_delta *d = &g->d[i];
        const struct heap_stack *s = d->cur;
        fprintf(f, "  %10s %+8" PRId64 " objects  now %9s  ", delta_str(a, sizeof(a), d->bytes), d->objects,
                fmt_bytes(c, sizeof(c), (uint64_t)(d->now_bytes > 0 ? d->now_bytes : 0)));
        for (uint32_t k = (uint32_t)s->attr, m = 0; k < s->depth && m < 3; k++, m++)
            fprintf(f, "%s%s", m ? " <- " : "", frame_text(s, k));
        fputc('\n', f);
    }
}

/* ---- collapsed stacks ---- */

/* A frame as flame graphs want it: one box per function, so no offset and no line. */
static void collapsed_frame(char *buf, size_t len, const struct heap_stack *s, uint32_t k) {
    const struct frame_sym *fs = s->sym ? s->sym[k] : NULL;
    if (fs && fs->kind == FRAME_FILE && fs->function) snprintf(buf, len, "%s!%s", fs->module, fs->function);
    else snprintf(buf, len, "%s", heap_frame_key(s, k));
    for (char *c = buf; *c; c++)
        if (*c == ';') *c = ',';
}

struct cline {
    char *text;
    int64_t bytes;
};

static int cline_cmp(const void *a, const void *b) {
    return strcmp(((const struct cline *)a)->text, ((const struct cline *)b)->text);
}

void heap_report_collapsed(FILE *f, const struct heap_profile *hp) {
    struct cline *l = calloc(hp->n ? hp->n : 1, sizeof(*l));
    size_t n = 0;
    char fr[1024];
    for (size_t i = 0; l && i < hp->n; i++) {
        const struct heap_stack *s = &hp->st[i];
        if (s->live_bytes <= 0 || !s->depth) continue;
        char *buf = NULL;
        size_t blen = 0;
        FILE *m = open_memstream(&buf, &blen);
        if (!m) continue;
        for (uint32_t k = s->depth; k-- > 0;) {
            collapsed_frame(fr, sizeof(fr), s, k);
            fprintf(m, "%s%s", k + 1 == s->depth ? "" : ";", fr);
        }
        fclose(m);
        l[n].text = buf;
        l[n++].bytes = s->live_bytes;
    }
    if (n) qsort(l, n, sizeof(*l), cline_cmp);
    for (size_t i = 0; i < n;) {
        size_t e = i;
        int64_t sum = 0;
        while (e < n && !strcmp(l[e].text, l[i].text)) sum = heap_add(sum, l[e++].bytes);
        fprintf(f, "%s %" PRId64 "\n", l[i].text, sum);
        i = e;
    }
    for (size_t i = 0; i < n; i++) free(l[i].text);
    free(l);
}

/* ---- JSON ---- */

static void jput(FILE *f, const char *s) {
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static const char *kind_name(enum frame_kind k) {
    switch (k) {
    case FRAME_FILE: return "file";
    case FRAME_ANON: return "jit_or_anonymous";
    case FRAME_SPECIAL: return "special";
    default: return "unmapped";
    }
}

static void json_frames(FILE *f, const struct heap_stack *s) {
    fputs("\"frames\":[", f);
    for (uint32_t k = 0; k < s->depth; k++) {
        const struct frame_sym *fs = s->sym ? s->sym[k] : NULL;
        fputs(k ? ",{" : "{", f);
        if (!fs) {
            fputs("\"key\":", f);
            jput(f, heap_frame_key(s, k));
            fputc('}', f);
            continue;
        }
        fprintf(f, "\"address\":\"0x%" PRIx64 "\",\"kind\":\"%s\",\"text\":", fs->pc, kind_name(fs->kind));
        jput(f, fs->text);
        fputs(",\"key\":", f);
        jput(f, fs->key);
        fputs(",\"library\":", f);
        jput(f, fs->kind == FRAME_FILE || fs->kind == FRAME_SPECIAL ? fs->module : NULL);
        fputs(",\"path\":", f);
        jput(f, fs->path);
        fputs(",\"build_id\":", f);
        jput(f, fs->build_id);
        fputs(",\"function\":", f);
        jput(f, fs->function);
        fputs(",\"system_name\":", f);
        jput(f, fs->system_name);
        if (fs->function) fprintf(f, ",\"offset\":%" PRIu64, fs->offset);
        if (fs->kind == FRAME_FILE) fprintf(f, ",\"relative_address\":\"0x%" PRIx64 "\"", fs->rel);
        fputs(",\"file\":", f);
        jput(f, fs->src_file);
        if (fs->src_file) fprintf(f, ",\"line\":%d", fs->line);
        fputc('}', f);
    }
    fputc(']', f);
}

void heap_json(FILE *f, const struct inspection *in, const struct heap_profile *hp,
               const struct heap_growth *g) {
    fprintf(f, "{\"state\":\"%s\",\"detail\":",
            hp->state == HEAP_OK        ? "ok"
            : hp->state == HEAP_REFUSED ? "refused"
                                        : "absent");
    jput(f, hp->reason);
    if (hp->state != HEAP_OK) {
        fputc('}', f);
        return;
    }
    const struct ebb_prof_header *h = &hp->hdr;
    fputs(",\"file\":", f);
    jput(f, hp->path);
    fprintf(f,
            ",\"age_ms\":%" PRId64 ",\"sample_interval_bytes\":%" PRIu64 ",\"samples\":%" PRIu64
            ",\"dropped\":%" PRIu64 ",\"slot_count\":%" PRIu32 ",\"frames_used\":%" PRIu64
            ",\"frames_cap\":%" PRIu64 ",\"stacks_changed_while_read\":%zu,\"live_bytes\":%" PRId64
            ",\"live_objects\":%" PRId64 ",\"stacks\":[",
            hp->age_ms, h->sample_interval, h->samples, h->dropped, h->slot_count, h->frames_used,
            h->frames_cap, hp->changed, hp->live_bytes, hp->live_objects);
    for (size_t i = 0; i < hp->n; i++) {
        const struct heap_stack *s = &hp->st[i];
        fprintf(f,
                "%s{\"live_bytes\":%" PRId64 ",\"live_objects\":%" PRId64 ",\"total_bytes\":%" PRIu64
                ",\"total_objects\":%" PRIu64 ",\"library\":",
                i ? "," : "", s->live_bytes, s->live_objects, s->total_bytes, s->total_objects);
        jput(f, heap_library(s));
        fprintf(f, ",\"attributed_frame\":%d,", s->attr);
        json_frames(f, s);
        fputc('}', f);
    }
    fputs("],\"libraries\":[", f);
    size_t nl;
    struct lib_total *t = by_library(hp, &nl);
    for (size_t k = 0; t && k < nl; k++) {
        fputs(k ? ",{\"library\":" : "{\"library\":", f);
        jput(f, t[k].lib);
        fprintf(f, ",\"live_bytes\":%" PRId64 ",\"live_objects\":%" PRId64 ",\"stacks\":%zu}", t[k].bytes,
                t[k].objects, t[k].stacks);
    }
    free(t);
    fputs("],\"hints\":[", f);
    char *hs[8];
    size_t nh = heap_hints(in, hp, g, hs, 8);
    for (size_t i = 0; i < nh; i++) {
        if (i) fputc(',', f);
        jput(f, hs[i]);
        free(hs[i]);
    }
    fputs("],\"growth\":", f);
    if (!g) {
        fputs("null}", f);
        return;
    }
    fprintf(f, "{\"elapsed_s\":%.3f,\"live_bytes\":%" PRId64 ",\"base_live_bytes\":%" PRId64 ",\"stacks\":[",
            g->elapsed_s, g->total_now, g->total_base);
    for (size_t i = 0; i < g->n; i++) {
        const struct heap_delta *d = &g->d[i];
        fprintf(f,
                "%s{\"growth_bytes\":%" PRId64 ",\"growth_objects\":%" PRId64 ",\"live_bytes\":%" PRId64
                ",\"base_live_bytes\":%" PRId64 ",\"library\":",
                i ? "," : "", d->bytes, d->objects, d->now_bytes, d->base_bytes);
        jput(f, heap_library(d->cur));
        fputc(',', f);
        json_frames(f, d->cur);
        fputc('}', f);
    }
    fputs("]}}", f);
}
