/* Test helper for ebb-run: prints its arguments, and LD_PRELOAD and the EBB_*
 * variables on stderr, and exits with the status given as its first argument
 * ("hello 3 a b" exits 3).  "hello sleep" prints "ready" and waits for a signal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
        printf("ready\n");
        fflush(stdout);
        for (;;) pause();
    }
    for (int i = 2; i < argc; i++) printf("%s%s", argv[i], i + 1 < argc ? " " : "\n");
    extern char **environ;
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "LD_PRELOAD=", 11) || !strncmp(*e, "EBB_", 4)) fprintf(stderr, "%s\n", *e);
    return argc > 1 ? atoi(argv[1]) : 0;
}
