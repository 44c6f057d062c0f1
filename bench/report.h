/* Shared by the report files (report.c, csv.c, svg.c, memory.c): one configuration's
 * runs turned into medians, and the formatting helpers. */
#ifndef EBB_BENCH_REPORT_H
#define EBB_BENCH_REPORT_H

#include "bench.h"

#define MAXR 64

/* Medians over one configuration's good runs; NAN where no run had the figure. */
struct cstats {
    int n_ok;
    const struct bench_run *first_bad;
    double peak_rss, rss_load, rss_after, rss_end, peak_live, ratio, heaps;
    double time[BENCH_MAX_RESULTS], time_sp[BENCH_MAX_RESULTS];
    double ops[BENCH_MAX_RESULTS], ops_sp[BENCH_MAX_RESULTS];
    double minflt[BENCH_MAX_RESULTS];      /* the section's minor faults */
    double fault_share[BENCH_MAX_RESULTS]; /* faulted bytes / allocated bytes */
    int median_run;                        /* index into the config's runs, by peak RSS */
};

const struct bench_run *report_run_at(const struct bench_table *t, int c, int k);
/* Names of the timed sections, in first-seen order. */
int report_result_names(const struct bench_table *t, char names[][32], int max);
void report_compute(const struct bench_table *t, int c, char names[][32], int nn, struct cstats *s);
/* glibc when it has a good run, else the first configuration that has one; -1 if none. */
int report_baseline(const struct bench_table *t, const struct cstats *st);
int report_find_config(const struct bench_table *t, const char *name);
double report_med(double *v, int n);
void report_fmt_num(char *b, size_t n, double v, int prec);
void report_fmt_ratio(char *b, size_t n, double num, double den);

/* memory.c: ebbmalloc's own breakdown (ebbstats lines), and whether RSS stayed flat. */
void report_write_breakdown(FILE *f, const struct bench_table *t);
void report_write_flatness(FILE *f, const struct bench_table *t);

#endif
