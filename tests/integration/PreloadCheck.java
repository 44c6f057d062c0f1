// Runs under LD_PRELOAD=libebbmalloc.so: checks from its own /proc/self/maps that the
// library is loaded, then has 64 threads make native allocations the way services do:
// GZIP streams (Deflater/Inflater), direct ByteBuffers of varied sizes, and raw native
// memory allocated on one thread and freed on another.  Every byte is checked.
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.lang.reflect.Field;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Random;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;

public class PreloadCheck {
    static final AtomicLong errors = new AtomicLong();
    static final BlockingQueue<long[]> handoff = new ArrayBlockingQueue<>(256);
    static sun.misc.Unsafe unsafe;

    public static void main(String[] args) throws Exception {
        String maps = new String(Files.readAllBytes(Paths.get("/proc/self/maps")));
        if (!maps.contains("libebbmalloc")) {
            System.out.println("libebbmalloc is not in /proc/self/maps");
            System.exit(2);
        }
        Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        unsafe = (sun.misc.Unsafe) f.get(null);
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 64;
        Thread[] ts = new Thread[n];
        for (int i = 0; i < n; i++) {
            final int id = i;
            ts[i] = new Thread(() -> work(id));
            ts[i].start();
        }
        for (Thread t : ts) t.join();
        while (!handoff.isEmpty()) free(handoff.poll());
        if (errors.get() != 0) {
            System.out.println("errors: " + errors.get());
            System.exit(1);
        }
        System.out.println("java ok: " + n + " threads");
    }

    static void free(long[] m) {
        if (m == null) return;
        for (long k = 0; k < m[1]; k += 8)
            if (unsafe.getLong(m[0] + k) != m[0] + k) { errors.incrementAndGet(); break; }
        unsafe.freeMemory(m[0]);
    }

    static void work(int id) {
        Random r = new Random(id);
        try {
            for (int round = 0; round < 12; round++) {
                byte[] data = new byte[1000 + r.nextInt(60000)];
                for (int k = 0; k < data.length; k++) data[k] = (byte) (k * 31 / 7 + round);
                ByteArrayOutputStream bo = new ByteArrayOutputStream();
                try (GZIPOutputStream gz = new GZIPOutputStream(bo)) { gz.write(data); }
                ByteArrayOutputStream back = new ByteArrayOutputStream();
                try (GZIPInputStream gi = new GZIPInputStream(new ByteArrayInputStream(bo.toByteArray()))) {
                    gi.transferTo(back);
                }
                if (!java.util.Arrays.equals(data, back.toByteArray())) errors.incrementAndGet();
                ByteBuffer bb = ByteBuffer.allocateDirect(16 + r.nextInt(r.nextBoolean() ? 4096 : 400000));
                for (int k = 0; k + 4 <= bb.capacity(); k += 4) bb.putInt(k, k ^ id);
                for (int k = 0; k + 4 <= bb.capacity(); k += 4) if (bb.getInt(k) != (k ^ id)) { errors.incrementAndGet(); break; }
                long size = 8L * (1 + r.nextInt(r.nextInt(10) == 0 ? 40000 : 300));
                long addr = unsafe.allocateMemory(size);
                for (long k = 0; k < size; k += 8) unsafe.putLong(addr + k, addr + k);
                if (!handoff.offer(new long[] {addr, size})) free(new long[] {addr, size});
                free(handoff.poll()); // most likely another thread's block
            }
        } catch (Exception e) {
            e.printStackTrace();
            errors.incrementAndGet();
        }
    }
}
