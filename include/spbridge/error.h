/*
 * spbridge error reporting.
 *
 * Every fallible function returns 0 on success or a negative spb_code, and fills a
 * caller-owned spb_err once, where the failure happens. The struct is fixed-size so the
 * error path never allocates; it carries enough to tell an operator what is wrong, where
 * (file, line, column, XPath or FHIRPath) and how to fix it. Boundaries (CLI, HTTP intake)
 * turn it into a log line and a FHIR OperationOutcome exactly once.
 */
#ifndef SPB_ERROR_H
#define SPB_ERROR_H

#include <stddef.h>

/* The failures callers act on; anything else is SPB_ERR. */
typedef enum {
    SPB_OK = 0,
    SPB_ERR = -1,       /* internal or unclassified failure */
    SPB_ENOTFOUND = -2, /* a file, record or resource does not exist */
    SPB_EINVALID = -3,  /* the input is wrong: the sender must fix it */
    SPB_EAUTH = -4,     /* identity or permission refused */
    SPB_ETIMEOUT = -5,  /* a peer did not answer in time */
    SPB_ERETRY = -6,    /* transient: try again later */
    SPB_EUNMAPPED = -7, /* a code has no mapping: extend a ConceptMap, then replay */
    SPB_ETOOBIG = -8,   /* input over a configured bound */
    SPB_ECONFIG = -9,   /* configuration or mapping files are wrong */
    SPB_ENOMEM = -10,
} spb_code;

/* What kind of input problem, for OperationOutcome.issue.code (FHIR issue-type). */
typedef enum {
    SPB_ISSUE_PROCESSING = 0, /* "processing" */
    SPB_ISSUE_STRUCTURE,      /* "structure": not well-formed XML or JSON */
    SPB_ISSUE_REQUIRED,       /* "required": a mandatory element is missing */
    SPB_ISSUE_VALUE,          /* "value": an element has a bad value */
    SPB_ISSUE_INVARIANT,      /* "invariant": a rule across elements fails */
    SPB_ISSUE_CODE_INVALID,   /* "code-invalid": a code is unknown or unmapped */
    SPB_ISSUE_NOT_SUPPORTED,  /* "not-supported": dialect or content not supported */
    SPB_ISSUE_TOO_LONG,       /* "too-long": over a size or depth bound */
    SPB_ISSUE_SECURITY,       /* "security": XXE, entity expansion, forbidden */
    SPB_ISSUE_NOT_FOUND,      /* "not-found" */
    SPB_ISSUE_EXCEPTION,      /* "exception": internal failure */
} spb_issue;

#define SPB_ERR_MSG_MAX  512
#define SPB_ERR_HINT_MAX 384
#define SPB_ERR_FILE_MAX 256
#define SPB_ERR_PATH_MAX 256

typedef struct spb_err {
    int code;                      /* spb_code */
    spb_issue issue;               /* FHIR issue type for OperationOutcome */
    char message[SPB_ERR_MSG_MAX]; /* what is wrong, no patient-identifying text */
    char hint[SPB_ERR_HINT_MAX];   /* how to fix it; may be empty */
    char file[SPB_ERR_FILE_MAX];   /* the input or mapping file, if any */
    char path[SPB_ERR_PATH_MAX];   /* XPath, FHIRPath or config key, if any */
    int line;                      /* 1-based; 0 when unknown */
    int column;                    /* 1-based; 0 when unknown */
} spb_err;

/* Clears an error struct. NULL-safe. */
void spb_err_clear(spb_err *err);

/*
 * Records a failure and returns `code`, so callers can write
 * `return spb_err_set(err, SPB_EINVALID, SPB_ISSUE_VALUE, "...", ...);`.
 * The first failure wins: a second call on an error that is already set is ignored,
 * so the detail from the deepest frame survives. NULL-safe.
 */
int spb_err_set(spb_err *err, int code, spb_issue issue, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Adds or replaces the fix-it hint. */
void spb_err_hint(spb_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sets where the error applies; NULL or 0 leaves a field unchanged. */
void spb_err_where(spb_err *err, const char *file, int line, int column, const char *path);

/* FHIR issue-type code for an spb_issue ("structure", "code-invalid", ...). */
const char *spb_issue_name(spb_issue issue);

/* Short name of an spb_code ("invalid", "unmapped", ...) for logs. */
const char *spb_code_name(int code);

/* Process exit code for a failure class (documented in docs/cli.md). */
int spb_exit_code(int code);

/* Makes `s` valid UTF-8 in place: a sequence cut at the very end (by a bounded buffer) is
 * dropped, any other invalid byte becomes '?'. Every message built from input goes through
 * it, because JSON answers and log lines must be valid UTF-8 (jansson refuses anything else,
 * and an OperationOutcome would lose its text). NULL-safe. */
void spb_utf8_sanitize(char *s);

#endif
