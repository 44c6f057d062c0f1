/* Turning runs into numbers people read: medians and spreads, the markdown
 * table, CSV files of every sample and of every run, and an SVG chart of RSS
 * over time drawn by hand (no plotting dependency). */
#define _GNU_SOURCE
#include "bench.h"

#include <gnu/libc-version.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

void bench_machine_describe(struct bench_machine *m)
{
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
                    while (*v == ' ')
                        v++;
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
    if (uname(&u) == 0)
        snprintf(m->kernel, sizeof m->kernel, "Linux %s", u.release);
    snprintf(m->libc, sizeof m->libc, "glibc %s", gnu_get_libc_version());
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages > 0 && psz > 0)
        snprintf(m->mem, sizeof m->mem, "%.0f GiB", (double)pages * (double)psz / (1 << 30));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    if (n <= 0)
        return NAN;
    double *t = malloc((size_t)n * sizeof *t);
    if (!t)
        return NAN;
    memcpy(t, v, (size_t)n * sizeof *t);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    double m = n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
    free(t);
    return m;
}

double bench_spread(const double *v, int n, double median)
{
    if (n < 2 || !(median > 0))
        return 0;
    double lo = v[0], hi = v[0];
    for (int i = 1; i < n; i++) {
        if (v[i] < lo)
            lo = v[i];
        if (v[i] > hi)
            hi = v[i];
    }
    return (hi - lo) / 2 / median;
}

/* ----------------------------------------------------------- per-config stats */

#define MAXR 64

struct cstats {
    int n_ok;
    const struct bench_run *first_bad;
    double peak_rss, rss_after, rss_end, peak_live, ratio, heaps; /* medians; NAN if none */
    double time[BENCH_MAX_RESULTS], time_sp[BENCH_MAX_RESULTS];
    double ops[BENCH_MAX_RESULTS], ops_sp[BENCH_MAX_RESULTS];
    int median_run; /* index into the config's runs, by peak RSS */
};

static const struct bench_run *run_at(const struct bench_table *t, int c, int k)
{
    return &t->runs[c * t->n_runs + k];
}

static int result_index(const struct bench_run *r, const char *name)
{
    for (int i = 0; i < r->n_res; i++)
        if (strcmp(r->res[i].name, name) == 0)
            return i;
    return -1;
}

/* Names of the timed sections, in first-seen order. */
static int result_names(const struct bench_table *t, char names[][32], int max)
{
    int n = 0;
    for (int i = 0; i < t->n_cfgs * t->n_runs; i++) {
        const struct bench_run *r = &t->runs[i];
        if (!r->ok)
            continue;
        for (int j = 0; j < r->n_res; j++) {
            bool seen = false;
            for (int k = 0; k < n; k++)
                if (strcmp(names[k], r->res[j].name) == 0)
                    seen = true;
            if (!seen && n < max)
                snprintf(names[n++], 32, "%s", r->res[j].name);
        }
    }
    return n;
}

static double med_of(double *v, int n)
{
    return n ? bench_median(v, n) : NAN;
}

static void compute(const struct bench_table *t, int c, char names[][32], int nn, struct cstats *s)
{
    double pr[MAXR], ra[MAXR], re[MAXR], pl[MAXR], rt[MAXR], hp[MAXR];
    int n = 0, na = 0, ne = 0, nl = 0;
    memset(s, 0, sizeof *s);
    s->median_run = -1;
    for (int k = 0; k < t->n_runs && k < MAXR; k++) {
        const struct bench_run *r = run_at(t, c, k);
        if (!r->ok) {
            if (!s->first_bad)
                s->first_bad = r;
            continue;
        }
        pr[n] = (double)r->peak_rss_kib / 1024.0;
        hp[n] = r->heaps_max;
        n++;
        if (r->rss_after_kib >= 0)
            ra[na++] = (double)r->rss_after_kib / 1024.0;
        if (r->rss_end_kib >= 0)
            re[ne++] = (double)r->rss_end_kib / 1024.0;
        if (r->has_live && r->peak_live) {
            pl[nl] = (double)r->peak_live / BENCH_MIB;
            rt[nl] = ((double)r->peak_rss_kib / 1024.0) / pl[nl];
            nl++;
        }
    }
    s->n_ok = n;
    s->peak_rss = med_of(pr, n);
    s->heaps = med_of(hp, n);
    s->rss_after = med_of(ra, na);
    s->rss_end = med_of(re, ne);
    s->peak_live = med_of(pl, nl);
    s->ratio = med_of(rt, nl);
    for (int j = 0; j < nn; j++) {
        double tv[MAXR], ov[MAXR];
        int m = 0;
        for (int k = 0; k < t->n_runs && k < MAXR; k++) {
            const struct bench_run *r = run_at(t, c, k);
            int i = r->ok ? result_index(r, names[j]) : -1;
            if (i < 0 || !r->res[i].ns)
                continue;
            tv[m] = (double)r->res[i].ns / 1e9;
            ov[m] = (double)r->res[i].ops / tv[m];
            m++;
        }
        s->time[j] = med_of(tv, m);
        s->time_sp[j] = bench_spread(tv, m, s->time[j]);
        s->ops[j] = med_of(ov, m);
        s->ops_sp[j] = bench_spread(ov, m, s->ops[j]);
    }
    /* The run whose peak RSS is the median (the lower one of an even count). */
    if (n) {
        double sorted[MAXR];
        memcpy(sorted, pr, (size_t)n * sizeof *pr);
        qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
        double want = sorted[(n - 1) / 2];
        for (int k = 0; k < t->n_runs && k < MAXR; k++) {
            const struct bench_run *r = run_at(t, c, k);
            if (r->ok && (double)r->peak_rss_kib / 1024.0 == want) {
                s->median_run = k;
                break;
            }
        }
    }
}

static int baseline_config(const struct bench_table *t, struct cstats *st)
{
    for (int c = 0; c < t->n_cfgs; c++)
        if (strcmp(t->cfgs[c].name, "glibc") == 0 && st[c].n_ok)
            return c;
    for (int c = 0; c < t->n_cfgs; c++)
        if (st[c].n_ok)
            return c;
    return -1;
}

static void fmt_num(char *b, size_t n, double v, int prec)
{
    if (isnan(v))
        snprintf(b, n, "n/a");
    else
        snprintf(b, n, "%.*f", prec, v);
}

static void fmt_rate(char *b, size_t n, double v)
{
    if (isnan(v))
        snprintf(b, n, "n/a");
    else if (v >= 1e9)
        snprintf(b, n, "%.2f G", v / 1e9);
    else if (v >= 1e6)
        snprintf(b, n, "%.2f M", v / 1e6);
    else if (v >= 1e3)
        snprintf(b, n, "%.1f k", v / 1e3);
    else
        snprintf(b, n, "%.0f", v);
}

static void fmt_spread(char *b, size_t n, double sp, int n_ok)
{
    if (n_ok < 2)
        snprintf(b, n, "%s", "");
    else
        snprintf(b, n, " ±%.0f%%", sp * 100);
}

static bool table_has_live(const struct bench_table *t)
{
    for (int i = 0; i < t->n_cfgs * t->n_runs; i++)
        if (t->runs[i].ok && t->runs[i].has_live)
            return true;
    return false;
}

void bench_write_table(FILE *f, const struct bench_table *t)
{
    char names[BENCH_MAX_RESULTS][32];
    int nn = result_names(t, names, BENCH_MAX_RESULTS);
    struct cstats *st = calloc((size_t)t->n_cfgs, sizeof *st);
    if (!st)
        return;
    for (int c = 0; c < t->n_cfgs; c++)
        compute(t, c, names, nn, &st[c]);
    int base = baseline_config(t, st);
    bool live = table_has_live(t);

    fprintf(f, "### %s (%s mode, %d run%s per configuration, medians)\n\n", t->workload, t->mode,
            t->n_runs, t->n_runs == 1 ? "" : "s");
    fprintf(f, "Machine: %s, %d CPUs, %s RAM, %s, %s.\n\n", t->machine.cpu, t->machine.cpus,
            t->machine.mem, t->machine.kernel, t->machine.libc);

    /* Header */
    fprintf(f, "| configuration | peak RSS MiB |");
    if (live)
        fprintf(f, " RSS 2 s after load MiB | RSS at end MiB | peak live MiB | peak RSS / peak live |");
    fprintf(f, " 64 MiB heaps |");
    for (int j = 0; j < nn; j++) {
        const char *label = nn == 1 ? "time" : names[j];
        fprintf(f, " %s s | %s vs %s |", label, nn == 1 ? "time" : names[j],
                base >= 0 ? t->cfgs[base].name : "-");
        if (nn == 1)
            fprintf(f, " ops/s |");
    }
    fprintf(f, "\n|---|--:|");
    if (live)
        fprintf(f, "--:|--:|--:|--:|");
    fprintf(f, "--:|");
    for (int j = 0; j < nn; j++)
        fprintf(f, nn == 1 ? "--:|--:|--:|" : "--:|--:|");
    fprintf(f, "\n");

    for (int c = 0; c < t->n_cfgs; c++) {
        const struct bench_config *cfg = &t->cfgs[c];
        struct cstats *s = &st[c];
        if (cfg->skipped) {
            fprintf(f, "| %s | skipped: %s |\n", cfg->name, cfg->skip_reason);
            continue;
        }
        if (!s->n_ok) {
            const char *why = s->first_bad ? s->first_bad->reason : "did not run";
            fprintf(f, "| %s | **%s** |\n", cfg->name, why[0] ? why : "failed");
            continue;
        }
        char a[32], b[32], cc[32], d[32], e[32], h[32];
        fmt_num(a, sizeof a, s->peak_rss, 0);
        fprintf(f, "| %s | %s |", cfg->name, a);
        if (live) {
            fmt_num(b, sizeof b, s->rss_after, 0);
            fmt_num(cc, sizeof cc, s->rss_end, 0);
            fmt_num(d, sizeof d, s->peak_live, 0);
            fmt_num(e, sizeof e, s->ratio, 2);
            fprintf(f, " %s | %s | %s | %s |", b, cc, d, e);
        }
        if (cfg->preload[0])
            snprintf(h, sizeof h, "-"); /* not glibc's malloc: no arena heaps to count */
        else
            fmt_num(h, sizeof h, s->heaps, 0);
        fprintf(f, " %s |", h);
        for (int j = 0; j < nn; j++) {
            char tm[32], sp[16], vs[32], rate[32], osp[16];
            fmt_num(tm, sizeof tm, s->time[j], s->time[j] < 1 ? 3 : 2);
            fmt_spread(sp, sizeof sp, s->time_sp[j], s->n_ok);
            double ratio = base >= 0 ? s->time[j] / st[base].time[j] : NAN;
            if (isnan(ratio))
                snprintf(vs, sizeof vs, "n/a");
            else
                snprintf(vs, sizeof vs, "%.2fx", ratio);
            fprintf(f, " %s%s | %s |", tm, sp, vs);
            if (nn == 1) {
                fmt_rate(rate, sizeof rate, s->ops[j]);
                fmt_spread(osp, sizeof osp, s->ops_sp[j], s->n_ok);
                fprintf(f, " %s%s |", rate, osp);
            }
        }
        fprintf(f, "\n");
        if (s->n_ok < t->n_runs && s->first_bad)
            fprintf(f, "|  | (%d of %d runs left out: %.200s) |\n", t->n_runs - s->n_ok, t->n_runs,
                    s->first_bad->reason);
    }

    fprintf(f, "\n");
    if (live)
        fprintf(f, "Peak RSS: the highest resident set seen (sampled, and the kernel's maxrss). "
                   "RSS 2 s after load: sampled 2 s after the workload's live bytes fell to its "
                   "small kept set; RSS at end: after the idle period. Peak live: the most bytes "
                   "the workload itself held. ");
    fprintf(f, "64 MiB heaps: the most glibc arena heaps seen in /proc/PID/maps at once (\"-\" "
               "where another allocator replaces glibc's malloc). "
               "Times are of the timed section(s) only; ± is half the range over the runs, "
               "relative to the median.\n\n");
    fprintf(f, "Configurations:\n");
    for (int c = 0; c < t->n_cfgs; c++) {
        const struct bench_config *cfg = &t->cfgs[c];
        fprintf(f, "- `%s`: %s", cfg->name, cfg->what);
        if (cfg->preload[0])
            fprintf(f, " (`%s`)", cfg->preload);
        if (cfg->skipped)
            fprintf(f, " — skipped: %s", cfg->skip_reason);
        fprintf(f, "\n");
    }
    free(st);
}

/* ------------------------------------------------------------------- CSV */

static void csv_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        if (*s == '\n' || *s == '\r')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static const char *phase_label(int p)
{
    static const char *const names[] = {"start", "load", "idle", "end"};
    return p >= 0 && p <= 3 ? names[p] : "?";
}

int bench_write_samples_csv(const char *path, const struct bench_table *t)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "workload,config,run,t_ms,rss_kib,rss_anon_kib,live_bytes,heaps64,phase\n");
    for (int c = 0; c < t->n_cfgs; c++)
        for (int k = 0; k < t->n_runs; k++) {
            const struct bench_run *r = run_at(t, c, k);
            if (!r->ok)
                continue;
            for (size_t i = 0; i < r->n; i++) {
                const struct bench_sample *s = &r->s[i];
                fprintf(f, "%s,%s,%d,%u,%u,%u,%llu,%u,%s\n", t->workload, t->cfgs[c].name, k + 1,
                        s->t_ms, s->rss_kib, s->anon_kib, (unsigned long long)s->live, s->heaps,
                        phase_label(s->phase));
            }
        }
    return fclose(f) == 0 ? 0 : -1;
}

int bench_write_runs_csv(const char *path, const struct bench_table *t)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "workload,config,run,status,peak_rss_kib,maxrss_kib,rss_after_kib,rss_end_kib,"
               "peak_live_bytes,heaps_max,heaps_end,t_drop_ms,t_end_ms,result,ops,ns,reason\n");
    for (int c = 0; c < t->n_cfgs; c++) {
        if (t->cfgs[c].skipped) {
            fprintf(f, "%s,%s,0,skipped,,,,,,,,,,,,,", t->workload, t->cfgs[c].name);
            csv_str(f, t->cfgs[c].skip_reason);
            fputc('\n', f);
            continue;
        }
        for (int k = 0; k < t->n_runs; k++) {
            const struct bench_run *r = run_at(t, c, k);
            int nres = r->n_res ? r->n_res : 1;
            for (int j = 0; j < nres; j++) {
                fprintf(f, "%s,%s,%d,%s,%llu,%llu,%lld,%lld,%llu,%d,%d,%lld,%lld,", t->workload,
                        t->cfgs[c].name, k + 1,
                        r->ok ? "ok" : (r->refused ? "refused" : "failed"),
                        (unsigned long long)r->peak_rss_kib, (unsigned long long)r->maxrss_kib,
                        (long long)r->rss_after_kib, (long long)r->rss_end_kib,
                        (unsigned long long)r->peak_live, r->heaps_max, r->heaps_end,
                        (long long)r->t_drop_ms, (long long)r->t_end_ms);
                if (r->n_res)
                    fprintf(f, "%s,%llu,%llu,", r->res[j].name, (unsigned long long)r->res[j].ops,
                            (unsigned long long)r->res[j].ns);
                else
                    fprintf(f, ",,,");
                csv_str(f, r->reason);
                fputc('\n', f);
            }
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------- SVG */

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

static const char *config_color(const char *name, int i)
{
    static const struct {
        const char *name, *color;
    } fixed[] = {
        {"glibc", "#d62728"},     {"arena-max-1", "#ff7f0e"}, {"arena-max-2", "#b8860b"},
        {"arena-max-4", "#8c564b"}, {"arena-max-8", "#e377c2"}, {"mmap-128k", "#17becf"},
        {"trim-64k", "#9467bd"},  {"jemalloc", "#1f77b4"},    {"tcmalloc", "#2ca02c"},
        {"mimalloc", "#bcbd22"},  {"ebbmalloc", "#000000"},
    };
    static const char *const spare[] = {"#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        if (strcmp(fixed[k].name, name) == 0)
            return fixed[k].color;
    return spare[i % 5];
}

/* A step of 1, 2 or 5 x 10^k giving at most about `want` ticks up to max. */
static double nice_step(double max, int want)
{
    if (!(max > 0))
        return 1;
    double raw = max / want;
    double p = pow(10, floor(log10(raw)));
    double m = raw / p;
    double step = m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10;
    return step * p;
}

int bench_write_svg(const char *path, const struct bench_table *t)
{
    char names[BENCH_MAX_RESULTS][32];
    int nn = result_names(t, names, BENCH_MAX_RESULTS);
    struct cstats *st = calloc((size_t)t->n_cfgs, sizeof *st);
    if (!st)
        return -1;
    double tmax = 0, ymax = 0;
    int live_cfg = -1;
    for (int c = 0; c < t->n_cfgs; c++) {
        compute(t, c, names, nn, &st[c]);
        if (st[c].median_run < 0)
            continue;
        const struct bench_run *r = run_at(t, c, st[c].median_run);
        for (size_t i = 0; i < r->n; i++) {
            double x = r->s[i].t_ms / 1000.0, y = r->s[i].rss_kib / 1024.0;
            if (x > tmax)
                tmax = x;
            if (y > ymax)
                ymax = y;
            if (r->has_live && r->s[i].live / BENCH_MIB > ymax)
                ymax = r->s[i].live / BENCH_MIB;
        }
        if (r->has_live && (live_cfg < 0 || strcmp(t->cfgs[c].name, "glibc") == 0))
            live_cfg = c;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        free(st);
        return -1;
    }
    const double W = 1110, H = 560, L = 70, R = 380, T = 66, B = 56;
    const double pw = W - L - R, ph = H - T - B;
    double ystep = nice_step(ymax * 1.05, 8), xstep = nice_step(tmax, 10);
    double ytop = ceil(ymax * 1.05 / ystep) * ystep, xright = ceil(tmax / xstep) * xstep;
    if (!(ytop > 0))
        ytop = 1;
    if (!(xright > 0))
        xright = 1;
#define XP(x) (L + (x) / xright * pw)
#define YP(y) (T + ph - (y) / ytop * ph)

    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H, W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"16\" font-weight=\"bold\">ebb-bench ", L);
    xml_text(f, t->workload);
    fprintf(f, ": resident memory over time, one line per allocator configuration</text>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"40\" fill=\"#444\">", L);
    char sub[400];
    snprintf(sub, sizeof sub, "%s mode, median run (by peak RSS) of %d; %s, %d CPUs, %s RAM, %s, %s",
             t->mode, t->n_runs, t->machine.cpu, t->machine.cpus, t->machine.mem, t->machine.kernel,
             t->machine.libc);
    xml_text(f, sub);
    fprintf(f, "</text>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"56\" fill=\"#444\">Dots mark where the load ended and live "
               "bytes fell to the kept set; the dashed grey line is the workload's own live "
               "bytes.</text>\n",
            L);

    /* Grid and axes */
    for (double y = 0; y <= ytop + 1e-9; y += ystep) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n",
                L, YP(y), L + pw, YP(y));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6,
                YP(y) + 4, y);
    }
    for (double x = 0; x <= xright + 1e-9; x += xstep) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#f0f0f0\"/>\n",
                XP(x), T, XP(x), T + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", XP(x),
                T + ph + 16, x);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
               "stroke=\"#888\"/>\n",
            L, T, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">seconds since start</text>\n",
            L + pw / 2, H - 14);
    fprintf(f, "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">MiB "
               "(RSS from /proc/PID/status)</text>\n",
            T + ph / 2);

    /* Live bytes of one run, dashed. */
    if (live_cfg >= 0) {
        const struct bench_run *r = run_at(t, live_cfg, st[live_cfg].median_run);
        fprintf(f, "<polyline fill=\"none\" stroke=\"#999\" stroke-width=\"1.5\" "
                   "stroke-dasharray=\"5,4\" points=\"");
        for (size_t i = 0; i < r->n; i++)
            fprintf(f, "%.1f,%.1f ", XP(r->s[i].t_ms / 1000.0), YP(r->s[i].live / BENCH_MIB));
        fprintf(f, "\"/>\n");
    }

    /* One line per configuration. */
    int li = 0;
    double ly = T + 4;
    for (int c = 0; c < t->n_cfgs; c++) {
        const struct bench_config *cfg = &t->cfgs[c];
        const char *col = config_color(cfg->name, c);
        bool ebb = strcmp(cfg->name, "ebbmalloc") == 0;
        char label[200];
        if (st[c].median_run < 0) {
            snprintf(label, sizeof label, "%s: %s", cfg->name,
                     cfg->skipped ? "skipped (not installed)" : "no valid run");
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#999\">", L + pw + 34, ly + 4);
            xml_text(f, label);
            fprintf(f, "</text>\n");
            ly += 19;
            continue;
        }
        const struct bench_run *r = run_at(t, c, st[c].median_run);
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\" "
                   "stroke-linejoin=\"round\" points=\"",
                col, ebb ? "3" : "1.8");
        for (size_t i = 0; i < r->n; i++)
            fprintf(f, "%.1f,%.1f ", XP(r->s[i].t_ms / 1000.0), YP(r->s[i].rss_kib / 1024.0));
        fprintf(f, "\"><title>");
        xml_text(f, cfg->name);
        fprintf(f, "</title></polyline>\n");
        if (r->t_drop_ms >= 0) {
            for (size_t i = 0; i < r->n; i++)
                if (r->s[i].t_ms >= (uint32_t)r->t_drop_ms) {
                    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"/>\n",
                            XP(r->s[i].t_ms / 1000.0), YP(r->s[i].rss_kib / 1024.0), col);
                    break;
                }
        }
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"%s\"/>\n",
                L + pw + 10, ly, L + pw + 30, ly, col, ebb ? "3" : "2");
        if (r->rss_after_kib >= 0)
            snprintf(label, sizeof label, "%s: peak %.0f, 2 s after load %.0f MiB", cfg->name,
                     r->peak_rss_kib / 1024.0, r->rss_after_kib / 1024.0);
        else
            snprintf(label, sizeof label, "%s: peak %.0f MiB", cfg->name, r->peak_rss_kib / 1024.0);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\"%s>", L + pw + 34, ly + 4,
                ebb ? " font-weight=\"bold\"" : "");
        xml_text(f, label);
        fprintf(f, "</text>\n");
        ly += 19;
        li++;
    }
    if (live_cfg >= 0) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
                   "stroke-width=\"1.5\" stroke-dasharray=\"5,4\"/>\n",
                L + pw + 10, ly, L + pw + 30, ly);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">live bytes (", L + pw + 34, ly + 4);
        xml_text(f, t->cfgs[live_cfg].name);
        fprintf(f, " run)</text>\n");
    }
    fprintf(f, "</svg>\n");
#undef XP
#undef YP
    free(st);
    (void)li;
    return fclose(f) == 0 ? 0 : -1;
}
