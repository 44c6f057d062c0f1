/* Helpers for the tools' tests: start real processes, capture their output, parse
 * ebb-inspect's JSON. */
#ifndef EBB_TESTUTIL_H
#define EBB_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A started helper whose stdout we read. */
struct child {
    pid_t pid;
    int out; /* its stdout, read end */
    int in;  /* its stdin, write end (child_start_piped), else -1 */
    char buf[65536];
    size_t len; /* what was read so far */
};

/* Start argv[0] (a path) with extra "NAME=VALUE" variables; as_nobody drops to
 * uid/gid 65534 first.  stderr is left alone. */
int child_start(struct child *c, char *const argv[], char *const extra_env[], bool as_nobody);
/* The same with the child's stderr into the same pipe as its stdout, and its stdin from a
 * pipe whose write end is c->in (close it to give the child the end of its input). */
int child_start_piped(struct child *c, char *const argv[], char *const extra_env[]);
/* Read until a whole line starting with word arrives (true) or timeout_s passes / EOF (false). */
bool child_wait_line(struct child *c, const char *word, double timeout_s);
/* The next whole line of output, taken out of c->buf into line (cut to n - 1 bytes); false
 * when none comes within timeout_s (or at EOF). */
bool child_next_line(struct child *c, char *line, size_t n, double timeout_s);
/* Waits up to timeout_s for the child to end by itself, reading what it still prints
 * into c->buf (NUL-terminated); reaps it and returns its wait status, or -1 (then it is
 * killed). */
int child_wait_exit(struct child *c, double timeout_s);
/* SIGTERM, then SIGKILL after a while; reaps; returns the wait status. */
int child_stop(struct child *c);
/* Kill and reap every child still running (a test's teardown, after a failure). */
int children_teardown(void **state);

/* Run a command to completion (bounded by timeout_s, then SIGKILL), capturing stdout
 * and stderr (malloc'd, NUL-terminated).  Returns the wait status, -1 on failure. */
int run_capture(char *const argv[], char *const extra_env[], bool as_nobody, double timeout_s, char **out,
                char **err);

/* A wait status as a shell reports it: the exit code, or 128 + the signal. */
int exit_code(int status);

/* A copy of the program at path that user nobody can run whatever the permissions of
 * the build directory (a fresh temporary directory, mode 0755); malloc'd path. */
char *copy_for_nobody(const char *path);

/* Environment variable a test needs; NULL if unset. */
const char *test_env(const char *name);
/* The same, failing the running cmocka test when it is unset (meson's test() sets the
 * paths of the programs under test). */
const char *test_need(const char *name);
/* Seconds on the monotonic clock, for deadlines. */
double test_now(void);

/* ---- minimal JSON (the complete grammar, numbers as double) ---- */
enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
struct jval {
    enum jtype t;
    bool b;
    double num;
    char *str;
    size_t n;    /* items in an array or object */
    char **keys; /* object keys */
    struct jval *items;
};
struct jval *json_parse(const char *text); /* NULL if not exactly one valid value */
void json_free(struct jval *v);
/* "a.b.3.c": object keys and array indexes; NULL if absent. */
const struct jval *json_at(const struct jval *v, const char *path);
double json_num(const struct jval *v, const char *path); /* -1 if absent or not a number */
const char *json_str(const struct jval *v, const char *path);

/* ---- /proc, read apart from ebb-inspect (with the procfs library's parser) ---- */
/* Sum of Rss (bytes) of the smaps entries lying inside [lo, hi). */
uint64_t smaps_rss_in(pid_t pid, uint64_t lo, uint64_t hi);
/* Does /proc/PID/maps show a file whose name starts with name ("libebbmalloc")? */
bool maps_has(pid_t pid, const char *name);

#endif
