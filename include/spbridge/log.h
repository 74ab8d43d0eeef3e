/*
 * Structured logging: one logfmt line per event on stderr
 * (`ts=... level=info event=translated file=... id=...`).
 *
 * Log lines carry ids, codes and reasons, never names, addresses or clinical free text:
 * callers pass only such values, and spb_log escapes quotes and control characters so a
 * hostile value cannot forge a second line.
 */
#ifndef SPB_LOG_H
#define SPB_LOG_H

#include "spbridge/error.h"

typedef enum { SPB_LOG_DEBUG = 0, SPB_LOG_INFO, SPB_LOG_WARN, SPB_LOG_ERROR } spb_log_level;

/* Sets the minimum level written (default info). */
void spb_log_set_level(spb_log_level level);

/* Parses "debug", "info", "warn", "error"; returns 0 or -1. */
int spb_log_parse_level(const char *name, spb_log_level *out);

/*
 * Writes one line: `ts=<UTC> level=<level> event=<event>` followed by the key/value pairs
 * given as alternating const char * arguments ending with NULL. NULL or empty values
 * are skipped.
 */
void spb_log(spb_log_level level, const char *event, ...) __attribute__((sentinel));

/* Logs an spb_err with its location, code and hint under `event`. */
void spb_log_err(const char *event, const spb_err *err);

#endif
