/*
 * The /dashboard page (see dashboard.h). Built in one bounded buffer: the head, a summary,
 * two SVG charts drawn from the report's weeks, the per-practice table, the newest audit
 * records and a footer. Markup follows the NHS.UK frontend's components (header, cards,
 * tables, footer) so the bundled stylesheet applies; the charts are plain SVG with a <title>
 * on every bar and a table beside them holding the same numbers.
 */
#include "spbridge/dashboard.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/buf.h"
#include "spbridge/error.h"

/* generated at build time (dashboard/build.mjs, or CMakeLists.txt's fallback) */
extern const unsigned char spb__dashboard_css[];
extern const size_t spb__dashboard_css_len;
extern const char spb__dashboard_css_version[];

#define RESERVE     4096 /* kept back for the closing markup */
#define CHART_WEEKS 12

typedef struct page {
    spb_buf out; /* at most SPB_DASHBOARD_MAX_BYTES with its NUL */
    int full;    /* past the limit less RESERVE: only closing markup goes in now */
} page;

const unsigned char *spb_dashboard_css(size_t *len)
{
    *len = spb__dashboard_css_len;
    return spb__dashboard_css;
}

const char *spb_dashboard_css_version(void)
{
    return spb__dashboard_css_version;
}

/* ------------------------------------------------------------------ output */

static void raw_n(page *p, const char *s, size_t n, int closing)
{
    size_t limit = SPB_DASHBOARD_MAX_BYTES - (closing ? 0 : RESERVE);
    if (p->full && !closing)
        return;
    if (p->out.len + n + 1 > limit) {
        p->full = 1;
        if (!closing)
            return;
    }
    spb_buf_append(&p->out, s, n); /* past the whole limit even closing markup stops */
}

static void raw(page *p, const char *s)
{
    raw_n(p, s, strlen(s), 0);
}

static void closing(page *p, const char *s)
{
    raw_n(p, s, strlen(s), 1);
}

static void fmt(page *p, const char *f, ...) __attribute__((format(printf, 2, 3)));

static void fmt(page *p, const char *f, ...)
{
    char tmp[1024];
    va_list ap;
    int n;
    va_start(ap, f);
    n = vsnprintf(tmp, sizeof(tmp), f, ap);
    va_end(ap);
    if (n > 0)
        raw_n(p, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1, 0);
}

/* Text content or an attribute value, escaped. */
static void esc(page *p, const char *s)
{
    const char *start = s;
    if (s == NULL)
        return;
    for (; *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        if (rep != NULL) {
            raw_n(p, start, (size_t)(s - start), 0);
            raw(p, rep);
            start = s + 1;
        }
    }
    raw_n(p, start, (size_t)(s - start), 0);
}

/* ------------------------------------------------------------------ values */

static long count_of(const json_t *o, const char *key)
{
    return (long)json_integer_value(json_object_get(o, key));
}

/* Seconds as a short human duration ("3 d 4 h", "2 h 5 min", "40 s"); "–" when absent. */
static void duration_text(const json_t *timing, const char *key, char *out, size_t size)
{
    json_t *v = json_object_get(timing, key);
    double s;
    long t;
    if (!json_is_number(v)) {
        snprintf(out, size, "–");
        return;
    }
    s = json_number_value(v);
    t = (long)(s + 0.5);
    if (t >= 86400)
        snprintf(out, size, "%ld d %ld h", t / 86400, (t % 86400) / 3600);
    else if (t >= 3600)
        snprintf(out, size, "%ld h %ld min", t / 3600, (t % 3600) / 60);
    else if (t >= 60)
        snprintf(out, size, "%ld min %ld s", t / 60, t % 60);
    else
        snprintf(out, size, "%ld s", t);
}

static void scope_text(const spb_dashboard_view *v, char *out, size_t size)
{
    switch (v->scope->role) {
    case SPB_ROLE_ADMIN:
        snprintf(out, size, "administrator: every practice and region");
        break;
    case SPB_ROLE_AUDITOR:
        snprintf(out, size, "auditor for region %s: its practices only", v->scope->region);
        break;
    case SPB_ROLE_PRACTICE:
        snprintf(out, size, "practice %s: its own referrals only", v->scope->ods);
        break;
    default:
        snprintf(out, size, "nothing");
        break;
    }
}

/* ------------------------------------------------------------------ parts */

static void head(page *p)
{
    raw(p, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
           "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           "<title>Referral activity and audit – spbridge</title>\n"
           "<link rel=\"stylesheet\" href=\"/dashboard/nhsuk.css\">\n"
           "<style>\n"
           ".spb-chart{width:100%;max-width:760px;height:auto;background:#fff;"
           "border:1px solid #d8dde0;margin-bottom:32px}\n"
           ".spb-chart text{font-family:arial,sans-serif;font-size:12px;fill:#212b32}\n"
           ".spb-legend{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}\n"
           ".spb-table-wrap{overflow-x:auto}\n"
           ".spb-table-wrap .nhsuk-table{font-size:16px}\n"
           ".spb-nowrap{white-space:nowrap}\n"
           "</style>\n</head>\n<body>\n"
           "<a class=\"nhsuk-skip-link\" href=\"#maincontent\">Skip to main content</a>\n"
           "<header class=\"nhsuk-header\" role=\"banner\">\n"
           "<div class=\"nhsuk-header__container nhsuk-width-container-fluid\">\n"
           "<div class=\"nhsuk-header__service\">\n"
           "<a class=\"nhsuk-header__service-name\" href=\"/dashboard\">spbridge: social "
           "prescribing referrals</a>\n"
           "</div>\n</div>\n</header>\n"
           "<div class=\"nhsuk-width-container-fluid\">\n"
           "<main class=\"nhsuk-main-wrapper\" id=\"maincontent\" role=\"main\">\n");
}

static void card(page *p, const char *id, const char *value, const char *label)
{
    fmt(p,
        "<div class=\"nhsuk-grid-column-one-quarter\">\n<div class=\"nhsuk-card\" "
        "id=\"%s\">\n<div class=\"nhsuk-card__content\">\n"
        "<p class=\"nhsuk-heading-l nhsuk-u-margin-bottom-1\">",
        id);
    esc(p, value);
    raw(p, "</p>\n<p class=\"nhsuk-card__description\">");
    esc(p, label);
    raw(p, "</p>\n</div>\n</div>\n</div>\n");
}

static void summary(page *p, const json_t *totals)
{
    char n[32], d[64];
    raw(p, "<div class=\"nhsuk-grid-row\" id=\"summary\">\n");
    snprintf(n, sizeof(n), "%ld", count_of(totals, "referralsSent"));
    card(p, "card-sent", n, "referrals sent");
    snprintf(n, sizeof(n), "%ld", count_of(totals, "accepted"));
    card(p, "card-accepted", n, "accepted by the service");
    snprintf(n, sizeof(n), "%ld", count_of(totals, "completed"));
    card(p, "card-completed", n, "completed");
    duration_text(json_object_get(totals, "timeToAcceptance"), "medianSeconds", d, sizeof(d));
    card(p, "card-median", d, "median time to acceptance");
    raw(p, "</div>\n");
}

/* The last CHART_WEEKS weeks of byWeek. */
static size_t chart_start(const json_t *weeks)
{
    size_t n = json_array_size(weeks);
    return n > CHART_WEEKS ? n - CHART_WEEKS : 0;
}

static void chart_counts(page *p, const json_t *weeks)
{
    static const struct {
        const char *key, *label, *colour;
    } series[] = {
        {"referralsSent", "sent", "#005eb8"},
        {"accepted", "accepted", "#007f3b"},
        {"completed", "completed", "#330072"},
    };
    const int w = 760, h = 280, left = 48, bottom = 40, top = 16;
    size_t first = chart_start(weeks), n = json_array_size(weeks) - first;
    long max = 1;
    double slot, bar, scale;

    for (size_t i = first; i < json_array_size(weeks); i++) {
        for (size_t k = 0; k < 3; k++) {
            long v = count_of(json_array_get(weeks, i), series[k].key);
            if (v > max)
                max = v;
        }
    }
    raw(p, "<h2 class=\"nhsuk-heading-m\" id=\"chart-referrals-title\">Referrals per week</h2>\n"
           "<p class=\"nhsuk-body-s\">");
    for (size_t k = 0; k < 3; k++) {
        fmt(p, "<span class=\"spb-legend\" style=\"background:%s\"></span>%s", series[k].colour,
            series[k].label);
    }
    raw(p, "</p>\n");
    fmt(p,
        "<svg class=\"spb-chart\" id=\"chart-referrals\" role=\"img\" "
        "aria-labelledby=\"chart-referrals-title\" viewBox=\"0 0 %d %d\" "
        "xmlns=\"http://www.w3.org/2000/svg\">\n",
        w, h);
    fmt(p, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#4c6272\"/>\n", left, h - bottom,
        w - 8, h - bottom);
    fmt(p, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%ld</text>\n", left - 6, top + 4, max);
    fmt(p, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>\n", left - 6, h - bottom);
    if (n == 0) {
        fmt(p, "<text x=\"%d\" y=\"%d\">No referrals in view yet</text>\n", left + 20, h / 2);
    } else {
        slot = (double)(w - left - 16) / (double)n;
        if (slot > 160)
            slot = 160; /* a few weeks: keep the bars narrow */
        bar = slot / 4.0;
        scale = (double)(h - bottom - top) / (double)max;
        for (size_t i = 0; i < n; i++) {
            const json_t *wk = json_array_get(weeks, first + i);
            const char *label = json_string_value(json_object_get(wk, "week"));
            double x0 = left + 8 + slot * (double)i;
            for (size_t k = 0; k < 3; k++) {
                long v = count_of(wk, series[k].key);
                double bh = (double)v * scale;
                fmt(p,
                    "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\">"
                    "<title>",
                    x0 + bar * (double)k, (double)(h - bottom) - bh, bar - 1, bh, series[k].colour);
                esc(p, label);
                fmt(p, ": %ld %s</title></rect>\n", v, series[k].label);
            }
            fmt(p, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", x0 + bar * 1.5,
                h - bottom + 18);
            esc(p, label);
            raw(p, "</text>\n");
        }
    }
    raw(p, "</svg>\n");
}

/* The unit the median times read best in: minutes, hours or days. */
static double time_unit(const json_t *weeks, size_t first, const char **name)
{
    double max = 0;
    for (size_t i = first; i < json_array_size(weeks); i++) {
        json_t *t = json_object_get(json_array_get(weeks, i), "timeToAcceptance");
        double v = json_number_value(json_object_get(t, "medianSeconds"));
        if (v > max)
            max = v;
    }
    if (max < 3600) {
        *name = "minutes";
        return 60;
    }
    if (max < 3 * 86400) {
        *name = "hours";
        return 3600;
    }
    *name = "days";
    return 86400;
}

static void chart_times(page *p, const json_t *weeks)
{
    const int w = 760, h = 240, left = 64, bottom = 40, top = 16;
    size_t first = chart_start(weeks), n = json_array_size(weeks) - first;
    const char *unit;
    double per = time_unit(weeks, first, &unit), max = 0, slot, scale;

    for (size_t i = first; i < json_array_size(weeks); i++) {
        json_t *t = json_object_get(json_array_get(weeks, i), "timeToAcceptance");
        double v = json_number_value(json_object_get(t, "medianSeconds")) / per;
        if (v > max)
            max = v;
    }
    if (max <= 0)
        max = 1;
    fmt(p,
        "<h2 class=\"nhsuk-heading-m\" id=\"chart-times-title\">Median time from referral to "
        "acceptance, per week (%s)</h2>\n",
        unit);
    fmt(p,
        "<svg class=\"spb-chart\" id=\"chart-times\" role=\"img\" "
        "aria-labelledby=\"chart-times-title\" viewBox=\"0 0 %d %d\" "
        "xmlns=\"http://www.w3.org/2000/svg\">\n",
        w, h);
    fmt(p, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#4c6272\"/>\n", left, h - bottom,
        w - 8, h - bottom);
    fmt(p, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.3g</text>\n", left - 6, top + 4, max);
    fmt(p, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">0</text>\n", left - 6, h - bottom);
    if (n == 0) {
        fmt(p, "<text x=\"%d\" y=\"%d\">No accepted referrals in view yet</text>\n", left + 20,
            h / 2);
    } else {
        slot = (double)(w - left - 16) / (double)n;
        if (slot > 160)
            slot = 160;
        scale = (double)(h - bottom - top) / max;
        for (size_t i = 0; i < n; i++) {
            const json_t *wk = json_array_get(weeks, first + i);
            const char *label = json_string_value(json_object_get(wk, "week"));
            json_t *t = json_object_get(wk, "timeToAcceptance");
            double v = json_number_value(json_object_get(t, "medianSeconds")) / per;
            double x0 = left + 8 + slot * (double)i, bh = v * scale;
            fmt(p,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#003087\">"
                "<title>",
                x0 + slot / 4, (double)(h - bottom) - bh, slot / 2, bh);
            esc(p, label);
            fmt(p, ": median %.2f %s over %lld referrals</title></rect>\n", v, unit,
                (long long)json_integer_value(json_object_get(t, "n")));
            fmt(p, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", x0 + slot / 2,
                h - bottom + 18);
            esc(p, label);
            raw(p, "</text>\n");
        }
    }
    raw(p, "</svg>\n");
}

static void practice_table(page *p, const json_t *rows)
{
    size_t i;
    json_t *r;
    raw(p, "<h2 class=\"nhsuk-heading-m\">By practice and week</h2>\n"
           "<div class=\"spb-table-wrap\">\n"
           "<table class=\"nhsuk-table\" id=\"table-practices\">\n"
           "<caption class=\"nhsuk-table__caption nhsuk-table__caption--s\">What each practice "
           "sent, and what became of "
           "it</caption>\n<thead class=\"nhsuk-table__head\"><tr class=\"nhsuk-table__row\">");
    {
        static const char *const cols[] = {"Practice",
                                           "Region",
                                           "Week",
                                           "Sent",
                                           "Accepted",
                                           "Rejected",
                                           "Declined",
                                           "Completed",
                                           "Signposting",
                                           "Median to accept",
                                           "90th pct to accept",
                                           "Median to complete",
                                           "Failed attempts",
                                           "Retries",
                                           "Dead letters"};
        for (size_t k = 0; k < sizeof(cols) / sizeof(cols[0]); k++)
            fmt(p, "<th class=\"nhsuk-table__header\" scope=\"col\">%s</th>", cols[k]);
    }
    raw(p, "</tr></thead>\n<tbody class=\"nhsuk-table__body\">\n");
    if (json_array_size(rows) == 0)
        raw(p, "<tr class=\"nhsuk-table__row\"><td class=\"nhsuk-table__cell\" colspan=\"15\">"
               "Nothing to show for this certificate yet.</td></tr>\n");
    json_array_foreach(rows, i, r)
    {
        static const char *const counts[] = {"referralsSent", "accepted",  "rejected",
                                             "declined",      "completed", "signposting"};
        static const char *const tail[] = {"deliveryFailures", "retries", "deadLetters"};
        char d[64];
        raw(p, "<tr class=\"nhsuk-table__row\"><td class=\"nhsuk-table__cell\">");
        esc(p, json_string_value(json_object_get(r, "practice")));
        raw(p, "</td><td class=\"nhsuk-table__cell\">");
        esc(p, json_string_value(json_object_get(r, "region")));
        raw(p, "</td><td class=\"nhsuk-table__cell spb-nowrap\">");
        esc(p, json_string_value(json_object_get(r, "week")));
        raw(p, "</td>");
        for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
            fmt(p, "<td class=\"nhsuk-table__cell nhsuk-table__cell--numeric\">%ld</td>",
                count_of(r, counts[k]));
        duration_text(json_object_get(r, "timeToAcceptance"), "medianSeconds", d, sizeof(d));
        fmt(p, "<td class=\"nhsuk-table__cell\">%s</td>", d);
        duration_text(json_object_get(r, "timeToAcceptance"), "p90Seconds", d, sizeof(d));
        fmt(p, "<td class=\"nhsuk-table__cell\">%s</td>", d);
        duration_text(json_object_get(r, "timeToCompletion"), "medianSeconds", d, sizeof(d));
        fmt(p, "<td class=\"nhsuk-table__cell\">%s</td>", d);
        for (size_t k = 0; k < sizeof(tail) / sizeof(tail[0]); k++)
            fmt(p, "<td class=\"nhsuk-table__cell nhsuk-table__cell--numeric\">%ld</td>",
                count_of(r, tail[k]));
        raw(p, "</tr>\n");
    }
    raw(p, "</tbody>\n</table>\n</div>\n");
}

static void recent_table(page *p, const json_t *recent)
{
    size_t i;
    json_t *r;
    raw(p, "<h2 class=\"nhsuk-heading-m\">Newest audit records</h2>\n"
           "<div class=\"spb-table-wrap\">\n"
           "<table class=\"nhsuk-table\" id=\"table-audit\">\n"
           "<caption class=\"nhsuk-table__caption nhsuk-table__caption--s\">Every step is "
           "recorded, chained by SHA-256 "
           "and signed at checkpoints</caption>\n"
           "<thead class=\"nhsuk-table__head\"><tr class=\"nhsuk-table__row\">"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Record</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Time (UTC)</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Practice</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Region</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Step</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Result</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Who</th>"
           "<th class=\"nhsuk-table__header\" scope=\"col\">Referral</th>"
           "</tr></thead>\n<tbody class=\"nhsuk-table__body\">\n");
    json_array_foreach(recent, i, r)
    {
        static const char *const keys[] = {"time", "practice", "region",
                                           "step", "result",   "identity"};
        const char *ref = json_string_value(json_object_get(r, "referral"));
        fmt(p, "<tr class=\"nhsuk-table__row\"><td class=\"nhsuk-table__cell\">%lld</td>",
            (long long)json_integer_value(json_object_get(r, "id")));
        for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
            const char *v = json_string_value(json_object_get(r, keys[k]));
            if (k == 0 && v != NULL) {
                /* 2026-11-21T12:13:02.630Z -> 2026-11-21 12:13:02 */
                char when[20];
                snprintf(when, sizeof(when), "%.10s %.8s", v, strlen(v) > 11 ? v + 11 : "");
                raw(p, "<td class=\"nhsuk-table__cell spb-nowrap\">");
                esc(p, when);
                raw(p, "</td>");
                continue;
            }
            raw(p, "<td class=\"nhsuk-table__cell\">");
            esc(p, v);
            raw(p, "</td>");
        }
        raw(p, "<td class=\"nhsuk-table__cell\">");
        if (ref != NULL) {
            char shortref[16];
            snprintf(shortref, sizeof(shortref), "%.8s…", ref);
            raw(p, "<span title=\"");
            esc(p, ref);
            raw(p, "\">");
            esc(p, shortref);
            raw(p, "</span>");
        }
        raw(p, "</td></tr>\n");
    }
    if (json_array_size(recent) == 0)
        raw(p, "<tr class=\"nhsuk-table__row\"><td class=\"nhsuk-table__cell\" colspan=\"8\">"
               "No audit records for this certificate yet.</td></tr>\n");
    raw(p, "</tbody>\n</table>\n</div>\n");
}

char *spb_dashboard_html(const spb_dashboard_view *v)
{
    page p = {0};
    const json_t *report = v->report;
    char scope[160], now[64];

    spb_buf_init(&p.out, SPB_DASHBOARD_MAX_BYTES - 1);
    head(&p);
    scope_text(v, scope, sizeof(scope));
    raw(&p, "<h1 class=\"nhsuk-heading-l\">Referral activity and audit</h1>\n"
            "<p class=\"nhsuk-body\" id=\"viewer\">Signed in with the certificate of <strong>");
    esc(&p, v->viewer);
    raw(&p, "</strong>, ");
    esc(&p, scope);
    raw(&p, ".</p>\n");
    snprintf(now, sizeof(now), "%s",
             json_string_value(json_object_get(report, "generatedAt"))
                 ? json_string_value(json_object_get(report, "generatedAt"))
                 : "");
    raw(&p, "<p class=\"nhsuk-body-s\">Figures at ");
    esc(&p, now);
    raw(&p, " (UTC), by ISO week of the referral. The same figures: "
            "<a href=\"/audit/report\">JSON</a>, <a href=\"/audit/report?format=csv\">CSV</a>; "
            "the records: <a href=\"/audit/AuditEvent\">FHIR AuditEvent</a>.</p>\n");
    summary(&p, json_object_get(report, "totals"));
    chart_counts(&p, json_object_get(report, "byWeek"));
    chart_times(&p, json_object_get(report, "byWeek"));
    practice_table(&p, json_object_get(report, "rows"));
    recent_table(&p, v->recent);
    if (v->chain != NULL) {
        raw(&p, "<div class=\"nhsuk-inset-text\" id=\"chain\"><span "
                "class=\"nhsuk-u-visually-hidden\">Information: </span><p>");
        esc(&p, v->chain);
        raw(&p, "</p></div>\n");
    }
    if (p.full)
        closing(&p, "<div class=\"nhsuk-warning-callout\"><h3 class=\"nhsuk-warning-callout__"
                    "label\">Cut short</h3><p>This page reached its size limit. Use the CSV "
                    "report for everything.</p></div>\n");
    closing(&p, "</main>\n</div>\n<footer class=\"nhsuk-footer\" role=\"contentinfo\">\n"
                "<div class=\"nhsuk-width-container-fluid\">\n<p class=\"nhsuk-body-s\">spbridge. "
                "Styles: ");
    closing(&p, spb__dashboard_css_version);
    closing(&p, ", bundled at build time; nothing on this page is fetched from elsewhere.</p>\n"
                "</div>\n</footer>\n</body>\n</html>\n");
    if (p.out.failed == SPB_ENOMEM) {
        spb_buf_free(&p.out);
        return NULL;
    }
    return spb_buf_take(&p.out, NULL);
}
