/* ebb-bench: the benchmark driver's internal interfaces.
 *
 *  procfs.c   parsers for /proc/PID/{status,smaps_rollup,maps,environ}
 *  configs.c  the allocator configurations and the check that one took effect
 *  runner.c   runs one workload under one configuration and samples it
 *  report.c   medians, the markdown table, CSV files and the SVG chart
 *  ebb-bench.c  command line
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
#define BENCH_HEAP_SIZE (64ull << 20) /* glibc's non-main arena heap reservation on 64-bit */

/* ---------------------------------------------------------------- procfs.c */

/* Reads a whole file (a /proc file has no useful st_size) into *buf, growing it.
 * The text is NUL-terminated; *len excludes the NUL.  Returns 0 or -errno. */
int proc_read_file(const char *path, char **buf, size_t *cap, size_t *len);

/* Value in kB of a "Name:   1234 kB" line of /proc/PID/status or smaps_rollup;
 * -1 when the field is absent. */
long long proc_field_kib(const char *text, const char *field);

struct proc_rollup {
    long long rss_kib, pss_kib, anon_kib, anon_huge_kib, swap_kib;
};
/* Parses smaps_rollup text.  Returns 0, or -1 when it has no Rss line. */
int proc_parse_smaps_rollup(const char *text, struct proc_rollup *out);

struct maps_entry {
    uint64_t start, end, offset, inode;
    unsigned dev_major, dev_minor;
    char perms[5];
    const char *path; /* points into the line; "" for anonymous mappings */
    size_t path_len;  /* without a trailing " (deleted)" */
};
/* Parses one line of /proc/PID/maps (without the newline).  Returns 0 or -1. */
int proc_parse_maps_line(const char *line, size_t len, struct maps_entry *e);

/* Counts glibc arena heaps: 64 MiB-aligned 64 MiB windows of anonymous private
 * memory laid out as a read-write part followed by an inaccessible (---p) rest,
 * as pmap shows them (e.g. "65404K rw---" + "132K -----"), including heaps that
 * the kernel merged with a neighbouring heap into one mapping. */
int proc_count_arena_heaps(const char *maps_text);

/* Is the file (same path after realpath, or same device and inode) mapped? */
bool proc_maps_has_file(const char *maps_text, const char *real_path, unsigned dev_major,
                        unsigned dev_minor, uint64_t inode);

/* Name of the first mapped file whose base name starts with one of the
 * NULL-terminated prefixes ("libjemalloc", ...), copied into out; false if none. */
bool proc_maps_find_lib(const char *maps_text, const char *const *prefixes, char *out,
                        size_t out_len);

/* Does a /proc/PID/environ buffer (NUL-separated) hold exactly NAME=VALUE? */
bool proc_environ_has(const char *buf, size_t len, const char *assignment);

/* --------------------------------------------------------------- configs.c */

#define BENCH_MAX_ENV 3

struct bench_config {
    char name[32];
    char what[96];                     /* a line for the table's legend */
    char env[BENCH_MAX_ENV][64];       /* NAME=VALUE set for the child */
    int n_env;
    char preload[PATH_MAX];            /* LD_PRELOAD library, "" for glibc */
    char hint[160];                    /* how to get it when it is missing */
    bool skipped;
    char skip_reason[200];
};

/* The built-in configurations in table order.  ebb_lib is the ebbmalloc
 * library path (the --lib/EBB_LIB override or the built-in one). */
int bench_builtin_configs(struct bench_config *out, int max, const char *ebb_lib);

/* Resolves a --configs list ("glibc,arena-max-2", "all", "glibc-all", "peers")
 * against the known configurations.  Returns how many were selected, -1 and a
 * message in err on an unknown name. */
int bench_select_configs(const struct bench_config *known, int n_known, const char *list,
                         struct bench_config *out, int max, char *err, size_t err_len);

/* Marks preload configurations whose library file is missing as skipped. */
void bench_mark_missing(struct bench_config *cfgs, int n);

/* The environment a child gets: ours without LD_PRELOAD, MALLOC_*, GLIBC_TUNABLES
 * and the other allocators' tuning variables, plus the configuration's.
 * Returns a malloc'ed NULL-terminated array (free with bench_free_env). */
char **bench_child_env(char *const *base, const struct bench_config *cfg);
void bench_free_env(char **env);

/* What the driver saw of a running child, checked against the configuration. */
struct bench_evidence {
    const char *maps;        /* /proc/PID/maps text */
    const char *environ;     /* /proc/PID/environ buffer */
    size_t environ_len;
    const char *malloc_from; /* the workload's "malloc-from" path, or NULL */
};

/* Did the configuration take effect?  True, or false with the reason in why. */
bool bench_check_config(const struct bench_config *cfg, const struct bench_evidence *ev,
                        char *why, size_t why_len);

/* ---------------------------------------------------------------- runner.c */

enum bench_phase { PH_START, PH_LOAD, PH_IDLE, PH_END };

struct bench_sample {
    uint32_t t_ms;     /* since the child was started */
    uint32_t rss_kib;  /* VmRSS */
    uint32_t anon_kib; /* RssAnon */
    uint16_t heaps;    /* glibc 64 MiB heaps in maps */
    uint8_t phase;
    uint64_t live;     /* the workload's last reported live bytes */
};

#define BENCH_MAX_RESULTS 8

struct bench_result {
    char name[32];
    uint64_t ops;
    uint64_t ns;
};

struct bench_run {
    bool ok;      /* ran to the end, checks passed */
    bool refused; /* the configuration did not take effect */
    char reason[512];
    char malloc_from[PATH_MAX];

    struct bench_sample *s;
    size_t n, cap;

    int64_t t_drop_ms, t_end_ms; /* -1 when not seen */
    uint64_t peak_rss_kib;       /* max of the samples and the kernel's maxrss */
    uint64_t maxrss_kib;         /* wait4's ru_maxrss */
    int64_t rss_after_kib;       /* sampled 2 s (drop_after_ms) after "phase drop", -1 if none */
    int64_t rss_end_kib;         /* sampled at "phase end", -1 if none */
    uint64_t peak_live;
    bool has_live;
    int heaps_max, heaps_end;

    struct bench_result res[BENCH_MAX_RESULTS];
    int n_res;
    double wall_s;
    int exit_status;   /* as from waitpid */
    char stderr_tail[1024];
};

struct bench_status {
    double t_s;
    uint64_t rss_kib, live;
    int heaps;
    const char *phase;
};

struct bench_spec {
    char *const *argv;     /* argv[0] is looked up in PATH when it has no '/' */
    char *const *environ;  /* the environment to start from */
    unsigned interval_ms;  /* sampling interval */
    unsigned drop_after_ms;/* when to take the "RSS after the load" sample */
    unsigned timeout_ms;   /* kill the child after this long */
    bool sync;             /* the child waits on stdin after "ready" */
    bool no_samples;       /* only the checks and the results (e.g. under valgrind) */
    void (*progress)(void *arg, const struct bench_status *st);
    void *progress_arg;
};

/* Runs the workload under cfg.  Returns 0 when the run produced a row
 * (r->ok), 1 when it was refused or failed (r->reason says why). */
int bench_run(const struct bench_spec *sp, const struct bench_config *cfg, struct bench_run *r);
void bench_run_free(struct bench_run *r);

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
int bench_write_samples_csv(const char *path, const struct bench_table *t);
int bench_write_runs_csv(const char *path, const struct bench_table *t);
/* RSS over time, one line per configuration (its median run by peak RSS). */
int bench_write_svg(const char *path, const struct bench_table *t);

#endif
