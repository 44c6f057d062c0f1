/* A JNI library that leaks on purpose: org.ebbmalloc.test.Leaky.leak(bytes) allocates a
 * block, touches it and keeps it forever (the shape of a native library whose Java
 * wrapper never calls the release method).  Built -O2 -fomit-frame-pointer, like
 * distribution JNI libraries. */
#include <jni.h>
#include <stdlib.h>
#include <string.h>

/* Every block stays reachable, so the compiler cannot drop the allocation. */
static void *volatile head;
static jlong leaked;

JNIEXPORT jlong JNICALL Java_org_ebbmalloc_test_Leaky_leak(JNIEnv *env, jclass cls, jint bytes) {
    (void)env;
    (void)cls;
    if (bytes < (jint)sizeof(void *)) bytes = (jint)sizeof(void *);
    void **p = malloc((size_t)bytes);
    if (!p) return -1;
    memset(p, 0x5a, (size_t)bytes);
    *p = head;
    head = p;
    leaked += bytes;
    return leaked;
}
