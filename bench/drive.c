/* Running a comparison: every part (a workload, or each section of a sectioned one)
 * under every selected configuration, interleaved, with a progress line; then the
 * tables, CSV files and charts. */
#define _GNU_SOURCE
#include "driver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int mkdir_p(const char *dir) {
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return -1;
    return 0;
}

bool have_program(const char *name) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

void print_skips(void) {
    for (int c = 0; c < n_cfgs; c++)
        if (cfgs[c].skipped)
            fprintf(stderr, "ebb-bench: skipping %s: %s\n", cfgs[c].name, cfgs[c].skip_reason);
}

void out_path(char *dst, size_t n, const char *given, const char *suffix) {
    if (given) snprintf(dst, n, "%s", given);
    else snprintf(dst, n, "%s/%s%s", O.out, O.workload, suffix);
}

/* ------------------------------------------------------------ progress */

struct progress {
    int index, total;
    const char *cfg, *part;
    int run, runs;
    double last;
};

static void progress_cb(void *arg, const struct bench_status *st) {
    struct progress *p = arg;
    if (!O.tty) return;
    double t = now_s();
    if (t - p->last < 0.2) return;
    p->last = t;
    fprintf(stderr,
            "\r\033[K[%d/%d] %s%s%s %s run %d/%d  %5.1f s %-5s RSS %6.0f MiB  live %6.0f MiB  heaps %d",
            p->index, p->total, O.workload, p->part ? ":" : "", p->part ? p->part : "", p->cfg, p->run,
            p->runs, st->t_s, st->phase, st->rss_kib / 1024.0, st->live / BENCH_MIB, st->heaps);
    fflush(stderr);
}

static void progress_done(const struct progress *p, const struct bench_run *r) {
    if (O.tty) fprintf(stderr, "\r\033[K");
    fprintf(stderr, "[%d/%d] %s%s%s run %d/%d: ", p->index, p->total, p->part ? p->part : "",
            p->part ? " " : "", p->cfg, p->run, p->runs);
    if (!r->ok) {
        fprintf(stderr, "%s\n", r->reason);
    } else {
        fprintf(stderr, "peak RSS %.0f MiB", r->peak_rss_kib / 1024.0);
        if (r->rss_after_kib >= 0) fprintf(stderr, ", 2 s after load %.0f MiB", r->rss_after_kib / 1024.0);
        if (r->has_live) fprintf(stderr, ", peak live %.0f MiB", r->peak_live / BENCH_MIB);
        if (r->heaps_max) fprintf(stderr, ", %d heaps", r->heaps_max);
        for (int i = 0; i < r->n_res; i++) fprintf(stderr, ", %s %.2f s", r->res[i].name, r->res[i].ns / 1e9);
        fprintf(stderr, "\n");
    }
    if (O.verbose && r->stderr_tail[0]) fprintf(stderr, "  workload said: %s\n", r->stderr_tail);
}

/* ------------------------------------------------------------ running */

static struct bench_spec part_spec(const struct bench_part *part, struct progress *p) {
    unsigned interval = O.interval_ms;
    bool quick = strcmp(O.mode, "quick") == 0, lng = strcmp(O.mode, "long") == 0;
    if (!interval) interval = quick ? 50 : lng ? 250 : 100;
    struct bench_spec sp = {
        .argv = part->argv.v,
        .environ = environ,
        .interval_ms = interval,
        .drop_after_ms = 2000,
        .timeout_ms = lng ? 4 * 3600 * 1000u : 600000,
        .sync = true,
        .exec_path = part->exec_path,
        .parse_line = part->parse_line,
        .progress = progress_cb,
        .progress_arg = p,
    };
    return sp;
}

/* runs[(part * n_cfgs + c) * O.runs + k].  Runs are interleaved (every part and
 * configuration once, then again) so that drift in the machine's state spreads over all
 * of them.  Returns how many runs were refused or failed. */
static int run_all(struct bench_part *parts, int np, struct bench_run *runs) {
    int total = 0, index = 0, bad = 0;
    for (int c = 0; c < n_cfgs; c++)
        if (!cfgs[c].skipped) total += O.runs * np;
    double t0 = now_s();
    for (int k = 0; k < O.runs; k++)
        for (int p = 0; p < np; p++)
            for (int c = 0; c < n_cfgs; c++) {
                if (cfgs[c].skipped) continue;
                struct progress pr = {++index, total, cfgs[c].name, parts[p].name, k + 1, O.runs, 0};
                struct bench_spec sp = part_spec(&parts[p], &pr);
                struct bench_run *r = &runs[(p * n_cfgs + c) * O.runs + k];
                bench_run(&sp, &cfgs[c], r);
                if (!r->ok) bad++;
                progress_done(&pr, r);
            }
    fprintf(stderr, "ebb-bench: %d runs in %.0f s\n", total, now_s() - t0);
    return bad;
}

/* ------------------------------------------------------------ results */

static void write_tables(FILE *f, const struct bench_table *t, int np) {
    if (np > 1) bench_write_summary(f, t, np);
    for (int p = 0; p < np; p++) {
        bench_write_table(f, &t[p]);
        if (p + 1 < np) fprintf(f, "\n");
    }
}

static void write_svgs(const struct bench_table *t, int np, char *first, size_t first_len, bool *ok) {
    *ok = true;
    for (int p = 0; p < np; p++) {
        char svg[PATH_MAX], suffix[64];
        if (np == 1) {
            out_path(svg, sizeof svg, O.svg, ".svg");
        } else {
            snprintf(suffix, sizeof suffix, "-%s.svg", t[p].part);
            out_path(svg, sizeof svg, NULL, suffix);
        }
        if (bench_write_svg(svg, &t[p]) != 0) *ok = false;
        if (p == 0) snprintf(first, first_len, "%s%s", svg, np > 1 ? " (and one per section)" : "");
    }
}

static void write_results(const struct bench_table *t, int np) {
    if (mkdir_p(O.out) < 0) fprintf(stderr, "ebb-bench: cannot create %s: %s\n", O.out, strerror(errno));
    char csv[PATH_MAX], runs_csv[PATH_MAX], svg[PATH_MAX + 32], md[PATH_MAX];
    out_path(csv, sizeof csv, O.csv, "-samples.csv");
    out_path(runs_csv, sizeof runs_csv, NULL, "-runs.csv");
    out_path(md, sizeof md, NULL, ".md");
    printf("\n");
    write_tables(stdout, t, np);
    FILE *f = fopen(md, "w");
    if (f) {
        write_tables(f, t, np);
        fclose(f);
    }
    bool wrote_csv = bench_write_samples_csv_n(csv, t, np) == 0;
    bool wrote_runs = bench_write_runs_csv_n(runs_csv, t, np) == 0;
    bool wrote_svg;
    write_svgs(t, np, svg, sizeof svg, &wrote_svg);
    printf("\n");
    printf("table:   %s\n", f ? md : "(not written)");
    printf("chart:   %s%s\n", svg, wrote_svg ? "" : " (FAILED to write)");
    printf("samples: %s%s\n", csv, wrote_csv ? "" : " (FAILED to write)");
    printf("runs:    %s%s\n", runs_csv, wrote_runs ? "" : " (FAILED to write)");
}

int drive_comparison(struct bench_part *parts, int np) {
    size_t per_part = (size_t)n_cfgs * (size_t)O.runs;
    struct bench_run *runs = calloc(per_part * (size_t)np, sizeof *runs);
    struct bench_table *t = calloc((size_t)np, sizeof *t);
    if (!runs || !t) return 1;
    print_skips();
    int bad = run_all(parts, np, runs);
    struct bench_machine m;
    bench_machine_describe(&m);
    for (int p = 0; p < np; p++)
        t[p] = (struct bench_table){O.workload, parts[p].name, p + 1 < np, O.mode,
                                    cfgs,       n_cfgs,        O.runs,     runs + per_part * (size_t)p,
                                    m};
    write_results(t, np);
    for (size_t i = 0; i < per_part * (size_t)np; i++) bench_run_free(&runs[i]);
    free(runs);
    free(t);
    if (bad)
        fprintf(stderr,
                "ebb-bench: %d run(s) refused or failed; they are not in the table's "
                "numbers\n",
                bad);
    return bad ? 3 : 0;
}
