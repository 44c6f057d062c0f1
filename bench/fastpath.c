/* ebb-bench fastpath: the allocator's own instructions per malloc and per free on two
 * single-thread loops, counted by callgrind, and nanoseconds per pair natively.
 *
 * Every malloc and free of the loops goes through two wrappers in the workload
 * (ebb_fp_malloc, ebb_fp_free).  Callgrind's output records, for each call made from a
 * wrapper, the instructions executed inside it (inclusive cost): that is the
 * allocator's malloc or free from its first instruction to its return, and nothing of
 * the loop.  Runs with N and 2N pairs are subtracted, so start-up, the first refills
 * and the exit cancel and what remains is the steady state.  The loop's own
 * instructions (the rest of the difference in callgrind's totals, measured with
 * do-nothing malloc/free) are reported beside it, and "totals - loop" is a cross-check:
 * the whole program's instructions per pair minus the loop's own. */
#define _GNU_SOURCE
#include "driver.h"
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

struct loop_def {
    const char *section, *label, *what;
};

static const struct loop_def loops[] = {
    {"fastpath", "ring",
     "one thread, a ring of 64 live blocks of 16 B - 1 KiB of mixed classes: free one, "
     "allocate one"},
    {"fastpath-burst", "burst",
     "one thread, 256 blocks of 8 classes (16, 32, 48, 64, 96, 128, 192, 256 B) allocated in "
     "a row, then freed in two halves: the second half last-in first-out, the first half "
     "first-in first-out"},
};
#define N_LOOPS 2

/* Instructions per call, per loop; NAN when not measured. */
struct cg_counts {
    double malloc_ins, free_ins; /* inside the allocator, per call */
    double total_per_pair;       /* the whole program's, per malloc+free pair */
};

struct fp_row {
    double ns[N_LOOPS], ns_sp[N_LOOPS];
    struct cg_counts cg[N_LOOPS];
    char why[512];
};

static const unsigned long long n_cg = 200000;

/* One child: natively, or under callgrind writing outfile. */
static int fastpath_child(const struct bench_config *cfg, const char *section, unsigned long long iters,
                          bool null_alloc, const char *outfile, struct bench_run *r) {
    struct argv_buf a = {0};
    char outopt[PATH_MAX + 32], itbuf[32], exe[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/ebb-wl-throughput", O.exe_dir);
    if (outfile) {
        av_add(&a, "valgrind");
        av_add(&a, "--tool=callgrind");
        av_add(&a, "--quiet");
        av_add(&a, "--compress-strings=no"); /* names in full, positions absolute: */
        av_add(&a, "--compress-pos=no");     /* simple for bench_callgrind_parse */
        snprintf(outopt, sizeof outopt, "--callgrind-out-file=%s", outfile);
        av_add(&a, outopt);
    }
    av_add(&a, exe);
    av_add(&a, "--only");
    av_add(&a, section);
    av_add(&a, "--iters");
    snprintf(itbuf, sizeof itbuf, "%llu", iters);
    av_add(&a, itbuf);
    if (null_alloc) av_add(&a, "--null");
    av_add(&a, "--sync");
    struct bench_spec sp = {
        .argv = a.v,
        .environ = environ,
        .interval_ms = 1000,
        .drop_after_ms = 2000,
        .timeout_ms = 600000,
        .sync = true,
        .no_samples = outfile != NULL,
    };
    return bench_run(&sp, cfg, r);
}

struct cg_file {
    struct bench_callgrind m, f; /* calls from ebb_fp_malloc, from ebb_fp_free */
};

/* Runs the loop under callgrind and reads the two wrappers' call arcs. */
static bool cg_run(const struct bench_config *cfg, const char *section, unsigned long long n, bool null_alloc,
                   struct cg_file *out, char *why, size_t why_len) {
    char file[64];
    snprintf(file, sizeof file, "/tmp/ebb-bench-cg.%d", (int)getpid());
    struct bench_run r;
    bool ok = fastpath_child(cfg, section, n, null_alloc, file, &r) == 0;
    if (!ok) snprintf(why, why_len, "%s", r.reason);
    bench_run_free(&r);
    char *text = NULL;
    size_t cap = 0, len = 0;
    if (ok && procfs_read(file, &text, &cap, &len) != 0) {
        snprintf(why, why_len, "no callgrind output");
        ok = false;
    }
    if (ok && (bench_callgrind_parse(text, "ebb_fp_malloc", &out->m) != 0 ||
               bench_callgrind_parse(text, "ebb_fp_free", &out->f) != 0 || !out->m.calls)) {
        snprintf(why, why_len, "callgrind output without totals or wrapper calls");
        ok = false;
    }
    free(text);
    unlink(file);
    return ok;
}

/* Steady-state instructions per call from runs with N and 2N pairs. */
static struct cg_counts cg_measure(const struct bench_config *cfg, const char *section, bool null_alloc,
                                   char *why, size_t why_len) {
    struct cg_counts c = {NAN, NAN, NAN};
    struct cg_file a, b;
    if (!cg_run(cfg, section, n_cg, null_alloc, &a, why, why_len) ||
        !cg_run(cfg, section, 2 * n_cg, null_alloc, &b, why, why_len))
        return c;
    double dm = (double)(b.m.calls - a.m.calls), df = (double)(b.f.calls - a.f.calls);
    if (!(dm > 0) || !(df > 0)) {
        snprintf(why, why_len, "no more calls in the longer run");
        return c;
    }
    c.malloc_ins = (double)(b.m.inclusive - a.m.inclusive) / dm;
    c.free_ins = (double)(b.f.inclusive - a.f.inclusive) / df;
    c.total_per_pair = (double)(b.m.total - a.m.total) / dm;
    return c;
}

/* Median ns per pair over O.runs native runs. */
static void native_measure(const struct bench_config *cfg, int l, unsigned long long n, struct fp_row *row) {
    double v[64];
    int nv = 0;
    for (int k = 0; k < O.runs && k < 64; k++) {
        struct bench_run r;
        if (O.tty)
            fprintf(stderr, "\r\033[Kfastpath %s %s native run %d/%d", cfg->name, loops[l].label, k + 1,
                    O.runs);
        if (fastpath_child(cfg, loops[l].section, n, false, NULL, &r) == 0 && r.n_res)
            v[nv++] = (double)r.res[0].ns / (double)r.res[0].ops;
        else snprintf(row->why, sizeof row->why, "%s", r.reason);
        bench_run_free(&r);
    }
    row->ns[l] = nv ? bench_median(v, nv) : NAN;
    row->ns_sp[l] = nv ? bench_spread(v, nv, row->ns[l]) : 0;
}

static void measure_config(const struct bench_config *cfg, bool vg, unsigned long long n_native,
                           struct fp_row *row) {
    for (int l = 0; l < N_LOOPS; l++) {
        row->cg[l] = (struct cg_counts){NAN, NAN, NAN};
        native_measure(cfg, l, n_native, row);
        if (vg && !isnan(row->ns[l])) {
            if (O.tty) fprintf(stderr, "\r\033[Kfastpath %s %s under callgrind", cfg->name, loops[l].label);
            row->cg[l] = cg_measure(cfg, loops[l].section, false, row->why, sizeof row->why);
        }
    }
    if (O.tty) fprintf(stderr, "\r\033[K");
    fprintf(stderr,
            "fastpath %s: ring %.1f + %.1f instructions, %.1f ns/pair; burst %.1f + %.1f "
            "instructions, %.1f ns/pair%s%s\n",
            cfg->name, row->cg[0].malloc_ins, row->cg[0].free_ins, row->ns[0], row->cg[1].malloc_ins,
            row->cg[1].free_ins, row->ns[1], row->why[0] ? " — " : "", row->why);
}

/* The loops' own instructions per pair: the null allocator's totals minus what its
 * do-nothing malloc and free executed. */
static void loop_own(double own[N_LOOPS]) {
    struct bench_config plain;
    memset(&plain, 0, sizeof plain);
    snprintf(plain.name, sizeof plain.name, "glibc");
    for (int l = 0; l < N_LOOPS; l++) {
        char w[512] = "";
        struct cg_counts c = cg_measure(&plain, loops[l].section, true, w, sizeof w);
        own[l] = c.total_per_pair - c.malloc_ins - c.free_ins;
    }
}

/* ------------------------------------------------------------ the report */

static void fmt1(char *b, size_t n, double v) {
    if (isnan(v)) snprintf(b, n, "n/a");
    else snprintf(b, n, "%.1f", v);
}

static void write_row(FILE *f, int c, int l, const struct fp_row *rows, int base, double own) {
    const struct fp_row *r = &rows[c];
    const struct cg_counts *g = &r->cg[l];
    if (cfgs[c].skipped) {
        fprintf(f, "| %s | skipped: %s |\n", cfgs[c].name, cfgs[c].skip_reason);
        return;
    }
    if (isnan(r->ns[l])) {
        fprintf(f, "| %s | **%s** |\n", cfgs[c].name, r->why);
        return;
    }
    char m[32], fr[32], pair[32], vs[32], tot[32], ns[48], nvs[32];
    fmt1(m, sizeof m, g->malloc_ins);
    fmt1(fr, sizeof fr, g->free_ins);
    fmt1(pair, sizeof pair, g->malloc_ins + g->free_ins);
    fmt1(tot, sizeof tot, g->total_per_pair - own);
    double bp = base >= 0 ? rows[base].cg[l].malloc_ins + rows[base].cg[l].free_ins : NAN;
    report_fmt_ratio(vs, sizeof vs, g->malloc_ins + g->free_ins, bp);
    if (O.runs > 1) snprintf(ns, sizeof ns, "%.1f ±%.0f%%", r->ns[l], r->ns_sp[l] * 100);
    else snprintf(ns, sizeof ns, "%.1f", r->ns[l]);
    report_fmt_ratio(nvs, sizeof nvs, r->ns[l], base >= 0 ? rows[base].ns[l] : NAN);
    fprintf(f, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", cfgs[c].name, m, fr, pair, vs, tot, ns, nvs);
}

static void write_loop_table(FILE *f, int l, const struct fp_row *rows, int base, double own) {
    const char *bn = base >= 0 ? cfgs[base].name : "-";
    fprintf(f, "#### %s: %s\n\n", loops[l].label, loops[l].what);
    fprintf(f,
            "| configuration | instructions per malloc | per free | per malloc+free | vs %s | "
            "totals - loop, per pair | ns per pair (native) | vs %s |\n"
            "|---|--:|--:|--:|--:|--:|--:|--:|\n",
            bn, bn);
    for (int c = 0; c < n_cfgs; c++) write_row(f, c, l, rows, base, own);
    char o[32];
    fmt1(o, sizeof o, own);
    fprintf(f, "\nThe loop's own instructions: %s per pair.\n\n", o);
}

static void write_report(FILE *f, const struct fp_row *rows, int base, const double own[N_LOOPS],
                         unsigned long long n_native) {
    struct bench_machine m;
    bench_machine_describe(&m);
    fprintf(f,
            "\n### fastpath: instructions per malloc and per free (callgrind), ns per pair "
            "natively (%d run%s)\n\n",
            O.runs, O.runs == 1 ? "" : "s");
    fprintf(f, "Machine: %s, %d CPUs, %s RAM, %s, %s.\n\n", m.cpu, m.cpus, m.mem, m.kernel, m.libc);
    for (int l = 0; l < N_LOOPS; l++) write_loop_table(f, l, rows, base, own[l]);
    fprintf(f,
            "Instructions per malloc / per free: what callgrind counts inside the calls the "
            "loop makes (through two wrapper functions, whose own instructions stay out), "
            "from a run with %llu pairs subtracted from one with %llu, divided by the "
            "difference in calls: the allocator's steady state, start-up cancelled, none of "
            "the loop. Totals - loop: callgrind's total for the whole program per pair, minus "
            "the loop's own instructions (the same runs with do-nothing malloc/free, less "
            "what those two executed); it should match malloc+free. ns per pair: wall time "
            "of %llu pairs natively, median of %d.\n",
            n_cg, 2 * n_cg, n_native, O.runs);
    if (base >= 0) fprintf(f, "Ratios are against `%s` of the same run.\n", cfgs[base].name);
}

static int baseline(const struct fp_row *rows) {
    int base = -1;
    for (int c = 0; c < n_cfgs; c++)
        if (!isnan(rows[c].ns[0]) && strcmp(cfgs[c].name, "glibc") == 0) base = c;
    for (int c = 0; c < n_cfgs && base < 0; c++)
        if (!isnan(rows[c].ns[0])) base = c;
    return base;
}

int run_fastpath(void) {
    bool vg = have_program("valgrind");
    unsigned long long n_native = strcmp(O.mode, "quick") == 0  ? 20000000
                                  : strcmp(O.mode, "long") == 0 ? 100000000
                                                                : 50000000;
    print_skips();
    if (!vg)
        fprintf(stderr, "ebb-bench: valgrind not found, instructions are not counted "
                        "(apt-get install valgrind)\n");
    struct fp_row *rows = calloc((size_t)n_cfgs, sizeof *rows);
    if (!rows) return 1;
    int bad = 0;
    for (int c = 0; c < n_cfgs; c++) {
        for (int l = 0; l < N_LOOPS; l++) rows[c].ns[l] = NAN;
        if (cfgs[c].skipped) continue;
        measure_config(&cfgs[c], vg, n_native, &rows[c]);
        bad += isnan(rows[c].ns[0]) || isnan(rows[c].ns[1]);
    }
    double own[N_LOOPS] = {NAN, NAN};
    if (vg) loop_own(own);
    int base = baseline(rows);
    write_report(stdout, rows, base, own, n_native);
    char md[PATH_MAX];
    out_path(md, sizeof md, NULL, ".md");
    FILE *f = mkdir_p(O.out) == 0 ? fopen(md, "w") : NULL;
    if (f) {
        write_report(f, rows, base, own, n_native);
        fclose(f);
        printf("\ntable:   %s\n", md);
    }
    free(rows);
    return bad ? 3 : 0;
}
