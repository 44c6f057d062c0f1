/* size_class.c: the size classes.
 *
 * Every class is a multiple of 16 bytes, so every block is 16-byte aligned.  Up to 128
 * bytes the classes step by 16; above, each power-of-two range holds eight classes, so a
 * request is rounded up by at most 12.5%.  `pages` is the span a class is cut from: the
 * smallest run of 8 KiB pages that holds enough objects (1 for classes up to 1 KiB, 4 up
 * to 8 KiB, 2 up to 64 KiB, 1 above) and wastes at most 1/8 of the span (the "tail" below,
 * which a span keeps before its first object: see ebbi_span_blocks).
 * `batch` objects (64 KiB worth, 2 to 32) move between a thread and the central tier.
 * tests/test_size_class.c checks all of this.
 */
#include "internal.h"

const struct ebb_class_info ebbi_classes[EBB_NCLASS] = {
    /* bytes, pages, batch */
    {0, 0, 0},       /*  0: not a small object */
    {16, 1, 32},     /*  1:  512 objs, tail waste  0.0% */
    {32, 1, 32},     /*  2:  256 objs, tail waste  0.0% */
    {48, 1, 32},     /*  3:  170 objs, tail waste  0.4% */
    {64, 1, 32},     /*  4:  128 objs, tail waste  0.0% */
    {80, 1, 32},     /*  5:  102 objs, tail waste  0.4% */
    {96, 1, 32},     /*  6:   85 objs, tail waste  0.4% */
    {112, 1, 32},    /*  7:   73 objs, tail waste  0.2% */
    {128, 1, 32},    /*  8:   64 objs, tail waste  0.0% */
    {144, 1, 32},    /*  9:   56 objs, tail waste  1.6% */
    {160, 1, 32},    /* 10:   51 objs, tail waste  0.4% */
    {176, 1, 32},    /* 11:   46 objs, tail waste  1.2% */
    {192, 1, 32},    /* 12:   42 objs, tail waste  1.6% */
    {208, 1, 32},    /* 13:   39 objs, tail waste  1.0% */
    {224, 1, 32},    /* 14:   36 objs, tail waste  1.6% */
    {240, 1, 32},    /* 15:   34 objs, tail waste  0.4% */
    {256, 1, 32},    /* 16:   32 objs, tail waste  0.0% */
    {288, 1, 32},    /* 17:   28 objs, tail waste  1.6% */
    {320, 1, 32},    /* 18:   25 objs, tail waste  2.3% */
    {352, 1, 32},    /* 19:   23 objs, tail waste  1.2% */
    {384, 1, 32},    /* 20:   21 objs, tail waste  1.6% */
    {416, 1, 32},    /* 21:   19 objs, tail waste  3.5% */
    {448, 1, 32},    /* 22:   18 objs, tail waste  1.6% */
    {480, 1, 32},    /* 23:   17 objs, tail waste  0.4% */
    {512, 1, 32},    /* 24:   16 objs, tail waste  0.0% */
    {576, 1, 32},    /* 25:   14 objs, tail waste  1.6% */
    {640, 1, 32},    /* 26:   12 objs, tail waste  6.2% */
    {704, 1, 32},    /* 27:   11 objs, tail waste  5.5% */
    {768, 1, 32},    /* 28:   10 objs, tail waste  6.2% */
    {832, 1, 32},    /* 29:    9 objs, tail waste  8.6% */
    {896, 1, 32},    /* 30:    9 objs, tail waste  1.6% */
    {960, 1, 32},    /* 31:    8 objs, tail waste  6.2% */
    {1024, 1, 32},   /* 32:    8 objs, tail waste  0.0% */
    {1152, 1, 32},   /* 33:    7 objs, tail waste  1.6% */
    {1280, 1, 32},   /* 34:    6 objs, tail waste  6.2% */
    {1408, 2, 32},   /* 35:   11 objs, tail waste  5.5% */
    {1536, 1, 32},   /* 36:    5 objs, tail waste  6.2% */
    {1664, 2, 32},   /* 37:    9 objs, tail waste  8.6% */
    {1792, 1, 32},   /* 38:    4 objs, tail waste 12.5% */
    {1920, 1, 32},   /* 39:    4 objs, tail waste  6.2% */
    {2048, 1, 32},   /* 40:    4 objs, tail waste  0.0% */
    {2304, 2, 28},   /* 41:    7 objs, tail waste  1.6% */
    {2560, 2, 25},   /* 42:    6 objs, tail waste  6.2% */
    {2816, 3, 23},   /* 43:    8 objs, tail waste  8.3% */
    {3072, 2, 21},   /* 44:    5 objs, tail waste  6.2% */
    {3328, 3, 19},   /* 45:    7 objs, tail waste  5.2% */
    {3584, 2, 18},   /* 46:    4 objs, tail waste 12.5% */
    {3840, 2, 17},   /* 47:    4 objs, tail waste  6.2% */
    {4096, 2, 16},   /* 48:    4 objs, tail waste  0.0% */
    {4608, 3, 14},   /* 49:    5 objs, tail waste  6.2% */
    {5120, 4, 12},   /* 50:    6 objs, tail waste  6.2% */
    {5632, 3, 11},   /* 51:    4 objs, tail waste  8.3% */
    {6144, 3, 10},   /* 52:    4 objs, tail waste  0.0% */
    {6656, 5, 9},    /* 53:    6 objs, tail waste  2.5% */
    {7168, 4, 9},    /* 54:    4 objs, tail waste 12.5% */
    {7680, 4, 8},    /* 55:    4 objs, tail waste  6.2% */
    {8192, 4, 8},    /* 56:    4 objs, tail waste  0.0% */
    {9216, 5, 7},    /* 57:    4 objs, tail waste 10.0% */
    {10240, 4, 6},   /* 58:    3 objs, tail waste  6.2% */
    {11264, 3, 5},   /* 59:    2 objs, tail waste  8.3% */
    {12288, 3, 5},   /* 60:    2 objs, tail waste  0.0% */
    {13312, 5, 4},   /* 61:    3 objs, tail waste  2.5% */
    {14336, 4, 4},   /* 62:    2 objs, tail waste 12.5% */
    {15360, 4, 4},   /* 63:    2 objs, tail waste  6.2% */
    {16384, 4, 4},   /* 64:    2 objs, tail waste  0.0% */
    {18432, 5, 3},   /* 65:    2 objs, tail waste 10.0% */
    {20480, 5, 3},   /* 66:    2 objs, tail waste  0.0% */
    {22528, 6, 2},   /* 67:    2 objs, tail waste  8.3% */
    {24576, 6, 2},   /* 68:    2 objs, tail waste  0.0% */
    {26624, 7, 2},   /* 69:    2 objs, tail waste  7.1% */
    {28672, 7, 2},   /* 70:    2 objs, tail waste  0.0% */
    {30720, 8, 2},   /* 71:    2 objs, tail waste  6.2% */
    {32768, 8, 2},   /* 72:    2 objs, tail waste  0.0% */
    {36864, 9, 2},   /* 73:    2 objs, tail waste  0.0% */
    {40960, 10, 2},  /* 74:    2 objs, tail waste  0.0% */
    {45056, 11, 2},  /* 75:    2 objs, tail waste  0.0% */
    {49152, 12, 2},  /* 76:    2 objs, tail waste  0.0% */
    {53248, 13, 2},  /* 77:    2 objs, tail waste  0.0% */
    {57344, 14, 2},  /* 78:    2 objs, tail waste  0.0% */
    {61440, 15, 2},  /* 79:    2 objs, tail waste  0.0% */
    {65536, 16, 2},  /* 80:    2 objs, tail waste  0.0% */
    {73728, 9, 2},   /* 81:    1 objs, tail waste  0.0% */
    {81920, 10, 2},  /* 82:    1 objs, tail waste  0.0% */
    {90112, 11, 2},  /* 83:    1 objs, tail waste  0.0% */
    {98304, 12, 2},  /* 84:    1 objs, tail waste  0.0% */
    {106496, 13, 2}, /* 85:    1 objs, tail waste  0.0% */
    {114688, 14, 2}, /* 86:    1 objs, tail waste  0.0% */
    {122880, 15, 2}, /* 87:    1 objs, tail waste  0.0% */
    {131072, 16, 2}, /* 88:    1 objs, tail waste  0.0% */
    {147456, 18, 2}, /* 89:    1 objs, tail waste  0.0% */
    {163840, 20, 2}, /* 90:    1 objs, tail waste  0.0% */
    {180224, 22, 2}, /* 91:    1 objs, tail waste  0.0% */
    {196608, 24, 2}, /* 92:    1 objs, tail waste  0.0% */
    {212992, 26, 2}, /* 93:    1 objs, tail waste  0.0% */
    {229376, 28, 2}, /* 94:    1 objs, tail waste  0.0% */
    {245760, 30, 2}, /* 95:    1 objs, tail waste  0.0% */
    {262144, 32, 2}, /* 96:    1 objs, tail waste  0.0% */
};

uint8_t ebbi_class_lut[(EBB_SMALL_MAX >> 4) + 1];

/* Fills the size -> class table: for each index, the smallest class that holds every size
 * mapping to it.  Until this runs the table is all zeros (class 0), and class 0's thread
 * cache list is always empty, so the first malloc takes the slow path and initialises. */
uint64_t ebbi_class_div[EBB_NCLASS];

void ebbi_size_class_init(void) {
    for (unsigned c = 1; c < EBB_NCLASS; c++) ebbi_class_div[c] = UINT64_MAX / ebbi_classes[c].size + 1;
    unsigned cls = 1;
    for (size_t n = 0; n <= EBB_SMALL_MAX; n += 16) {
        while (ebbi_classes[cls].size < n) cls++;
        __atomic_store_n(&ebbi_class_lut[ebbi_class_index(n)], (uint8_t)cls, __ATOMIC_RELAXED);
    }
}
