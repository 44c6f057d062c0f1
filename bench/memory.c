/* Two views of memory beyond the main table: where ebbmalloc's own memory sits at the
 * peak and after the load (from the "ebbstats" lines the workload read through
 * ebb_stats inside the process), and whether RSS stays flat over a long load (the
 * trend of the sampled RSS over the last 80% of the load). */
#define _GNU_SOURCE
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the breakdown */

/* clang-format off */
enum { F_RSS, F_IN_USE, F_TC, F_CENTRAL, F_PAGE_FREE, F_META, F_RESIDENT, F_OUTSIDE, F_OWN, F_RELEASED,
       F_COUNT };
/* clang-format on */

static double field_mib(const struct bench_ebbstats *e, int k) {
    double rss = (double)e->rss_kib / 1024.0;
    switch (k) {
    case F_RSS: return rss;
    case F_IN_USE: return (double)e->in_use / BENCH_MIB;
    case F_TC: return (double)e->thread_cache / BENCH_MIB;
    case F_CENTRAL: return (double)e->central / BENCH_MIB;
    case F_PAGE_FREE: return (double)e->page_free / BENCH_MIB;
    case F_META: return (double)e->metadata / BENCH_MIB;
    case F_RESIDENT: return (double)e->resident / BENCH_MIB;
    case F_OUTSIDE: return rss - (double)e->resident / BENCH_MIB;
    case F_OWN: return (double)e->own_kib / 1024.0;
    default: return (double)e->released / BENCH_MIB;
    }
}

static bool config_has_breakdown(const struct bench_table *t, int c) {
    for (int k = 0; k < t->n_runs; k++) {
        const struct bench_run *r = report_run_at(t, c, k);
        for (int m = 0; m < BM_COUNT; m++)
            if (r->ok && r->ebb[m].have) return true;
    }
    return false;
}

/* One line: medians over the good runs that have this moment. */
static void write_breakdown_row(FILE *f, const struct bench_table *t, int c, int m) {
    static const char *const moment[BM_COUNT] = {"at peak RSS", "at peak live", "2 s after load", "at end"};
    double v[F_COUNT][MAXR];
    int n = 0;
    for (int k = 0; k < t->n_runs && k < MAXR; k++) {
        const struct bench_run *r = report_run_at(t, c, k);
        if (!r->ok || !r->ebb[m].have) continue;
        for (int j = 0; j < F_COUNT; j++) v[j][n] = field_mib(&r->ebb[m], j);
        n++;
    }
    if (!n) return;
    fprintf(f, "| %s | %s |", t->cfgs[c].name, moment[m]);
    for (int j = 0; j < F_COUNT; j++) fprintf(f, " %.1f |", report_med(v[j], n));
    fprintf(f, "\n");
}

void report_write_breakdown(FILE *f, const struct bench_table *t) {
    bool any = false;
    for (int c = 0; c < t->n_cfgs; c++) any |= config_has_breakdown(t, c);
    if (!any) return;
    fprintf(f, "\nWhere ebbmalloc's memory sits (MiB, medians; `ebb_stats` read inside the "
               "workload process):\n\n");
    fprintf(f, "| configuration | when | RSS | in use | thread caches | central free objects | "
               "free resident pages | metadata | ebbmalloc resident | outside ebbmalloc | "
               "of it the workload's bookkeeping | released |\n"
               "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for (int c = 0; c < t->n_cfgs; c++)
        for (int m = 0; m < BM_COUNT; m++) write_breakdown_row(f, t, c, m);
    fprintf(f, "\nRSS: the process's VmRSS read just before `ebb_stats`. At peak RSS: when "
               "the workload's own 20 ms samples of its RSS first came within 1%% of their "
               "highest value during the load. At peak live: at the sample with the most "
               "live bytes the workload counted during the load (its exact peak, between two "
               "samples, may be higher). In use: "
               "blocks handed to the program (rounded up to their size class); thread caches "
               "and central free objects: free blocks held per thread and in the central lists "
               "(with the uncarved rest of their spans); free resident pages: free spans not "
               "yet given back; metadata: ebbmalloc's own records; ebbmalloc resident: their "
               "sum; outside ebbmalloc: RSS minus that (program text, libraries, stacks, "
               "ebbmalloc's static variables and release thread's stack, the workload's own "
               "bookkeeping); of it the workload's bookkeeping: the resident pages of the "
               "mapping the workload keeps its working sets, mailboxes and long-lived set's "
               "table in (mincore), the same under every allocator; released: given back "
               "with madvise, not resident.\n");
}

/* ------------------------------------------------------------ flat or not */

bool bench_trend(const double *x, const double *y, size_t n, double min_x, double max_x, double *slope,
                 double *range) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0, lo = INFINITY, hi = -INFINITY;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (x[i] < min_x || x[i] > max_x) continue;
        sx += x[i];
        sy += y[i];
        sxx += x[i] * x[i];
        sxy += x[i] * y[i];
        lo = y[i] < lo ? y[i] : lo;
        hi = y[i] > hi ? y[i] : hi;
        m++;
    }
    double d = (double)m * sxx - sx * sx;
    if (m < 3 || !(d > 0)) return false;
    *slope = ((double)m * sxy - sx * sy) / d;
    *range = hi - lo;
    return true;
}

struct trend {
    double slope, range, mean, minutes;
};

/* The run's RSS (MiB) against minutes over the last 80% of its load phase. */
static bool run_trend(const struct bench_run *r, struct trend *out) {
    if (r->t_load_ms < 0 || r->t_drop_ms <= r->t_load_ms || !r->n) return false;
    double *x = malloc(r->n * sizeof *x), *y = malloc(r->n * sizeof *y);
    if (!x || !y) {
        free(x);
        free(y);
        return false;
    }
    double sum = 0;
    size_t k = 0;
    double from = (double)r->t_load_ms + 0.2 * (double)(r->t_drop_ms - r->t_load_ms);
    for (size_t i = 0; i < r->n; i++) {
        x[i] = r->s[i].t_ms / 60000.0;
        y[i] = r->s[i].rss_kib / 1024.0;
        if (r->s[i].t_ms >= from && r->s[i].t_ms <= r->t_drop_ms) {
            sum += y[i];
            k++;
        }
    }
    bool ok = bench_trend(x, y, r->n, from / 60000.0, r->t_drop_ms / 60000.0, &out->slope, &out->range);
    out->mean = k ? sum / (double)k : NAN;
    out->minutes = ((double)r->t_drop_ms - from) / 60000.0;
    free(x);
    free(y);
    return ok;
}

static const char *verdict(double drift, double mean) {
    double tol = fmax(4.0, 0.05 * mean);
    return fabs(drift) <= tol ? "flat" : drift > 0 ? "grows" : "shrinks";
}

static void write_flatness_row(FILE *f, const struct bench_table *t, int c) {
    double sl[MAXR], rg[MAXR], mn[MAXR], dr[MAXR];
    int n = 0;
    for (int k = 0; k < t->n_runs && k < MAXR; k++) {
        const struct bench_run *r = report_run_at(t, c, k);
        struct trend tr;
        if (!r->ok || !run_trend(r, &tr)) continue;
        sl[n] = tr.slope;
        rg[n] = tr.range;
        mn[n] = tr.mean;
        dr[n] = tr.slope * tr.minutes;
        n++;
    }
    if (!n) return;
    double drift = report_med(dr, n), mean = report_med(mn, n);
    fprintf(f, "| %s | %.0f | %+.2f | %+.1f | %.1f | %s |\n", t->cfgs[c].name, mean, report_med(sl, n), drift,
            report_med(rg, n), verdict(drift, mean));
}

static bool any_trend(const struct bench_table *t) {
    for (int i = 0; i < t->n_cfgs * t->n_runs; i++) {
        struct trend tr;
        if (t->runs[i].ok && run_trend(&t->runs[i], &tr)) return true;
    }
    return false;
}

void report_write_flatness(FILE *f, const struct bench_table *t) {
    if (!any_trend(t)) return; /* no load phase with a start and an end (throughput, dbbench) */
    fprintf(f, "\nDoes RSS stay flat? Over the last 80%% of the load (the first 20%% is the "
               "ramp), medians over runs:\n\n");
    fprintf(f, "| configuration | mean RSS MiB | slope MiB/min | drift MiB (slope x window) | "
               "max - min MiB | verdict |\n|---|--:|--:|--:|--:|---|\n");
    for (int c = 0; c < t->n_cfgs; c++) write_flatness_row(f, t, c);
    fprintf(f, "\nSlope: least-squares line through the sampled RSS against time. Verdict: "
               "\"flat\" when the drift is within 5%% of the mean RSS (at least 4 MiB), else "
               "\"grows\" or \"shrinks\".\n");
}
