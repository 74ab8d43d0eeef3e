/* Bounded diagnostic list; see diag.h. */
#include "spbridge/diag.h"

#include <stdarg.h>
#include <stdio.h>

void spb_diag_add(spb_diags *d, spb_diag_severity sev, const char *file, int line, const char *fmt,
                  ...)
{
    va_list ap;
    spb_diag_item *it;

    if (d == NULL)
        return;
    if (sev == SPB_DIAG_ERROR)
        d->errors++;
    else
        d->warnings++;
    if (d->n >= SPB_DIAG_MAX)
        return;
    it = &d->items[d->n++];
    it->severity = sev;
    snprintf(it->file, sizeof(it->file), "%s", file ? file : "");
    it->line = line;
    va_start(ap, fmt);
    vsnprintf(it->message, sizeof(it->message), fmt, ap);
    va_end(ap);
}
