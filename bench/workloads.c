/* How each workload is started: the program and arguments of every part of the
 * comparison for O.workload, and what the driver must clean up after it. */
#define _GNU_SOURCE
#include "driver.h"

#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef EBB_BENCH_SOURCE_DIR
#define EBB_BENCH_SOURCE_DIR "."
#endif

void av_add(struct argv_buf *a, const char *s) {
    if (a->n < 95) a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

const char *av_fmt(struct argv_buf *a, const char *fmt, const char *s) {
    char *d = a->store[a->ns++ % 16];
    snprintf(d, sizeof a->store[0], fmt, s);
    av_add(a, d);
    return d;
}

static void add_mode(struct argv_buf *a) {
    if (strcmp(O.mode, "quick") == 0) av_add(a, "--quick");
    else if (strcmp(O.mode, "long") == 0) av_add(a, "--long");
}

static void add_extra(struct argv_buf *a) {
    for (int i = 0; i < O.n_extra; i++) av_add(a, O.extra[i]);
}

/* A workload built next to ebb-bench, with the mode, --sync and the extra options. */
static int c_workload(struct bench_part *p, const char *exe) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", O.exe_dir, exe);
    if (access(path, X_OK) != 0) {
        fprintf(stderr, "ebb-bench: %s not found next to ebb-bench (build with ninja -C build)\n", path);
        return -1;
    }
    av_fmt(&p->argv, "%s", path);
    add_mode(&p->argv);
    av_add(&p->argv, "--sync");
    return 0;
}

/* ------------------------------------------------------------ jvm */

static int jvm_class(void) {
    char cls[PATH_MAX + 32], src[PATH_MAX], cmd[3 * PATH_MAX];
    snprintf(cls, sizeof cls, "%s/NativeChurn.class", O.exe_dir);
    snprintf(src, sizeof src, "%s/jvm/NativeChurn.java", EBB_BENCH_SOURCE_DIR);
    struct stat sc, ss;
    bool stale = stat(cls, &sc) != 0 || (stat(src, &ss) == 0 && ss.st_mtime > sc.st_mtime);
    if (!stale) return 0;
    fprintf(stderr, "ebb-bench: compiling %s\n", src);
    snprintf(cmd, sizeof cmd, "javac -d '%s' '%s'", O.exe_dir, src);
    if (system(cmd) != 0) {
        fprintf(stderr, "ebb-bench: javac failed (install a JDK: apt-get install "
                        "openjdk-17-jdk-headless)\n");
        return -1;
    }
    return 0;
}

static int jvm_workload(struct bench_part *p) {
    if (!have_program("java")) {
        fprintf(stderr, "ebb-bench: java not found (apt-get install openjdk-17-jdk-headless)\n");
        return -1;
    }
    if (jvm_class() < 0) return -1;
    struct argv_buf *a = &p->argv;
    av_add(a, "java");
    /* A small heap, so that the Java heap is not the story, touched at start-up
     * (AlwaysPreTouch) so that it is resident before the load: what RSS gains
     * from "before load" to "after load" is then native memory, not Java heap
     * pages the load touched first.  No cap on direct memory below what the
     * workload uses. */
    av_add(a, "-Xms96m");
    av_add(a, "-Xmx96m");
    av_add(a, "-XX:+AlwaysPreTouch");
    av_add(a, "-XX:MaxDirectMemorySize=2g");
    av_add(a, "-Xss512k");
    av_add(a, "-cp");
    av_fmt(a, "%s", O.exe_dir);
    av_add(a, "NativeChurn");
    add_mode(a);
    av_add(a, "--sync");
    add_extra(a);
    return 0;
}

/* ------------------------------------------------------------ throughput */

/* The sections ebb-bench throughput runs, each in its own process (so peak RSS and
 * faults are the section's own); fastpath-burst is measured by ebb-bench fastpath. */
static const char *const throughput_sections[] = {
    "fastpath", "larson-2t", "larson-8t", "larson-sizes", "threads-64", "threads-256", "pipeline",
    "prodcons", "large",     "bulk",      "realloc",      "bursts",     "pauses",      NULL,
};

static bool section_wanted(const char *name) {
    if (!O.sections) return true;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", O.sections);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (strcmp(tok, name) == 0) return true;
    return false;
}

static int throughput_parts(struct bench_part *parts, int max) {
    int n = 0;
    for (const char *const *s = throughput_sections; *s && n < max; s++) {
        if (!section_wanted(*s)) continue;
        struct bench_part *p = &parts[n++];
        p->name = *s;
        if (c_workload(p, "ebb-wl-throughput") < 0) return -1;
        av_add(&p->argv, "--only");
        av_add(&p->argv, *s);
        add_extra(&p->argv);
    }
    if (!n) {
        fprintf(stderr, "ebb-bench: no section of throughput matches --sections %s (sections:", O.sections);
        for (const char *const *s = throughput_sections; *s; s++) fprintf(stderr, " %s", *s);
        fprintf(stderr, ")\n");
        return -1;
    }
    return n;
}

/* ------------------------------------------------------------ dbbench */

static char db_dir[PATH_MAX];
static char db_bench_path[PATH_MAX];

/* db_bench in PATH, resolved (the runner compares it with /proc/PID/exe). */
static bool find_db_bench(void) {
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path && *path ? path : "/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char cand[PATH_MAX + 16];
        snprintf(cand, sizeof cand, "%s/db_bench", d);
        if (access(cand, X_OK) == 0 && realpath(cand, db_bench_path)) return true;
    }
    return false;
}

static int dbbench_workload(struct bench_part *p) {
    if (!find_db_bench()) {
        fprintf(stderr, "ebb-bench: db_bench not found (apt-get install rocksdb-tools)\n");
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(db_dir, sizeof db_dir, "%s/ebb-bench-db.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(db_dir)) {
        fprintf(stderr, "ebb-bench: mkdtemp %s: %s\n", db_dir, strerror(errno));
        db_dir[0] = '\0';
        return -1;
    }
    const char *num = strcmp(O.mode, "quick") == 0  ? "1000000"
                      : strcmp(O.mode, "long") == 0 ? "10000000"
                                                    : "3000000";
    struct argv_buf *a = &p->argv;
    char exe[PATH_MAX + 32];
    snprintf(exe, sizeof exe, "%s/ebb-wl-exec", O.exe_dir);
    av_fmt(a, "%s", exe);
    av_add(a, "--sync");
    av_add(a, "--");
    av_fmt(a, "%s", db_bench_path);
    av_add(a, "--benchmarks=fillrandom,readrandom");
    av_fmt(a, "--num=%s", num);
    av_fmt(a, "--db=%s", db_dir); /* db_bench destroys what is there before fillrandom */
    av_add(a, "--seed=1");        /* the same keys under every configuration */
    av_add(a, "--threads=1");
    add_extra(a); /* any db_bench flag; a later flag overrides an earlier one */
    p->exec_path = db_bench_path;
    p->parse_line = bench_parse_dbbench_line;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path); /* best effort: what cannot go stays in TMPDIR */
    return 0;
}

void workload_cleanup(void) {
    if (db_dir[0]) nftw(db_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    db_dir[0] = '\0';
}

/* ------------------------------------------------------------ dispatch */

int workload_parts(struct bench_part *parts, int max) {
    memset(parts, 0, sizeof *parts * (size_t)max);
    const char *w = O.workload;
    if (strcmp(w, "arena-creep") == 0) {
        if (c_workload(&parts[0], "ebb-wl-arena-creep") < 0) return -1;
        add_extra(&parts[0].argv);
        return 1;
    }
    if (strcmp(w, "throughput") == 0) return throughput_parts(parts, max);
    if (strcmp(w, "jvm") == 0) return jvm_workload(&parts[0]) < 0 ? -1 : 1;
    if (strcmp(w, "dbbench") == 0) return dbbench_workload(&parts[0]) < 0 ? -1 : 1;
    fprintf(stderr, "ebb-bench: unknown workload '%s'\n", w);
    return -1;
}
