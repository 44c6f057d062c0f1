/* Stats pages of processes in different PID namespaces sharing one /dev/shm, as the
 * containers of a pod do (a shared memory volume, --ipc=shareable).
 *
 * Two "containers" (each a new PID namespace with its own /proc, and a mount namespace
 * for that /proc; /dev/shm stays shared) run the publisher helper as their PID 1, the
 * first container also a PID 4000.  Each page must have a name of its own; neither
 * container's clean-up, nor one run from the host, may remove a page whose owner lives;
 * ebb-inspect run from the host must find each page by the host's pid.  Pages of dead
 * owners must go: a container killed outright (its page carries the owner's lock, which
 * died with it) and a host process killed outright (a pid that its namespace no longer
 * has).  As root the namespaces are made directly; otherwise inside a user namespace.
 *
 * The whole test has a /dev/shm of its own (a tmpfs in a mount namespace of its own,
 * which the containers share): every process on the machine that creates a stats page
 * cleans /dev/shm by the same rules, and may rightly remove the pages of the killed
 * owners before this test looks; and a PID namespace's inode number is reused as soon as
 * the namespace is gone, so another run's container (whose first process is PID 1 too)
 * would have the very name of one of this run's pages. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ebb_test_ns.h"
#include "testutil.h"

/* One started publisher tree. */
struct box {
    pid_t pid; /* its first process, in the host's PID namespace */
    int out;   /* its stdout */
    int nready;
    int inner[4];      /* pids as the processes see themselves */
    char page[4][256]; /* their pages, as they name them */
    char buf[4096];
    size_t len;
};

static struct box *started[8];
static int nstarted;

struct box_args {
    const char *children, *child_pid;
    int out[2], sync[2];
    bool userns;
};

static int container_main(void *arg) {
    struct box_args *a = arg;
    char c;
    close(a->sync[1]);
    if (a->userns && read(a->sync[0], &c, 1) != 1) _exit(120); /* maps written */
    /* Our own /proc, as a container has; the mount namespace keeps it from the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
        _exit(121);
    dup2(a->out[1], 1);
    close(a->out[0]);
    close(a->out[1]);
    char *argv[] = {(char *)test_need("SHM_PUBLISHER"), (char *)a->children, (char *)a->child_pid, NULL};
    execv(argv[0], argv);
    _exit(127);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* A new PID namespace whose PID 1 is the publisher (with `children` more, the first
 * with pid child_pid). */
static struct box *start_container(const char *children, const char *child_pid) {
    struct box *b = calloc(1, sizeof *b);
    struct box_args a = {children, child_pid, {-1, -1}, {-1, -1}, geteuid() != 0};
    assert_int_equal(pipe(a.out), 0);
    assert_int_equal(pipe(a.sync), 0);
    size_t stack_size = 1 << 20;
    char *stack =
        mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    assert_true(stack != MAP_FAILED);
    int flags = CLONE_NEWPID | CLONE_NEWNS | SIGCHLD | (a.userns ? CLONE_NEWUSER : 0);
    b->pid = clone(container_main, stack + stack_size, flags, &a);
    if (b->pid < 0)
        fail_msg("clone(CLONE_NEWPID%s): %s", a.userns ? " | CLONE_NEWUSER" : "", strerror(errno));
    if (a.userns) {
        char path[64], map[64];
        snprintf(path, sizeof path, "/proc/%d/setgroups", (int)b->pid);
        write_file(path, "deny");
        snprintf(path, sizeof path, "/proc/%d/uid_map", (int)b->pid);
        snprintf(map, sizeof map, "0 %d 1", (int)geteuid());
        write_file(path, map);
        snprintf(path, sizeof path, "/proc/%d/gid_map", (int)b->pid);
        snprintf(map, sizeof map, "0 %d 1", (int)getegid());
        write_file(path, map);
    }
    assert_int_equal(write(a.sync[1], "x", 1), 1);
    close(a.sync[0]);
    close(a.sync[1]);
    close(a.out[1]);
    b->out = a.out[0];
    started[nstarted++] = b;
    return b;
}

/* The publisher in the host's namespaces. */
static struct box *start_host(void) {
    struct box *b = calloc(1, sizeof *b);
    int out[2];
    assert_int_equal(pipe(out), 0);
    b->pid = fork();
    if (b->pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        close(out[1]);
        char *argv[] = {(char *)test_need("SHM_PUBLISHER"), "0", NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    b->out = out[0];
    started[nstarted++] = b;
    return b;
}

/* Waits for n "ready" lines (at most 60 s). */
static void wait_ready(struct box *b, int n) {
    double deadline = test_now() + 60;
    while (b->nready < n) {
        char *nl;
        while (b->nready < n && (nl = memchr(b->buf, '\n', b->len))) {
            *nl = 0;
            if (sscanf(b->buf, "ready %d %255s", &b->inner[b->nready], b->page[b->nready]) == 2) b->nready++;
            else fail_msg("publisher said: %s", b->buf);
            size_t used = (size_t)(nl + 1 - b->buf);
            memmove(b->buf, nl + 1, b->len - used);
            b->len -= used;
        }
        if (b->nready >= n) break;
        if (test_now() > deadline)
            fail_msg("publisher %d: %d of %d pages after 60 s", (int)b->pid, b->nready, n);
        fd_set set;
        FD_ZERO(&set);
        FD_SET(b->out, &set);
        struct timeval tv = {1, 0};
        if (select(b->out + 1, &set, NULL, NULL, &tv) > 0) {
            ssize_t got = read(b->out, b->buf + b->len, sizeof b->buf - 1 - b->len);
            if (got <= 0) fail_msg("publisher %d ended before it was ready", (int)b->pid);
            b->len += (size_t)got;
        }
    }
}

static void kill_box(struct box *b) {
    if (b->pid <= 0) return;
    kill(b->pid, SIGKILL);
    waitpid(b->pid, NULL, 0);
    b->pid = 0;
    close(b->out);
}

static bool page_exists(const char *page) {
    struct stat sb;
    return stat(page, &sb) == 0;
}

/* The host pid of a child of parent (the container's second process). */
static pid_t child_of(pid_t parent) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;
    while (d && !found && (e = readdir(d))) {
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')');
        int ppid;
        if (p && sscanf(p + 2, "%*c %d", &ppid) == 1 && ppid == parent) found = atoi(e->d_name);
    }
    if (d) closedir(d);
    return found;
}

/* ebb-inspect, run from the host with the host's pid, reads the page named `page`. */
static void inspect_finds(pid_t pid, const char *page) {
    char p[16], *out = NULL, *err = NULL;
    snprintf(p, sizeof p, "%d", (int)pid);
    char *argv[] = {(char *)test_need("EBB_INSPECT"), "--json", p, NULL};
    int st = run_capture(argv, NULL, false, 60, &out, &err);
    if (st < 0 || !WIFEXITED(st)) fail_msg("ebb-inspect %d did not finish: %s", (int)pid, err);
    struct jval *j = json_parse(out);
    if (!j) fail_msg("ebb-inspect --json %d printed no valid JSON: %s", (int)pid, out);
    const char *state = json_str(j, "ebbmalloc.stats_page"), *detail = json_str(j, "ebbmalloc.detail");
    if (!state || strcmp(state, "ok") || !detail || !strstr(detail, page))
        fail_msg("ebb-inspect %d: stats page %s (%s), expected %s", (int)pid, state ? state : "?",
                 detail ? detail : "", page);
    assert_true(json_num(j, "ebbmalloc.in_use_bytes") >= 0);
    json_free(j);
    free(out);
    free(err);
}

/* "/dev/shm/ebbmalloc.<ns>.<pid>" -> ns */
static unsigned long long page_ns(const char *page) {
    const char *p = strstr(page, "ebbmalloc.");
    return p ? strtoull(p + 10, NULL, 10) : 0;
}

static void two_containers_share_dev_shm(void **st) {
    (void)st;
    /* PID 1 and PID 4000: a pid no process has in the other namespace (nor, most
     * likely, in the host's), whose page a clean-up by "not alive here" would take */
    struct box *a = start_container("1", "4000");
    wait_ready(a, 2);
    struct box *b = start_container("0", NULL); /* PID 1; its page's creation cleans /dev/shm */
    wait_ready(b, 1);
    int a1 = a->inner[0] == 1 ? 0 : 1, a2 = 1 - a1;
    assert_int_equal(a->inner[a1], 1);
    assert_int_equal(a->inner[a2], 4000);
    assert_int_equal(b->inner[0], 1);
    /* two PID 1s, two names, both there */
    assert_string_not_equal(a->page[a1], b->page[0]);
    assert_true(page_ns(a->page[a1]) != 0 && page_ns(b->page[0]) != 0);
    assert_true(page_ns(a->page[a1]) != page_ns(b->page[0]));
    assert_true(page_ns(a->page[a1]) == page_ns(a->page[a2]));
    assert_true(page_exists(a->page[a1]) && page_exists(a->page[a2]) && page_exists(b->page[0]));

    /* a clean-up from the host: another process's page creation */
    print_message("pages: %s %s %s\n", a->page[a1], a->page[a2], b->page[0]);
    struct box *h = start_host();
    wait_ready(h, 1);
    assert_true(page_exists(a->page[a1]) && page_exists(a->page[a2]) && page_exists(b->page[0]));

    /* found from the host by the host's pids, which differ from 1 and 2 */
    pid_t a2_host = child_of(a->pid);
    assert_true(a2_host > 0);
    inspect_finds(a->pid, a->page[a1]);
    inspect_finds(a2_host, a->page[a2]);
    inspect_finds(b->pid, b->page[0]);
    inspect_finds(h->pid, h->page[0]);

    /* dead owners' pages go: container b killed outright (no exit, no unlink) ... */
    char b_page[256], h_page[256];
    snprintf(b_page, sizeof b_page, "%s", b->page[0]);
    snprintf(h_page, sizeof h_page, "%s", h->page[0]);
    pid_t b_pid = b->pid, h_pid = h->pid;
    kill_box(b);
    kill_box(h);
    assert_true(page_exists(b_page) && page_exists(h_page));
    /* ... and what a cleaner that died had moved aside (named for it: <ns>.<pid>.stale):
     * the file it was removing goes, a page whose owner lives (its lock is held) stays */
    char aside_dead[256], aside_live[256];
    snprintf(aside_dead, sizeof aside_dead, "/dev/shm/ebbmalloc.%llu.%d.stale", page_ns(h_page), (int)h_pid);
    snprintf(aside_live, sizeof aside_live, "/dev/shm/ebbmalloc.%llu.%d.stale", page_ns(h_page), (int)b_pid);
    int dead_fd = open(aside_dead, O_RDWR | O_CREAT | O_EXCL, 0600);
    int live_fd = open(aside_live, O_RDWR | O_CREAT | O_EXCL, 0600);
    assert_true(dead_fd >= 0 && live_fd >= 0);
    close(dead_fd);
    assert_int_equal(flock(live_fd, LOCK_SH), 0);
    struct box *h2 = start_host();
    wait_ready(h2, 1);
    assert_false(page_exists(aside_dead));
    assert_true(page_exists(aside_live));
    close(live_fd);
    unlink(aside_live);
    assert_false(page_exists(b_page)); /* its owner's lock died with it */
    assert_false(page_exists(h_page)); /* a pid the host's namespace no longer has */
    assert_true(page_exists(a->page[a1]) && page_exists(a->page[a2]) && page_exists(h2->page[0]));
    inspect_finds(a->pid, a->page[a1]);
    kill_box(h2);
    kill_box(a);
}

static int teardown(void **st) {
    (void)st;
    for (int i = 0; i < nstarted; i++) {
        struct box *b = started[i];
        kill_box(b);
        for (int k = 0; k < b->nready; k++) unlink(b->page[k]); /* left by SIGKILL */
    }
    nstarted = 0;
    return 0;
}

/* This process (and all it starts) in a mount namespace with its own tmpfs at /dev/shm;
 * without root, in a user namespace whose root it is. */
static int private_dev_shm(void **st) {
    (void)st;
    const char *what;
    if (ebb_private_dev_shm("mode=1777", &what)) {
        print_error("%s: %s\n", what, strerror(errno));
        return -1;
    }
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(two_containers_share_dev_shm, teardown),
    };
    return cmocka_run_group_tests(tests, private_dev_shm, NULL);
}
