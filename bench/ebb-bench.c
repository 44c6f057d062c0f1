/* ebb-bench: runs a benchmark workload under several allocator configurations
 * side by side, and reports a table, CSV files and an SVG chart.
 *
 *   ebb-bench WORKLOAD [--quick|--long] [--configs NAME,...] [--runs N]
 *             [--csv FILE] [--svg FILE] [--out DIR] [--lib PATH] [-- WORKLOAD-ARGS]
 *
 * Workloads: arena-creep, jvm, throughput, fastpath (instructions per
 * malloc+free pair under callgrind, and nanoseconds per pair natively).
 */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef EBB_LIB_PATH
#define EBB_LIB_PATH ""
#endif
#ifndef EBB_BENCH_SOURCE_DIR
#define EBB_BENCH_SOURCE_DIR "."
#endif

extern char **environ;

#define MAX_CFGS 32

static struct {
    const char *workload;
    const char *mode; /* quick, default, long */
    const char *configs;
    int runs;
    const char *csv, *svg, *out;
    const char *lib;
    unsigned interval_ms;
    bool verbose;
    int n_extra;
    char **extra;
    char exe_dir[PATH_MAX];
    bool tty;
} O;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ebb-bench WORKLOAD [options] [-- workload options]\n"
            "\n"
            "Workloads:\n"
            "  arena-creep  many short-lived handler threads, mixed sizes, cross-thread frees;\n"
            "               load, then drop to ~8 MiB live and idle (the field reports' creep)\n"
            "  jvm          an OpenJDK process doing zlib streams, direct buffers and\n"
            "               cross-thread native frees\n"
            "  throughput   single-thread fast path, larson-style 2 and 8 threads, pipeline\n"
            "  fastpath     instructions per malloc+free pair under callgrind, and ns per pair\n"
            "\n"
            "Options:\n"
            "  --quick            short run (about a minute for all configurations), 1 run each\n"
            "  --long             much longer load and idle, 1 run each unless --runs\n"
            "  --configs LIST     comma-separated names or groups: all (default), glibc-all,\n"
            "                     arena, peers; see --list\n"
            "  --runs N           runs per configuration (default 3; --quick/--long: 1)\n"
            "  --out DIR          where results go (default ./ebb-bench-results)\n"
            "  --csv FILE         CSV of every sample (default DIR/WORKLOAD-samples.csv)\n"
            "  --svg FILE         chart of RSS over time (default DIR/WORKLOAD.svg)\n"
            "  --lib PATH         the ebbmalloc library (default: env EBB_LIB, else the built one)\n"
            "  --preload-config NAME=PATH   add a configuration that preloads PATH\n"
            "  --interval MS      RSS sampling interval (default 50 quick, 100, 250 long)\n"
            "  --list             show the configurations and whether they are available\n"
            "  -v                 show the workloads' messages\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int mkdir_p(const char *dir)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -1;
    return 0;
}

static void find_exe_dir(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(O.exe_dir, sizeof O.exe_dir, "%s", dirname(self));
    } else {
        snprintf(O.exe_dir, sizeof O.exe_dir, ".");
    }
}

/* ------------------------------------------------------------ progress */

struct progress {
    int index, total;
    const char *cfg;
    int run, runs;
    double last;
};

static void progress_cb(void *arg, const struct bench_status *st)
{
    struct progress *p = arg;
    if (!O.tty)
        return;
    double t = now_s();
    if (t - p->last < 0.2)
        return;
    p->last = t;
    fprintf(stderr, "\r\033[K[%d/%d] %s %s run %d/%d  %5.1f s %-5s RSS %6.0f MiB  live %6.0f MiB  heaps %d",
            p->index, p->total, O.workload, p->cfg, p->run, p->runs, st->t_s, st->phase,
            st->rss_kib / 1024.0, st->live / BENCH_MIB, st->heaps);
    fflush(stderr);
}

static void progress_done(const struct progress *p, const struct bench_run *r)
{
    if (O.tty)
        fprintf(stderr, "\r\033[K");
    if (r->ok) {
        fprintf(stderr, "[%d/%d] %s run %d/%d: peak RSS %.0f MiB", p->index, p->total, p->cfg,
                p->run, p->runs, r->peak_rss_kib / 1024.0);
        if (r->rss_after_kib >= 0)
            fprintf(stderr, ", 2 s after load %.0f MiB", r->rss_after_kib / 1024.0);
        if (r->has_live)
            fprintf(stderr, ", peak live %.0f MiB", r->peak_live / BENCH_MIB);
        if (r->heaps_max)
            fprintf(stderr, ", %d heaps", r->heaps_max);
        for (int i = 0; i < r->n_res; i++)
            fprintf(stderr, ", %s %.2f s", r->res[i].name, r->res[i].ns / 1e9);
        fprintf(stderr, "\n");
    } else {
        fprintf(stderr, "[%d/%d] %s run %d/%d: %s\n", p->index, p->total, p->cfg, p->run, p->runs,
                r->reason);
    }
    if (O.verbose && r->stderr_tail[0])
        fprintf(stderr, "  workload said: %s\n", r->stderr_tail);
}

/* ------------------------------------------------------------ workloads */

struct argv_buf {
    char *v[96];
    int n;
    char store[32][PATH_MAX];
    int ns;
};

static void av_add(struct argv_buf *a, const char *s)
{
    if (a->n < 95)
        a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

static const char *av_fmt(struct argv_buf *a, const char *fmt, const char *s)
{
    char *d = a->store[a->ns++ % 32];
    snprintf(d, PATH_MAX, fmt, s);
    av_add(a, d);
    return d;
}

static void add_mode_and_extra(struct argv_buf *a)
{
    if (strcmp(O.mode, "quick") == 0)
        av_add(a, "--quick");
    else if (strcmp(O.mode, "long") == 0)
        av_add(a, "--long");
    av_add(a, "--sync");
    for (int i = 0; i < O.n_extra; i++)
        av_add(a, O.extra[i]);
}

static int build_c_workload(struct argv_buf *a, const char *exe)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", O.exe_dir, exe);
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "ebb-bench: %s not found next to ebb-bench (build with ninja -C build)\n",
                path);
        return -1;
    }
    av_fmt(a, "%s", path);
    add_mode_and_extra(a);
    return 0;
}

static int build_jvm_workload(struct argv_buf *a)
{
    char cls[PATH_MAX + 32], src[PATH_MAX], cmd[3 * PATH_MAX];
    snprintf(cls, sizeof cls, "%s/NativeChurn.class", O.exe_dir);
    snprintf(src, sizeof src, "%s/jvm/NativeChurn.java", EBB_BENCH_SOURCE_DIR);
    struct stat sc, ss;
    bool stale = stat(cls, &sc) != 0 || (stat(src, &ss) == 0 && ss.st_mtime > sc.st_mtime);
    if (stale) {
        fprintf(stderr, "ebb-bench: compiling %s\n", src);
        snprintf(cmd, sizeof cmd, "javac -d '%s' '%s'", O.exe_dir, src);
        if (system(cmd) != 0) {
            fprintf(stderr, "ebb-bench: javac failed (install a JDK: apt-get install "
                            "openjdk-17-jdk-headless)\n");
            return -1;
        }
    }
    av_add(a, "java");
    /* A small heap, so that the Java heap is not the story, and no cap on
     * direct memory below what the workload uses. */
    av_add(a, "-Xms96m");
    av_add(a, "-Xmx96m");
    av_add(a, "-XX:MaxDirectMemorySize=2g");
    av_add(a, "-Xss512k");
    av_add(a, "-cp");
    av_fmt(a, "%s", O.exe_dir);
    av_add(a, "NativeChurn");
    add_mode_and_extra(a);
    return 0;
}

/* ------------------------------------------------------------ the comparison */

static struct bench_config known[MAX_CFGS];
static int n_known;
static struct bench_config cfgs[MAX_CFGS];
static int n_cfgs;

static void print_skips(void)
{
    for (int c = 0; c < n_cfgs; c++)
        if (cfgs[c].skipped)
            fprintf(stderr, "ebb-bench: skipping %s: %s\n", cfgs[c].name, cfgs[c].skip_reason);
}

static void out_path(char *dst, size_t n, const char *given, const char *suffix)
{
    if (given)
        snprintf(dst, n, "%s", given);
    else
        snprintf(dst, n, "%s/%s%s", O.out, O.workload, suffix);
}

static int run_comparison(struct argv_buf *a)
{
    unsigned interval = O.interval_ms;
    unsigned timeout = 600000;
    if (!interval)
        interval = strcmp(O.mode, "quick") == 0 ? 50 : strcmp(O.mode, "long") == 0 ? 250 : 100;
    if (strcmp(O.mode, "long") == 0)
        timeout = 4 * 3600 * 1000u;
    struct bench_run *runs = calloc((size_t)n_cfgs * (size_t)O.runs, sizeof *runs);
    if (!runs)
        return 1;
    print_skips();
    int total = 0;
    for (int c = 0; c < n_cfgs; c++)
        if (!cfgs[c].skipped)
            total += O.runs;
    int index = 0, bad = 0;
    double t0 = now_s();
    /* Runs are interleaved (all configurations, then again) so that drift in the
     * machine's state spreads over every configuration. */
    for (int k = 0; k < O.runs; k++) {
        for (int c = 0; c < n_cfgs; c++) {
            if (cfgs[c].skipped)
                continue;
            struct progress p = {++index, total, cfgs[c].name, k + 1, O.runs, 0};
            struct bench_spec sp = {
                .argv = a->v,
                .environ = environ,
                .interval_ms = interval,
                .drop_after_ms = 2000,
                .timeout_ms = timeout,
                .sync = true,
                .progress = progress_cb,
                .progress_arg = &p,
            };
            struct bench_run *r = &runs[c * O.runs + k];
            bench_run(&sp, &cfgs[c], r);
            if (!r->ok)
                bad++;
            progress_done(&p, r);
        }
    }
    fprintf(stderr, "ebb-bench: %d runs in %.0f s\n", total, now_s() - t0);

    struct bench_table t = {O.workload, O.mode, cfgs, n_cfgs, O.runs, runs, {{0}, 0, {0}, {0}, {0}}};
    bench_machine_describe(&t.machine);
    if (mkdir_p(O.out) < 0)
        fprintf(stderr, "ebb-bench: cannot create %s: %s\n", O.out, strerror(errno));
    char csv[PATH_MAX], runs_csv[PATH_MAX], svg[PATH_MAX], md[PATH_MAX];
    out_path(csv, sizeof csv, O.csv, "-samples.csv");
    out_path(runs_csv, sizeof runs_csv, NULL, "-runs.csv");
    out_path(svg, sizeof svg, O.svg, ".svg");
    out_path(md, sizeof md, NULL, ".md");

    printf("\n");
    bench_write_table(stdout, &t);
    FILE *f = fopen(md, "w");
    if (f) {
        bench_write_table(f, &t);
        fclose(f);
    }
    bool wrote_csv = bench_write_samples_csv(csv, &t) == 0;
    bool wrote_runs = bench_write_runs_csv(runs_csv, &t) == 0;
    bool wrote_svg = bench_write_svg(svg, &t) == 0;
    printf("\n");
    printf("table:   %s\n", f ? md : "(not written)");
    printf("chart:   %s%s\n", svg, wrote_svg ? "" : " (FAILED to write)");
    printf("samples: %s%s\n", csv, wrote_csv ? "" : " (FAILED to write)");
    printf("runs:    %s%s\n", runs_csv, wrote_runs ? "" : " (FAILED to write)");
    for (int i = 0; i < n_cfgs * O.runs; i++)
        bench_run_free(&runs[i]);
    free(runs);
    if (bad)
        fprintf(stderr, "ebb-bench: %d run(s) refused or failed; they are not in the table's "
                        "numbers\n",
                bad);
    return bad ? 3 : 0;
}

/* ------------------------------------------------------------ fastpath */

/* Total instructions ("totals:" or "summary:" line) of a callgrind output file. */
static long long callgrind_total(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[512];
    long long totals = -1, summary = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "totals:", 7) == 0)
            totals = strtoll(line + 7, NULL, 10);
        else if (strncmp(line, "summary:", 8) == 0)
            summary = strtoll(line + 8, NULL, 10);
    }
    fclose(f);
    return totals >= 0 ? totals : summary;
}

static bool have_program(const char *name)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
    return system(cmd) == 0;
}

/* One fastpath child: natively, or under callgrind writing outfile. */
static int fastpath_child(const struct bench_config *cfg, unsigned long long iters, bool null_alloc,
                          const char *outfile, struct bench_run *r)
{
    struct argv_buf a = {0};
    char outopt[PATH_MAX + 32], itbuf[32], exe[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/ebb-wl-throughput", O.exe_dir);
    if (outfile) {
        av_add(&a, "valgrind");
        av_add(&a, "--tool=callgrind");
        av_add(&a, "--quiet");
        snprintf(outopt, sizeof outopt, "--callgrind-out-file=%s", outfile);
        av_add(&a, outopt);
    }
    av_add(&a, exe);
    av_add(&a, "--only");
    av_add(&a, "fastpath");
    av_add(&a, "--iters");
    snprintf(itbuf, sizeof itbuf, "%llu", iters);
    av_add(&a, itbuf);
    if (null_alloc)
        av_add(&a, "--null");
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

/* Instructions per iteration from runs with N and 2N iterations. */
static double callgrind_per_pair(const struct bench_config *cfg, unsigned long long n, bool null_alloc,
                                 char *why, size_t why_len)
{
    char f1[64], f2[64];
    snprintf(f1, sizeof f1, "/tmp/ebb-bench-cg.%d.1", (int)getpid());
    snprintf(f2, sizeof f2, "/tmp/ebb-bench-cg.%d.2", (int)getpid());
    struct bench_run r;
    double result = NAN;
    long long i1 = -1, i2 = -1;
    if (fastpath_child(cfg, n, null_alloc, f1, &r) == 0)
        i1 = callgrind_total(f1);
    else
        snprintf(why, why_len, "%s", r.reason);
    bench_run_free(&r);
    if (i1 >= 0) {
        if (fastpath_child(cfg, 2 * n, null_alloc, f2, &r) == 0)
            i2 = callgrind_total(f2);
        else
            snprintf(why, why_len, "%s", r.reason);
        bench_run_free(&r);
    }
    if (i1 >= 0 && i2 >= 0)
        result = (double)(i2 - i1) / (double)n;
    else if (!why[0])
        snprintf(why, why_len, "no callgrind totals");
    unlink(f1);
    unlink(f2);
    return result;
}

static int run_fastpath(void)
{
    bool vg = have_program("valgrind");
    unsigned long long n_cg = 200000, n_native = 50000000;
    if (strcmp(O.mode, "quick") == 0)
        n_native = 20000000;
    else if (strcmp(O.mode, "long") == 0)
        n_native = 100000000;
    print_skips();
    if (!vg)
        fprintf(stderr, "ebb-bench: valgrind not found, instructions are not counted "
                        "(apt-get install valgrind)\n");
    struct bench_machine m;
    bench_machine_describe(&m);
    double *ns = calloc((size_t)n_cfgs, sizeof *ns), *sp = calloc((size_t)n_cfgs, sizeof *sp);
    double *ins = calloc((size_t)n_cfgs, sizeof *ins);
    char(*why)[512] = calloc((size_t)n_cfgs, sizeof *why);
    if (!ns || !sp || !ins || !why)
        return 1;
    int bad = 0;
    for (int c = 0; c < n_cfgs; c++) {
        ns[c] = ins[c] = NAN;
        if (cfgs[c].skipped)
            continue;
        double v[64];
        int nv = 0;
        for (int k = 0; k < O.runs && k < 64; k++) {
            struct bench_run r;
            if (O.tty)
                fprintf(stderr, "\r\033[K[%d/%d] fastpath %s native run %d/%d", c + 1, n_cfgs,
                        cfgs[c].name, k + 1, O.runs);
            if (fastpath_child(&cfgs[c], n_native, false, NULL, &r) == 0 && r.n_res)
                v[nv++] = (double)r.res[0].ns / (double)r.res[0].ops;
            else
                snprintf(why[c], sizeof why[c], "%s", r.reason);
            bench_run_free(&r);
        }
        if (nv) {
            ns[c] = bench_median(v, nv);
            sp[c] = bench_spread(v, nv, ns[c]);
        }
        if (vg && nv) {
            if (O.tty)
                fprintf(stderr, "\r\033[K[%d/%d] fastpath %s under callgrind", c + 1, n_cfgs,
                        cfgs[c].name);
            ins[c] = callgrind_per_pair(&cfgs[c], n_cg, false, why[c], sizeof why[c]);
        }
        if (!nv)
            bad++;
        if (O.tty)
            fprintf(stderr, "\r\033[K");
        fprintf(stderr, "fastpath %s: %.1f ns/pair, %.1f instructions/pair%s%s\n", cfgs[c].name,
                ns[c], ins[c], why[c][0] ? " — " : "", why[c]);
    }
    double loop = NAN;
    if (vg) {
        struct bench_config plain;
        memset(&plain, 0, sizeof plain);
        snprintf(plain.name, sizeof plain.name, "glibc");
        char w[512] = "";
        loop = callgrind_per_pair(&plain, n_cg, true, w, sizeof w);
    }
    int base = -1;
    for (int c = 0; c < n_cfgs; c++)
        if (!isnan(ns[c]) && strcmp(cfgs[c].name, "glibc") == 0)
            base = c;
    for (int c = 0; c < n_cfgs && base < 0; c++)
        if (!isnan(ns[c]))
            base = c;

    FILE *outs[2] = {stdout, NULL};
    char md[PATH_MAX];
    if (mkdir_p(O.out) == 0) {
        out_path(md, sizeof md, NULL, ".md");
        outs[1] = fopen(md, "w");
    }
    for (int o = 0; o < 2; o++) {
        FILE *f = outs[o];
        if (!f)
            continue;
        fprintf(f, "\n### fastpath: one thread, malloc+free of mixed small sizes (16..1024 B), %d "
                   "run%s natively\n\n",
                O.runs, O.runs == 1 ? "" : "s");
        fprintf(f, "Machine: %s, %d CPUs, %s RAM, %s, %s.\n\n", m.cpu, m.cpus, m.mem, m.kernel,
                m.libc);
        fprintf(f, "| configuration | instructions per malloc+free (callgrind) | vs %s | ns per "
                   "pair (native) | vs %s |\n|---|--:|--:|--:|--:|\n",
                base >= 0 ? cfgs[base].name : "-", base >= 0 ? cfgs[base].name : "-");
        for (int c = 0; c < n_cfgs; c++) {
            if (cfgs[c].skipped) {
                fprintf(f, "| %s | skipped: %s |\n", cfgs[c].name, cfgs[c].skip_reason);
                continue;
            }
            if (isnan(ns[c])) {
                fprintf(f, "| %s | **%s** |\n", cfgs[c].name, why[c]);
                continue;
            }
            char a[32] = "n/a", b[32] = "n/a", d[32], e[32] = "n/a";
            if (!isnan(ins[c]))
                snprintf(a, sizeof a, "%.1f", ins[c]);
            if (!isnan(ins[c]) && base >= 0 && !isnan(ins[base]))
                snprintf(b, sizeof b, "%.2fx", ins[c] / ins[base]);
            snprintf(d, sizeof d, "%.1f%s", ns[c], "");
            if (O.runs > 1)
                snprintf(d, sizeof d, "%.1f ±%.0f%%", ns[c], sp[c] * 100);
            if (base >= 0)
                snprintf(e, sizeof e, "%.2fx", ns[c] / ns[base]);
            fprintf(f, "| %s | %s | %s | %s | %s |\n", cfgs[c].name, a, b, d, e);
        }
        fprintf(f, "\nInstructions: callgrind's instruction count of a run with %llu pairs "
                   "subtracted from one with %llu, divided by %llu (start-up cancels out); it "
                   "includes the benchmark loop's own ",
                n_cg, 2 * n_cg, n_cg);
        if (!isnan(loop))
            fprintf(f, "%.1f instructions per pair (measured with a do-nothing allocator).\n", loop);
        else
            fprintf(f, "instructions.\n");
        fprintf(f, "ns per pair: wall time of %llu pairs natively, median of %d.\n", n_native,
                O.runs);
    }
    if (outs[1]) {
        fclose(outs[1]);
        printf("\ntable:   %s\n", md);
    }
    free(ns);
    free(sp);
    free(ins);
    free(why);
    return bad ? 3 : 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    O.mode = "default";
    O.runs = -1;
    O.out = "ebb-bench-results";
    O.tty = isatty(2);
    find_exe_dir();

    const char *lib = getenv("EBB_LIB");
    if (!lib || !*lib)
        lib = EBB_LIB_PATH;
    bool list = false;
    struct {
        char name[32];
        char path[PATH_MAX];
    } custom[8];
    int n_custom = 0;

    enum { OPT_QUICK = 256, OPT_LONG, OPT_CONFIGS, OPT_RUNS, OPT_CSV, OPT_SVG, OPT_OUT, OPT_LIB,
           OPT_PRELOAD, OPT_INTERVAL, OPT_LIST };
    static const struct option opts[] = {
        {"quick", no_argument, 0, OPT_QUICK},
        {"long", no_argument, 0, OPT_LONG},
        {"configs", required_argument, 0, OPT_CONFIGS},
        {"runs", required_argument, 0, OPT_RUNS},
        {"csv", required_argument, 0, OPT_CSV},
        {"svg", required_argument, 0, OPT_SVG},
        {"out", required_argument, 0, OPT_OUT},
        {"lib", required_argument, 0, OPT_LIB},
        {"preload-config", required_argument, 0, OPT_PRELOAD},
        {"interval", required_argument, 0, OPT_INTERVAL},
        {"list", no_argument, 0, OPT_LIST},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    /* "ebb-bench WORKLOAD options": take the workload first. */
    if (argc > 1 && argv[1][0] != '-') {
        O.workload = argv[1];
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    int ch;
    while ((ch = getopt_long(argc, argv, "+hv", opts, NULL)) != -1) {
        switch (ch) {
        case OPT_QUICK:
            O.mode = "quick";
            break;
        case OPT_LONG:
            O.mode = "long";
            break;
        case OPT_CONFIGS:
            O.configs = optarg;
            break;
        case OPT_RUNS:
            O.runs = atoi(optarg);
            if (O.runs < 1 || O.runs > 64) {
                fprintf(stderr, "ebb-bench: --runs must be 1..64\n");
                return 2;
            }
            break;
        case OPT_CSV:
            O.csv = optarg;
            break;
        case OPT_SVG:
            O.svg = optarg;
            break;
        case OPT_OUT:
            O.out = optarg;
            break;
        case OPT_LIB:
            lib = optarg;
            break;
        case OPT_PRELOAD: {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1] || n_custom == 8) {
                fprintf(stderr, "ebb-bench: --preload-config wants NAME=PATH\n");
                return 2;
            }
            int nl = (int)(eq - optarg);
            if (nl > (int)sizeof custom[n_custom].name - 1)
                nl = (int)sizeof custom[n_custom].name - 1;
            memcpy(custom[n_custom].name, optarg, (size_t)nl);
            custom[n_custom].name[nl] = '\0';
            snprintf(custom[n_custom].path, sizeof custom[n_custom].path, "%s", eq + 1);
            n_custom++;
            break;
        }
        case OPT_INTERVAL:
            O.interval_ms = (unsigned)atoi(optarg);
            break;
        case OPT_LIST:
            list = true;
            break;
        case 'v':
            O.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }

    n_known = bench_builtin_configs(known, MAX_CFGS, lib);
    for (int i = 0; i < n_custom && n_known < MAX_CFGS; i++) {
        struct bench_config *c = &known[n_known++];
        memset(c, 0, sizeof *c);
        memcpy(c->name, custom[i].name, sizeof c->name);
        snprintf(c->what, sizeof c->what, "LD_PRELOAD given on the command line");
        snprintf(c->preload, sizeof c->preload, "%s", custom[i].path);
    }
    if (list) {
        bench_mark_missing(known, n_known);
        for (int i = 0; i < n_known; i++)
            printf("%-12s %s%s%s%s\n", known[i].name, known[i].what,
                   known[i].preload[0] ? " " : "", known[i].preload,
                   known[i].skipped ? "  [not available]" : "");
        printf("groups: all, glibc-all, arena, peers\n");
        return 0;
    }

    /* The workload, then "--" and the workload's own options. */
    if (!O.workload && optind < argc && strcmp(argv[optind], "--") != 0)
        O.workload = argv[optind++];
    while (optind < argc && strcmp(argv[optind], "--") != 0) {
        fprintf(stderr, "ebb-bench: unexpected argument %s (workload options go after --)\n",
                argv[optind]);
        return 2;
    }
    if (optind < argc && strcmp(argv[optind], "--") == 0) {
        optind++;
        O.extra = argv + optind;
        O.n_extra = argc - optind;
    }
    if (!O.workload) {
        usage(stderr);
        return 2;
    }
    if (O.runs < 0)
        O.runs = strcmp(O.mode, "default") == 0 ? 3 : 1;

    /* The glibc tunables do not change a single thread's fast path: by default
     * fastpath compares glibc with the other allocators only. */
    if (!O.configs && strcmp(O.workload, "fastpath") == 0)
        O.configs = "glibc,peers,ebbmalloc";
    char err[256];
    n_cfgs = bench_select_configs(known, n_known, O.configs, cfgs, MAX_CFGS, err, sizeof err);
    if (n_cfgs < 0) {
        fprintf(stderr, "ebb-bench: %s (see --list)\n", err);
        return 2;
    }
    bench_mark_missing(cfgs, n_cfgs);

    struct argv_buf a = {0};
    if (strcmp(O.workload, "arena-creep") == 0) {
        if (build_c_workload(&a, "ebb-wl-arena-creep") < 0)
            return 1;
    } else if (strcmp(O.workload, "throughput") == 0) {
        if (build_c_workload(&a, "ebb-wl-throughput") < 0)
            return 1;
    } else if (strcmp(O.workload, "jvm") == 0) {
        if (!have_program("java")) {
            fprintf(stderr, "ebb-bench: java not found (apt-get install openjdk-17-jdk-headless)\n");
            return 1;
        }
        if (build_jvm_workload(&a) < 0)
            return 1;
    } else if (strcmp(O.workload, "fastpath") == 0) {
        return run_fastpath();
    } else {
        fprintf(stderr, "ebb-bench: unknown workload '%s'\n", O.workload);
        usage(stderr);
        return 2;
    }
    return run_comparison(&a);
}
