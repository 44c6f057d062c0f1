/* Printing an inspection: readable text, JSON, growth since a baseline, hints. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "inspect.h"

#define MiB ((uint64_t)1 << 20)

char *str_vprintf(const char *fmt, va_list ap) {
    char *s = NULL;
    return vasprintf(&s, fmt, ap) < 0 ? NULL : s;
}

char *str_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = str_vprintf(fmt, ap);
    va_end(ap);
    return s;
}

char *fmt_bytes(char *buf, size_t len, uint64_t b) {
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0) snprintf(buf, len, "%" PRIu64 " B", b);
    else snprintf(buf, len, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

static char *fmt_delta(char *buf, size_t len, int64_t d) {
    char t[24];
    fmt_bytes(t, sizeof(t), (uint64_t)(d < 0 ? -d : d));
    snprintf(buf, len, "%s%s", d < 0 ? "-" : "+", t);
    return buf;
}

uint64_t parse_size(const char *s, bool *ok) {
    char *e;
    *ok = false;
    if (!s || !*s || *s == '-') return 0;
    uint64_t v = strtoull(s, &e, 10);
    if (e == s) return 0;
    uint64_t mul = 1;
    switch (*e) {
    case 'k':
    case 'K':
        mul = 1ull << 10;
        e++;
        break;
    case 'm':
    case 'M':
        mul = 1ull << 20;
        e++;
        break;
    case 'g':
    case 'G':
        mul = 1ull << 30;
        e++;
        break;
    case 't':
    case 'T':
        mul = 1ull << 40;
        e++;
        break;
    default: break;
    }
    if (mul > 1 && (*e == 'b' || *e == 'B')) e++;
    if (*e) return 0;
    *ok = true;
    return v * mul;
}

/* ---- hints ---- */

static void hint(struct inspection *in, const char *fmt, ...) {
    if (in->nhints == sizeof(in->hints) / sizeof(in->hints[0])) return;
    va_list ap;
    va_start(ap, fmt);
    char *s = str_vprintf(fmt, ap);
    if (s) in->hints[in->nhints++] = s;
    va_end(ap);
}

void make_hints(struct inspection *in) {
    char a[32], b[32], c[32], d[32];
    if (!in->maps_ok) {
        hint(in,
             "Only the totals of /proc/%d/status could be read: run ebb-inspect as root or as "
             "the process's user for the breakdown.",
             (int)in->proc.pid);
    }
    const struct cat_total *ar = &in->cat[CAT_ARENAS], *mh = &in->cat[CAT_MAIN_HEAP];
    if (in->nheaps >= 2 && ar->rss > mh->rss && ar->rss >= 16 * MiB) {
        const char *cap = proc_getenv(&in->proc, "MALLOC_ARENA_MAX");
        hint(in,
             "%zu glibc arena heaps hold %s resident (%s reserved), more than the main heap's "
             "%s: memory freed in one thread's arena is kept there and never moves to another. "
             "%s%s%s or run the process under ebbmalloc (ebb-run -- COMMAND).",
             in->nheaps, fmt_bytes(a, sizeof(a), ar->rss), fmt_bytes(b, sizeof(b), ar->size),
             fmt_bytes(c, sizeof(c), mh->rss),
             cap ? "MALLOC_ARENA_MAX is already set to " : "Cap the arenas with MALLOC_ARENA_MAX=2 (or 4)",
             cap ? cap : "", cap ? "; lower it" : "");
    }
    const struct procfs_cgroup *cg = &in->cg;
    uint64_t lim = cg->eff_limit ? cg->eff_limit : cg->limit;
    if (cg->found && cg->have_usage && lim && cg->usage * 10 >= lim * 8) {
        uint64_t ws = cg->usage > cg->inactive_file ? cg->usage - cg->inactive_file : 0;
        if (cg->have_stat && cg->file > cg->anon)
            hint(in,
                 "The cgroup uses %s of its %s limit (%.0f%%), and %s of that is page cache "
                 "(file): cache the kernel reclaims under pressure, not a leak. The working set "
                 "(usage minus inactive file) is %s.",
                 fmt_bytes(a, sizeof(a), cg->usage), fmt_bytes(b, sizeof(b), lim),
                 100.0 * (double)cg->usage / (double)lim, fmt_bytes(c, sizeof(c), cg->file),
                 fmt_bytes(d, sizeof(d), ws));
        else
            hint(in,
                 "The cgroup uses %s of its %s limit (%.0f%%), mostly anonymous memory: past "
                 "the limit the kernel's OOM killer ends a process, malloc does not fail.",
                 fmt_bytes(a, sizeof(a), cg->usage), fmt_bytes(b, sizeof(b), lim),
                 100.0 * (double)cg->usage / (double)lim);
    }
    uint64_t anon = in->proc.rss_anon;
    if (in->anon_huge >= 32 * MiB && in->anon_huge * 4 >= anon)
        hint(in,
             "%s of anonymous memory sits in transparent huge pages (AnonHugePages): a 2 MiB "
             "page counts whole even when little of it is used. See "
             "/sys/kernel/mm/transparent_hugepage/enabled.",
             fmt_bytes(a, sizeof(a), in->anon_huge));
    if (in->is_jvm && in->maps_ok) {
        uint64_t jh = in->cat[CAT_JAVA_HEAP].rss;
        uint64_t native = in->rss > jh ? in->rss - jh : 0;
        hint(in,
             "This JVM holds %s outside the Java heap (%s in it). Native Memory Tracking "
             "does not count glibc arenas' free memory nor what native libraries allocate; "
             "the categories above do.",
             fmt_bytes(a, sizeof(a), native), fmt_bytes(b, sizeof(b), jh));
    }
    if (in->uses_ebbmalloc) {
        const struct ebb_stats *s = &in->stats.page.stats;
        if (in->stats.state == STATS_OK) {
            uint64_t free_held = s->thread_cache + s->central + s->page_free;
            if (free_held >= 16 * MiB && free_held > s->in_use)
                hint(in,
                     "ebbmalloc holds %s free in its caches and free pages against %s in use; "
                     "it returns free pages to the kernel after a delay (ebb-run --release-ms).",
                     fmt_bytes(a, sizeof(a), free_held), fmt_bytes(b, sizeof(b), s->in_use));
        } else if (in->stats.state == STATS_ABSENT) {
            hint(in, "The process uses ebbmalloc but maps no stats page (started with EBB_STATS_SHM=0?): "
                     "ebbmalloc's own breakdown is not available.");
        }
    }
    if (in->stats.state == STATS_REFUSED)
        hint(in, "An ebbmalloc stats page was found but not trusted: %s.", in->stats.reason);
    if (in->swap)
        hint(in, "%s of the process is swapped out and not counted as resident.",
             fmt_bytes(a, sizeof(a), in->swap));
}

/* ---- text ---- */

static void order(const struct inspection *in, int idx[CAT_COUNT]) {
    for (int i = 0; i < CAT_COUNT; i++) idx[i] = i;
    for (int i = 1; i < CAT_COUNT; i++)
        for (int k = i; k > 0 && in->cat[idx[k]].rss > in->cat[idx[k - 1]].rss; k--) {
            int t = idx[k];
            idx[k] = idx[k - 1];
            idx[k - 1] = t;
        }
}

static int heap_cmp(const void *a, const void *b) {
    const struct arena_heap *x = a, *y = b;
    return x->rss < y->rss ? 1 : x->rss > y->rss ? -1 : 0;
}

static const char *count_word(enum category c, unsigned n) {
    switch (c) {
    case CAT_ARENAS: return n == 1 ? "heap" : "heaps";
    case CAT_STACKS: return n == 1 ? "stack" : "stacks";
    case CAT_JAVA_HEAP:
    case CAT_JVM_CLASS:
    case CAT_JVM_CODE: return n == 1 ? "region" : "regions";
    default: return n == 1 ? "mapping" : "mappings";
    }
}

static void region_line(FILE *f, const char *name, const struct jvm_region *r) {
    char a[32], b[32];
    if (!r->found) {
        fprintf(f, "  %-11s not recognised\n", name);
        return;
    }
    fprintf(f, "  %-11s 0x%" PRIx64 "-0x%" PRIx64 ": %s resident of %s reserved\n", name, r->start, r->end,
            fmt_bytes(a, sizeof(a), r->rss), fmt_bytes(b, sizeof(b), r->end - r->start));
    fprintf(f, "              recognised as %s%s\n", r->how, r->confirmed ? "" : " (a guess)");
}

/* The flow counters (struct ebb_flow), since start, or since base when base is given:
 * what went back to the kernel by which rule, and what came back from it. */
static void flow_lines(FILE *f, const struct ebb_flow *x, const struct ebb_flow *base) {
    static const struct ebb_flow zero;
    const struct ebb_flow *b0 = base ? base : &zero;
    char a[32], b[32], c[32], d[32], e[32], g[32];
#define FD(field) ((uint64_t)(x->field - b0->field))
    uint64_t given = FD(released_timer) + FD(released_cap) + FD(released_trade) + FD(released_trim) +
                     FD(released_soft) + FD(released_live);
    fprintf(
        f, "  %s: given back %s (idle %s, over the cap %s, traded for growth %s, free pages of live spans %s",
        base ? "since the first sample" : "since start", fmt_bytes(a, sizeof(a), given),
        fmt_bytes(b, sizeof(b), FD(released_timer)), fmt_bytes(c, sizeof(c), FD(released_cap)),
        fmt_bytes(d, sizeof(d), FD(released_trade)), fmt_bytes(e, sizeof(e), FD(released_live)));
    if (FD(released_trim) || FD(released_soft))
        fprintf(f, ", malloc_trim %s, soft limit %s", fmt_bytes(a, sizeof(a), FD(released_trim)),
                fmt_bytes(b, sizeof(b), FD(released_soft)));
    fprintf(f, ")\n");
    uint64_t again = FD(faulted) > FD(grown) ? FD(faulted) - FD(grown) : 0;
    fprintf(f,
            "  %s  faulted in: new heap address space %s, pages of live spans taken back %s, and %s "
            "handed out from free released spans (at least %s of it given back before, at least %s "
            "less than the release delay before: not idle after all); mapped for big blocks %s\n",
            base ? "                      " : "           ", fmt_bytes(a, sizeof(a), FD(grown)),
            fmt_bytes(b, sizeof(b), FD(live_back)), fmt_bytes(c, sizeof(c), FD(faulted)),
            fmt_bytes(d, sizeof(d), again), fmt_bytes(e, sizeof(e), FD(refaulted)),
            fmt_bytes(g, sizeof(g), FD(direct)));
#undef FD
}

void report_text(FILE *f, const struct inspection *in) {
    char a[32], b[32], c[32], d[32], e[32], g[32];
    const struct proc *p = &in->proc;
    fprintf(f, "pid %d (%s), uid %u, %ld threads, allocator: %s%s\n", (int)p->pid, p->comm, (unsigned)p->euid,
            p->threads, in->allocator, in->is_jvm ? ", JVM (libjvm.so mapped)" : "");
    if (p->cmdline) fprintf(f, "command: %.300s%s\n", p->cmdline, strlen(p->cmdline) > 300 ? "..." : "");
    fprintf(f, "resident %s (status: anon %s, file %s, shmem %s), swap %s, in huge pages %s\n",
            fmt_bytes(a, sizeof(a), in->maps_ok ? in->rss : p->vm_rss), fmt_bytes(b, sizeof(b), p->rss_anon),
            fmt_bytes(c, sizeof(c), p->rss_file), fmt_bytes(d, sizeof(d), p->rss_shmem),
            fmt_bytes(e, sizeof(e), p->vm_swap), fmt_bytes(g, sizeof(g), in->anon_huge));

    if (in->maps_ok) {
        int idx[CAT_COUNT];
        order(in, idx);
        fprintf(f, "\n  %-44s %10s %10s %8s\n", "where (biggest first)", "resident", "reserved", "count");
        for (int i = 0; i < CAT_COUNT; i++) {
            const struct cat_total *t = &in->cat[idx[i]];
            if (!t->size && !t->rss) continue;
            char cnt[32] = "";
            if (t->count) snprintf(cnt, sizeof(cnt), "%u %s", t->count, count_word(idx[i], t->count));
            fprintf(f, "  %-44s %10s %10s  %s\n", cat_label(in, idx[i]), fmt_bytes(a, sizeof(a), t->rss),
                    fmt_bytes(b, sizeof(b), t->size), cnt);
        }
        fprintf(f, "  %-44s %10s %10s\n", "total", fmt_bytes(a, sizeof(a), in->rss),
                fmt_bytes(b, sizeof(b), in->size));
        if (in->anon_huge)
            fprintf(f, "  (of the resident bytes, %s are in transparent huge pages)\n",
                    fmt_bytes(a, sizeof(a), in->anon_huge));
        if (in->approx)
            fprintf(f, "  (some figures are shared out in proportion: the page map was not readable)\n");

        if (in->nheaps) {
            fprintf(f, "\nglibc arenas: %zu heaps of 64 MiB", in->nheaps);
            if (in->heaps_verified) fprintf(f, " in %u arenas (heap headers read and checked)", in->narenas);
            else fprintf(f, " (recognised by layout only: memory not readable)");
            fprintf(f, ", resident %s of %s reserved\n", fmt_bytes(a, sizeof(a), in->cat[CAT_ARENAS].rss),
                    fmt_bytes(b, sizeof(b), in->cat[CAT_ARENAS].size));
            struct arena_heap *h = malloc(in->nheaps * sizeof(*h));
            if (h) {
                memcpy(h, in->heaps, in->nheaps * sizeof(*h));
                qsort(h, in->nheaps, sizeof(*h), heap_cmp);
                size_t shown = in->nheaps > 12 ? 10 : in->nheaps;
                for (size_t i = 0; i < shown; i++)
                    fprintf(f, "  heap 0x%" PRIx64 ": resident %9s, read-write %9s, reserved 64 MiB\n",
                            h[i].start, fmt_bytes(a, sizeof(a), h[i].rss), fmt_bytes(b, sizeof(b), h[i].rw));
                if (shown < in->nheaps) fprintf(f, "  ... %zu smaller heaps\n", in->nheaps - shown);
                free(h);
            }
        }
        if (in->is_jvm) {
            fprintf(f, "\nJVM regions (recognised from the address-space layout, not from the JVM):\n");
            region_line(f, "Java heap", &in->java_heap);
            region_line(f, "class space", &in->class_space);
            region_line(f, "code cache", &in->code_cache);
            if (in->metaspace_nodes)
                fprintf(f,
                        "  metaspace   %u reservation%s of 64 MiB (a guess from their size and alignment)\n",
                        in->metaspace_nodes, in->metaspace_nodes == 1 ? "" : "s");
        }
    }

    if (in->stats.state == STATS_OK) {
        const struct ebb_stats *s = &in->stats.page.stats;
        fprintf(f, "\nebbmalloc (live stats page %s, updated %.1f s ago):\n", in->stats.reason,
                (double)in->stats.age_ms / 1000.0);
        fprintf(f, "  in use        %10s   (peak %s)\n", fmt_bytes(a, sizeof(a), s->in_use),
                fmt_bytes(b, sizeof(b), s->peak_in_use));
        fprintf(f, "  thread caches %10s   (%" PRIu64 " threads)\n", fmt_bytes(a, sizeof(a), s->thread_cache),
                s->threads);
        fprintf(f, "  central lists %10s\n", fmt_bytes(a, sizeof(a), s->central));
        fprintf(f, "  free pages    %10s\n", fmt_bytes(a, sizeof(a), s->page_free));
        fprintf(f, "  metadata      %10s\n", fmt_bytes(a, sizeof(a), s->metadata));
        fprintf(f, "  = resident    %10s\n", fmt_bytes(a, sizeof(a), s->resident));
        fprintf(f, "  released      %10s   (%s returned in %" PRIu64 " calls since start)\n",
                fmt_bytes(a, sizeof(a), s->released), fmt_bytes(b, sizeof(b), s->released_total),
                s->release_calls);
        fprintf(f, "  = mapped      %10s\n", fmt_bytes(a, sizeof(a), s->mapped));
        if (in->stats.has_flow) flow_lines(f, &in->stats.page.flow, NULL);
        if (s->cgroup_limit || s->soft_limit)
            fprintf(f, "  cgroup limit seen %s, soft limit %s\n",
                    s->cgroup_limit ? fmt_bytes(a, sizeof(a), s->cgroup_limit) : "none",
                    s->soft_limit ? fmt_bytes(b, sizeof(b), s->soft_limit) : "off");
    }

    const struct procfs_cgroup *cg = &in->cg;
    if (cg->found) {
        fprintf(f, "\ncgroup v%d %s: usage %s", cg->version, cg->path,
                cg->have_usage ? fmt_bytes(a, sizeof(a), cg->usage) : "unknown");
        if (cg->limit) fprintf(f, " of limit %s", fmt_bytes(b, sizeof(b), cg->limit));
        else fprintf(f, ", no limit of its own");
        if (cg->eff_limit && cg->eff_limit != cg->limit)
            fprintf(f, " (effective limit %s, %s)", fmt_bytes(c, sizeof(c), cg->eff_limit), cg->eff_limit_at);
        fprintf(f, "\n");
        if (cg->have_stat)
            fprintf(f, "  anonymous %s (huge pages %s), page cache %s (inactive %s), shmem %s\n",
                    fmt_bytes(a, sizeof(a), cg->anon), fmt_bytes(b, sizeof(b), cg->anon_thp),
                    fmt_bytes(c, sizeof(c), cg->file), fmt_bytes(d, sizeof(d), cg->inactive_file),
                    fmt_bytes(e, sizeof(e), cg->shmem));
    }

    if (in->nhints) {
        fprintf(f, "\nhints:\n");
        for (size_t i = 0; i < in->nhints; i++) fprintf(f, "  - %s\n", in->hints[i]);
    }
    if (in->nunread) {
        fprintf(f, "\ncould not read:\n");
        for (size_t i = 0; i < in->nunread; i++)
            fprintf(f, "  - %s: %s\n", in->unread[i].what, in->unread[i].why);
    }
}

/* ---- JSON ---- */

static void jstr(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void jregion(FILE *f, const char *key, const struct jvm_region *r) {
    fprintf(f, ",\"%s\":", key);
    if (!r->found) {
        fputs("null", f);
        return;
    }
    fprintf(f,
            "{\"start\":\"0x%" PRIx64 "\",\"reserved_bytes\":%" PRIu64 ",\"rss_bytes\":%" PRIu64
            ",\"confirmed\":%s,\"how\":",
            r->start, r->end - r->start, r->rss, r->confirmed ? "true" : "false");
    jstr(f, r->how);
    fputc('}', f);
}

/* "glibc_arenas": the arena heaps found. */
static void json_arenas(FILE *f, const struct inspection *in) {
    fprintf(f, ",\"glibc_arenas\":{\"count\":%zu,\"arenas\":", in->nheaps);
    if (in->heaps_verified) fprintf(f, "%u", in->narenas);
    else fputs("null", f);
    fprintf(f, ",\"rss_bytes\":%" PRIu64 ",\"reserved_bytes\":%" PRIu64 ",\"verified\":%s,\"heaps\":[",
            in->cat[CAT_ARENAS].rss, in->cat[CAT_ARENAS].size, in->heaps_verified ? "true" : "false");
    for (size_t i = 0; i < in->nheaps; i++)
        fprintf(f,
                "%s{\"start\":\"0x%" PRIx64 "\",\"rss_bytes\":%" PRIu64 ",\"rw_bytes\":%" PRIu64
                ",\"reserved_bytes\":%" PRIu64 ",\"arena\":\"0x%" PRIx64 "\"}",
                i ? "," : "", in->heaps[i].start, in->heaps[i].rss, in->heaps[i].rw, PROCFS_HEAP_SIZE,
                in->heaps[i].arena);
    fputs("]}", f);
}

/* "categories": where the memory sits, largest first. */
static void json_categories(FILE *f, const struct inspection *in) {
    int idx[CAT_COUNT];
    order(in, idx);
    fputs(",\"categories\":[", f);
    for (int i = 0, first = 1; i < CAT_COUNT && in->maps_ok; i++) {
        const struct cat_total *t = &in->cat[idx[i]];
        fprintf(f, "%s{\"name\":\"%s\",\"label\":", first ? "" : ",", cat_key(idx[i]));
        first = 0;
        jstr(f, cat_label(in, idx[i]));
        fprintf(f,
                ",\"rss_bytes\":%" PRIu64 ",\"reserved_bytes\":%" PRIu64 ",\"swap_bytes\":%" PRIu64
                ",\"anon_huge_bytes\":%" PRIu64 ",\"count\":%u}",
                t->rss, t->size, t->swap, t->anon_huge, t->count);
    }
    fputc(']', f);
}

/* "java": the JVM's regions, or null. */
static void json_java(FILE *f, const struct inspection *in) {
    if (in->is_jvm) {
        fputs(",\"java\":{\"max_heap_bytes\":", f);
        if (in->xmx) fprintf(f, "%" PRIu64, in->xmx);
        else fputs("null", f);
        jregion(f, "heap", &in->java_heap);
        jregion(f, "class_space", &in->class_space);
        jregion(f, "code_cache", &in->code_cache);
        fprintf(f, ",\"metaspace_nodes\":%u}", in->metaspace_nodes);
    } else {
        fputs(",\"java\":null", f);
    }
}

/* "ebbmalloc": the stats page, or null where ebbmalloc is not in the process. */
static void json_ebbmalloc(FILE *f, const struct inspection *in) {
    fputs(",\"ebbmalloc\":", f);
    if (in->stats.state == STATS_ABSENT && !in->uses_ebbmalloc) {
        fputs("null", f);
    } else {
        fprintf(f, "{\"stats_page\":\"%s\",\"detail\":",
                in->stats.state == STATS_OK        ? "ok"
                : in->stats.state == STATS_REFUSED ? "refused"
                                                   : "absent");
        jstr(f, in->stats.reason);
        if (in->stats.state == STATS_OK) {
            const struct ebb_stats *s = &in->stats.page.stats;
            fprintf(f,
                    ",\"age_ms\":%" PRId64 ",\"in_use_bytes\":%" PRIu64 ",\"thread_cache_bytes\":%" PRIu64
                    ",\"central_bytes\":%" PRIu64 ",\"page_free_bytes\":%" PRIu64
                    ",\"released_bytes\":%" PRIu64 ",\"metadata_bytes\":%" PRIu64
                    ",\"resident_bytes\":%" PRIu64 ",\"mapped_bytes\":%" PRIu64
                    ",\"peak_in_use_bytes\":%" PRIu64 ",\"threads\":%" PRIu64 ",\"release_calls\":%" PRIu64
                    ",\"released_total_bytes\":%" PRIu64 ",\"cgroup_limit_bytes\":%" PRIu64
                    ",\"soft_limit_bytes\":%" PRIu64,
                    in->stats.age_ms, s->in_use, s->thread_cache, s->central, s->page_free, s->released,
                    s->metadata, s->resident, s->mapped, s->peak_in_use, s->threads, s->release_calls,
                    s->released_total, s->cgroup_limit, s->soft_limit);
            if (in->stats.has_flow) {
                const struct ebb_flow *w = &in->stats.page.flow;
                fprintf(f,
                        ",\"flow\":{\"grown_bytes\":%" PRIu64 ",\"direct_bytes\":%" PRIu64
                        ",\"released_timer_bytes\":%" PRIu64 ",\"released_cap_bytes\":%" PRIu64
                        ",\"released_trade_bytes\":%" PRIu64 ",\"released_trim_bytes\":%" PRIu64
                        ",\"released_soft_bytes\":%" PRIu64 ",\"released_live_bytes\":%" PRIu64
                        ",\"faulted_bytes\":%" PRIu64 ",\"refaulted_bytes\":%" PRIu64
                        ",\"live_back_bytes\":%" PRIu64 "}",
                        w->grown, w->direct, w->released_timer, w->released_cap, w->released_trade,
                        w->released_trim, w->released_soft, w->released_live, w->faulted, w->refaulted,
                        w->live_back);
            } else {
                fputs(",\"flow\":null", f);
            }
        }
        fputc('}', f);
    }
}

/* "cgroup": the memory cgroup, or null. */
static void json_cgroup(FILE *f, const struct inspection *in) {
    const struct procfs_cgroup *cg = &in->cg;
    fputs(",\"cgroup\":", f);
    if (!cg->found) {
        fputs("null", f);
    } else {
        fprintf(f, "{\"version\":%d,\"path\":", cg->version);
        jstr(f, cg->path);
        fprintf(f, ",\"usage_bytes\":");
        if (cg->have_usage) fprintf(f, "%" PRIu64, cg->usage);
        else fputs("null", f);
        fprintf(f, ",\"limit_bytes\":");
        if (cg->limit) fprintf(f, "%" PRIu64, cg->limit);
        else fputs("null", f);
        fprintf(f, ",\"effective_limit_bytes\":");
        if (cg->eff_limit) fprintf(f, "%" PRIu64, cg->eff_limit);
        else fputs("null", f);
        if (cg->have_stat)
            fprintf(f,
                    ",\"anon_bytes\":%" PRIu64 ",\"file_bytes\":%" PRIu64 ",\"anon_thp_bytes\":%" PRIu64
                    ",\"shmem_bytes\":%" PRIu64 ",\"active_file_bytes\":%" PRIu64
                    ",\"inactive_file_bytes\":%" PRIu64,
                    cg->anon, cg->file, cg->anon_thp, cg->shmem, cg->active_file, cg->inactive_file);
        fputc('}', f);
    }
}

/* "hints" and "unreadable". */
static void json_notes(FILE *f, const struct inspection *in) {
    fputs(",\"hints\":[", f);
    for (size_t i = 0; i < in->nhints; i++) {
        if (i) fputc(',', f);
        jstr(f, in->hints[i]);
    }
    fputs("],\"unreadable\":[", f);
    for (size_t i = 0; i < in->nunread; i++) {
        fprintf(f, "%s{\"what\":", i ? "," : "");
        jstr(f, in->unread[i].what);
        fputs(",\"why\":", f);
        jstr(f, in->unread[i].why);
        fputc('}', f);
    }
    fputc(']', f);
}

void report_json(FILE *f, const struct inspection *in, const struct inspection *base, double elapsed) {
    const struct proc *p = &in->proc;
    fprintf(f, "{\"pid\":%d,\"comm\":", (int)p->pid);
    jstr(f, p->comm);
    fputs(",\"cmdline\":", f);
    if (p->cmdline) jstr(f, p->cmdline);
    else fputs("null", f);
    fprintf(f, ",\"uid\":%u,\"threads\":%ld,\"allocator\":", (unsigned)p->euid, p->threads);
    jstr(f, in->allocator);
    fprintf(f, ",\"jvm\":%s,\"complete\":%s,\"approximate\":%s", in->is_jvm ? "true" : "false",
            in->maps_ok ? "true" : "false", in->approx ? "true" : "false");
    fprintf(f,
            ",\"rss_bytes\":%" PRIu64 ",\"reserved_bytes\":%" PRIu64 ",\"swap_bytes\":%" PRIu64
            ",\"anon_huge_bytes\":%" PRIu64,
            in->maps_ok ? in->rss : p->vm_rss, in->size, in->maps_ok ? in->swap : p->vm_swap, in->anon_huge);
    fprintf(f,
            ",\"status\":{\"vm_rss_bytes\":%" PRIu64 ",\"rss_anon_bytes\":%" PRIu64
            ",\"rss_file_bytes\":%" PRIu64 ",\"rss_shmem_bytes\":%" PRIu64 ",\"vm_swap_bytes\":%" PRIu64 "}",
            p->vm_rss, p->rss_anon, p->rss_file, p->rss_shmem, p->vm_swap);

    json_arenas(f, in);
    json_categories(f, in);
    json_java(f, in);
    json_ebbmalloc(f, in);
    json_cgroup(f, in);
    json_notes(f, in);

    fputs(",\"heap_profile\":", f);
    if (in->heap) heap_json(f, in, in->heap, in->heap_growth);
    else fputs("null", f);

    if (base) {
        fprintf(f, ",\"elapsed_s\":%.3f,\"growth\":{\"rss_bytes\":%" PRId64 ",\"glibc_arena_heaps\":%" PRId64,
                elapsed, (int64_t)(in->rss - base->rss), (int64_t)in->nheaps - (int64_t)base->nheaps);
        for (int i = 0; i < CAT_COUNT; i++)
            fprintf(f, ",\"%s\":%" PRId64, cat_key(i), (int64_t)(in->cat[i].rss - base->cat[i].rss));
        fputc('}', f);
    }
    fputs("}\n", f);
}

void report_growth(FILE *f, const struct inspection *in, const struct inspection *base, double elapsed) {
    char a[32], b[32];
    fprintf(f, "\n+%.1fs  resident %s (%s since the first sample)", elapsed, fmt_bytes(a, sizeof(a), in->rss),
            fmt_delta(b, sizeof(b), (int64_t)(in->rss - base->rss)));
    if (in->nheaps != base->nheaps) fprintf(f, ", glibc arena heaps %zu -> %zu", base->nheaps, in->nheaps);
    fputc('\n', f);
    int idx[CAT_COUNT];
    order(in, idx);
    for (int i = 0; i < CAT_COUNT; i++) {
        const struct cat_total *t = &in->cat[idx[i]], *t0 = &base->cat[idx[i]];
        if (!t->rss && !t0->rss) continue;
        fprintf(f, "  %-44s %10s  %s\n", cat_label(in, idx[i]), fmt_bytes(a, sizeof(a), t->rss),
                fmt_delta(b, sizeof(b), (int64_t)(t->rss - t0->rss)));
    }
    if (in->stats.state == STATS_OK && base->stats.state == STATS_OK) {
        const struct ebb_stats *s = &in->stats.page.stats, *s0 = &base->stats.page.stats;
        fprintf(f, "  ebbmalloc in use %s (%s)", fmt_bytes(a, sizeof(a), s->in_use),
                fmt_delta(b, sizeof(b), (int64_t)(s->in_use - s0->in_use)));
        fprintf(f, ", resident %s (%s)\n", fmt_bytes(a, sizeof(a), s->resident),
                fmt_delta(b, sizeof(b), (int64_t)(s->resident - s0->resident)));
        if (in->stats.has_flow && base->stats.has_flow)
            flow_lines(f, &in->stats.page.flow, &base->stats.page.flow);
    }
}
