package org.ebbmalloc.test;

/* Calls a leaking JNI function in a loop while the Java heap stays small (no garbage is
 * made per call), prints what it leaked and "ready", then sleeps until it is killed.
 *
 *   java -Xmx32m -cp CLASSES org.ebbmalloc.test.Leaky LIBLEAKY.so TOTAL_BYTES BLOCK_BYTES */
public class Leaky {
    static native long leak(int bytes);

    public static void main(String[] args) throws Exception {
        System.load(args[0]);
        long total = Long.parseLong(args[1]);
        int block = Integer.parseInt(args[2]);
        long leaked = 0;
        while (leaked < total)
            leaked = leak(block);
        System.out.println("leaked " + leaked);
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
