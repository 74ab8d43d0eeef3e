/*
 * Unit tests for mappings/transform.c: time conversion, the UK summer-time rule and the
 * small value checks (boolean, URI, code).
 *
 * GP2GP timestamps carry no offset and mean UK civil time, so the offset spbridge writes
 * must follow BST exactly; a one-hour error would misdate every summer referral. Precision
 * must be kept too: a date-only source value is a FHIR date, never a made-up midnight.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "spbridge/error.h"
#include "spbridge/transform.h"

/* Converts `in` and checks the result. */
static void expect_time(const char *in, const char *format, spb_zone zone, int want_date,
                        const char *expected)
{
    char out[64];
    spb_err err;

    spb_err_clear(&err);
    memset(out, 0, sizeof(out));
    if (spb_time_convert(out, sizeof(out), in, format, zone, want_date, &err) != 0)
        fail_msg("'%s' (%s) was refused: %s", in, format, err.message);
    assert_string_equal(out, expected);
}

/* Checks that `in` is refused as an invalid value. */
static void expect_time_bad(const char *in, const char *format, int want_date)
{
    char out[64];
    spb_err err;

    spb_err_clear(&err);
    assert_int_equal(spb_time_convert(out, sizeof(out), in, format, SPB_ZONE_UK, want_date, &err),
                     SPB_EINVALID);
    assert_int_equal(err.code, SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_VALUE);
}

static void test_hl7_winter_and_summer(void **state)
{
    (void)state;
    /* November is GMT */
    expect_time("20201117133032", "hl7", SPB_ZONE_UK, 0, "2020-11-17T13:30:32+00:00");
    /* July is BST */
    expect_time("20200715093000", "hl7", SPB_ZONE_UK, 0, "2020-07-15T09:30:00+01:00");
    /* with zone utc the same summer time is read as UTC */
    expect_time("20200715093000", "hl7", SPB_ZONE_UTC, 0, "2020-07-15T09:30:00+00:00");
}

static void test_hl7_precision_kept(void **state)
{
    (void)state;
    /* a date-only value stays a date even for a dateTime field */
    expect_time("20100114", "hl7", SPB_ZONE_UK, 0, "2010-01-14");
    expect_time("201001", "hl7", SPB_ZONE_UK, 0, "2010-01");
    expect_time("2010", "hl7", SPB_ZONE_UK, 0, "2010");
    /* a date field drops the time of a full timestamp */
    expect_time("20201117133032", "hl7", SPB_ZONE_UK, 1, "2020-11-17");
    /* minutes only: FHIR needs seconds once a time is given */
    expect_time("202312061049", "hl7", SPB_ZONE_UK, 0, "2023-12-06T10:49:00+00:00");
    /* hour only */
    expect_time("2023120610", "hl7", SPB_ZONE_UK, 0, "2023-12-06T10:00:00+00:00");
    /* fractional seconds are carried over */
    expect_time("20201117133032.250", "hl7", SPB_ZONE_UK, 0, "2020-11-17T13:30:32.250+00:00");
}

static void test_hl7_explicit_offset(void **state)
{
    (void)state;
    /* an explicit offset wins over the zone rule, in summer and in winter */
    expect_time("20201117133032+0200", "hl7", SPB_ZONE_UK, 0, "2020-11-17T13:30:32+02:00");
    expect_time("20200715093000+0000", "hl7", SPB_ZONE_UK, 0, "2020-07-15T09:30:00+00:00");
    expect_time("20200715093000-0530", "hl7", SPB_ZONE_UK, 0, "2020-07-15T09:30:00-05:30");
}

static void test_hl7_invalid(void **state)
{
    (void)state;
    expect_time_bad("20230230", "hl7", 0);     /* 30 February */
    expect_time_bad("20230229", "hl7", 0);     /* 2023 is not a leap year */
    expect_time_bad("20231301", "hl7", 0);     /* month 13 */
    expect_time_bad("20230001", "hl7", 0);     /* month 0 */
    expect_time_bad("20231200", "hl7", 0);     /* day 0 */
    expect_time_bad("202311172500", "hl7", 0); /* 25:00 */
    expect_time_bad("202311171260", "hl7", 0); /* minute 60 */
    expect_time_bad("2020111", "hl7", 0);      /* seven digits: no such precision */
    expect_time_bad("garbage", "hl7", 0);
    expect_time_bad("", "hl7", 0);
    expect_time_bad("2020-11-17", "hl7", 0);    /* ISO is not HL7 TS */
    expect_time_bad("20201117+0200", "hl7", 0); /* an offset needs a time */
    expect_time_bad("20201117133032+02", "hl7", 0);
    expect_time_bad("20201117133032+1500", "hl7", 0); /* beyond +14:00 */
    expect_time_bad("20201117.5", "hl7", 0);          /* fraction without seconds */
    /* a leap day in a leap year is fine */
    expect_time("20240229", "hl7", SPB_ZONE_UK, 0, "2024-02-29");
}

static void test_uk_offset_bst_boundaries(void **state)
{
    (void)state;
    /* 2026: summer time starts on the last Sunday of March, the 29th ... */
    assert_int_equal(spb_uk_offset_minutes(2026, 3, 28, 12, 0), 0);
    assert_int_equal(spb_uk_offset_minutes(2026, 3, 29, 0, 30), 0);
    assert_int_equal(spb_uk_offset_minutes(2026, 3, 29, 3, 0), 60);
    assert_int_equal(spb_uk_offset_minutes(2026, 3, 30, 0, 0), 60);
    /* ... and ends on the last Sunday of October, the 25th */
    assert_int_equal(spb_uk_offset_minutes(2026, 10, 24, 23, 59), 60);
    assert_int_equal(spb_uk_offset_minutes(2026, 10, 25, 0, 30), 60);
    assert_int_equal(spb_uk_offset_minutes(2026, 10, 25, 3, 0), 0);
    assert_int_equal(spb_uk_offset_minutes(2026, 10, 31, 12, 0), 0);
    /* the middle of each season */
    assert_int_equal(spb_uk_offset_minutes(2026, 1, 15, 12, 0), 0);
    assert_int_equal(spb_uk_offset_minutes(2026, 7, 15, 12, 0), 60);
    assert_int_equal(spb_uk_offset_minutes(2026, 12, 31, 23, 59), 0);
    /* another year, where the last Sunday of March is the 31st (2024) */
    assert_int_equal(spb_uk_offset_minutes(2024, 3, 30, 12, 0), 0);
    assert_int_equal(spb_uk_offset_minutes(2024, 3, 31, 3, 0), 60);
    /* the conversion uses the same rule */
    expect_time("20260329003000", "hl7", SPB_ZONE_UK, 0, "2026-03-29T00:30:00+00:00");
    expect_time("20260329030000", "hl7", SPB_ZONE_UK, 0, "2026-03-29T03:00:00+01:00");
    expect_time("20261025003000", "hl7", SPB_ZONE_UK, 0, "2026-10-25T00:30:00+01:00");
    expect_time("20261025030000", "hl7", SPB_ZONE_UK, 0, "2026-10-25T03:00:00+00:00");
}

static void test_iso(void **state)
{
    (void)state;
    /* already FHIR: passed through unchanged */
    expect_time("2026-11-20T10:15:00+00:00", "iso", SPB_ZONE_UK, 0, "2026-11-20T10:15:00+00:00");
    expect_time("2026-11-20", "iso", SPB_ZONE_UK, 1, "2026-11-20");
    expect_time("2026-11-20T10:15:00Z", "iso", SPB_ZONE_UK, 0, "2026-11-20T10:15:00+00:00");
    /* a local ISO time without offset is given the UK offset when converted */
    expect_time("2026-07-01T10:15:00", "iso", SPB_ZONE_UK, 0, "2026-07-01T10:15:00+01:00");
    expect_time_bad("2026-11-31", "iso", 1);
    expect_time_bad("2026-11-20T10:15", "iso", 0); /* FHIR needs seconds */
    expect_time_bad("20261120", "iso", 1);
}

static void test_is_fhir_datetime(void **state)
{
    (void)state;
    assert_true(spb_is_fhir_datetime("2026-11-20T10:15:00+00:00", 0));
    assert_true(spb_is_fhir_datetime("2026-11-20T10:15:00.123Z", 0));
    assert_true(spb_is_fhir_datetime("2026-11-20", 0));
    assert_true(spb_is_fhir_datetime("2026-11", 0));
    assert_true(spb_is_fhir_datetime("2026", 0));
    /* FHIR dateTime with a time must carry an offset */
    assert_false(spb_is_fhir_datetime("2026-11-20T10:15:00", 0));
    assert_false(spb_is_fhir_datetime("2026-11-20T10:15:00+0000", 0));
    assert_false(spb_is_fhir_datetime("2026-02-30", 0));
    assert_false(spb_is_fhir_datetime("", 0));
    /* a FHIR date has no time */
    assert_true(spb_is_fhir_datetime("1951-03-14", 1));
    assert_false(spb_is_fhir_datetime("2026-11-20T10:15:00+00:00", 1));
}

static void test_pattern(void **state)
{
    (void)state;
    expect_time("14/03/1951", "pattern:DD/MM/YYYY", SPB_ZONE_UK, 1, "1951-03-14");
    expect_time("14/03/2026 09:05", "pattern:DD/MM/YYYY hh:mm", SPB_ZONE_UK, 0,
                "2026-03-14T09:05:00+00:00");
    expect_time("14/07/2026 09:05", "pattern:DD/MM/YYYY hh:mm", SPB_ZONE_UK, 0,
                "2026-07-14T09:05:00+01:00");
    expect_time_bad("31/02/1951", "pattern:DD/MM/YYYY", 1);
    expect_time_bad("14-03-1951", "pattern:DD/MM/YYYY", 1);  /* literal must match */
    expect_time_bad("14/03/19511", "pattern:DD/MM/YYYY", 1); /* trailing text */
    expect_time_bad("4/03/1951", "pattern:DD/MM/YYYY", 1);
}

static void test_unknown_format(void **state)
{
    char out[64];
    spb_err err;

    (void)state;
    /* a wrong format word is a configuration problem, not the sender's */
    spb_err_clear(&err);
    assert_int_equal(
        spb_time_convert(out, sizeof(out), "20201117", "yyyymmdd", SPB_ZONE_UK, 0, &err),
        SPB_ECONFIG);
}

static void test_parse_boolean(void **state)
{
    (void)state;
    assert_int_equal(spb_parse_boolean("true"), 1);
    assert_int_equal(spb_parse_boolean("TRUE"), 1);
    assert_int_equal(spb_parse_boolean("Yes"), 1);
    assert_int_equal(spb_parse_boolean("y"), 1);
    assert_int_equal(spb_parse_boolean("1"), 1);
    assert_int_equal(spb_parse_boolean("false"), 0);
    assert_int_equal(spb_parse_boolean("No"), 0);
    assert_int_equal(spb_parse_boolean("N"), 0);
    assert_int_equal(spb_parse_boolean("0"), 0);
    assert_int_equal(spb_parse_boolean(""), -1);
    assert_int_equal(spb_parse_boolean("maybe"), -1);
    assert_int_equal(spb_parse_boolean("yes "), -1);
    assert_int_equal(spb_parse_boolean("2"), -1);
}

static void test_is_absolute_uri(void **state)
{
    (void)state;
    assert_true(spb_is_absolute_uri("http://snomed.info/sct"));
    assert_true(spb_is_absolute_uri("urn:oid:2.16.840.1.113883.2.1.3.2.4.15"));
    assert_true(spb_is_absolute_uri("urn:uuid:5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10"));
    assert_false(spb_is_absolute_uri(""));
    assert_false(spb_is_absolute_uri("snomed"));
    assert_false(spb_is_absolute_uri("2.16.840.1.113883"));   /* an OID is not a URI */
    assert_false(spb_is_absolute_uri("http:"));               /* nothing after the scheme */
    assert_false(spb_is_absolute_uri("1http://example.org")); /* scheme starts with a letter */
    assert_false(spb_is_absolute_uri("http://example.org/a b"));
    assert_false(spb_is_absolute_uri("/relative/path"));
}

static void test_is_fhir_code(void **state)
{
    (void)state;
    assert_true(spb_is_fhir_code("referral"));
    assert_true(spb_is_fhir_code("8T09."));
    assert_true(spb_is_fhir_code("a b")); /* single inner spaces are allowed */
    assert_false(spb_is_fhir_code(""));
    assert_false(spb_is_fhir_code(" a"));
    assert_false(spb_is_fhir_code("a "));
    assert_false(spb_is_fhir_code("a  b"));
    assert_false(spb_is_fhir_code("a\nb"));
}

static void expect_name(const char *in, const char *prefix, const char *given, const char *family)
{
    spb_name_parts n;
    spb_name_split(in, &n);
    assert_string_equal(n.prefix, prefix);
    assert_string_equal(n.given, given);
    assert_string_equal(n.family, family);
}

/* Whole names as GP systems write them in one field, split into FHIR HumanName parts. */
static void test_name_split(void **state)
{
    (void)state;
    expect_name("Dr Priya Shah", "Dr", "Priya", "Shah");
    expect_name("  Amara   Grace  Mensah ", "", "Amara Grace", "Mensah");
    expect_name("SHAH, Priya", "", "Priya", "SHAH");
    expect_name("OKAFOR, Chidi James (Dr)", "Dr", "Chidi James", "OKAFOR");
    expect_name("Priya Shah (Dr)", "Dr", "Priya", "Shah");
    expect_name("Prof. Dr Anne Lee", "Prof. Dr", "Anne", "Lee");
    expect_name("Shah", "", "", "Shah");
    expect_name("Dr", "", "", "Dr");              /* a lone word is a family name, even a title */
    expect_name("John Lord", "", "John", "Lord"); /* titles count only in front */
    expect_name("", "", "", "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hl7_winter_and_summer),
        cmocka_unit_test(test_hl7_precision_kept),
        cmocka_unit_test(test_hl7_explicit_offset),
        cmocka_unit_test(test_hl7_invalid),
        cmocka_unit_test(test_uk_offset_bst_boundaries),
        cmocka_unit_test(test_iso),
        cmocka_unit_test(test_is_fhir_datetime),
        cmocka_unit_test(test_pattern),
        cmocka_unit_test(test_unknown_format),
        cmocka_unit_test(test_parse_boolean),
        cmocka_unit_test(test_is_absolute_uri),
        cmocka_unit_test(test_is_fhir_code),
        cmocka_unit_test(test_name_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
