// Test helper for ebb-inspect: a JVM that fills part of its heap and waits.
public class Sleeper {
    static byte[][] keep;

    public static void main(String[] args) throws Exception {
        keep = new byte[16][];
        for (int i = 0; i < keep.length; i++) {
            keep[i] = new byte[1 << 20];
        }
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(120_000);
    }
}
