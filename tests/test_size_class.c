/* The size-class table: the properties the allocator relies on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "internal.h"

static void classes_increase_and_align(void **st) {
    (void)st;
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        assert_true(ebbi_classes[c].size > ebbi_classes[c - 1].size);
        assert_int_equal(ebbi_classes[c].size % 16, 0);
    }
    assert_int_equal(ebbi_classes[1].size, 16);
    assert_int_equal(ebbi_classes[EBB_NCLASS - 1].size, EBB_SMALL_MAX);
}

static void rounding_waste_within_an_eighth(void **st) {
    (void)st;
    /* Above 128 bytes, any request is rounded up by at most 12.5%. */
    for (unsigned c = 9; c < EBB_NCLASS; c++) {
        size_t worst = ebbi_classes[c - 1].size + 1;
        assert_true((ebbi_classes[c].size - worst) * 8 <= worst);
    }
    /* At and below 128 bytes classes step by 16 (the alignment). */
    for (unsigned c = 1; c <= 8; c++) assert_int_equal(ebbi_classes[c].size, 16 * c);
}

static void spans_waste_little_and_batches_are_sane(void **st) {
    (void)st;
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        const struct ebb_class_info *ci = &ebbi_classes[c];
        size_t span = (size_t)ci->pages * EBB_PAGE;
        assert_true(ci->pages >= 1 && ci->pages <= 32);
        assert_true(span >= ci->size);
        assert_true((span % ci->size) * 8 <= span); /* tail waste <= 12.5% */
        assert_true(ci->batch >= 2 && ci->batch <= 32);
        assert_true((size_t)ci->batch * ci->size <= 64 * 1024 || ci->batch == 2);
        assert_int_equal(ebbi_class_objects(c), span / ci->size);
        assert_true(ebbi_class_objects(c) < 65536);
    }
}

static void lookup_is_smallest_fitting_class(void **st) {
    (void)st;
    ebbi_size_class_init();
    for (size_t n = 0; n <= EBB_SMALL_MAX; n++) {
        unsigned c = ebbi_size_to_class(n);
        assert_true(c >= 1 && c < EBB_NCLASS);
        assert_true(ebbi_classes[c].size >= n);
        assert_true(ebbi_classes[c - 1].size < n || c == 1);
    }
}

/* The block-start test free uses (ebbi_div_ok_at: an x86-64 instruction pair there, the
 * C expression elsewhere, arm64 included) says exactly whether an offset below 2^32 is a
 * multiple of the class size: at and around every block of a span, and far beyond. */
static void block_start_test_is_exact(void **st) {
    (void)st;
    ebbi_size_class_init();
    uint64_t r = 1;
    for (unsigned c = 1; c < EBB_NCLASS; c++) {
        const uint64_t size = ebbi_classes[c].size, *div = &ebbi_class_div[c];
        for (uint64_t k = 0; k <= ebbi_class_objects(c) + 1; k++)
            for (int d = -17; d <= 17; d++) {
                uint64_t x = k * size + (uint64_t)(int64_t)d;
                if (x >= ((uint64_t)1 << 32)) continue;
                assert_int_equal(ebbi_div_ok_at(div, x), x % size == 0);
                assert_int_equal(ebbi_block_start(c, x), x % size == 0);
            }
        for (int i = 0; i < 20000; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t x = r >> 32, m = x - x % size; /* any offset, and the multiple below it */
            assert_int_equal(ebbi_div_ok_at(div, x), x % size == 0);
            assert_true(ebbi_div_ok_at(div, m));
        }
    }
    uint64_t zero = 0; /* class 0: nothing is a block start */
    assert_false(ebbi_div_ok_at(&zero, 0));
    assert_false(ebbi_div_ok_at(&zero, 16));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(block_start_test_is_exact),
        cmocka_unit_test(classes_increase_and_align),
        cmocka_unit_test(rounding_waste_within_an_eighth),
        cmocka_unit_test(spans_waste_little_and_batches_are_sane),
        cmocka_unit_test(lookup_is_smallest_fitting_class),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
