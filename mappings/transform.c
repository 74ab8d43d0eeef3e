/*
 * Value transforms. Times are the delicate part: GP2GP timestamps carry no offset and
 * mean UK civil time, so a summer timestamp is BST (+01:00). The BST rule (last Sunday of
 * March 01:00 UTC to last Sunday of October 01:00 UTC) is computed here rather than read
 * from the system's zoneinfo, so output never depends on the host's TZ settings.
 */
#include "spbridge/transform.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

/* 0 = Sunday. Sakamoto's method. */
static int day_of_week(int y, int m, int d)
{
    static const int t[] = {0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4};
    if (m < 3)
        y -= 1;
    return (y + y / 4 - y / 100 + y / 400 + t[m - 1] + d) % 7;
}

static int last_sunday(int y, int m)
{
    int last = days_in_month(y, m);
    return last - day_of_week(y, m, last);
}

int spb_uk_offset_minutes(int year, int month, int day, int hour, int minute)
{
    int start, end;
    (void)minute;
    if (month < 3 || month > 10)
        return 0;
    if (month > 3 && month < 10)
        return 60;
    if (month == 3) {
        start = last_sunday(year, 3);
        /* Clocks go forward at 01:00 GMT; 01:00-01:59 local does not exist, read as GMT. */
        if (day > start || (day == start && hour >= 2))
            return 60;
        return 0;
    }
    end = last_sunday(year, 10);
    /* Clocks go back at 02:00 BST; the repeated 01:00-01:59 is read as BST (first pass). */
    if (day < end || (day == end && hour < 2))
        return 60;
    return 0;
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

typedef struct tparts {
    int prec; /* 1 year, 2 month, 3 day, 4 hour, 5 minute, 6 second */
    int y, mo, d, h, mi, s;
    char frac[16];
    int has_offset;
    int offset_min;
} tparts;

static int check_ranges(const tparts *t)
{
    if (t->y < 1800 || t->y > 2200)
        return -1;
    if (t->prec >= 2 && (t->mo < 1 || t->mo > 12))
        return -1;
    if (t->prec >= 3 && (t->d < 1 || t->d > days_in_month(t->y, t->mo)))
        return -1;
    if (t->prec >= 4 && (t->h > 23 || t->mi > 59 || t->s > 59))
        return -1;
    if (t->has_offset && (t->offset_min < -14 * 60 || t->offset_min > 14 * 60))
        return -1;
    return 0;
}

static int parse_hl7(const char *in, tparts *t)
{
    size_t len = strlen(in), body = len;
    const char *sign = NULL;

    memset(t, 0, sizeof(*t));
    for (size_t i = 4; i < len; i++) {
        if (in[i] == '+' || in[i] == '-') {
            sign = in + i;
            body = i;
            break;
        }
    }
    {
        const char *dot = memchr(in, '.', body);
        size_t digits = dot ? (size_t)(dot - in) : body;
        if (!all_digits(in, digits))
            return -1;
        switch (digits) {
        case 14:
            t->s = num(in + 12, 2);
            t->prec = 6;
            /* fall through */
        case 12:
            t->mi = num(in + 10, 2);
            if (t->prec == 0)
                t->prec = 5;
            /* fall through */
        case 10:
            t->h = num(in + 8, 2);
            if (t->prec == 0)
                t->prec = 4;
            /* fall through */
        case 8:
            t->d = num(in + 6, 2);
            if (t->prec == 0)
                t->prec = 3;
            /* fall through */
        case 6:
            t->mo = num(in + 4, 2);
            if (t->prec == 0)
                t->prec = 2;
            /* fall through */
        case 4:
            t->y = num(in, 4);
            if (t->prec == 0)
                t->prec = 1;
            break;
        default:
            return -1;
        }
        if (dot != NULL) {
            size_t fl = body - digits - 1;
            if (t->prec != 6 || fl == 0 || fl >= sizeof(t->frac) || !all_digits(dot + 1, fl))
                return -1;
            memcpy(t->frac, dot + 1, fl);
            t->frac[fl] = '\0';
        }
    }
    if (sign != NULL) {
        if (strlen(sign) != 5 || !all_digits(sign + 1, 4) || t->prec < 4)
            return -1;
        t->has_offset = 1;
        t->offset_min = num(sign + 1, 2) * 60 + num(sign + 3, 2);
        if (*sign == '-')
            t->offset_min = -t->offset_min;
    }
    return check_ranges(t);
}

static int parse_pattern(const char *in, const char *pat, tparts *t)
{
    const char *p = pat, *s = in;

    memset(t, 0, sizeof(*t));
    while (*p) {
        struct {
            const char *tok;
            int *dst;
            int prec;
        } toks[] = {{"YYYY", &t->y, 1}, {"MM", &t->mo, 2}, {"DD", &t->d, 3},
                    {"hh", &t->h, 4},   {"mm", &t->mi, 5}, {"ss", &t->s, 6}};
        int matched = 0;
        for (size_t k = 0; k < sizeof(toks) / sizeof(toks[0]); k++) {
            size_t tl = strlen(toks[k].tok);
            if (strncmp(p, toks[k].tok, tl) == 0) {
                if (strlen(s) < tl || !all_digits(s, tl))
                    return -1;
                *toks[k].dst = num(s, tl);
                if (toks[k].prec > t->prec)
                    t->prec = toks[k].prec;
                p += tl;
                s += tl;
                matched = 1;
                break;
            }
        }
        if (matched)
            continue;
        if (*s != *p)
            return -1;
        p++;
        s++;
    }
    if (*s != '\0')
        return -1;
    /* a pattern must give a contiguous precision: year, then month, then day... */
    if (t->prec >= 2 && t->mo == 0)
        return -1;
    if (t->prec >= 3 && t->d == 0)
        return -1;
    return check_ranges(t);
}

static int parse_iso(const char *in, tparts *t)
{
    size_t len = strlen(in);

    memset(t, 0, sizeof(*t));
    if (len < 4 || !all_digits(in, 4))
        return -1;
    t->y = num(in, 4);
    t->prec = 1;
    if (len == 4)
        return check_ranges(t);
    if (len < 7 || in[4] != '-' || !all_digits(in + 5, 2))
        return -1;
    t->mo = num(in + 5, 2);
    t->prec = 2;
    if (len == 7)
        return check_ranges(t);
    if (len < 10 || in[7] != '-' || !all_digits(in + 8, 2))
        return -1;
    t->d = num(in + 8, 2);
    t->prec = 3;
    if (len == 10)
        return check_ranges(t);
    if (len < 19 || in[10] != 'T' || in[13] != ':' || in[16] != ':' || !all_digits(in + 11, 2) ||
        !all_digits(in + 14, 2) || !all_digits(in + 17, 2))
        return -1;
    t->h = num(in + 11, 2);
    t->mi = num(in + 14, 2);
    t->s = num(in + 17, 2);
    t->prec = 6;
    {
        const char *r = in + 19;
        if (*r == '.') {
            size_t fl = 0;
            r++;
            while (isdigit((unsigned char)r[fl]))
                fl++;
            if (fl == 0 || fl >= sizeof(t->frac))
                return -1;
            memcpy(t->frac, r, fl);
            t->frac[fl] = '\0';
            r += fl;
        }
        if (*r == 'Z' && r[1] == '\0') {
            t->has_offset = 1;
            t->offset_min = 0;
        } else if ((*r == '+' || *r == '-') && strlen(r) == 6 && r[3] == ':' &&
                   all_digits(r + 1, 2) && all_digits(r + 4, 2)) {
            t->has_offset = 1;
            t->offset_min = num(r + 1, 2) * 60 + num(r + 4, 2);
            if (*r == '-')
                t->offset_min = -t->offset_min;
        } else if (*r == '\0') {
            t->has_offset = 0;
        } else {
            return -1;
        }
    }
    return check_ranges(t);
}

static void format_parts(char *out, size_t out_size, const tparts *t, int want_date, spb_zone zone)
{
    int prec = t->prec;
    int off;

    if (want_date && prec > 3)
        prec = 3;
    switch (prec) {
    case 1:
        snprintf(out, out_size, "%04d", t->y);
        return;
    case 2:
        snprintf(out, out_size, "%04d-%02d", t->y, t->mo);
        return;
    case 3:
        snprintf(out, out_size, "%04d-%02d-%02d", t->y, t->mo, t->d);
        return;
    default:
        break;
    }
    if (t->has_offset)
        off = t->offset_min;
    else if (zone == SPB_ZONE_UK)
        off = spb_uk_offset_minutes(t->y, t->mo, t->d, t->h, t->mi);
    else
        off = 0;
    /* FHIR dateTime needs seconds and an offset once a time is given. */
    snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d%s%s%c%02d:%02d", t->y, t->mo, t->d, t->h,
             t->mi, t->s, t->frac[0] ? "." : "", t->frac, off < 0 ? '-' : '+',
             (off < 0 ? -off : off) / 60, (off < 0 ? -off : off) % 60);
}

int spb_time_convert(char *out, size_t out_size, const char *in, const char *format, spb_zone zone,
                     int want_date, spb_err *err)
{
    tparts t;
    int rc;

    if (strcmp(format, "hl7") == 0)
        rc = parse_hl7(in, &t);
    else if (strcmp(format, "iso") == 0)
        rc = parse_iso(in, &t);
    else if (strncmp(format, "pattern:", 8) == 0)
        rc = parse_pattern(in, format + 8, &t);
    else
        return spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                           "unknown time format '%s' (use hl7, iso or pattern:...)", format);
    if (rc < 0) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_VALUE, "'%.40s' is not a valid %s %s", in, format,
                    want_date ? "date" : "date-time");
        spb_err_hint(err, "send a real calendar %s in the dialect's format (%s)",
                     want_date ? "date" : "date and time", format);
        return SPB_EINVALID;
    }
    format_parts(out, out_size, &t, want_date, zone);
    return 0;
}

int spb_is_fhir_datetime(const char *s, int date_only)
{
    tparts t;
    if (parse_iso(s, &t) < 0)
        return 0;
    if (date_only)
        return t.prec <= 3;
    /* with a time, FHIR requires an offset */
    return t.prec <= 3 || t.has_offset;
}

int spb_parse_boolean(const char *s)
{
    static const char *yes[] = {"true", "yes", "y", "1"};
    static const char *no[] = {"false", "no", "n", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0)
            return 1;
        if (strcasecmp(s, no[i]) == 0)
            return 0;
    }
    return -1;
}

int spb_is_absolute_uri(const char *s)
{
    const char *p = s;
    if (!isalpha((unsigned char)*p))
        return 0;
    while (isalnum((unsigned char)*p) || *p == '+' || *p == '-' || *p == '.')
        p++;
    if (*p != ':' || p[1] == '\0')
        return 0;
    for (; *p; p++) {
        if (isspace((unsigned char)*p))
            return 0;
    }
    return 1;
}

int spb_is_fhir_code(const char *s)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return 0;
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p) && (p[1] == '\0' || isspace((unsigned char)p[1])))
            return 0;
        if (*p == '\n' || *p == '\t' || *p == '\r')
            return 0;
    }
    return 1;
}

static int is_title(const char *w, size_t n)
{
    static const char *const titles[] = {"dr",        "mr",  "mrs",  "ms",  "miss", "mx", "prof",
                                         "professor", "rev", "revd", "sir", "dame", "fr", NULL};
    if (n > 2 && w[0] == '(' && w[n - 1] == ')') {
        w++;
        n -= 2;
    }
    if (n > 1 && w[n - 1] == '.')
        n--;
    for (size_t i = 0; titles[i] != NULL; i++) {
        if (strlen(titles[i]) == n && strncasecmp(w, titles[i], n) == 0)
            return 1;
    }
    return 0;
}

/* Appends one word to a space-separated part, dropping the brackets of "(Dr)". */
static void append_word(char *part, size_t size, const char *w, size_t n)
{
    size_t used = strlen(part);
    if (n > 2 && w[0] == '(' && w[n - 1] == ')') {
        w++;
        n -= 2;
    }
    if (used + (used ? 1 : 0) + n + 1 > size)
        return; /* cut at a word boundary rather than mid-word */
    if (used)
        part[used++] = ' ';
    memcpy(part + used, w, n);
    part[used + n] = '\0';
}

void spb_name_split(const char *in, spb_name_parts *out)
{
    const char *comma = strchr(in, ',');
    const char *words = comma ? comma + 1 : in;
    const char *w[32];
    size_t wl[32], nw = 0, first = 0, last;

    memset(out, 0, sizeof(*out));
    if (comma != NULL) {
        /* "SHAH, Priya": everything before the comma is the family name */
        const char *f = in, *e = comma;
        while (f < e && isspace((unsigned char)*f))
            f++;
        while (e > f && isspace((unsigned char)e[-1]))
            e--;
        append_word(out->family, sizeof(out->family), f, (size_t)(e - f));
    }
    for (const char *p = words; *p && nw < 32;) {
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        w[nw] = p;
        while (*p && !isspace((unsigned char)*p))
            p++;
        wl[nw] = (size_t)(p - w[nw]);
        nw++;
    }
    /* leading titles, and bracketed ones anywhere, are the prefix */
    while (first < nw && is_title(w[first], wl[first]) && (comma || first + 1 < nw)) {
        append_word(out->prefix, sizeof(out->prefix), w[first], wl[first]);
        first++;
    }
    last = nw;
    while (last > first + 1 && w[last - 1][0] == '(' && is_title(w[last - 1], wl[last - 1])) {
        append_word(out->prefix, sizeof(out->prefix), w[last - 1], wl[last - 1]);
        last--;
    }
    if (comma == NULL && last > first) {
        last--; /* the last word is the family name */
        append_word(out->family, sizeof(out->family), w[last], wl[last]);
    }
    for (size_t i = first; i < last; i++) {
        if (w[i][0] == '(' && is_title(w[i], wl[i]))
            append_word(out->prefix, sizeof(out->prefix), w[i], wl[i]);
        else
            append_word(out->given, sizeof(out->given), w[i], wl[i]);
    }
}
