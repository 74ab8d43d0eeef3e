/*
 * Unit tests for fhir/ident.c: NHS number (modulus 11), ODS codes and UUIDs.
 *
 * The NHS number is the patient's identity in every Bundle, so both sides of the check
 * matter: a good number in any accepted layout must come out as the bare ten digits, and a
 * bad one must be refused with SPB_EINVALID and a message that never echoes the number
 * (messages reach logs and OperationOutcomes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "spbridge/error.h"
#include "spbridge/ident.h"

/* 1 if any run of four consecutive digits of `number` appears in `text`. */
static int leaks_digits(const char *text, const char *number)
{
    char digits[32];
    size_t n = 0;

    for (const char *p = number; *p && n + 1 < sizeof(digits); p++) {
        if (isdigit((unsigned char)*p))
            digits[n++] = *p;
    }
    digits[n] = '\0';
    for (size_t i = 0; i + 4 <= n; i++) {
        char window[5];
        memcpy(window, digits + i, 4);
        window[4] = '\0';
        if (strstr(text, window) != NULL)
            return 1;
    }
    return 0;
}

/* Checks one number that must be accepted and normalised to `bare`. */
static void expect_nhs_ok(const char *in, const char *bare)
{
    char out[SPB_NHS_NUMBER_LEN + 1];
    spb_err err;

    spb_err_clear(&err);
    memset(out, 'x', sizeof(out));
    assert_int_equal(spb_nhs_number_check(out, in, &err), 0);
    assert_string_equal(out, bare);
    assert_int_equal(err.code, 0);
}

/* Checks one number that must be refused as a bad value, without leaking its digits. */
static void expect_nhs_bad(const char *in)
{
    char out[SPB_NHS_NUMBER_LEN + 1] = "";
    spb_err err;

    spb_err_clear(&err);
    assert_int_equal(spb_nhs_number_check(out, in, &err), SPB_EINVALID);
    assert_int_equal(err.code, SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_VALUE);
    assert_true(err.message[0] != '\0');
    if (leaks_digits(err.message, in) || leaks_digits(err.hint, in))
        fail_msg("error text for an NHS number leaks its digits: '%s' / '%s'", err.message,
                 err.hint);
}

static void test_nhs_valid_bare(void **state)
{
    (void)state;
    expect_nhs_ok("9434765919", "9434765919");
    /* check digit 11 -> 0 is the other special case of the algorithm */
    expect_nhs_ok("9990000018", "9990000018");
}

static void test_nhs_valid_grouped(void **state)
{
    (void)state;
    /* the printed 3-3-4 layout, with spaces or with hyphens */
    expect_nhs_ok("943 476 5919", "9434765919");
    expect_nhs_ok("943-476-5919", "9434765919");
}

static void test_nhs_wrong_check_digit(void **state)
{
    (void)state;
    expect_nhs_bad("9434765918");
    expect_nhs_bad("943 476 5918");
}

static void test_nhs_check_digit_ten(void **state)
{
    (void)state;
    /* weights 10..2 give 210, 210 mod 11 = 1, 11 - 1 = 10: no number can have that check
     * digit, so the number is invalid whatever its tenth digit is */
    expect_nhs_bad("1234567890");
    expect_nhs_bad("1234567891");
}

static void test_nhs_wrong_length(void **state)
{
    (void)state;
    expect_nhs_bad("943476591");   /* nine digits */
    expect_nhs_bad("94347659190"); /* eleven digits */
    expect_nhs_bad("943 476 591"); /* grouped but short */
    expect_nhs_bad(" 9434765919"); /* surrounding blanks are not trimmed */
    expect_nhs_bad("9434765919 ");
}

static void test_nhs_letters_and_separators(void **state)
{
    (void)state;
    expect_nhs_bad("94347659A9");
    expect_nhs_bad("943a476a5919");
    /* mixed separators are not the printed form */
    expect_nhs_bad("943 476-5919");
    expect_nhs_bad("943-476 5919");
    /* separators in the wrong places */
    expect_nhs_bad("9434 765 919");
    expect_nhs_bad("943  4765919");
}

static void test_nhs_missing(void **state)
{
    char out[SPB_NHS_NUMBER_LEN + 1];
    spb_err err;

    (void)state;
    spb_err_clear(&err);
    assert_int_equal(spb_nhs_number_check(out, NULL, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);

    spb_err_clear(&err);
    assert_int_equal(spb_nhs_number_check(out, "", &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);

    /* a NULL error struct is allowed: the result code alone still says no */
    assert_int_equal(spb_nhs_number_check(out, "9434765918", NULL), SPB_EINVALID);
}

static void test_ods(void **state)
{
    char out[16];
    spb_err err;

    (void)state;
    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "b83002", &err), 0);
    assert_string_equal(out, "B83002"); /* upper-cased */

    /* bounds: 3 and 12 characters are the shortest and longest accepted */
    assert_int_equal(spb_ods_check(out, sizeof(out), "a1b", &err), 0);
    assert_string_equal(out, "A1B");
    assert_int_equal(spb_ods_check(out, sizeof(out), "ABCDEFGHIJ12", &err), 0);
    assert_string_equal(out, "ABCDEFGHIJ12");

    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "AB", &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_VALUE);
    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "ABCDEFGHIJ123", &err), SPB_EINVALID);

    /* punctuation and blanks are not part of an ODS code */
    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "B83-002", &err), SPB_EINVALID);
    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "B83 002", &err), SPB_EINVALID);
    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "B83.002", &err), SPB_EINVALID);

    /* a code that does not fit the caller's buffer is refused, not truncated */
    {
        char small[5];
        spb_err_clear(&err);
        assert_int_equal(spb_ods_check(small, sizeof(small), "B83002", &err), SPB_EINVALID);
    }

    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), NULL, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);
    spb_err_clear(&err);
    assert_int_equal(spb_ods_check(out, sizeof(out), "", &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);
}

static void test_uuid_is_valid(void **state)
{
    (void)state;
    assert_true(spb_uuid_is_valid("5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10"));
    assert_true(spb_uuid_is_valid("263B2A9F-0B1D-4697-943A-328F70E068DE")); /* GP2GP style */
    assert_false(spb_uuid_is_valid(NULL));
    assert_false(spb_uuid_is_valid(""));
    assert_false(spb_uuid_is_valid("5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b1"));   /* short */
    assert_false(spb_uuid_is_valid("5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b100")); /* long */
    assert_false(spb_uuid_is_valid("5f0c2b1e7a43-4d0b-9a36-2f1d8c7e9b10-"));  /* hyphens moved */
    assert_false(spb_uuid_is_valid("5f0c2b1g-7a43-4d0b-9a36-2f1d8c7e9b10"));  /* not hex */
    assert_false(spb_uuid_is_valid("{5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b1}"));
}

static void test_uuid_lower(void **state)
{
    char out[SPB_UUID_LEN + 1];

    (void)state;
    spb_uuid_lower(out, "263B2A9F-0B1D-4697-943A-328F70E068DE");
    assert_string_equal(out, "263b2a9f-0b1d-4697-943a-328f70e068de");
    spb_uuid_lower(out, "5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10");
    assert_string_equal(out, "5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10");
}

static void test_uuid_v5(void **state)
{
    char a[SPB_UUID_LEN + 1], b[SPB_UUID_LEN + 1], c[SPB_UUID_LEN + 1];

    (void)state;
    assert_int_equal(spb_uuid_v5(a, "referral|B83002|42"), 0);
    assert_int_equal(spb_uuid_v5(b, "referral|B83002|42"), 0);
    assert_int_equal(spb_uuid_v5(c, "referral|B83002|43"), 0);
    /* deterministic: fullUrls must not change between runs */
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_true(spb_uuid_is_valid(a));
    /* RFC 4122: version 5 nibble, and the variant bits 10xx */
    assert_int_equal(a[14], '5');
    assert_non_null(strchr("89ab", a[19]));
    assert_int_equal(c[14], '5');
    assert_non_null(strchr("89ab", c[19]));
    /* lower case, as FHIR urn:uuid values are compared as strings */
    for (int i = 0; i < SPB_UUID_LEN; i++)
        assert_false(isupper((unsigned char)a[i]));
    /* Reference values from Python's uuid.uuid5 with spbridge's namespace
     * 6b1e3a52-8c4d-4f0a-9d27-513ea0447c19: the implementation is standard v5. */
    assert_string_equal(a, "7574c0fc-f6ed-57da-9a44-aced9560434d");
    assert_int_equal(spb_uuid_v5(a, ""), 0);
    assert_string_equal(a, "40d8d5e6-5968-5549-8b7c-ea85bfce1a68");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nhs_valid_bare),
        cmocka_unit_test(test_nhs_valid_grouped),
        cmocka_unit_test(test_nhs_wrong_check_digit),
        cmocka_unit_test(test_nhs_check_digit_ten),
        cmocka_unit_test(test_nhs_wrong_length),
        cmocka_unit_test(test_nhs_letters_and_separators),
        cmocka_unit_test(test_nhs_missing),
        cmocka_unit_test(test_ods),
        cmocka_unit_test(test_uuid_is_valid),
        cmocka_unit_test(test_uuid_lower),
        cmocka_unit_test(test_uuid_v5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
