/*
 * Activity reports for NHS regions and practices: per practice, region and ISO week, what
 * was sent, what became of it and how long it took, from the store's own tables (events,
 * Task versions seen at the service, delivery attempts). The same figures feed
 * `spbridge report`, GET /audit/report and the /dashboard page; docs/audit.md defines each.
 */
#ifndef SPB_REPORT_H
#define SPB_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "spbridge/audit.h"
#include "spbridge/error.h"
#include "spbridge/store.h"

typedef struct spb_report_filter {
    const char *region, *practice; /* NULL: any */
    int64_t since_ms, until_ms;    /* 0: open */
} spb_report_filter;

/*
 * Builds the report for what `scope` may see:
 *   {"generatedAt", "weeks": "ISO 8601, UTC", "rows": [one per practice and week],
 *    "byWeek": [all visible practices, per week], "totals": {...}}
 * Each row: practice, region, week, referralsSent, accepted, rejected, declined, completed,
 * signposting, timeToAcceptance and timeToCompletion ({n, medianSeconds, p90Seconds}),
 * deliveryFailures, retries, deadLetters.
 */
int spb_report_build(spb_store *s, const spb_audit_scope *scope, const spb_report_filter *f,
                     json_t **out, spb_err *err);

/* The report's rows as CSV (a header line, then one line per practice and week). NULL when
 * out of memory. The caller frees. */
char *spb_report_csv(const json_t *doc);

/* "2026-W47": the ISO 8601 week (UTC) of a time in milliseconds. */
void spb_report_iso_week(int64_t ms, char out[16]);

/* The median (mean of the two middle values for an even count) and the 90th percentile
 * (nearest rank) of `v` (sorted in place). 0 when n is 0. */
double spb_report_median(int64_t *v, size_t n);
int64_t spb_report_p90(int64_t *v, size_t n);

#endif
