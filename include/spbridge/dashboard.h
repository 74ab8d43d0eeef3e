/*
 * The /dashboard page: the activity report (report.h) and the newest audit records the
 * viewer may see, as server-rendered HTML with tables and inline SVG charts, styled by the
 * NHS.UK frontend stylesheet that is bundled into the binary at build time (served at
 * /dashboard/nhsuk.css). The page loads nothing else: no scripts, fonts or images from
 * anywhere. Every value is HTML-escaped.
 */
#ifndef SPB_DASHBOARD_H
#define SPB_DASHBOARD_H

#include <jansson.h>
#include <stddef.h>

#include "spbridge/audit.h"

/* Largest page rendered; past it the page is cut short with a notice. */
#define SPB_DASHBOARD_MAX_BYTES (4u * 1024u * 1024u)

typedef struct spb_dashboard_view {
    const char *viewer;           /* the identity's name */
    const spb_audit_scope *scope; /* what it may see */
    const json_t *report;         /* from spb_report_build */
    const json_t *recent;         /* newest audit records (spb_audit_query rows), newest first */
    const char *chain;            /* one line on the audit chain (last signed checkpoint) */
} spb_dashboard_view;

/* The page as a NUL-terminated string the caller frees; NULL when out of memory. */
char *spb_dashboard_html(const spb_dashboard_view *v);

/* The bundled stylesheet and what it was built from ("nhsuk-frontend 10.6.1"). */
const unsigned char *spb_dashboard_css(size_t *len);
const char *spb_dashboard_css_version(void);

#endif
