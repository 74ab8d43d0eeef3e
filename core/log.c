/*
 * logfmt lines on stderr. One fputs per line under a lock so lines from worker threads
 * never interleave; values are quoted when needed and control characters escaped, so a
 * value taken from input can never start a new log line.
 */
#include "spbridge/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOG_LINE_MAX 2048

static spb_log_level min_level = SPB_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"debug", "info", "warn", "error"};

void spb_log_set_level(spb_log_level level)
{
    min_level = level;
}

int spb_log_parse_level(const char *name, spb_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (spb_log_level)i;
            return 0;
        }
    }
    return -1;
}

/* Appends `s` to buf at *len, bounded; truncation is silent (log lines are best effort). */
static void append_raw(char *buf, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len >= LOG_LINE_MAX - 1)
        return;
    if (n > LOG_LINE_MAX - 1 - *len)
        n = LOG_LINE_MAX - 1 - *len;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

static void append_value(char *buf, size_t *len, const char *raw)
{
    char v[LOG_LINE_MAX];
    int quote;

    snprintf(v, sizeof(v), "%s", raw);
    spb_utf8_sanitize(v); /* log lines are UTF-8 whatever a value held */
    quote = (*v == '\0');
    for (const char *p = v; *p; p++) {
        if (*p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20)
            quote = 1;
    }
    if (!quote) {
        append_raw(buf, len, v);
        return;
    }
    append_raw(buf, len, "\"");
    for (const char *p = v; *p && *len < LOG_LINE_MAX - 8; p++) {
        char tmp[8];
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            tmp[2] = '\0';
        } else if (c == '\n') {
            memcpy(tmp, "\\n", 3);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
        } else {
            tmp[0] = (char)c;
            tmp[1] = '\0';
        }
        append_raw(buf, len, tmp);
    }
    append_raw(buf, len, "\"");
}

static void write_line(spb_log_level level, const char *event, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ts[40];
    size_t len = 0;
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    line[0] = '\0';
    append_raw(line, &len, "ts=");
    append_raw(line, &len, ts);
    {
        char ms[24];
        snprintf(ms, sizeof(ms), ".%03dZ", (int)(now.tv_nsec / 1000000L) % 1000);
        append_raw(line, &len, ms);
    }
    append_raw(line, &len, " level=");
    append_raw(line, &len, level_names[level]);
    append_raw(line, &len, " event=");
    append_value(line, &len, event);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        const char *value;
        if (key == NULL)
            break;
        value = va_arg(ap, const char *);
        if (value == NULL || *value == '\0')
            continue;
        append_raw(line, &len, " ");
        append_raw(line, &len, key);
        append_raw(line, &len, "=");
        append_value(line, &len, value);
    }
    if (len >= LOG_LINE_MAX - 2) {
        line[LOG_LINE_MAX - 2] = '\0';
        spb_utf8_sanitize(line); /* a full line may end inside a character */
        len = strlen(line);
    }
    append_raw(line, &len, "\n");
    pthread_mutex_lock(&log_lock);
    fputs(line, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

void spb_log(spb_log_level level, const char *event, ...)
{
    va_list ap;

    if (level < min_level)
        return;
    va_start(ap, event);
    write_line(level, event, ap);
    va_end(ap);
}

void spb_log_err(const char *event, const spb_err *err)
{
    char line_s[16] = "", col_s[16] = "";

    if (err->line > 0)
        snprintf(line_s, sizeof(line_s), "%d", err->line);
    if (err->column > 0)
        snprintf(col_s, sizeof(col_s), "%d", err->column);
    spb_log(SPB_LOG_ERROR, event, "file", err->file, "line", line_s, "col", col_s, "code",
            spb_code_name(err->code), "issue", spb_issue_name(err->issue), "path", err->path,
            "error", err->message, "fix", err->hint, (const char *)NULL);
}
