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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classes_increase_and_align),
        cmocka_unit_test(rounding_waste_within_an_eighth),
        cmocka_unit_test(spans_waste_little_and_batches_are_sane),
        cmocka_unit_test(lookup_is_smallest_fitting_class),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
