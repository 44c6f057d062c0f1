/* ebb-bench: the benchmark driver's internal interfaces.
 *
 *  configs.c  the allocator configurations and the check that one took effect
 *  runner.c   runs one workload under one configuration and samples it; the
 *             protocol's line parsers (result, ebbstats)
 *  report.c   medians and the markdown tables;  csv.c the CSV files;  svg.c the chart;
 *  memory.c   ebbmalloc's breakdown and whether RSS stayed flat (report.h is theirs)
 *  parse.c    other programs' output: callgrind files, db_bench's result lines
 *  The driver (ebb-bench.c, drive.c, workloads.c, fastpath.c) has driver.h.
 */
#ifndef EBB_BENCH_H
#define EBB_BENCH_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define BENCH_MIB (1024.0 * 1024.0)

/* /proc is read through the shared procfs library (lib/procfs/procfs.h). */
#include "procfs.h"

/* --------------------------------------------------------------- configs.c */

#define BENCH_MAX_ENV 3

struct bench_config {
    char name[32];
    char what[96];               /* a line for the table's legend */
    char env[BENCH_MAX_ENV][64]; /* NAME=VALUE set for the child */
    int n_env;
    char preload[PATH_MAX]; /* LD_PRELOAD library, "" for glibc */
    char hint[160];         /* how to get it when it is missing */
    bool skipped;
    char skip_reason[200];
};

/* The built-in configurations in table order.  ebb_lib is the ebbmalloc
 * library path (the --lib/EBB_LIB override or the built-in one). */
int bench_builtin_configs(struct bench_config *out, int max, const char *ebb_lib);

/* Resolves a --configs list ("glibc,arena-max-2", "all", "glibc-all", "peers", "ebb")
 * against the known configurations.  Returns how many were selected, -1 and a
 * message in err on an unknown name. */
int bench_select_configs(const struct bench_config *known, int n_known, const char *list,
                         struct bench_config *out, int max, char *err, size_t err_len);

/* Marks preload configurations whose library file is missing as skipped. */
void bench_mark_missing(struct bench_config *cfgs, int n);

/* The environment a child gets: ours without LD_PRELOAD, MALLOC_*, GLIBC_TUNABLES,
 * ebbmalloc's EBB_* and the other allocators' tuning variables, plus the configuration's.
 * Returns a malloc'ed NULL-terminated array (free with bench_free_env). */
char **bench_child_env(char *const *base, const struct bench_config *cfg);
void bench_free_env(char **env);

/* What the driver saw of a running child, checked against the configuration. */
struct bench_evidence {
    const char *maps;    /* /proc/PID/maps text */
    const char *environ; /* /proc/PID/environ buffer */
    size_t environ_len;
    const char *malloc_from; /* the workload's "malloc-from" path, or NULL */
};

/* Did the configuration take effect?  True, or false with the reason in why. */
bool bench_check_config(const struct bench_config *cfg, const struct bench_evidence *ev, char *why,
                        size_t why_len);

/* ---------------------------------------------------------------- runner.c */

enum bench_phase { PH_START, PH_LOAD, PH_IDLE, PH_END };

struct bench_sample {
    uint32_t t_ms;     /* since the child was started */
    uint32_t rss_kib;  /* VmRSS */
    uint32_t anon_kib; /* RssAnon */
    uint16_t heaps;    /* glibc 64 MiB heaps in maps */
    uint8_t phase;
    uint64_t live; /* the workload's last reported live bytes */
};

#define BENCH_MAX_RESULTS 8

struct bench_result {
    char name[32];
    uint64_t ops;
    uint64_t ns;
    bool has_faults;         /* the workload reported the section's page faults */
    uint64_t minflt, majflt; /* of the whole process during the section (getrusage) */
    uint64_t bytes;          /* bytes the section allocated, 0 when not reported */
};

/* ebbmalloc's breakdown of its memory at one moment, as the workload read it from
 * ebb_stats inside the process ("ebbstats" lines); bytes, rss in KiB. */
enum bench_moment { BM_PEAK, BM_LIVE, BM_AFTER, BM_END, BM_COUNT };
struct bench_ebbstats {
    bool have;
    uint64_t rss_kib; /* the process's VmRSS read just before */
    uint64_t own_kib; /* of it, the workload's own bookkeeping (0: not said) */
    uint64_t in_use, thread_cache, central, page_free, released, metadata, resident;
};

struct bench_run {
    bool ok;      /* ran to the end, checks passed */
    bool refused; /* the configuration did not take effect */
    char reason[512];
    char malloc_from[PATH_MAX];

    struct bench_sample *s;
    size_t n, cap;

    int64_t t_load_ms, t_drop_ms, t_end_ms; /* -1 when not seen */
    uint64_t peak_rss_kib;                  /* max of the samples and the kernel's maxrss */
    uint64_t maxrss_kib;                    /* wait4's ru_maxrss */
    int64_t rss_load_kib;                   /* sampled at "phase load-start", -1 if none */
    int64_t rss_after_kib;                  /* sampled 2 s (drop_after_ms) after "phase drop", -1 if none */
    int64_t rss_end_kib;                    /* sampled at "phase end", -1 if none */
    uint64_t peak_live;
    bool has_live;
    int heaps_max, heaps_end;

    struct bench_result res[BENCH_MAX_RESULTS];
    int n_res;
    struct bench_ebbstats ebb[BM_COUNT];
    bool rechecked;          /* an exec'd program's configuration was checked again */
    uint64_t minflt, majflt; /* wait4's, the whole process */
    double wall_s;
    int exit_status; /* as from waitpid */
    char stderr_tail[1024];
};

struct bench_status {
    double t_s;
    uint64_t rss_kib, live;
    int heaps;
    const char *phase;
};

struct bench_spec {
    char *const *argv;      /* argv[0] is looked up in PATH when it has no '/' */
    char *const *environ;   /* the environment to start from */
    unsigned interval_ms;   /* sampling interval */
    unsigned drop_after_ms; /* when to take the "RSS after the load" sample */
    unsigned timeout_ms;    /* kill the child after this long */
    bool sync;              /* the child waits on stdin after "ready" */
    bool no_samples;        /* only the checks and the results (e.g. under valgrind) */
    /* A launcher that execs a program which does not speak the protocol (db_bench):
     * the configuration is checked again once /proc/PID/exe is exec_path and its
     * libraries are mapped, and from "phase load-start" on every output line goes to
     * parse_line, which returns true when it filled in a result. */
    const char *exec_path;
    bool (*parse_line)(const char *line, struct bench_result *out);
    void (*progress)(void *arg, const struct bench_status *st);
    void *progress_arg;
};

/* Runs the workload under cfg.  Returns 0 when the run produced a row
 * (r->ok), 1 when it was refused or failed (r->reason says why). */
int bench_run(const struct bench_spec *sp, const struct bench_config *cfg, struct bench_run *r);
void bench_run_free(struct bench_run *r);

/* The value of KEY=NUMBER among space-separated tokens; false when absent. */
bool bench_kv_u64(const char *text, const char *key, uint64_t *out);
/* Parses "result NAME OPS NS [K=V ...]" after the word "result". */
bool bench_parse_result(const char *args, struct bench_result *out);
/* Parses "ebbstats WHEN K=V ..." after the word "ebbstats"; false on an unknown WHEN. */
bool bench_parse_ebbstats(const char *args, enum bench_moment *when, struct bench_ebbstats *out);

/* ----------------------------------------------------------------- parse.c */

/* From a callgrind output file: the program's total instructions, and the calls made
 * from one function (summed over every callee) with their inclusive instructions. */
struct bench_callgrind {
    long long total;     /* "totals:" (or "summary:"), -1 when absent */
    long long calls;     /* calls made from the caller */
    long long inclusive; /* instructions executed inside those calls */
};
/* Parses the file's text for calls made from the function named caller.
 * Returns 0, or -1 when the text has no totals. */
int bench_callgrind_parse(const char *text, const char *caller, struct bench_callgrind *out);

/* A db_bench result line, "fillrandom : 5.031 micros/op 198747 ops/sec 1.006 seconds
 * 200000 operations; ...", as a result (name, operations, nanoseconds). */
bool bench_parse_dbbench_line(const char *line, struct bench_result *out);

/* ---------------------------------------------------------------- report.c */

struct bench_machine {
    char cpu[128];
    int cpus;
    char kernel[96];
    char libc[32];
    char mem[32];
};
void bench_machine_describe(struct bench_machine *m);

/* All runs of all configurations of one workload: runs[c * n_runs + k]. */
struct bench_table {
    const char *workload;
    const char *part; /* the section of a sectioned workload (throughput), else NULL */
    bool brief;       /* no machine line and no legend (a section that is not the last) */
    const char *mode; /* "quick", "default", "long" */
    const struct bench_config *cfgs;
    int n_cfgs;
    int n_runs;
    struct bench_run *runs;
    struct bench_machine machine;
};

double bench_median(double *v, int n);
/* (max - min) / 2 / median, as a fraction; 0 when n < 2. */
double bench_spread(const double *v, int n, double median);

/* The markdown table (and legend) for the terminal and the .md file. */
void bench_write_table(FILE *f, const struct bench_table *t);
/* Sections side by side: time and peak RSS against glibc's, one column per section. */
void bench_write_summary(FILE *f, const struct bench_table *parts, int n);
int bench_write_samples_csv(const char *path, const struct bench_table *t);
int bench_write_runs_csv(const char *path, const struct bench_table *t);
/* The same for n tables (the sections of one workload) in one file. */
int bench_write_samples_csv_n(const char *path, const struct bench_table *t, int n);
int bench_write_runs_csv_n(const char *path, const struct bench_table *t, int n);
/* RSS over time, one line per configuration (its median run by peak RSS). */
int bench_write_svg(const char *path, const struct bench_table *t);

/* Least-squares slope (y units per x unit) of points with min_x <= x <= max_x, and
 * their max - min; false when fewer than 3 points fall in the window. */
bool bench_trend(const double *x, const double *y, size_t n, double min_x, double max_x, double *slope,
                 double *range);

#endif
