/*
 * JSON that keeps numbers as written. jansson stores numbers as doubles, so FHIR decimals
 * lose their text (7.10 becomes 7.1, 7.1 becomes 7.0999999999999996); FHIR requires the
 * precision a sender wrote to be kept. spb_json_loads_exact parses with jansson but turns
 * every number into a string carrying its original text behind a marker, which
 * spb_json_number_text recognises. Use it for JSON read from FHIR servers whose numbers
 * spbridge passes on (Observation values written back to the GP record).
 */
#ifndef SPB_JSON_EXACT_H
#define SPB_JSON_EXACT_H

#include <jansson.h>

/* Parses `text`; numbers become marked strings. NULL on error (see `error`). */
json_t *spb_json_loads_exact(const char *text, size_t max_len, json_error_t *error);

/* The original text of a number read by spb_json_loads_exact, or NULL if `v` is not one. */
const char *spb_json_number_text(const json_t *v);

/* A string value (NULL for numbers and non-strings): the marker never leaks as a string. */
const char *spb_json_string(const json_t *v);

#endif
