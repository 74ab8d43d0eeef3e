/*
 * A bounded list of diagnostics (errors and warnings with file and line), for checks
 * that should report every problem at once rather than stop at the first
 * (`spbridge mappings check`, configuration checks).
 */
#ifndef SPB_DIAG_H
#define SPB_DIAG_H

#include <stddef.h>

#define SPB_DIAG_MAX 200

typedef enum { SPB_DIAG_ERROR = 0, SPB_DIAG_WARNING } spb_diag_severity;

typedef struct spb_diag_item {
    spb_diag_severity severity;
    char file[256];
    int line;
    char message[480];
} spb_diag_item;

typedef struct spb_diags {
    spb_diag_item items[SPB_DIAG_MAX];
    size_t n;
    size_t errors;   /* counted even past SPB_DIAG_MAX */
    size_t warnings; /* counted even past SPB_DIAG_MAX */
} spb_diags;

/* Records one diagnostic. NULL-safe: with no list, nothing is recorded. */
void spb_diag_add(spb_diags *d, spb_diag_severity sev, const char *file, int line, const char *fmt,
                  ...) __attribute__((format(printf, 5, 6)));

#endif
