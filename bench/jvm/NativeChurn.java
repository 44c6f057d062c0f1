/*
 * jvm workload for ebb-bench: a JVM whose threads make native allocations the
 * way services do, so that what the C allocator does with them shows in the
 * process's RSS while the Java heap stays small.
 *
 * A pool of handler threads (default 8 x cores) retires and replaces threads.
 * Each handler keeps a working set of native blocks from Unsafe.allocateMemory
 * (mostly small, some tens of KiB, a few hundred KiB, every byte written) and of
 * direct ByteBuffers of varied sizes (freed by the JDK's cleaner thread once
 * unreachable), runs GZIP streams (zlib state is malloc'ed and freed around each
 * stream), creates Deflaters that another handler finishes and ends, and sends
 * native blocks to other handlers, which free them.  As in arena-creep a few
 * handlers are busy in each epoch and the rest quiet, and a small long-lived set
 * stays.  After the load everything but that set is dropped, the JVM collects,
 * and the process idles.
 *
 * It speaks ebb-bench's line protocol on stdout (see bench/wl_common.h); its
 * "live" bytes are heap committed + direct buffers + Unsafe blocks.
 */

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.lang.management.BufferPoolMXBean;
import java.lang.management.ManagementFactory;
import java.lang.reflect.Field;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.Deflater;
import java.util.zip.GZIPInputStream;
import java.util.zip.GZIPOutputStream;

public final class NativeChurn {
    static int threads = 8 * Runtime.getRuntime().availableProcessors();
    static long opsPerSlot = 20000, lifetime = 4000, epoch = 1500;
    static int hotBlocks = 2048, coldBlocks = 128, hotOneIn = 8;
    static long keepBytes = 8L << 20, idleMs = 3000, seed = 1;
    static boolean sync;

    /* sun.misc.Unsafe's allocateMemory/setMemory/freeMemory, reached through
     * method handles (they are malloc, memset and free underneath). */
    static final MethodHandle ALLOC, SETMEM, FREE;
    static {
        try {
            Class<?> uc = Class.forName("sun.misc.Unsafe");
            Field f = uc.getDeclaredField("theUnsafe");
            f.setAccessible(true);
            Object u = f.get(null);
            MethodHandles.Lookup lk = MethodHandles.lookup();
            ALLOC = lk.findVirtual(uc, "allocateMemory", MethodType.methodType(long.class, long.class)).bindTo(u);
            SETMEM = lk.findVirtual(uc, "setMemory",
                    MethodType.methodType(void.class, long.class, long.class, byte.class)).bindTo(u);
            FREE = lk.findVirtual(uc, "freeMemory", MethodType.methodType(void.class, long.class)).bindTo(u);
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }
    static final AtomicLong unsafeLive = new AtomicLong();
    static final AtomicLong progress = new AtomicLong();
    static final long t0 = System.nanoTime();

    /* Per handler slot; a new thread in the slot takes over its working set. */
    static long[][] addr;
    static int[][] asize;
    static ByteBuffer[][] bufs;
    static long[] slotOps;
    static boolean[] slotHot;
    static int[] slotGen;
    static final ArrayList<ConcurrentLinkedQueue<long[]>> mailbox = new ArrayList<>();
    static final ConcurrentLinkedQueue<Deflater> handedDeflaters = new ConcurrentLinkedQueue<>();
    static final AtomicLong handedCount = new AtomicLong();

    static final Object keepLock = new Object();
    static final long[] keepAddr = new long[1 << 16];
    static final int[] keepSize = new int[1 << 16];
    static int keepCount;
    static long keepTotal;

    /* {slot, 1 if parked else 0} */
    static final LinkedBlockingQueue<int[]> events = new LinkedBlockingQueue<>();
    static final Object parkLock = new Object();
    static boolean exitNow;
    static volatile boolean reporterStop;
    static BufferPoolMXBean directPool;

    static synchronized void say(String s) {
        System.out.print(s + "\n");
        System.out.flush();
    }

    static long ms() {
        return (System.nanoTime() - t0) / 1000000L;
    }

    static long mix64(long x) {
        x += 0x9e3779b97f4a7c15L;
        x = (x ^ (x >>> 30)) * 0xbf58476d1ce4e5b9L;
        x = (x ^ (x >>> 27)) * 0x94d049bb133111ebL;
        return x ^ (x >>> 31);
    }

    /* xorshift64* state in a one-element array, per thread. */
    static long next(long[] r) {
        long x = r[0];
        x ^= x >>> 12;
        x ^= x << 25;
        x ^= x >>> 27;
        r[0] = x;
        return x * 0x2545f4914f6cdd1dL;
    }

    static int below(long[] r, int n) {
        return (int) Long.remainderUnsigned(next(r), n);
    }

    /* Mostly small, some tens of KiB, a few hundred KiB. */
    static int pickSize(long[] r) {
        long x = next(r);
        int k = (int) Long.remainderUnsigned(x, 1000);
        long y = x >>> 16;
        if (k < 900) {
            int base = 16 << (int) (y % 6);
            return base + (int) ((y >>> 8) % base);
        }
        if (k < 990) {
            int base = 4096 << (int) (y % 4);
            return base + (int) ((y >>> 8) % base);
        }
        return 96 * 1024 + (int) ((y >>> 8) % (544 * 1024));
    }

    static long nativeAlloc(int s, int fill) {
        try {
            long a = (long) ALLOC.invokeExact((long) s);
            SETMEM.invokeExact(a, (long) s, (byte) fill);
            unsafeLive.addAndGet(s);
            return a;
        } catch (Throwable t) {
            throw new RuntimeException(t);
        }
    }

    static void nativeFree(long a, int s) {
        if (a == 0)
            return;
        try {
            FREE.invokeExact(a);
        } catch (Throwable t) {
            throw new RuntimeException(t);
        }
        unsafeLive.addAndGet(-s);
    }

    static boolean epochHot(int slot, long e) {
        int busy = Math.max(1, threads / hotOneIn);
        long mine = mix64(seed * 0x100000001b3L ^ ((long) slot << 40) ^ e);
        int below = 0;
        for (int i = 0; i < threads; i++) {
            long k = mix64(seed * 0x100000001b3L ^ ((long) i << 40) ^ e);
            if (Long.compareUnsigned(k, mine) < 0 || (k == mine && i < slot))
                below++;
        }
        return below < busy;
    }

    static void keepInsert(long[] r, long a, int s) {
        synchronized (keepLock) {
            while (keepCount > 0 && (keepTotal + s > keepBytes || keepCount == keepAddr.length)) {
                int j = below(r, keepCount);
                nativeFree(keepAddr[j], keepSize[j]);
                keepTotal -= keepSize[j];
                keepCount--;
                keepAddr[j] = keepAddr[keepCount];
                keepSize[j] = keepSize[keepCount];
            }
            keepAddr[keepCount] = a;
            keepSize[keepCount] = s;
            keepCount++;
            keepTotal += s;
        }
    }

    static void gzipRoundTrip(long[] r, byte[] data, byte[] tmp) throws IOException {
        int len = 2048 + below(r, 62 * 1024);
        byte b = (byte) next(r);
        for (int i = 0; i < len; i++)
            data[i] = (byte) (b + (i % 61 == 0 ? next(r) & 7 : 0) + (i >> 9));
        ByteArrayOutputStream bos = new ByteArrayOutputStream(len / 4 + 64);
        try (GZIPOutputStream gz = new GZIPOutputStream(bos, 8192)) {
            gz.write(data, 0, len);
        }
        int total = 0;
        try (GZIPInputStream in = new GZIPInputStream(new ByteArrayInputStream(bos.toByteArray()), 8192)) {
            int n;
            while ((n = in.read(tmp)) > 0)
                total += n;
        }
        if (total != len)
            throw new IOException("gzip round trip lost bytes");
    }

    static void handler(int slot) {
        long[] r = {mix64(seed ^ mix64(slot ^ mix64(slotGen[slot]))) | 1};
        byte[] data = new byte[64 * 1024];
        byte[] tmp = new byte[16 * 1024];
        long done = 0, curEpoch = -1;
        boolean hot = false;
        long[] a = addr[slot];
        int[] sz = asize[slot];
        ByteBuffer[] bb = bufs[slot];
        ConcurrentLinkedQueue<long[]> inbox = mailbox.get(slot);
        try {
            while (slotOps[slot] < opsPerSlot && done < lifetime) {
                if ((slotOps[slot] & 63) == 0) {
                    long e = progress.getAndAdd(64) / (epoch * threads);
                    if (e != curEpoch) {
                        curEpoch = e;
                        hot = epochHot(slot, e);
                    }
                }
                if (slotHot[slot] && !hot) {
                    for (int i = coldBlocks; i < hotBlocks; i++) {
                        nativeFree(a[i], sz[i]);
                        a[i] = 0;
                        bb[i] = null;
                    }
                }
                slotHot[slot] = hot;
                int n = hot ? hotBlocks : coldBlocks;
                int i = below(r, n);
                int k = below(r, 100);
                if (k < 60) { /* native block */
                    nativeFree(a[i], sz[i]);
                    int s = pickSize(r);
                    a[i] = nativeAlloc(s, i);
                    sz[i] = s;
                } else if (k < 80) { /* direct buffer; the old one goes to the cleaner */
                    int s = 256 << below(r, 8);
                    s += below(r, s);
                    ByteBuffer nb = ByteBuffer.allocateDirect(s); /* zeroed: every byte written */
                    nb.put(0, (byte) i);
                    bb[i] = nb;
                } else if (k < 88) {
                    gzipRoundTrip(r, data, tmp);
                } else if (k < 91) { /* start a Deflater here, another handler ends it */
                    Deflater d = new Deflater(1 + below(r, 9));
                    int len = 4096 + below(r, 16384);
                    d.setInput(data, 0, len);
                    while (!d.needsInput())
                        d.deflate(tmp);
                    if (handedCount.get() < 4L * threads) {
                        handedDeflaters.add(d);
                        handedCount.incrementAndGet();
                    } else {
                        d.end();
                    }
                } else if (k < 95) {
                    Deflater d = handedDeflaters.poll();
                    if (d != null) {
                        handedCount.decrementAndGet();
                        d.setInput(data, 0, 4096);
                        d.finish();
                        while (!d.finished())
                            d.deflate(tmp);
                        d.end(); /* zlib state allocated by another thread */
                    }
                } else { /* a native block for another handler */
                    int s = pickSize(r);
                    int to = below(r, threads);
                    mailbox.get(to).add(new long[] {nativeAlloc(s, 0x5a), s});
                }
                if (below(r, 64) == 0) {
                    int s = pickSize(r);
                    keepInsert(r, nativeAlloc(s, 0xa5), s);
                }
                if ((slotOps[slot] & 31) == 0) {
                    long[] m;
                    while ((m = inbox.poll()) != null) {
                        int j = below(r, n);
                        nativeFree(a[j], sz[j]);
                        a[j] = m[0];
                        sz[j] = (int) m[1];
                    }
                }
                slotOps[slot]++;
                done++;
            }
        } catch (IOException ex) {
            throw new RuntimeException(ex);
        }
        if (slotOps[slot] < opsPerSlot) {
            events.add(new int[] {slot, 0});
            return;
        }
        /* The load is over for this handler: drop everything, park. */
        for (int i = 0; i < hotBlocks; i++) {
            nativeFree(a[i], sz[i]);
            a[i] = 0;
            bb[i] = null;
        }
        events.add(new int[] {slot, 1});
        synchronized (parkLock) {
            while (!exitNow) {
                try {
                    parkLock.wait();
                } catch (InterruptedException e) {
                    return;
                }
            }
        }
    }

    static long live() {
        long direct = directPool != null ? directPool.getMemoryUsed() : 0;
        return Runtime.getRuntime().totalMemory() + direct + unsafeLive.get();
    }

    static Thread startHandler(int slot) {
        Thread t = new Thread(() -> handler(slot), "handler-" + slot + "-" + slotGen[slot]);
        t.start();
        return t;
    }

    static long num(String s) {
        long m = 1;
        if (s.endsWith("k") || s.endsWith("K")) {
            m = 1000;
            s = s.substring(0, s.length() - 1);
        } else if (s.endsWith("m") || s.endsWith("M")) {
            m = 1000000;
            s = s.substring(0, s.length() - 1);
        }
        return Long.parseLong(s) * m;
    }

    public static void main(String[] args) throws Exception {
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--quick": opsPerSlot = 6000; idleMs = 2200; break;
                case "--long": opsPerSlot = 200000; idleMs = 15000; break;
                case "--threads": threads = (int) num(args[++i]); break;
                case "--ops": opsPerSlot = num(args[++i]); break;
                case "--lifetime": lifetime = num(args[++i]); break;
                case "--epoch": epoch = num(args[++i]); break;
                case "--hot-blocks": hotBlocks = (int) num(args[++i]); break;
                case "--cold-blocks": coldBlocks = (int) num(args[++i]); break;
                case "--keep-mib": keepBytes = num(args[++i]) << 20; break;
                case "--idle-ms": idleMs = num(args[++i]); break;
                case "--seed": seed = num(args[++i]); break;
                case "--sync": sync = true; break;
                default:
                    System.err.println("usage: NativeChurn [--quick|--long] [--threads N] [--ops N] "
                            + "[--lifetime N] [--epoch N] [--hot-blocks N] [--cold-blocks N] "
                            + "[--keep-mib N] [--idle-ms N] [--seed S] [--sync]");
                    System.exit(2);
            }
        }
        coldBlocks = Math.min(coldBlocks, hotBlocks);
        for (BufferPoolMXBean p : ManagementFactory.getPlatformMXBeans(BufferPoolMXBean.class))
            if (p.getName().equals("direct"))
                directPool = p;

        say("ready");
        if (sync)
            System.in.read();
        System.err.printf("jvm: %d handlers, %d ops each, lifetime %d, epoch %d%n", threads, opsPerSlot,
                lifetime, epoch);

        addr = new long[threads][hotBlocks];
        asize = new int[threads][hotBlocks];
        bufs = new ByteBuffer[threads][hotBlocks];
        slotOps = new long[threads];
        slotHot = new boolean[threads];
        slotGen = new int[threads];
        for (int i = 0; i < threads; i++)
            mailbox.add(new ConcurrentLinkedQueue<>());

        Thread reporter = new Thread(() -> {
            while (!reporterStop) {
                say("live " + ms() + " " + live());
                try {
                    Thread.sleep(20);
                } catch (InterruptedException e) {
                    return;
                }
            }
        }, "reporter");
        reporter.setDaemon(true);
        reporter.start();

        say("phase load-start " + ms());
        long start = System.nanoTime();
        Thread[] th = new Thread[threads];
        int generations = threads;
        for (int i = 0; i < threads; i++)
            th[i] = startHandler(i);
        int parked = 0;
        while (parked < threads) {
            int[] ev = events.take();
            int s = ev[0];
            if (ev[1] == 1) {
                parked++;
                continue;
            }
            th[s].join();
            slotGen[s]++;
            generations++;
            th[s] = startHandler(s);
        }
        long end = System.nanoTime();

        /* Only the long-lived set is left: free what is in flight, collect. */
        Deflater d;
        while ((d = handedDeflaters.poll()) != null)
            d.end();
        for (ConcurrentLinkedQueue<long[]> q : mailbox) {
            long[] m;
            while ((m = q.poll()) != null)
                nativeFree(m[0], (int) m[1]);
        }
        System.gc();
        Thread.sleep(100);
        System.gc();
        long ops = 0;
        for (long o : slotOps)
            ops += o;
        say("live " + ms() + " " + live());
        say("phase drop " + ms());
        say("result load " + ops + " " + (end - start));
        say("note threads=" + generations + " keep_bytes=" + keepTotal + " heap_committed="
                + Runtime.getRuntime().totalMemory() + " direct=" + (directPool != null ? directPool.getMemoryUsed() : -1)
                + " unsafe=" + unsafeLive.get());
        System.err.printf("jvm: load done in %.2f s, %d handler threads, idling %d ms%n", (end - start) / 1e9,
                generations, idleMs);
        Thread.sleep(idleMs);
        say("phase end " + ms());
        reporterStop = true;
        synchronized (parkLock) {
            exitNow = true;
            parkLock.notifyAll();
        }
        System.exit(0);
    }
}
