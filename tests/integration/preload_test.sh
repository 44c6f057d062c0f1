#!/usr/bin/env bash
# Preloads libebbmalloc.so into real programs and checks, from each program's own view of
# its memory (/proc/self/maps) or from ebbmalloc's exit report (EBB_STATS=1), that the
# library was really in use; then checks each program's own results.
# usage: preload_test.sh LIB [python|sort|git|cxx|java]...
set -euo pipefail
LIB=$(readlink -f "$1"); shift
[ -f "$LIB" ] || { echo "no library at $LIB"; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d /tmp/ebb-preload.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass=0 fail=0 skip=0
ok() { echo "ok   $1"; pass=$((pass+1)); }
bad() { echo "FAIL $1"; fail=$((fail+1)); }
skipped() { echo "skip $1"; skip=$((skip+1)); }
# "ebbmalloc 0.1.0:" is the heading of the exit report: present only if ebbmalloc ran.
ran_ebb() { grep -q '^ebbmalloc [0-9.]*:$' "$1"; }

run_python() {
    command -v python3 >/dev/null || { skipped python3; return; }
    if LD_PRELOAD="$LIB" python3 - >"$TMP/py.out" 2>&1 <<'PY'
import threading, zlib, hashlib, random
assert 'libebbmalloc' in open('/proc/self/maps').read(), 'libebbmalloc not in maps'
errors = []
shared = []
lock = threading.Lock()
def work(seed):
    r = random.Random(seed)
    for i in range(1500):
        blob = bytes(r.getrandbits(8) for _ in range(r.randrange(1, 3000))) * r.randrange(1, 20)
        c = zlib.compress(blob)
        with lock:
            shared.append((blob, c))
            if len(shared) > 64:
                b, cc = shared.pop(r.randrange(len(shared)))  # made by another thread
                if zlib.decompress(cc) != b: errors.append(seed)
        d = {str(k): [k] * (k % 7) for k in range(r.randrange(10, 300))}
        hashlib.sha256(repr(d).encode()).hexdigest()
ts = [threading.Thread(target=work, args=(s,)) for s in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
assert not errors, errors
print('python ok')
PY
    then ok "python3 (16 threads, zlib, cross-thread frees)"; else cat "$TMP/py.out"; bad python3; fi
}

run_sort() {
    LD_PRELOAD="$LIB" sort /proc/self/maps > "$TMP/sort.maps"
    grep -q libebbmalloc "$TMP/sort.maps" || { bad "sort: not preloaded"; return; }
    seq 1 400000 | awk 'BEGIN{srand(7)} {print int(rand()*1e9) " line " $1}' > "$TMP/in.txt"
    LD_PRELOAD="$LIB" EBB_STATS=1 sort -n --parallel=2 -S 64M "$TMP/in.txt" > "$TMP/ebb.txt" 2> "$TMP/sort.err"
    sort -n --parallel=2 -S 64M "$TMP/in.txt" > "$TMP/glibc.txt"
    if ran_ebb "$TMP/sort.err" && cmp -s "$TMP/ebb.txt" "$TMP/glibc.txt"; then ok "sort (400k lines, same output as under glibc)"
    else bad "sort"; fi
}

run_git() {
    command -v git >/dev/null || { skipped git; return; }
    # git diff --no-index prints the file it reads: git's own maps.
    # A git alias runs a shell whose parent is git: read git's own maps from there.
    LD_PRELOAD="$LIB" git -c alias.maps='!test "$(cat /proc/$PPID/comm)" = git && cat /proc/$PPID/maps' maps \
        > "$TMP/git.maps" 2>&1 || true
    grep -q libebbmalloc "$TMP/git.maps" || { cat "$TMP/git.maps"; bad "git: not preloaded"; return; }
    ( cd "$TMP" && mkdir repo && cd repo &&
      export LD_PRELOAD="$LIB" GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t &&
      git init -q . && for i in $(seq 1 60); do seq 1 $((i * 300)) > "f$i.txt"; done &&
      git add . && git commit -qm one && sed -i 's/5/five/' f*.txt && git commit -qam two &&
      git gc -q && git log --stat | grep -c 'f[0-9]*.txt' ) > "$TMP/git.out" 2>&1 \
      && [ "$(tail -1 "$TMP/git.out")" = 120 ] && ok "git (init, commit, gc, log)" || { cat "$TMP/git.out"; bad git; }
}

run_cxx() {
    command -v g++ >/dev/null || { skipped "c++ (no g++)"; return; }
    cat > "$TMP/t.cc" <<'CC'
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
int main() {
    std::ifstream maps("/proc/self/maps");
    std::stringstream ss; ss << maps.rdbuf();
    if (ss.str().find("libebbmalloc") == std::string::npos) { std::cout << "not preloaded\n"; return 2; }
    std::vector<std::thread> ts;
    int bad = 0;
    for (int t = 0; t < 8; t++) ts.emplace_back([t, &bad] {
        std::map<int, std::string> m;
        for (int i = 0; i < 50000; i++) {
            m[i % 997] = std::string(i % 300, char('a' + t));
            auto v = std::make_unique<std::vector<long>>(i % 100, i);
            if (!v->empty() && (*v)[0] != i) bad++;
            auto arr = new double[i % 50 + 1]; delete[] arr;
        }
    });
    for (auto &t : ts) t.join();
    std::cout << "c++ ok\n";
    return bad;
}
CC
    g++ -O1 -pthread "$TMP/t.cc" -o "$TMP/tcc" && LD_PRELOAD="$LIB" "$TMP/tcc" | grep -q "c++ ok" \
        && ok "c++ new/delete, std containers, 8 threads" || bad "c++"
}

# Another library's constructor allocates first (before main, from several threads,
# through dlopen and dlsym), then the program forks and allocates in the child.
run_early() {
    command -v gcc >/dev/null || { skipped "early (no gcc)"; return; }
    cat > "$TMP/ctor.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
int ctor_ok;
static void *worker(void *a) {
    for (int i = 0; i < 20000; i++) { char *p = malloc((size_t)i % 5000 + 1); p[0] = 1; free(p); }
    return a;
}
__attribute__((constructor)) static void early(void) {
    char *p = calloc(100, 10);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    void *h = dlopen("libm.so.6", RTLD_NOW);
    double (*c)(double) = h ? (double (*)(double))dlsym(h, "cos") : NULL;
    void *sym = dlsym(RTLD_NEXT, "malloc");
    ctor_ok = p && c && c(0.0) == 1.0 && sym;
    free(p);
}
C
    cat > "$TMP/main.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
extern int ctor_ok;
int main(void) {
    FILE *f = fopen("/proc/self/maps", "r"); char line[512]; int found = 0;
    while (fgets(line, sizeof line, f)) if (strstr(line, "libebbmalloc")) found = 1;
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) { char *p = malloc(1 << 20); memset(p, 1, 1 << 20); free(p); _exit(0); }
    int st; waitpid(pid, &st, 0);
    printf("%s\n", found && ctor_ok && WIFEXITED(st) && !WEXITSTATUS(st) ? "early ok" : "early bad");
    return 0;
}
C
    gcc -O1 -shared -fPIC -pthread "$TMP/ctor.c" -o "$TMP/libctor.so" -ldl &&
    gcc -O1 "$TMP/main.c" -o "$TMP/early" -L"$TMP" -lctor -Wl,-rpath,"$TMP" -pthread &&
    LD_PRELOAD="$TMP/libctor.so $LIB" "$TMP/early" | grep -q "early ok" \
        && ok "a constructor allocating from threads, dlopen/dlsym before main, fork" || bad "early"
}

run_java() {
    command -v javac >/dev/null && command -v java >/dev/null || { bad "java/javac missing"; return; }
    cp "$HERE/PreloadCheck.java" "$TMP/"
    # javac is a JVM itself: its exit report shows ebbmalloc served it.
    if LD_PRELOAD="$LIB" EBB_STATS=1 javac -d "$TMP" "$TMP/PreloadCheck.java" 2> "$TMP/javac.err" && ran_ebb "$TMP/javac.err"; then
        ok "javac compiled under ebbmalloc"
    else cat "$TMP/javac.err"; bad javac; return; fi
    if LD_PRELOAD="$LIB" java -Xmx128m -XX:MaxDirectMemorySize=512m -cp "$TMP" PreloadCheck 64 > "$TMP/java.out" 2>&1 \
        && grep -q "java ok: 64 threads" "$TMP/java.out"; then
        ok "java: 64 threads, GZIP, direct ByteBuffers, native memory freed by other threads"
    else cat "$TMP/java.out"; bad java; fi
}

[ $# -gt 0 ] || set -- python sort git cxx early java
for t in "$@"; do "run_$t"; done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
