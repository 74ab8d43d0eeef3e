/*
 * Value transforms named in dialect profiles: date and time formats, case, digits,
 * booleans and UUIDs. Each is a pure function from one string to another, so they are
 * easy to test and the same input always gives the same output.
 */
#ifndef SPB_TRANSFORM_H
#define SPB_TRANSFORM_H

#include <stddef.h>

#include "spbridge/error.h"

/* How a source time without an explicit offset is read. */
typedef enum {
    SPB_ZONE_UK = 0, /* Europe/London civil time: GMT, or BST in summer */
    SPB_ZONE_UTC,
} spb_zone;

/*
 * Converts a time in `format` to a FHIR dateTime (want_date 0) or date (want_date 1).
 * Formats: "hl7" (HL7 v3 TS: YYYY[MM[DD[HH[MM[SS[.F]]]]]][+-ZZZZ]), "iso" (already
 * FHIR/ISO 8601, checked), or "pattern:..." with tokens YYYY MM DD hh mm ss and literal
 * characters (e.g. "pattern:DD/MM/YYYY hh:mm"). Precision is kept: an HL7 date-only value
 * becomes a FHIR date even for a dateTime field. Returns 0 or SPB_EINVALID.
 */
int spb_time_convert(char *out, size_t out_size, const char *in, const char *format, spb_zone zone,
                     int want_date, spb_err *err);

/* The UTC offset in minutes of UK civil time at the given local date and time. */
int spb_uk_offset_minutes(int year, int month, int day, int hour, int minute);

/* 1 if `s` is a valid FHIR dateTime (or date when date_only), else 0. */
int spb_is_fhir_datetime(const char *s, int date_only);

/* Parses a boolean word (true/false, yes/no, y/n, 1/0, case-insensitive). -1 if none. */
int spb_parse_boolean(const char *s);

/* 1 if `s` is an absolute URI (scheme ":" ...), else 0. */
int spb_is_absolute_uri(const char *s);

/* 1 if `s` is a FHIR code (non-empty, no leading/trailing or double whitespace). */
int spb_is_fhir_code(const char *s);

/* The parts of a personal name written as one string. Each part is space-separated words
 * ("" when absent); given names are kept in order, so "Amara Grace" is two of them. */
typedef struct spb_name_parts {
    char prefix[64];
    char given[256];
    char family[128];
} spb_name_parts;

/*
 * Splits a whole name as GP systems write one: "Dr Priya Shah" (titles first, family name
 * last), "SHAH, Priya" or "SHAH, Priya (Dr)" (family name before a comma, a title in
 * brackets anywhere). A single word is a family name. Titles are the common English ones
 * (Dr, Mr, Mrs, Ms, Miss, Mx, Prof, Rev, Sir, Dame, ...), with or without a full stop.
 * Parts longer than their buffers are cut at a word boundary.
 */
void spb_name_split(const char *in, spb_name_parts *out);

#endif
