/*
 * NHS identifiers and UUIDs: NHS number (modulus 11), ODS organisation codes, and
 * deterministic name-based UUIDs so the same input always yields the same fullUrls.
 */
#ifndef SPB_IDENT_H
#define SPB_IDENT_H

#include "spbridge/error.h"

#define SPB_NHS_NUMBER_LEN 10
#define SPB_UUID_LEN       36

/*
 * Checks an NHS number: ten digits, optionally grouped 3-3-4 with single spaces or
 * hyphens, whose tenth digit is the modulus 11 check digit of the first nine.
 * On success writes the bare ten digits to `out` (11 bytes). The error message never
 * contains the number itself.
 */
int spb_nhs_number_check(char out[SPB_NHS_NUMBER_LEN + 1], const char *in, spb_err *err);

/*
 * Checks an ODS organisation code (3 to 12 letters and digits, as issued by the
 * Organisation Data Service) and writes it upper-cased to `out`.
 */
int spb_ods_check(char *out, size_t out_size, const char *in, spb_err *err);

/* Returns 1 if `s` is a UUID in 8-4-4-4-12 hex form (either case), else 0. */
int spb_uuid_is_valid(const char *s);

/* Writes the lower-case form of a valid UUID `in` to `out` (37 bytes). */
void spb_uuid_lower(char out[SPB_UUID_LEN + 1], const char *in);

/*
 * Name-based UUID (RFC 4122 version 5, SHA-1) of `name` in spbridge's namespace.
 * The same name always gives the same UUID; used for fullUrls and for source ids that
 * are not UUIDs themselves.
 */
int spb_uuid_v5(char out[SPB_UUID_LEN + 1], const char *name);

#endif
