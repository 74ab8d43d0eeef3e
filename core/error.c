/*
 * spb_err: fixed-size, caller-owned error detail. No allocation on the error path; the
 * first failure recorded wins so the deepest, most precise message reaches the boundary.
 */
#include "spbridge/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void spb_err_clear(spb_err *err)
{
    if (err == NULL)
        return;
    memset(err, 0, sizeof(*err));
}

int spb_err_set(spb_err *err, int code, spb_issue issue, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || err->code != 0)
        return code;
    err->code = code;
    err->issue = issue;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return code;
}

void spb_err_hint(spb_err *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->hint, sizeof(err->hint), fmt, ap);
    va_end(ap);
}

void spb_err_where(spb_err *err, const char *file, int line, int column, const char *path)
{
    if (err == NULL)
        return;
    if (file != NULL)
        snprintf(err->file, sizeof(err->file), "%s", file);
    if (line > 0)
        err->line = line;
    if (column > 0)
        err->column = column;
    if (path != NULL)
        snprintf(err->path, sizeof(err->path), "%s", path);
}

const char *spb_issue_name(spb_issue issue)
{
    switch (issue) {
    case SPB_ISSUE_STRUCTURE:
        return "structure";
    case SPB_ISSUE_REQUIRED:
        return "required";
    case SPB_ISSUE_VALUE:
        return "value";
    case SPB_ISSUE_INVARIANT:
        return "invariant";
    case SPB_ISSUE_CODE_INVALID:
        return "code-invalid";
    case SPB_ISSUE_NOT_SUPPORTED:
        return "not-supported";
    case SPB_ISSUE_TOO_LONG:
        return "too-long";
    case SPB_ISSUE_SECURITY:
        return "security";
    case SPB_ISSUE_NOT_FOUND:
        return "not-found";
    case SPB_ISSUE_EXCEPTION:
        return "exception";
    case SPB_ISSUE_PROCESSING:
    default:
        return "processing";
    }
}

const char *spb_code_name(int code)
{
    switch (code) {
    case SPB_OK:
        return "ok";
    case SPB_ENOTFOUND:
        return "not_found";
    case SPB_EINVALID:
        return "invalid";
    case SPB_EAUTH:
        return "auth";
    case SPB_ETIMEOUT:
        return "timeout";
    case SPB_ERETRY:
        return "retry";
    case SPB_EUNMAPPED:
        return "unmapped";
    case SPB_ETOOBIG:
        return "too_big";
    case SPB_ECONFIG:
        return "config";
    case SPB_ENOMEM:
        return "no_memory";
    default:
        return "error";
    }
}

int spb_exit_code(int code)
{
    switch (code) {
    case SPB_OK:
        return 0;
    case SPB_EINVALID:
    case SPB_ETOOBIG:
        return 3;
    case SPB_EUNMAPPED:
        return 4;
    case SPB_ECONFIG:
        return 5;
    case SPB_ENOTFOUND:
        return 6;
    case SPB_EAUTH:
        return 7;
    case SPB_ETIMEOUT:
    case SPB_ERETRY:
        return 8;
    default:
        return 1;
    }
}
