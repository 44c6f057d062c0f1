/* exec: runs a program that does not speak the workload protocol (db_bench) as a
 * workload.  It says "malloc-from" and "ready" like every workload, so that ebb-bench
 * checks the configuration in this process, waits for the go (--sync), says
 * "phase load-start" and replaces itself with the program, which keeps the process,
 * its environment (so the same LD_PRELOAD and variables) and its standard streams.
 * ebb-bench then checks the configuration again in the exec'd program.
 *
 *   ebb-wl-exec [--sync] [--] PROGRAM [ARGS...]
 */
#define _GNU_SOURCE
#include "wl_common.h"

int main(int argc, char **argv) {
    int i = 1;
    int sync = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (wl_arg_is(argv[i], "--sync")) {
            sync = 1;
        } else if (wl_arg_is(argv[i], "--")) {
            i++;
            break;
        } else {
            fprintf(stderr, "usage: ebb-wl-exec [--sync] [--] PROGRAM [ARGS...]\n");
            return 2;
        }
    }
    if (i >= argc) {
        fprintf(stderr, "usage: ebb-wl-exec [--sync] [--] PROGRAM [ARGS...]\n");
        return 2;
    }
    wl_start(sync);
    wl_say("phase load-start %llu", (unsigned long long)wl_ms());
    execvp(argv[i], argv + i);
    fprintf(stderr, "ebb-wl-exec: cannot run %s: %s\n", argv[i], strerror(errno));
    return 127;
}
