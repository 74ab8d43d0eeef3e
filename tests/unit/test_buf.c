/*
 * Unit tests for core/buf.c: the bounded buffer every input and output goes through. The
 * limit is the point: an append past it fails whole, leaves what was there, and makes the
 * buffer refuse the rest, so a caller appending many pieces checks once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "spbridge/buf.h"
#include "spbridge/error.h"

static void test_appends_and_takes(void **state)
{
    spb_buf b;
    char *out;
    size_t len = 0;
    (void)state;
    spb_buf_init(&b, 1 << 20);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(spb_buf_printf(&b, "%04d,", i), 0);
    assert_int_equal(b.len, 5000);
    assert_memory_equal(b.data, "0000,0001,", 10);
    assert_memory_equal(b.data + 4995, "0999,", 5);
    assert_int_equal(b.data[5000], '\0');
    out = spb_buf_take(&b, &len);
    assert_int_equal(len, 5000);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    free(out);
}

static void test_limit_is_exact(void **state)
{
    spb_buf b;
    (void)state;
    spb_buf_init(&b, 10);
    assert_int_equal(spb_buf_puts(&b, "0123456789"), 0); /* exactly the limit */
    assert_int_equal(spb_buf_puts(&b, "x"), SPB_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    assert_true(b.cap <= 11); /* never allocates past the limit */
    spb_buf_free(&b);
}

static void test_failure_sticks(void **state)
{
    spb_buf b;
    (void)state;
    spb_buf_init(&b, 8);
    assert_int_equal(spb_buf_puts(&b, "abc"), 0);
    assert_int_equal(spb_buf_puts(&b, "defghijkl"), SPB_ETOOBIG); /* whole, not cut */
    assert_string_equal(b.data, "abc");
    assert_int_equal(spb_buf_puts(&b, "d"), SPB_ETOOBIG); /* later appends refused too */
    assert_int_equal(b.failed, SPB_ETOOBIG);
    spb_buf_free(&b);
    assert_int_equal(b.failed, 0);
}

static void test_long_printf(void **state)
{
    spb_buf b;
    char big[2000];
    (void)state;
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    spb_buf_init(&b, 4096);
    assert_int_equal(spb_buf_printf(&b, "<%s>", big), 0);
    assert_int_equal(b.len, 2001);
    assert_int_equal(spb_buf_printf(&b, "%s%s", big, big), SPB_ETOOBIG);
    assert_int_equal(b.len, 2001);
    spb_buf_free(&b);
}

static void test_empty_take(void **state)
{
    spb_buf b;
    size_t len = 99;
    char *out;
    (void)state;
    spb_buf_init(&b, 0);
    assert_int_equal(spb_buf_append(&b, "", 0), 0);
    assert_int_equal(spb_buf_puts(&b, "a"), SPB_ETOOBIG);
    out = spb_buf_take(&b, &len);
    assert_non_null(out);
    assert_string_equal(out, "");
    assert_int_equal(len, 0);
    free(out);
    spb_buf_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appends_and_takes), cmocka_unit_test(test_limit_is_exact),
        cmocka_unit_test(test_failure_sticks),    cmocka_unit_test(test_long_printf),
        cmocka_unit_test(test_empty_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
