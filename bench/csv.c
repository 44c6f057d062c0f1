/* The CSV files of a comparison: every sample of every run, and one line per run and
 * timed section (with refusals and their reasons).  A sectioned workload (throughput)
 * writes all its sections into the same two files, named WORKLOAD:SECTION. */
#define _GNU_SOURCE
#include "report.h"

#include <string.h>

static void csv_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        if (*s == '\n' || *s == '\r') fputc(' ', f);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static const char *phase_label(int p) {
    static const char *const names[] = {"start", "load", "idle", "end"};
    return p >= 0 && p <= 3 ? names[p] : "?";
}

static void table_name(char *b, size_t n, const struct bench_table *t) {
    if (t->part) snprintf(b, n, "%s:%s", t->workload, t->part);
    else snprintf(b, n, "%s", t->workload);
}

static void write_samples(FILE *f, const struct bench_table *t) {
    char wl[96];
    table_name(wl, sizeof wl, t);
    for (int c = 0; c < t->n_cfgs; c++)
        for (int k = 0; k < t->n_runs; k++) {
            const struct bench_run *r = report_run_at(t, c, k);
            if (!r->ok) continue;
            for (size_t i = 0; i < r->n; i++) {
                const struct bench_sample *s = &r->s[i];
                fprintf(f, "%s,%s,%d,%u,%u,%u,%llu,%u,%s\n", wl, t->cfgs[c].name, k + 1, s->t_ms, s->rss_kib,
                        s->anon_kib, (unsigned long long)s->live, s->heaps, phase_label(s->phase));
            }
        }
}

int bench_write_samples_csv_n(const char *path, const struct bench_table *t, int n) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "workload,config,run,t_ms,rss_kib,rss_anon_kib,live_bytes,heaps64,phase\n");
    for (int i = 0; i < n; i++) write_samples(f, &t[i]);
    return fclose(f) == 0 ? 0 : -1;
}

int bench_write_samples_csv(const char *path, const struct bench_table *t) {
    return bench_write_samples_csv_n(path, t, 1);
}

static void write_run_line(FILE *f, const char *wl, const char *cfg, int k, const struct bench_run *r,
                           int j) {
    fprintf(f, "%s,%s,%d,%s,%llu,%llu,%lld,%lld,%llu,%d,%d,%lld,%lld,", wl, cfg, k + 1,
            r->ok ? "ok" : (r->refused ? "refused" : "failed"), (unsigned long long)r->peak_rss_kib,
            (unsigned long long)r->maxrss_kib, (long long)r->rss_after_kib, (long long)r->rss_end_kib,
            (unsigned long long)r->peak_live, r->heaps_max, r->heaps_end, (long long)r->t_drop_ms,
            (long long)r->t_end_ms);
    if (r->n_res) {
        const struct bench_result *res = &r->res[j];
        fprintf(f, "%s,%llu,%llu,", res->name, (unsigned long long)res->ops, (unsigned long long)res->ns);
        if (res->has_faults)
            fprintf(f, "%llu,%llu,", (unsigned long long)res->minflt, (unsigned long long)res->majflt);
        else fprintf(f, ",,");
        fprintf(f, "%llu,", (unsigned long long)res->bytes);
    } else {
        fprintf(f, ",,,,,,");
    }
    fprintf(f, "%llu,", (unsigned long long)r->minflt);
    csv_str(f, r->reason);
    fputc('\n', f);
}

static void write_runs(FILE *f, const struct bench_table *t) {
    char wl[96];
    table_name(wl, sizeof wl, t);
    for (int c = 0; c < t->n_cfgs; c++) {
        if (t->cfgs[c].skipped) {
            fprintf(f, "%s,%s,0,skipped,,,,,,,,,,,,,,,,,", wl, t->cfgs[c].name);
            csv_str(f, t->cfgs[c].skip_reason);
            fputc('\n', f);
            continue;
        }
        for (int k = 0; k < t->n_runs; k++) {
            const struct bench_run *r = report_run_at(t, c, k);
            int nres = r->n_res ? r->n_res : 1;
            for (int j = 0; j < nres; j++) write_run_line(f, wl, t->cfgs[c].name, k, r, j);
        }
    }
}

int bench_write_runs_csv_n(const char *path, const struct bench_table *t, int n) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "workload,config,run,status,peak_rss_kib,maxrss_kib,rss_after_kib,rss_end_kib,"
               "peak_live_bytes,heaps_max,heaps_end,t_drop_ms,t_end_ms,result,ops,ns,minflt,"
               "majflt,bytes,process_minflt,reason\n");
    for (int i = 0; i < n; i++) write_runs(f, &t[i]);
    return fclose(f) == 0 ? 0 : -1;
}

int bench_write_runs_csv(const char *path, const struct bench_table *t) {
    return bench_write_runs_csv_n(path, t, 1);
}
