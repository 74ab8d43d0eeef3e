/*
 * spb_err: fixed-size, caller-owned error detail. No allocation on the error path; the
 * first failure recorded wins so the deepest, most precise message reaches the boundary.
 */
#include "spbridge/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at `s` (1..4), or 0 when it is not one: overlong
 * forms, surrogates and code points past U+10FFFF are not valid (RFC 3629). */
static size_t utf8_sequence(const unsigned char *s)
{
    size_t n;
    unsigned int cp;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff)
        return 0;
    return n;
}

void spb_utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (p != NULL && *p != '\0') {
        size_t n = utf8_sequence(p);
        if (n > 0) {
            p += n;
            continue;
        }
        /* a sequence cut by a bounded buffer at the very end is dropped; anything else
         * becomes '?', so the text stays readable and valid */
        if (*p >= 0xc2 && *p <= 0xf4) {
            size_t k = 1;
            while (k < 4 && (p[k] & 0xc0) == 0x80)
                k++;
            if (p[k] == '\0') {
                *p = '\0';
                break;
            }
        }
        *p++ = '?';
    }
}

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
    spb_utf8_sanitize(err->message); /* it may quote input; answers and logs need UTF-8 */
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
    spb_utf8_sanitize(err->hint);
}

void spb_err_where(spb_err *err, const char *file, int line, int column, const char *path)
{
    if (err == NULL)
        return;
    if (file != NULL) {
        snprintf(err->file, sizeof(err->file), "%s", file);
        spb_utf8_sanitize(err->file);
    }
    if (line > 0)
        err->line = line;
    if (column > 0)
        err->column = column;
    if (path != NULL) {
        snprintf(err->path, sizeof(err->path), "%s", path);
        spb_utf8_sanitize(err->path);
    }
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
