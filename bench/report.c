/* Turning runs into numbers people read: medians and spreads, and the markdown
 * tables (one per workload or section, and a summary of ratios over sections).
 * csv.c writes the CSV files, svg.c the chart, memory.c the breakdown of ebbmalloc's
 * memory and the flatness of RSS over a long run. */
#define _GNU_SOURCE
#include "report.h"

#include <gnu/libc-version.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

void bench_machine_describe(struct bench_machine *m) {
    memset(m, 0, sizeof *m);
    snprintf(m->cpu, sizeof m->cpu, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "model name", 10) == 0) {
                char *v = strchr(line, ':');
                if (v) {
                    v++;
                    while (*v == ' ') v++;
                    v[strcspn(v, "\n")] = '\0';
                    snprintf(m->cpu, sizeof m->cpu, "%s", v);
                }
                break;
            }
        }
        fclose(f);
    }
    m->cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    struct utsname u;
    if (uname(&u) == 0) snprintf(m->kernel, sizeof m->kernel, "Linux %s", u.release);
    snprintf(m->libc, sizeof m->libc, "glibc %s", gnu_get_libc_version());
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0)
        snprintf(m->mem, sizeof m->mem, "%.0f GiB", (double)pages * (double)psz / (1 << 30));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
    if (n <= 0) return NAN;
    double *t = malloc((size_t)n * sizeof *t);
    if (!t) return NAN;
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double m = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    free(t);
    return m;
}

double bench_spread(const double *v, int n, double median) {
    if (n < 2 || !(median > 0)) return 0;
    double lo = v[0], hi = v[0];
    for (int i = 1; i < n; i++) {
        if (v[i] < lo) lo = v[i];
        if (v[i] > hi) hi = v[i];
    }
    return (hi - lo) / 2 / median;
}

/* ----------------------------------------------------------- per-config stats */

const struct bench_run *report_run_at(const struct bench_table *t, int c, int k) {
    return &t->runs[c * t->n_runs + k];
}

static int result_index(const struct bench_run *r, const char *name) {
    for (int i = 0; i < r->n_res; i++)
        if (strcmp(r->res[i].name, name) == 0) return i;
    return -1;
}

int report_result_names(const struct bench_table *t, char names[][32], int max) {
    int n = 0;
    for (int i = 0; i < t->n_cfgs * t->n_runs; i++) {
        const struct bench_run *r = &t->runs[i];
        if (!r->ok) continue;
        for (int j = 0; j < r->n_res; j++) {
            bool seen = false;
            for (int k = 0; k < n; k++)
                if (strcmp(names[k], r->res[j].name) == 0) seen = true;
            if (!seen && n < max) snprintf(names[n++], 32, "%s", r->res[j].name);
        }
    }
    return n;
}

double report_med(double *v, int n) { return n ? bench_median(v, n) : NAN; }

/* Medians of the memory figures over the good runs. */
static void compute_memory(const struct bench_table *t, int c, struct cstats *s, double *pr) {
    double rb[MAXR], ra[MAXR], re[MAXR], pl[MAXR], rt[MAXR], hp[MAXR];
    int n = 0, nb = 0, na = 0, ne = 0, nl = 0;
    for (int k = 0; k < t->n_runs && k < MAXR; k++) {
        const struct bench_run *r = report_run_at(t, c, k);
        if (!r->ok) {
            if (!s->first_bad) s->first_bad = r;
            continue;
        }
        pr[n] = (double)r->peak_rss_kib / 1024.0;
        hp[n] = r->heaps_max;
        n++;
        if (r->rss_load_kib >= 0) rb[nb++] = (double)r->rss_load_kib / 1024.0;
        if (r->rss_after_kib >= 0) ra[na++] = (double)r->rss_after_kib / 1024.0;
        if (r->rss_end_kib >= 0) re[ne++] = (double)r->rss_end_kib / 1024.0;
        if (r->has_live && r->peak_live) {
            pl[nl] = (double)r->peak_live / BENCH_MIB;
            rt[nl] = ((double)r->peak_rss_kib / 1024.0) / pl[nl];
            nl++;
        }
    }
    s->n_ok = n;
    s->peak_rss = report_med(pr, n);
    s->heaps = report_med(hp, n);
    s->rss_load = report_med(rb, nb);
    s->rss_after = report_med(ra, na);
    s->rss_end = report_med(re, ne);
    s->peak_live = report_med(pl, nl);
    s->ratio = report_med(rt, nl);
}

/* Medians of one timed section: time, rate, and the faults when reported. */
static void compute_section(const struct bench_table *t, int c, const char *name, int j, struct cstats *s) {
    double tv[MAXR], ov[MAXR], fv[MAXR], sv[MAXR];
    int m = 0, nf = 0, ns = 0;
    long page = sysconf(_SC_PAGESIZE);
    for (int k = 0; k < t->n_runs && k < MAXR; k++) {
        const struct bench_run *r = report_run_at(t, c, k);
        int i = r->ok ? result_index(r, name) : -1;
        if (i < 0 || !r->res[i].ns) continue;
        const struct bench_result *res = &r->res[i];
        tv[m] = (double)res->ns / 1e9;
        ov[m] = (double)res->ops / tv[m];
        m++;
        if (res->has_faults) fv[nf++] = (double)res->minflt;
        if (res->has_faults && res->bytes) sv[ns++] = (double)res->minflt * (double)page / (double)res->bytes;
    }
    s->time[j] = report_med(tv, m);
    s->time_sp[j] = bench_spread(tv, m, s->time[j]);
    s->ops[j] = report_med(ov, m);
    s->ops_sp[j] = bench_spread(ov, m, s->ops[j]);
    s->minflt[j] = report_med(fv, nf);
    s->fault_share[j] = report_med(sv, ns);
}

void report_compute(const struct bench_table *t, int c, char names[][32], int nn, struct cstats *s) {
    double pr[MAXR];
    memset(s, 0, sizeof *s);
    s->median_run = -1;
    compute_memory(t, c, s, pr);
    for (int j = 0; j < nn; j++) compute_section(t, c, names[j], j, s);
    /* The run whose peak RSS is the median (the lower one of an even count). */
    int n = s->n_ok;
    if (n) {
        double sorted[MAXR];
        memcpy(sorted, pr, (size_t)n * sizeof *pr);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
        double want = sorted[(n - 1) / 2];
        for (int k = 0; k < t->n_runs && k < MAXR; k++) {
            const struct bench_run *r = report_run_at(t, c, k);
            if (r->ok && (double)r->peak_rss_kib / 1024.0 == want) {
                s->median_run = k;
                break;
            }
        }
    }
}

int report_baseline(const struct bench_table *t, const struct cstats *st) {
    for (int c = 0; c < t->n_cfgs; c++)
        if (strcmp(t->cfgs[c].name, "glibc") == 0 && st[c].n_ok) return c;
    for (int c = 0; c < t->n_cfgs; c++)
        if (st[c].n_ok) return c;
    return -1;
}

int report_find_config(const struct bench_table *t, const char *name) {
    for (int c = 0; c < t->n_cfgs; c++)
        if (strcmp(t->cfgs[c].name, name) == 0) return c;
    return -1;
}

void report_fmt_num(char *b, size_t n, double v, int prec) {
    if (isnan(v)) snprintf(b, n, "n/a");
    else snprintf(b, n, "%.*f", prec, v);
}

void report_fmt_ratio(char *b, size_t n, double num, double den) {
    if (isnan(num) || isnan(den) || !(den > 0)) snprintf(b, n, "n/a");
    else snprintf(b, n, "%.2fx", num / den);
}

static void fmt_rate(char *b, size_t n, double v) {
    if (isnan(v)) snprintf(b, n, "n/a");
    else if (v >= 1e9) snprintf(b, n, "%.2f G", v / 1e9);
    else if (v >= 1e6) snprintf(b, n, "%.2f M", v / 1e6);
    else if (v >= 1e3) snprintf(b, n, "%.1f k", v / 1e3);
    else snprintf(b, n, "%.0f", v);
}

static void fmt_count(char *b, size_t n, double v) {
    if (isnan(v)) snprintf(b, n, "n/a");
    else if (v >= 1e6) snprintf(b, n, "%.2f M", v / 1e6);
    else if (v >= 1e4) snprintf(b, n, "%.1f k", v / 1e3);
    else snprintf(b, n, "%.0f", v);
}

static void fmt_spread(char *b, size_t n, double sp, int n_ok) {
    if (n_ok < 2) snprintf(b, n, "%s", "");
    else snprintf(b, n, " ±%.0f%%", sp * 100);
}

/* ------------------------------------------------------------ the main table */

/* What the columns of one table are. */
struct layout {
    char names[BENCH_MAX_RESULTS][32];
    int nn;
    bool live;
    bool faults[BENCH_MAX_RESULTS], share[BENCH_MAX_RESULTS], any_faults;
    int base;
    struct cstats *st;
};

static bool table_has_live(const struct bench_table *t) {
    for (int i = 0; i < t->n_cfgs * t->n_runs; i++)
        if (t->runs[i].ok && t->runs[i].has_live) return true;
    return false;
}

static struct cstats *layout_init(struct layout *L, const struct bench_table *t) {
    memset(L, 0, sizeof *L);
    L->nn = report_result_names(t, L->names, BENCH_MAX_RESULTS);
    L->st = calloc((size_t)t->n_cfgs, sizeof *L->st);
    if (!L->st) return NULL;
    for (int c = 0; c < t->n_cfgs; c++) report_compute(t, c, L->names, L->nn, &L->st[c]);
    for (int c = 0; c < t->n_cfgs; c++)
        for (int j = 0; j < L->nn; j++) {
            L->faults[j] |= !isnan(L->st[c].minflt[j]);
            L->share[j] |= !isnan(L->st[c].fault_share[j]);
            L->any_faults |= L->faults[j];
        }
    L->base = report_baseline(t, L->st);
    L->live = table_has_live(t);
    return L->st;
}

static void write_title(FILE *f, const struct bench_table *t) {
    fprintf(f, "### %s%s%s (%s mode, %d run%s per configuration, medians)\n\n", t->workload,
            t->part ? ": " : "", t->part ? t->part : "", t->mode, t->n_runs, t->n_runs == 1 ? "" : "s");
    if (t->brief) return;
    fprintf(f, "Machine: %s, %d CPUs, %s RAM, %s, %s.\n\n", t->machine.cpu, t->machine.cpus, t->machine.mem,
            t->machine.kernel, t->machine.libc);
}

static void write_header(FILE *f, const struct bench_table *t, const struct layout *L) {
    const char *bn = L->base >= 0 ? t->cfgs[L->base].name : "-";
    fprintf(f, "| configuration | peak RSS MiB |");
    if (L->live)
        fprintf(f, " RSS before load MiB | RSS 2 s after load MiB | RSS at end MiB | peak live MiB | peak "
                   "RSS / peak live |");
    fprintf(f, " 64 MiB heaps |");
    for (int j = 0; j < L->nn; j++) {
        const char *label = L->nn == 1 ? "time" : L->names[j];
        fprintf(f, " %s s | %s vs %s |", label, label, bn);
        if (L->nn == 1) fprintf(f, " ops/s |");
        const char *fl = L->nn == 1 ? "" : L->names[j], *sp = L->nn == 1 ? "" : " ";
        if (L->faults[j]) fprintf(f, " %s%sminor faults | %s%sfaults per op |", fl, sp, fl, sp);
        if (L->share[j]) fprintf(f, " %s%sfaulted / allocated |", fl, sp);
    }
    fprintf(f, "\n|---|--:|");
    if (L->live) fprintf(f, "--:|--:|--:|--:|--:|");
    fprintf(f, "--:|");
    for (int j = 0; j < L->nn; j++)
        fprintf(f, "%s%s%s", L->nn == 1 ? "--:|--:|--:|" : "--:|--:|", L->faults[j] ? "--:|--:|" : "",
                L->share[j] ? "--:|" : "");
    fprintf(f, "\n");
}

static void write_section_cells(FILE *f, const struct layout *L, const struct cstats *s, int j) {
    char tm[32], sp[16], vs[32], rate[32], osp[16], fl[32], per[32], sh[32];
    report_fmt_num(tm, sizeof tm, s->time[j], s->time[j] < 1 ? 3 : 2);
    fmt_spread(sp, sizeof sp, s->time_sp[j], s->n_ok);
    report_fmt_ratio(vs, sizeof vs, s->time[j], L->base >= 0 ? L->st[L->base].time[j] : NAN);
    fprintf(f, " %s%s | %s |", tm, sp, vs);
    if (L->nn == 1) {
        fmt_rate(rate, sizeof rate, s->ops[j]);
        fmt_spread(osp, sizeof osp, s->ops_sp[j], s->n_ok);
        fprintf(f, " %s%s |", rate, osp);
    }
    if (L->faults[j]) {
        fmt_count(fl, sizeof fl, s->minflt[j]);
        double ops = s->ops[j] * s->time[j];
        report_fmt_num(per, sizeof per, s->minflt[j] / ops, s->minflt[j] / ops < 10 ? 3 : 0);
        fprintf(f, " %s | %s |", fl, per);
    }
    if (L->share[j]) {
        if (isnan(s->fault_share[j])) snprintf(sh, sizeof sh, "n/a");
        else snprintf(sh, sizeof sh, "%.1f%%", s->fault_share[j] * 100);
        fprintf(f, " %s |", sh);
    }
}

static void write_row(FILE *f, const struct bench_table *t, const struct layout *L, int c) {
    const struct bench_config *cfg = &t->cfgs[c];
    const struct cstats *s = &L->st[c];
    if (cfg->skipped) {
        fprintf(f, "| %s | skipped: %s |\n", cfg->name, cfg->skip_reason);
        return;
    }
    if (!s->n_ok) {
        const char *why = s->first_bad ? s->first_bad->reason : "did not run";
        fprintf(f, "| %s | **%s** |\n", cfg->name, why[0] ? why : "failed");
        return;
    }
    char a[32], lb[32], b[32], cc[32], d[32], e[32], h[32];
    report_fmt_num(a, sizeof a, s->peak_rss, 0);
    fprintf(f, "| %s | %s |", cfg->name, a);
    if (L->live) {
        report_fmt_num(lb, sizeof lb, s->rss_load, 0);
        report_fmt_num(b, sizeof b, s->rss_after, 0);
        report_fmt_num(cc, sizeof cc, s->rss_end, 0);
        report_fmt_num(d, sizeof d, s->peak_live, 0);
        report_fmt_num(e, sizeof e, s->ratio, 2);
        fprintf(f, " %s | %s | %s | %s | %s |", lb, b, cc, d, e);
    }
    if (cfg->preload[0]) snprintf(h, sizeof h, "-"); /* not glibc's malloc: no arena heaps to count */
    else report_fmt_num(h, sizeof h, s->heaps, 0);
    fprintf(f, " %s |", h);
    for (int j = 0; j < L->nn; j++) write_section_cells(f, L, s, j);
    fprintf(f, "\n");
    if (s->n_ok < t->n_runs && s->first_bad)
        fprintf(f, "|  | (%d of %d runs left out: %.200s) |\n", t->n_runs - s->n_ok, t->n_runs,
                s->first_bad->reason);
}

static void write_legend(FILE *f, const struct bench_table *t, const struct layout *L) {
    fprintf(f, "\n");
    if (L->live)
        fprintf(f, "Peak RSS: the highest resident set seen (sampled, and the kernel's maxrss). "
                   "RSS before load: sampled when the workload starts its load (for the JVM, "
                   "after its start-up and warm-up). "
                   "RSS 2 s after load: sampled 2 s after the workload's live bytes fell to its "
                   "small kept set; RSS at end: after the idle period. Peak live: the most bytes "
                   "the workload itself held. ");
    fprintf(f, "64 MiB heaps: the most glibc arena heaps seen in /proc/PID/maps at once (\"-\" "
               "where another allocator replaces glibc's malloc). "
               "Times are of the timed section(s) only; ± is half the range over the runs, "
               "relative to the median.");
    if (L->any_faults)
        fprintf(f, " Minor faults: page faults of the whole workload process during the timed "
                   "section (getrusage in the process), median; faults per op: divided by the "
                   "section's operations; faulted / allocated: faulted pages x page size over "
                   "the bytes the section allocated (how much of what it got had to be faulted "
                   "in again).");
    fprintf(f, "\n\n");
    fprintf(f, "Configurations:\n");
    for (int c = 0; c < t->n_cfgs; c++) {
        const struct bench_config *cfg = &t->cfgs[c];
        fprintf(f, "- `%s`: %s", cfg->name, cfg->what);
        if (cfg->preload[0]) fprintf(f, " (`%s`)", cfg->preload);
        if (cfg->skipped) fprintf(f, " — skipped: %s", cfg->skip_reason);
        fprintf(f, "\n");
    }
}

/* ebbmalloc against ebbmalloc-noprof of the same run: what the heap profile costs. */
static void write_profiler_cost(FILE *f, const struct bench_table *t, const struct layout *L) {
    int on = report_find_config(t, "ebbmalloc"), off = report_find_config(t, "ebbmalloc-noprof");
    if (on < 0 || off < 0 || !L->st[on].n_ok || !L->st[off].n_ok) return;
    char b[32];
    report_fmt_ratio(b, sizeof b, L->st[on].peak_rss, L->st[off].peak_rss);
    fprintf(f,
            "\nHeap profile cost (`ebbmalloc` / `ebbmalloc-noprof`, medians of this run): peak "
            "RSS %s",
            b);
    for (int j = 0; j < L->nn; j++) {
        report_fmt_ratio(b, sizeof b, L->st[on].time[j], L->st[off].time[j]);
        fprintf(f, ", %s%stime %s", L->nn == 1 ? "" : L->names[j], L->nn == 1 ? "" : " ", b);
    }
    fprintf(f, ".\n");
}

void bench_write_table(FILE *f, const struct bench_table *t) {
    struct layout L;
    if (!layout_init(&L, t)) return;
    write_title(f, t);
    write_header(f, t, &L);
    for (int c = 0; c < t->n_cfgs; c++) write_row(f, t, &L, c);
    write_profiler_cost(f, t, &L);
    if (!t->brief) write_legend(f, t, &L);
    report_write_breakdown(f, t);
    if (strcmp(t->mode, "long") == 0) report_write_flatness(f, t);
    free(L.st);
}

/* ------------------------------------------------------------ sections side by side */

/* Median time (which = 0) or peak RSS (which = 1) of configuration c in table t. */
static double part_figure(const struct bench_table *t, int c, int which) {
    char names[BENCH_MAX_RESULTS][32];
    int nn = report_result_names(t, names, BENCH_MAX_RESULTS);
    struct cstats s;
    report_compute(t, c, names, nn, &s);
    if (!s.n_ok) return NAN;
    return which == 0 ? (nn ? s.time[0] : NAN) : s.peak_rss;
}

static void write_ratio_table(FILE *f, const struct bench_table *parts, int n, int which) {
    const struct bench_table *t0 = &parts[0];
    fprintf(f, "| configuration |");
    for (int p = 0; p < n; p++) fprintf(f, " %s |", parts[p].part ? parts[p].part : parts[p].workload);
    fprintf(f, "\n|---|");
    for (int p = 0; p < n; p++) fprintf(f, "--:|");
    fprintf(f, "\n");
    int base = report_find_config(t0, "glibc");
    for (int c = 0; c < t0->n_cfgs; c++) {
        if (t0->cfgs[c].skipped) continue;
        fprintf(f, "| %s |", t0->cfgs[c].name);
        for (int p = 0; p < n; p++) {
            char b[32];
            double den = base >= 0 ? part_figure(&parts[p], base, which) : NAN;
            report_fmt_ratio(b, sizeof b, part_figure(&parts[p], c, which), den);
            fprintf(f, " %s |", b);
        }
        fprintf(f, "\n");
    }
}

void bench_write_summary(FILE *f, const struct bench_table *parts, int n) {
    if (n <= 0) return;
    const struct bench_table *t0 = &parts[0];
    fprintf(f, "## %s (%s mode, %d run%s per configuration and section, medians)\n\n", t0->workload, t0->mode,
            t0->n_runs, t0->n_runs == 1 ? "" : "s");
    fprintf(f, "Machine: %s, %d CPUs, %s RAM, %s, %s. Every section ran in its own process.\n\n",
            t0->machine.cpu, t0->machine.cpus, t0->machine.mem, t0->machine.kernel, t0->machine.libc);
    fprintf(f, "Time against glibc's, per section (lower is faster):\n\n");
    write_ratio_table(f, parts, n, 0);
    fprintf(f, "\nPeak RSS against glibc's, per section (lower is leaner):\n\n");
    write_ratio_table(f, parts, n, 1);
    fprintf(f, "\nThe figures behind the ratios, with spreads, follow section by section.\n\n");
}
