/*
 * Unit tests for the delivery policy: backoff grows exponentially with jitter inside
 * [delay/2, delay] and stops at the cap; Retry-After is read as seconds or an HTTP date.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "spbridge/delivery.h"

static void test_backoff_grows_and_caps(void **state)
{
    (void)state;
    /* rnd = 1 gives the top of the jitter range: the undiscounted delay */
    assert_int_equal(spb_backoff_ms(1000, 60000, 1, 0.999999), 999);
    assert_int_equal(spb_backoff_ms(1000, 60000, 2, 0.0), 1000);
    assert_int_equal(spb_backoff_ms(1000, 60000, 3, 0.0), 2000);
    assert_int_equal(spb_backoff_ms(1000, 60000, 4, 0.0), 4000);
    /* capped: never above max, never below max/2 */
    assert_int_equal(spb_backoff_ms(1000, 60000, 30, 0.0), 30000);
    assert_true(spb_backoff_ms(1000, 60000, 30, 0.999) <= 60000);
    /* jitter stays within [delay/2, delay] */
    for (int i = 0; i < 100; i++) {
        long d = spb_backoff_ms(2000, 900000, 5, i / 100.0);
        assert_true(d >= 16000 && d <= 32000);
    }
}

static void test_retry_after(void **state)
{
    (void)state;
    assert_int_equal(spb_retry_after_ms(NULL, 0), -1);
    assert_int_equal(spb_retry_after_ms("", 0), -1);
    assert_int_equal(spb_retry_after_ms("2", 0), 2000);
    assert_int_equal(spb_retry_after_ms("0", 0), 0);
    assert_int_equal(spb_retry_after_ms("-5", 0), -1);
    assert_int_equal(spb_retry_after_ms("999999", 0), 86400000L); /* at most a day */
    /* HTTP date: Sun, 06 Nov 1994 08:49:37 GMT is 784111777 */
    assert_int_equal(spb_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111770), 7000);
    assert_int_equal(spb_retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111800), 0);
    assert_int_equal(spb_retry_after_ms("soon", 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_grows_and_caps),
        cmocka_unit_test(test_retry_after),
    };
    return cmocka_run_group_tests_name("delivery", tests, NULL, NULL);
}
