/*
 * The built-in FHIR R4 validator (docs/conformance.md says what it checks, and what not).
 *
 * Loading turns JSON definitions into trees of element rules: one tree per base type
 * (HL7's R4 snapshot: name, cardinality, types, reference targets, required binding) and
 * one per spbridge profile, made by copying the base tree of its type and applying the
 * differential (tighter cardinality, fixed and pattern values, bindings, narrower
 * reference targets, slices on a discriminator value, invariants named by key). A
 * datatype's children are shared from its own tree until a profile constrains something
 * inside it; then the profile gets its own copy ("unfolding", as snapshot generation does).
 *
 * Validation walks the JSON and the tree together. Every JSON member must match an element
 * (unknown elements are errors), every element's cardinality, JSON shape and primitive
 * lexical form is checked, and every problem is recorded with its FHIRPath; nothing stops
 * at the first error. The walk is bounded in depth and records at most
 * SPB_VALIDATION_MAX_ISSUES issues, counting the rest.
 *
 * Rules that are C, not data (each documented in docs/conformance.md): primitive lexical
 * forms, ele-1 (no empty elements), ext-1, the Bundle invariants bdl-1..5, bdl-7 and bdl-8,
 * reference resolution (urn:uuid to a fullUrl, #id to a contained resource) and the
 * profile invariants in `invariants[]` below. A profile may only name invariants from that
 * table; anything else in a differential that the walk would not enforce is refused at
 * load time.
 */
#include "spbridge/validator.h"

#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/ident.h"

#ifndef SPB_CONFORMANCE_DIR
#define SPB_CONFORMANCE_DIR "conformance"
#endif

#define MAX_KIDS         128     /* children of one element (CapabilityStatement has ~40) */
#define MAX_DEPTH        48      /* nesting of elements and resources in one document */
#define MAX_STRING_BYTES 1048576 /* FHIR R4: strings are at most 1 MB */
#define ARENA_BLOCK      65536
#define UNCHECKED_EXT    "https://spbridge.dev/fhir/StructureDefinition/validator-binding-unchecked"

/* ------------------------------------------------------------------ data model */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, size;
    char data[];
} arena_block;

typedef struct vset {
    const char *url;
    size_t n;
    const char **systems; /* parallel to codes; a system may be "" */
    const char **codes;
} vset;

struct vctx;

/* A profile invariant implemented here; `context` is the type of the element it sits on. */
typedef struct invariant {
    const char *key;
    const char *context;
    int (*holds)(json_t *value);
} invariant;

typedef struct vinv {
    const invariant *inv;
    const char *human; /* the profile's wording */
    spb_severity severity;
} vinv;

typedef struct vtype {
    const char *code;
    const char **targets; /* allowed resource types for Reference; none: any */
    size_t ntargets;
} vtype;

typedef struct velem velem;
struct velem {
    const char *seg;  /* path segment as defined: "status", "value[x]" */
    const char *name; /* JSON member name, or the stem of a choice ("value") */
    int choice;
    int min, max; /* max < 0: unbounded */
    const vtype *types;
    size_t ntypes;
    const char *content_ref; /* "#Bundle.link" */
    const velem *ref;        /* resolved content_ref */
    const vset *vs;          /* required binding, checked */
    json_t *fixed, *pattern; /* borrowed from the loaded documents */
    velem **kids;
    size_t nkids;
    int own_kids; /* kids are this element's (backbone, or unfolded by a profile) */
    /* profiles only */
    const char *slice_name;
    const char *disc_path; /* slicing discriminator: a child's name */
    velem **slices;
    size_t nslices;
    vinv *invs;
    size_t ninvs;
};

typedef struct vdef {
    const char *type;
    const char *url;
    int resource;
    velem *root;
} vdef;

typedef struct vprof {
    const char *url;
    const char *type;
    velem *root;
} vprof;

struct spb_validator {
    arena_block *arena;
    json_t *docs; /* every loaded file, kept for the strings and values borrowed from it */
    vset *vsets;
    size_t nvsets;
    vdef *defs;
    size_t ndefs;
    vprof *profs;
    size_t nprofs;
    size_t nprof_urls; /* pre-scanned profile url -> type, for reference targets */
    const char **prof_urls;
    const char **prof_types;
};

/* ------------------------------------------------------------------ invariants (C) */

static const char *member_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static const char *member_or(json_t *o, const char *key, const char *dflt)
{
    const char *s = member_str(o, key);
    return s != NULL ? s : dflt;
}

/* Whether an Identifier is in `system` (each invariant below applies to one system). */
static int in_system(json_t *ident, const char *system)
{
    const char *s = member_str(ident, "system");
    return s != NULL && strcmp(s, system) == 0;
}

/* spb-nhs-1: an NHS number is ten digits, the last the modulus 11 check digit of the
 * first nine. */
static int inv_nhs_number(json_t *ident)
{
    const char *value = member_str(ident, "value");
    char digits[SPB_NHS_NUMBER_LEN + 1];
    spb_err scratch;

    if (value == NULL || !in_system(ident, "https://fhir.nhs.uk/Id/nhs-number"))
        return 1; /* not an NHS number; a missing value is reported by cardinality */
    if (strlen(value) != SPB_NHS_NUMBER_LEN)
        return 0;
    for (size_t i = 0; i < SPB_NHS_NUMBER_LEN; i++) {
        if (!isdigit((unsigned char)value[i]))
            return 0;
    }
    spb_err_clear(&scratch);
    return spb_nhs_number_check(digits, value, &scratch) == 0;
}

/* spb-ods-1: an ODS code is 3 to 12 upper-case letters and digits. */
static int inv_ods_code(json_t *ident)
{
    const char *value = member_str(ident, "value");
    size_t len;

    if (value == NULL || !in_system(ident, "https://fhir.nhs.uk/Id/ods-organization-code"))
        return 1;
    len = strlen(value);
    if (len < 3 || len > 12)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)value[i]) && !isupper((unsigned char)value[i]))
            return 0;
    }
    return 1;
}

/* spb-uuid-1: an identifier in the urn:ietf:rfc:3986 system is "urn:uuid:" and a
 * lower-case UUID. */
static int inv_urn_uuid(json_t *ident)
{
    const char *value = member_str(ident, "value");

    if (value == NULL || !in_system(ident, "urn:ietf:rfc:3986"))
        return 1;
    if (strncmp(value, "urn:uuid:", 9) != 0 || !spb_uuid_is_valid(value + 9))
        return 0;
    for (const char *p = value + 9; *p; p++) {
        if (isupper((unsigned char)*p))
            return 0;
    }
    return 1;
}

/* spb-task-1: rejected, cancelled, on-hold and failed Tasks carry a statusReason. */
static int inv_task_reason(json_t *task)
{
    static const char *const need[] = {"rejected", "cancelled", "on-hold", "failed"};
    const char *status = member_str(task, "status");

    if (status == NULL)
        return 1;
    for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
        if (strcmp(status, need[i]) == 0)
            return json_object_get(task, "statusReason") != NULL;
    }
    return 1;
}

static const invariant invariants[] = {
    {"spb-nhs-1", "Identifier", inv_nhs_number},
    {"spb-ods-1", "Identifier", inv_ods_code},
    {"spb-uuid-1", "Identifier", inv_urn_uuid},
    {"spb-task-1", "Task", inv_task_reason},
};

/* ------------------------------------------------------------------ arena */

static void *arena_alloc(spb_validator *v, size_t size)
{
    arena_block *b = v->arena;
    void *p;

    size = (size + 15) & ~(size_t)15;
    if (b == NULL || b->size - b->used < size) {
        size_t bsize = size > ARENA_BLOCK ? size : ARENA_BLOCK;
        b = malloc(sizeof(*b) + bsize);
        if (b == NULL)
            return NULL;
        b->next = v->arena;
        b->used = 0;
        b->size = bsize;
        v->arena = b;
    }
    p = b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

/* Appends `item` to an arena array of pointers (grows by copying; arrays are small). */
static int arena_push(spb_validator *v, void ***arr, size_t *n, void *item)
{
    void **grown = arena_alloc(v, (*n + 1) * sizeof(void *));
    if (grown == NULL)
        return -1;
    if (*n > 0)
        memcpy(grown, *arr, *n * sizeof(void *));
    grown[(*n)++] = item;
    *arr = grown;
    return 0;
}

/* ------------------------------------------------------------------ lookups */

static const vdef *find_def(const spb_validator *v, const char *type)
{
    for (size_t i = 0; i < v->ndefs; i++) {
        if (strcmp(v->defs[i].type, type) == 0)
            return &v->defs[i];
    }
    return NULL;
}

static const vprof *find_prof(const spb_validator *v, const char *type)
{
    for (size_t i = 0; i < v->nprofs; i++) {
        if (strcmp(v->profs[i].type, type) == 0)
            return &v->profs[i];
    }
    return NULL;
}

static const vset *find_vset(const spb_validator *v, const char *url)
{
    size_t len = strcspn(url, "|"); /* canonical|version: versions are not distinguished */
    for (size_t i = 0; i < v->nvsets; i++) {
        if (strlen(v->vsets[i].url) == len && strncmp(v->vsets[i].url, url, len) == 0)
            return &v->vsets[i];
    }
    return NULL;
}

static int is_primitive(const char *t)
{
    static const char *const prims[] = {
        "boolean",      "integer",  "string",      "decimal",     "uri",  "url",  "canonical",
        "base64Binary", "instant",  "date",        "dateTime",    "time", "code", "oid",
        "id",           "markdown", "unsignedInt", "positiveInt", "uuid", "xhtml"};
    for (size_t i = 0; i < sizeof(prims) / sizeof(prims[0]); i++) {
        if (strcmp(t, prims[i]) == 0)
            return 1;
    }
    return 0;
}

/* The child of `holder` that JSON member `key` names; *tcode gets the member's type. */
static const velem *find_kid(const velem *holder, const char *key, const char **tcode)
{
    for (size_t i = 0; i < holder->nkids; i++) {
        const velem *k = holder->kids[i];
        if (!k->choice) {
            if (strcmp(k->name, key) == 0) {
                *tcode = k->ntypes > 0 ? k->types[0].code : "BackboneElement";
                return k;
            }
            continue;
        }
        {
            size_t stem = strlen(k->name);
            const char *rest = key + stem;
            if (strncmp(key, k->name, stem) != 0 || *rest == '\0')
                continue;
            for (size_t t = 0; t < k->ntypes; t++) {
                const char *code = k->types[t].code;
                if (rest[0] == toupper((unsigned char)code[0]) && strcmp(rest + 1, code + 1) == 0) {
                    *tcode = code;
                    return k;
                }
            }
        }
    }
    return NULL;
}

/* The element whose children describe a value of `e` with type `tcode`. */
static const velem *kids_holder(const spb_validator *v, const velem *e, const char *tcode)
{
    const vdef *d;
    if (e->ref != NULL)
        return e->ref;
    if (e->own_kids || e->nkids > 0)
        return e;
    d = find_def(v, tcode);
    return d != NULL ? d->root : NULL;
}

/* ------------------------------------------------------------------ validation context */

typedef struct vctx {
    const spb_validator *v;
    spb_validation_report *rep; /* may be NULL */
    spb_err *err;
    int have_error;
    json_t *bundle;    /* the innermost enclosing Bundle */
    json_t *container; /* the resource whose contained[] '#id' references resolve in */
    int depth;
    unsigned flags;
    char x[SPB_ERR_PATH_MAX]; /* FHIRPath of the element being checked */
    size_t xlen;
} vctx;

static size_t xpush(vctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static size_t xpush(vctx *c, const char *fmt, ...)
{
    size_t saved = c->xlen;
    va_list ap;
    int n;

    if (c->xlen < sizeof(c->x) - 1) {
        va_start(ap, fmt);
        n = vsnprintf(c->x + c->xlen, sizeof(c->x) - c->xlen, fmt, ap);
        va_end(ap);
        if (n > 0)
            c->xlen += (size_t)n;
        if (c->xlen >= sizeof(c->x))
            c->xlen = sizeof(c->x) - 1;
    }
    return saved;
}

static void xpop(vctx *c, size_t saved)
{
    c->xlen = saved;
    c->x[saved] = '\0';
}

static void issue(vctx *c, spb_severity sev, spb_issue code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void issue(vctx *c, spb_severity sev, spb_issue code, const char *fmt, ...)
{
    char msg[SPB_VALIDATION_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (sev <= SPB_SEVERITY_ERROR) {
        if (!c->have_error) {
            c->have_error = 1;
            spb_err_set(c->err, SPB_EINVALID, code, "%s", msg);
            spb_err_where(c->err, NULL, 0, 0, c->x[0] ? c->x : NULL);
        }
        if (c->rep != NULL)
            c->rep->nerrors++;
    } else if (c->rep != NULL) {
        c->rep->nwarnings++;
    }
    if (c->rep == NULL)
        return;
    if (c->rep->nissues >= SPB_VALIDATION_MAX_ISSUES) {
        c->rep->dropped++;
        return;
    }
    {
        spb_validation_issue *is = &c->rep->issues[c->rep->nissues++];
        is->severity = sev;
        is->code = code;
        snprintf(is->message, sizeof(is->message), "%s", msg);
        snprintf(is->expression, sizeof(is->expression), "%s", c->x);
    }
}

/* ------------------------------------------------------------------ primitives (C) */

static int digits(const char *s, int n)
{
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return 0;
    }
    return 1;
}

static int num(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* YYYY, YYYY-MM or YYYY-MM-DD, a real calendar date; returns characters used or 0. */
static size_t parse_date(const char *s, int need_day)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, month, day, leap;

    if (!digits(s, 4) || (year = num(s, 4)) == 0)
        return 0;
    if (s[4] != '-')
        return need_day ? 0 : 4;
    if (!digits(s + 5, 2) || (month = num(s + 5, 2)) < 1 || month > 12)
        return 0;
    if (s[7] != '-')
        return need_day ? 0 : 7;
    if (!digits(s + 8, 2))
        return 0;
    day = num(s + 8, 2);
    leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (day < 1 || day > mdays[month - 1] + (month == 2 && leap))
        return 0;
    return 10;
}

/* hh:mm:ss(.f+)? ; returns characters used or 0. */
static size_t parse_time(const char *s)
{
    size_t n = 8;
    if (!digits(s, 2) || s[2] != ':' || !digits(s + 3, 2) || s[5] != ':' || !digits(s + 6, 2))
        return 0;
    if (num(s, 2) > 23 || num(s + 3, 2) > 59 || num(s + 6, 2) > 60)
        return 0;
    if (s[8] == '.') {
        n = 9;
        while (isdigit((unsigned char)s[n]))
            n++;
        if (n == 9)
            return 0;
    }
    return n;
}

/* Z, or +hh:mm / -hh:mm up to 14:00; the whole rest of the string. */
static int valid_zone(const char *s)
{
    int h, m;
    if (strcmp(s, "Z") == 0)
        return 1;
    if ((s[0] != '+' && s[0] != '-') || !digits(s + 1, 2) || s[3] != ':' || !digits(s + 4, 2) ||
        s[6] != '\0')
        return 0;
    h = num(s + 1, 2);
    m = num(s + 4, 2);
    return m <= 59 && (h < 14 || (h == 14 && m == 0));
}

static int valid_datetime(const char *s, int instant)
{
    size_t n = parse_date(s, instant);
    size_t t;
    if (n == 0)
        return 0;
    if (s[n] == '\0')
        return !instant;
    if (n != 10 || s[n] != 'T')
        return 0;
    t = parse_time(s + n + 1);
    return t > 0 && valid_zone(s + n + 1 + t);
}

static int valid_code(const char *s)
{
    if (*s == '\0' || isspace((unsigned char)*s))
        return 0;
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p) && (p[1] == '\0' || isspace((unsigned char)p[1])))
            return 0;
    }
    return 1;
}

static int valid_id(const char *s)
{
    size_t len = strlen(s);
    if (len < 1 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '.')
            return 0;
    }
    return 1;
}

static int valid_uri(const char *s)
{
    if (*s == '\0')
        return 0;
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p))
            return 0;
    }
    return 1;
}

static int valid_oid(const char *s)
{
    const char *p = s + 8;
    if (strncmp(s, "urn:oid:", 8) != 0 || *p < '0' || *p > '2' || p[1] != '.')
        return 0;
    p++;
    while (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p) || (*p == '0' && isdigit((unsigned char)p[1])))
            return 0;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return *p == '\0';
}

static int valid_base64(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p))
            continue;
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '/' && *p != '=')
            return 0;
        n++;
    }
    return n > 0 && n % 4 == 0;
}

/* What each primitive's lexical form is, for the error message. */
static const char *form_of(const char *t)
{
    if (strcmp(t, "date") == 0)
        return "a real calendar date as YYYY, YYYY-MM or YYYY-MM-DD";
    if (strcmp(t, "dateTime") == 0)
        return "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] with a time zone "
               "(Z or +hh:mm)";
    if (strcmp(t, "instant") == 0)
        return "YYYY-MM-DDThh:mm:ss[.fff] with a time zone (Z or +hh:mm)";
    if (strcmp(t, "time") == 0)
        return "hh:mm:ss[.fff]";
    if (strcmp(t, "code") == 0)
        return "non-empty, without leading, trailing or repeated white space";
    if (strcmp(t, "id") == 0)
        return "1 to 64 letters, digits, '-' or '.'";
    if (strcmp(t, "oid") == 0)
        return "urn:oid: and a dotted OID";
    if (strcmp(t, "uuid") == 0)
        return "urn:uuid: and a lower-case UUID";
    if (strcmp(t, "base64Binary") == 0)
        return "base64 text";
    if (strcmp(t, "xhtml") == 0)
        return "an XHTML <div> element";
    return "non-empty, without white space";
}

/* Checks a primitive value's JSON type and lexical form; 1 if valid. */
static int check_primitive(vctx *c, const char *t, json_t *val)
{
    const char *s;
    int ok;

    if (strcmp(t, "boolean") == 0) {
        if (!json_is_boolean(val)) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
                  "a boolean must be JSON true or false");
            return 0;
        }
        return 1;
    }
    if (strcmp(t, "integer") == 0 || strcmp(t, "unsignedInt") == 0 ||
        strcmp(t, "positiveInt") == 0) {
        json_int_t n;
        if (!json_is_integer(val)) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "an %s must be a JSON integer", t);
            return 0;
        }
        n = json_integer_value(val);
        if (n > INT32_MAX || n < (t[0] == 'i' ? INT32_MIN : t[0] == 'u' ? 0 : 1)) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE, "out of range for %s", t);
            return 0;
        }
        return 1;
    }
    if (strcmp(t, "decimal") == 0) {
        if (!json_is_number(val)) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "a decimal must be a JSON number");
            return 0;
        }
        return 1;
    }
    if (!json_is_string(val)) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "a %s must be a JSON string", t);
        return 0;
    }
    s = json_string_value(val);
    if (*s == '\0') {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE,
              "empty string: leave the element out instead of sending \"\"");
        return 0;
    }
    if (json_string_length(val) > MAX_STRING_BYTES) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE, "a %s is limited to 1 MB", t);
        return 0;
    }
    if (strcmp(t, "string") == 0 || strcmp(t, "markdown") == 0)
        return 1;
    if (strcmp(t, "date") == 0)
        ok = parse_date(s, 0) == strlen(s);
    else if (strcmp(t, "dateTime") == 0)
        ok = valid_datetime(s, 0);
    else if (strcmp(t, "instant") == 0)
        ok = valid_datetime(s, 1);
    else if (strcmp(t, "time") == 0)
        ok = parse_time(s) == strlen(s);
    else if (strcmp(t, "code") == 0)
        ok = valid_code(s);
    else if (strcmp(t, "id") == 0)
        ok = valid_id(s);
    else if (strcmp(t, "oid") == 0)
        ok = valid_oid(s);
    else if (strcmp(t, "uuid") == 0)
        ok = strncmp(s, "urn:uuid:", 9) == 0 && spb_uuid_is_valid(s + 9) &&
             strspn(s + 9, "0123456789abcdef-") == 36;
    else if (strcmp(t, "base64Binary") == 0)
        ok = valid_base64(s);
    else if (strcmp(t, "xhtml") == 0)
        ok = strncmp(s, "<div", 4) == 0 && strlen(s) >= 11 &&
             strcmp(s + strlen(s) - 6, "</div>") == 0;
    else /* uri, url, canonical */
        ok = valid_uri(s);
    if (!ok) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE, "not a valid FHIR %s: use %s", t, form_of(t));
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ value rules */

/* Quotes a code or URI for a message: short, printable. Codes are never patient data. */
static const char *quote(char *buf, size_t size, const char *s)
{
    size_t i = 0;
    for (; s[i] && i + 1 < size && i < 64; i++)
        buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
    buf[i] = '\0';
    return buf;
}

static int vs_has(const vset *vs, const char *system, const char *code)
{
    for (size_t i = 0; i < vs->n; i++) {
        if (strcmp(vs->codes[i], code) == 0 &&
            (system == NULL || strcmp(vs->systems[i], system) == 0))
            return 1;
    }
    return 0;
}

static int coding_in(const vset *vs, json_t *coding)
{
    const char *system = member_str(coding, "system");
    const char *code = member_str(coding, "code");
    return system != NULL && code != NULL && vs_has(vs, system, code);
}

static void check_binding(vctx *c, const velem *e, const char *t, json_t *val)
{
    char q[80];
    const vset *vs = e->vs;

    if (vs == NULL)
        return;
    if (strcmp(t, "code") == 0) {
        if (json_is_string(val) && !vs_has(vs, NULL, json_string_value(val)))
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_CODE_INVALID,
                  "code '%s' is not in the required value set %s",
                  quote(q, sizeof(q), json_string_value(val)), vs->url);
    } else if (strcmp(t, "Coding") == 0) {
        if (json_is_object(val) && !coding_in(vs, val))
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_CODE_INVALID,
                  "the coding (system and code) is not in the required value set %s", vs->url);
    } else if (strcmp(t, "CodeableConcept") == 0 && json_is_object(val)) {
        json_t *codings = json_object_get(val, "coding");
        size_t i;
        json_t *cd;
        json_array_foreach(codings, i, cd)
        {
            if (coding_in(vs, cd))
                return;
        }
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_CODE_INVALID,
              "no coding is from the required value set %s", vs->url);
    }
}

/* FHIR pattern[x]: every member the pattern has, the value has the same (arrays: each
 * pattern item matches some value item). */
static int pattern_match(json_t *val, json_t *pat)
{
    if (json_is_object(pat)) {
        const char *k;
        json_t *pv;
        if (!json_is_object(val))
            return 0;
        json_object_foreach(pat, k, pv)
        {
            json_t *vv = json_object_get(val, k);
            if (vv == NULL || !pattern_match(vv, pv))
                return 0;
        }
        return 1;
    }
    if (json_is_array(pat)) {
        size_t i, j;
        json_t *pi, *vi;
        if (!json_is_array(val))
            return 0;
        json_array_foreach(pat, i, pi)
        {
            int found = 0;
            json_array_foreach(val, j, vi)
            {
                if (pattern_match(vi, pi)) {
                    found = 1;
                    break;
                }
            }
            if (!found)
                return 0;
        }
        return 1;
    }
    return json_equal(val, pat);
}

static void dump_short(char *buf, size_t size, json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, size, "%s", text ? text : "?");
    if (text != NULL && strlen(text) >= size && size > 4)
        memcpy(buf + size - 4, "...", 4);
    free(text);
}

static void check_fixed(vctx *c, const velem *e, json_t *val)
{
    char shown[120];
    if (e->fixed != NULL && !json_equal(val, e->fixed)) {
        dump_short(shown, sizeof(shown), e->fixed);
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE, "must be exactly %s (fixed by the profile)",
              shown);
    }
    if (e->pattern != NULL && !pattern_match(val, e->pattern)) {
        dump_short(shown, sizeof(shown), e->pattern);
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE,
              "must match the pattern %s (required by the profile)", shown);
    }
}

static void check_invariants(vctx *c, const velem *e, json_t *val)
{
    for (size_t i = 0; i < e->ninvs; i++) {
        if (!e->invs[i].inv->holds(val))
            issue(c, e->invs[i].severity, SPB_ISSUE_INVARIANT, "%s: %s", e->invs[i].inv->key,
                  e->invs[i].human);
    }
}

/* ------------------------------------------------------------------ references */

static json_t *bundle_entry_for(json_t *bundle, const char *url)
{
    size_t i;
    json_t *entry;
    if (bundle == NULL)
        return NULL;
    json_array_foreach(json_object_get(bundle, "entry"), i, entry)
    {
        const char *full = member_str(entry, "fullUrl");
        if (full != NULL && strcmp(full, url) == 0)
            return json_object_get(entry, "resource");
    }
    return NULL;
}

/* "Type/id", "Type/id/_history/v", an absolute URL ending so, or a conditional reference
 * "Type?search" (transactions): writes Type; 1 if so. */
static int type_from_literal(const char *ref, char *out, size_t size)
{
    const char *end = ref + strlen(ref);
    const char *hist = strstr(ref, "/_history/");
    const char *query = strchr(ref, '?');
    const char *slash, *start;
    size_t tlen;

    if (query != NULL && query > ref && query[1] != '\0' &&
        memchr(ref, '/', (size_t)(query - ref)) == NULL) {
        tlen = (size_t)(query - ref);
        if (tlen >= size || !isupper((unsigned char)ref[0]))
            return 0;
        for (size_t i = 0; i < tlen; i++) {
            if (!isalpha((unsigned char)ref[i]))
                return 0;
        }
        memcpy(out, ref, tlen);
        out[tlen] = '\0';
        return 1;
    }

    if (hist != NULL)
        end = hist;
    slash = end;
    while (slash > ref && slash[-1] != '/')
        slash--;
    if (slash == ref || slash == end) /* no "/", or nothing after it */
        return 0;
    start = slash - 1;
    while (start > ref && start[-1] != '/')
        start--;
    tlen = (size_t)(slash - 1 - start);
    if (tlen == 0 || tlen >= size || !isupper((unsigned char)*start))
        return 0;
    for (size_t i = 0; i < tlen; i++) {
        if (!isalpha((unsigned char)start[i]))
            return 0;
    }
    /* a relative reference is exactly Type/id; an absolute one starts with a scheme */
    if (start != ref && strstr(ref, "://") == NULL)
        return 0;
    {
        char id[80];
        size_t idlen = (size_t)(end - slash);
        if (idlen >= sizeof(id))
            return 0;
        memcpy(id, slash, idlen);
        id[idlen] = '\0';
        if (!valid_id(id))
            return 0;
    }
    memcpy(out, start, tlen);
    out[tlen] = '\0';
    return 1;
}

static void check_reference(vctx *c, const velem *e, json_t *val)
{
    const char *ref = member_str(val, "reference");
    const vtype *t = NULL;
    char rtype[64] = "";

    if (ref == NULL)
        return; /* logical reference by identifier, or display only */
    for (size_t i = 0; i < e->ntypes; i++) {
        if (strcmp(e->types[i].code, "Reference") == 0)
            t = &e->types[i];
    }
    if (ref[0] == '#') {
        size_t i;
        json_t *r;
        if (ref[1] == '\0')
            return; /* the containing resource itself */
        json_array_foreach(json_object_get(c->container, "contained"), i, r)
        {
            const char *id = member_str(r, "id");
            if (id != NULL && strcmp(id, ref + 1) == 0)
                snprintf(rtype, sizeof(rtype), "%s", member_or(r, "resourceType", ""));
        }
        if (rtype[0] == '\0') {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "the reference does not resolve to a contained resource");
            return;
        }
    } else if (strncmp(ref, "urn:uuid:", 9) == 0 || strncmp(ref, "urn:oid:", 8) == 0) {
        json_t *target;
        if (ref[4] == 'u' ? !spb_uuid_is_valid(ref + 9) : !valid_oid(ref)) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE,
                  "not a valid urn:uuid: or urn:oid: reference");
            return;
        }
        if (c->bundle == NULL) {
            issue(c, SPB_SEVERITY_WARNING, SPB_ISSUE_INVARIANT,
                  "a urn: reference can only be resolved inside a Bundle");
            return;
        }
        target = bundle_entry_for(c->bundle, ref);
        if (target == NULL) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "the reference does not resolve: no entry of the Bundle has this fullUrl");
            return;
        }
        snprintf(rtype, sizeof(rtype), "%s", member_or(target, "resourceType", ""));
    } else {
        json_t *target = bundle_entry_for(c->bundle, ref);
        if (target != NULL) {
            snprintf(rtype, sizeof(rtype), "%s", member_or(target, "resourceType", ""));
        } else if (!type_from_literal(ref, rtype, sizeof(rtype))) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE,
                  "not a valid reference: use Type/id, an absolute URL, urn:uuid: or #id");
            return;
        }
    }
    if (t != NULL && t->ntargets > 0 && rtype[0] != '\0') {
        char allowed[160] = "";
        size_t used = 0;
        for (size_t i = 0; i < t->ntargets; i++) {
            if (strcmp(t->targets[i], rtype) == 0 || strcmp(t->targets[i], "Resource") == 0)
                return;
            used += (size_t)snprintf(allowed + used,
                                     used < sizeof(allowed) ? sizeof(allowed) - used : 0, "%s%s",
                                     i ? ", " : "", t->targets[i]);
            if (used >= sizeof(allowed))
                used = sizeof(allowed) - 1;
        }
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
              "the reference points to a %s; allowed here: %s", rtype, allowed);
    }
}

/* ------------------------------------------------------------------ the walk */

static void check_resource(vctx *c, json_t *res);
static void check_object(vctx *c, const velem *holder, json_t *obj, int is_root);

/* ext-1: an extension has either a value or nested extensions, not both and not neither. */
static void check_extension(vctx *c, json_t *ext)
{
    const char *k;
    json_t *val;
    int nvalue = 0;
    json_object_foreach(ext, k, val)
    {
        if (strncmp(k, "value", 5) == 0 && isupper((unsigned char)k[5]))
            nvalue++;
    }
    if ((nvalue > 0) == (json_object_get(ext, "extension") != NULL))
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
              "ext-1: an extension has either a value[x] or nested extensions, not both");
}

static void check_value(vctx *c, const velem *e, const char *t, json_t *val)
{
    if (c->depth >= MAX_DEPTH) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "nested more than %d levels deep",
              MAX_DEPTH);
        return;
    }
    c->depth++;
    if (is_primitive(t)) {
        if (check_primitive(c, t, val))
            check_binding(c, e, t, val);
    } else if (strcmp(t, "Resource") == 0) {
        check_resource(c, val);
    } else {
        const velem *holder = kids_holder(c->v, e, t);
        if (holder == NULL) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_NOT_SUPPORTED,
                  "no definition of type %s is loaded", t);
        } else {
            check_object(c, holder, val, 0);
            if (json_is_object(val)) {
                check_binding(c, e, t, val);
                if (strcmp(t, "Reference") == 0)
                    check_reference(c, e, val);
                else if (strcmp(t, "Extension") == 0)
                    check_extension(c, val);
            }
        }
    }
    check_fixed(c, e, val);
    if (json_is_object(val))
        check_invariants(c, e, val);
    c->depth--;
}

/* Which slice of `e` an item belongs to (its discriminator child equals the slice's fixed
 * or pattern value), or -1. */
static int slice_of(const velem *e, json_t *item)
{
    json_t *have = json_object_get(item, e->disc_path);
    if (have == NULL)
        return -1;
    for (size_t s = 0; s < e->nslices; s++) {
        const velem *sl = e->slices[s];
        for (size_t k = 0; k < sl->nkids; k++) {
            const velem *kid = sl->kids[k];
            if (strcmp(kid->name, e->disc_path) != 0)
                continue;
            if ((kid->fixed != NULL && json_equal(have, kid->fixed)) ||
                (kid->pattern != NULL && pattern_match(have, kid->pattern)))
                return (int)s;
        }
    }
    return -1;
}

static void slice_description(const velem *sl, const char *disc, char *out, size_t size)
{
    out[0] = '\0';
    for (size_t k = 0; k < sl->nkids; k++) {
        json_t *want = sl->kids[k]->fixed ? sl->kids[k]->fixed : sl->kids[k]->pattern;
        if (strcmp(sl->kids[k]->name, disc) == 0 && json_is_string(want))
            snprintf(out, size, " (%s %s)", disc, json_string_value(want));
    }
}

/* A primitive's value may be null in an array when its "_name" twin carries data. */
static int null_allowed(const char *t, json_t *under, size_t i)
{
    return is_primitive(t) && json_is_object(json_array_get(under, i));
}

/* Checks one member's value (one value, or an array of them); returns how many. */
static size_t check_member(vctx *c, const velem *e, const char *t, json_t *val, json_t *under)
{
    size_t count[16] = {0};
    size_t i;
    json_t *item;

    if (e->max == 1) {
        if (json_is_array(val)) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
                  "must be a single value, not an array (max 1)");
            return 1;
        }
        if (json_is_null(val)) {
            if (!(is_primitive(t) && json_is_object(under)))
                issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "null is not a FHIR value");
            return 1;
        }
        check_value(c, e, t, val);
        return 1;
    }
    if (!json_is_array(val)) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "must be a JSON array (it repeats)");
        return 1;
    }
    if (json_array_size(val) == 0) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
              "an array must not be empty: leave the element out");
        return 0;
    }
    json_array_foreach(val, i, item)
    {
        size_t saved = xpush(c, "[%zu]", i);
        const velem *node = e;
        if (json_is_null(item)) {
            if (!null_allowed(t, under, i))
                issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "null is not a FHIR value");
        } else {
            if (e->nslices > 0 && json_is_object(item)) {
                int s = slice_of(e, item);
                if (s >= 0) {
                    node = e->slices[s];
                    if ((size_t)s < sizeof(count) / sizeof(count[0]))
                        count[s]++;
                }
            }
            check_value(c, node, t, item);
        }
        xpop(c, saved);
    }
    for (size_t s = 0; s < e->nslices && s < sizeof(count) / sizeof(count[0]); s++) {
        const velem *sl = e->slices[s];
        char what[160];
        slice_description(sl, e->disc_path, what, sizeof(what));
        if ((int)count[s] < sl->min)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_REQUIRED,
                  "slice %s: at least %d required%s, found %zu", sl->slice_name, sl->min, what,
                  count[s]);
        else if (sl->max >= 0 && count[s] > (size_t)sl->max)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
                  "slice %s: at most %d allowed%s, found %zu", sl->slice_name, sl->max, what,
                  count[s]);
    }
    return json_array_size(val);
}

/* "_name": the id and extensions of a primitive (or of each item of a primitive array). */
static size_t check_underscore(vctx *c, const velem *e, json_t *val)
{
    const vdef *element = find_def(c->v, "Element");
    size_t i;
    json_t *item;

    if (element == NULL)
        return 0;
    if (e->max != 1 && json_is_array(val)) {
        json_array_foreach(val, i, item)
        {
            size_t saved = xpush(c, "[%zu]", i);
            if (!json_is_null(item))
                check_object(c, element->root, item, 0);
            xpop(c, saved);
        }
        return json_array_size(val);
    }
    if (json_is_array(val)) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "must be a single value, not an array");
        return 1;
    }
    check_object(c, element->root, val, 0);
    return 1;
}

static void check_object(vctx *c, const velem *holder, json_t *obj, int is_root)
{
    struct {
        size_t n, under;
        const char *choice_key;
    } seen[MAX_KIDS];
    const char *key;
    json_t *val;

    if (!json_is_object(obj)) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "must be a JSON object");
        return;
    }
    if (json_object_size(obj) == 0) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_VALUE,
              "ele-1: an element must have a value or children (empty object)");
        return;
    }
    memset(seen, 0, sizeof(seen));
    json_object_foreach(obj, key, val)
    {
        int under = key[0] == '_';
        const char *name = under ? key + 1 : key;
        const char *t = NULL;
        const velem *kid;
        size_t k, saved;
        char q[80];

        if (is_root && strcmp(key, "resourceType") == 0)
            continue;
        kid = find_kid(holder, name, &t);
        saved = xpush(c, ".%s", name);
        if (kid == NULL || (under && !is_primitive(t))) {
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "unknown element '%s'",
                  quote(q, sizeof(q), key));
            xpop(c, saved);
            continue;
        }
        for (k = 0; k < holder->nkids && holder->kids[k] != kid; k++)
            ;
        if (under) {
            seen[k].under = check_underscore(c, kid, val);
        } else {
            if (kid->choice && seen[k].choice_key != NULL)
                issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
                      "only one of %s[x] may be present (also %s)", kid->name, seen[k].choice_key);
            seen[k].choice_key = key;
            {
                char twin[128];
                snprintf(twin, sizeof(twin), "_%s", key);
                seen[k].n += check_member(c, kid, t, val, json_object_get(obj, twin));
            }
        }
        xpop(c, saved);
    }
    for (size_t k = 0; k < holder->nkids; k++) {
        const velem *kid = holder->kids[k];
        size_t n = seen[k].n > seen[k].under ? seen[k].n : seen[k].under;
        if ((int)n < kid->min) {
            size_t saved = xpush(c, ".%s", kid->name);
            if (n == 0)
                issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_REQUIRED,
                      "missing required element %s%s (min %d)", kid->name, kid->choice ? "[x]" : "",
                      kid->min);
            else
                issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_REQUIRED, "at least %d required, found %zu",
                      kid->min, n);
            xpop(c, saved);
        } else if (kid->max > 1 && n > (size_t)kid->max) {
            size_t saved = xpush(c, ".%s", kid->name);
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "at most %d allowed, found %zu",
                  kid->max, n);
            xpop(c, saved);
        }
    }
}

/* The Bundle invariants of base R4 (bdl-1..5, bdl-7, bdl-8). */
static void check_bundle(vctx *c, json_t *b)
{
    const char *type = member_str(b, "type");
    json_t *entries = json_object_get(b, "entry");
    int searchset, history, request_needed, response_allowed;
    size_t i, saved;
    json_t *entry;

    if (type == NULL)
        return;
    searchset = strcmp(type, "searchset") == 0;
    history = strcmp(type, "history") == 0;
    request_needed = strcmp(type, "batch") == 0 || strcmp(type, "transaction") == 0 || history;
    response_allowed =
        strcmp(type, "batch-response") == 0 || strcmp(type, "transaction-response") == 0 || history;
    if (json_object_get(b, "total") != NULL && !searchset && !history) {
        saved = xpush(c, ".total");
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
              "bdl-1: total only when the Bundle is a search set or history");
        xpop(c, saved);
    }
    if (!json_is_array(entries))
        return;
    json_array_foreach(entries, i, entry)
    {
        const char *full = member_str(entry, "fullUrl");
        if (!json_is_object(entry))
            continue;
        saved = xpush(c, ".entry[%zu]", i);
        if (json_object_get(entry, "search") != NULL && !searchset)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "bdl-2: entry.search only when the Bundle is a search set");
        if (json_object_get(entry, "request") == NULL && request_needed)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "bdl-3: every entry of a %s Bundle needs a request", type);
        if (json_object_get(entry, "response") != NULL && !response_allowed)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "bdl-4: entry.response only in a batch-response, transaction-response or "
                  "history Bundle");
        if (json_object_get(entry, "resource") == NULL &&
            json_object_get(entry, "request") == NULL && json_object_get(entry, "response") == NULL)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "bdl-5: an entry needs a resource, a request or a response");
        if (full != NULL && strstr(full, "/_history/") != NULL)
            issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                  "bdl-8: fullUrl must not be a version-specific reference");
        if (full != NULL) {
            for (size_t j = 0; j < i; j++) {
                const char *other = member_str(json_array_get(entries, j), "fullUrl");
                if (other != NULL && strcmp(other, full) == 0) {
                    issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_INVARIANT,
                          "bdl-7: fullUrl repeats entry[%zu]'s; each must be unique", j);
                    break;
                }
            }
        }
        xpop(c, saved);
    }
}

static void check_resource(vctx *c, json_t *res)
{
    const char *type;
    const vdef *d;
    const vprof *p;
    json_t *saved_bundle = c->bundle, *saved_container = c->container;
    char q[80];

    if (!json_is_object(res)) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE, "a resource must be a JSON object");
        return;
    }
    type = member_str(res, "resourceType");
    if (type == NULL) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_STRUCTURE,
              "resourceType is missing (or not a string)");
        return;
    }
    d = find_def(c->v, type);
    if (d == NULL || !d->resource) {
        issue(c, SPB_SEVERITY_ERROR, SPB_ISSUE_NOT_SUPPORTED,
              "resource type '%s' is not covered by the loaded definitions",
              quote(q, sizeof(q), type));
        return;
    }
    p = (c->flags & SPB_VALIDATE_BASE_ONLY) ? NULL : find_prof(c->v, type);
    if (strcmp(type, "Bundle") == 0)
        c->bundle = res;
    c->container = res;
    check_object(c, p ? p->root : d->root, res, 1);
    check_invariants(c, p ? p->root : d->root, res);
    if (strcmp(type, "Bundle") == 0)
        check_bundle(c, res);
    c->bundle = saved_bundle;
    c->container = saved_container;
}

/* ------------------------------------------------------------------ public: validate */

int spb_validate(const spb_validator *v, json_t *resource, spb_validation_report *rep, spb_err *err)
{
    return spb_validate_flags(v, resource, 0, rep, err);
}

int spb_validate_flags(const spb_validator *v, json_t *resource, unsigned flags,
                       spb_validation_report *rep, spb_err *err)
{
    vctx c;
    const char *type = member_str(resource, "resourceType");

    if (v == NULL || resource == NULL)
        return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION,
                           "spb_validate: no validator or input");
    memset(&c, 0, sizeof(c));
    c.v = v;
    c.flags = flags;
    c.rep = rep;
    c.err = err;
    if (rep != NULL) {
        memset(rep, 0, sizeof(*rep));
        snprintf(rep->resource_type, sizeof(rep->resource_type), "%s", type ? type : "");
    }
    if (type != NULL)
        xpush(&c, "%s", type);
    check_resource(&c, resource);
    return c.have_error ? SPB_EINVALID : 0;
}

const char *spb_severity_name(spb_severity s)
{
    switch (s) {
    case SPB_SEVERITY_FATAL:
        return "fatal";
    case SPB_SEVERITY_ERROR:
        return "error";
    case SPB_SEVERITY_WARNING:
        return "warning";
    default:
        return "information";
    }
}

json_t *spb_validation_outcome(const spb_validation_report *rep, const char *source)
{
    json_t *issues = json_array();
    char diag[SPB_VALIDATION_MSG_MAX + 300];

    for (size_t i = 0; i < rep->nissues; i++) {
        const spb_validation_issue *is = &rep->issues[i];
        json_t *o = json_object();
        snprintf(diag, sizeof(diag), "%s%s%s", source ? source : "", source ? ": " : "",
                 is->message);
        json_object_set_new(o, "severity", json_string(spb_severity_name(is->severity)));
        json_object_set_new(o, "code", json_string(spb_issue_name(is->code)));
        json_object_set_new(o, "details", json_pack("{s:s}", "text", is->message));
        json_object_set_new(o, "diagnostics", json_string(diag));
        if (is->expression[0] != '\0')
            json_object_set_new(o, "expression", json_pack("[s]", is->expression));
        json_array_append_new(issues, o);
    }
    if (rep->dropped > 0) {
        snprintf(diag, sizeof(diag), "%zu more issues were found and not listed", rep->dropped);
        json_array_append_new(issues, json_pack("{s:s, s:s, s:{s:s}}", "severity", "information",
                                                "code", "informational", "details", "text", diag));
    }
    if (rep->nissues == 0 && rep->dropped == 0) {
        snprintf(diag, sizeof(diag), "%s%sthe %s conforms to the loaded definitions",
                 source ? source : "", source ? ": " : "",
                 rep->resource_type[0] ? rep->resource_type : "resource");
        json_array_append_new(issues, json_pack("{s:s, s:s, s:{s:s}}", "severity", "information",
                                                "code", "informational", "details", "text", diag));
    }
    return json_pack("{s:s, s:o}", "resourceType", "OperationOutcome", "issue", issues);
}

/* ------------------------------------------------------------------ loading */

typedef struct loader {
    spb_validator *v;
    spb_err *err;
    const char *file; /* for messages */
} loader;

static int load_fail(loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int load_fail(loader *ld, const char *fmt, ...)
{
    char msg[SPB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spb_err_set(ld->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg);
    spb_err_where(ld->err, ld->file, 0, 0, NULL);
    return SPB_ECONFIG;
}

static int nomem(loader *ld)
{
    return spb_err_set(ld->err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
}

static int parse_max(const char *s, int *out)
{
    char *end;
    long n;
    if (s == NULL)
        return -1;
    if (strcmp(s, "*") == 0) {
        *out = -1;
        return 0;
    }
    n = strtol(s, &end, 10);
    if (end == s || *end != '\0' || n < 0 || n > 1000000)
        return -1;
    *out = (int)n;
    return 0;
}

static int add_vset_code(loader *ld, vset *vs, size_t *cap, const char *system, const char *code)
{
    if (code == NULL)
        return load_fail(ld, "value set %s: a concept has no code", vs->url);
    if (vs->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        const char **s = arena_alloc(ld->v, ncap * sizeof(*s));
        const char **k = arena_alloc(ld->v, ncap * sizeof(*k));
        if (s == NULL || k == NULL)
            return nomem(ld);
        if (vs->n > 0) {
            memcpy(s, vs->systems, vs->n * sizeof(*s));
            memcpy(k, vs->codes, vs->n * sizeof(*k));
        }
        vs->systems = s;
        vs->codes = k;
        *cap = ncap;
    }
    vs->systems[vs->n] = system ? system : "";
    vs->codes[vs->n] = code;
    vs->n++;
    return 0;
}

static int add_contains(loader *ld, vset *vs, size_t *cap, json_t *contains)
{
    size_t i;
    json_t *c;
    json_array_foreach(contains, i, c)
    {
        int rc;
        if (member_str(c, "code") != NULL) {
            rc = add_vset_code(ld, vs, cap, member_str(c, "system"), member_str(c, "code"));
            if (rc < 0)
                return rc;
        }
        rc = add_contains(ld, vs, cap, json_object_get(c, "contains"));
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Adds one ValueSet to ld->v->vsets (grown by doubling; `cap` is its capacity). */
static int load_valueset(loader *ld, json_t *doc, size_t *cap)
{
    vset vs;
    size_t ccap = 0, i, j;
    json_t *inc, *concept;
    int rc;

    memset(&vs, 0, sizeof(vs));
    if (strcmp(member_or(doc, "resourceType", ""), "ValueSet") != 0)
        return load_fail(ld, "not a ValueSet");
    vs.url = member_str(doc, "url");
    if (vs.url == NULL)
        return load_fail(ld, "the ValueSet has no url");
    if (find_vset(ld->v, vs.url) != NULL)
        return load_fail(ld, "value set %s is defined twice", vs.url);
    if (json_object_get(json_object_get(doc, "compose"), "exclude") != NULL)
        return load_fail(ld, "value set %s: compose.exclude is not supported; list the codes",
                         vs.url);
    json_array_foreach(json_object_get(json_object_get(doc, "compose"), "include"), i, inc)
    {
        json_t *concepts = json_object_get(inc, "concept");
        if (!json_is_array(concepts)) {
            if (json_object_get(doc, "expansion") != NULL)
                continue;
            return load_fail(ld,
                             "value set %s: every compose.include must list its concepts (or "
                             "the ValueSet must carry an expansion)",
                             vs.url);
        }
        json_array_foreach(concepts, j, concept)
        {
            rc = add_vset_code(ld, &vs, &ccap, member_str(inc, "system"),
                               member_str(concept, "code"));
            if (rc < 0)
                return rc;
        }
    }
    rc = add_contains(ld, &vs, &ccap,
                      json_object_get(json_object_get(doc, "expansion"), "contains"));
    if (rc < 0)
        return rc;
    if (vs.n == 0)
        return load_fail(ld, "value set %s lists no codes", vs.url);
    if (ld->v->nvsets == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        vset *n = realloc(ld->v->vsets, ncap * sizeof(*n));
        if (n == NULL)
            return nomem(ld);
        *cap = ncap;
        ld->v->vsets = n;
    }
    ld->v->vsets[ld->v->nvsets++] = vs;
    return 0;
}

/* Resource type named by a type's targetProfile: a loaded profile's type, or the last
 * segment of an HL7 base definition URL. */
static const char *target_type(loader *ld, const char *url)
{
    static const char base[] = "http://hl7.org/fhir/StructureDefinition/";
    for (size_t i = 0; i < ld->v->nprof_urls; i++) {
        if (strcmp(ld->v->prof_urls[i], url) == 0)
            return ld->v->prof_types[i];
    }
    if (strncmp(url, base, sizeof(base) - 1) == 0 && isupper((unsigned char)url[sizeof(base) - 1]))
        return url + sizeof(base) - 1;
    return NULL;
}

static int load_types(loader *ld, json_t *types, const vtype **out, size_t *nout)
{
    size_t n = json_array_size(types), i, j;
    vtype *ts;
    json_t *t, *tp;

    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    ts = arena_alloc(ld->v, n * sizeof(*ts));
    if (ts == NULL)
        return nomem(ld);
    json_array_foreach(types, i, t)
    {
        json_t *profiles = json_object_get(t, "targetProfile");
        ts[i].code = member_str(t, "code");
        if (ts[i].code == NULL)
            return load_fail(ld, "a type has no code");
        if (json_array_size(profiles) > 0) {
            ts[i].targets = arena_alloc(ld->v, json_array_size(profiles) * sizeof(char *));
            if (ts[i].targets == NULL)
                return nomem(ld);
            json_array_foreach(profiles, j, tp)
            {
                const char *rt = json_is_string(tp) ? target_type(ld, json_string_value(tp)) : NULL;
                if (rt == NULL)
                    return load_fail(ld,
                                     "target profile %s is not a base definition or a loaded "
                                     "profile",
                                     json_is_string(tp) ? json_string_value(tp) : "(not a string)");
                ts[i].targets[ts[i].ntargets++] = rt;
            }
        }
    }
    *out = ts;
    *nout = n;
    return 0;
}

static int set_names(loader *ld, velem *e, const char *seg)
{
    size_t len = strlen(seg);
    e->seg = seg;
    e->name = seg;
    e->choice = len > 3 && strcmp(seg + len - 3, "[x]") == 0;
    if (e->choice) {
        char *stem = arena_alloc(ld->v, len - 2);
        if (stem == NULL)
            return nomem(ld);
        memcpy(stem, seg, len - 3);
        stem[len - 3] = '\0';
        e->name = stem;
    }
    return 0;
}

/* The child of `parent` whose defined segment is `seg` ("value[x]" for a choice). */
static velem *kid_by_seg(const velem *parent, const char *seg, size_t len)
{
    for (size_t i = 0; i < parent->nkids; i++) {
        if (strlen(parent->kids[i]->seg) == len && strncmp(parent->kids[i]->seg, seg, len) == 0)
            return parent->kids[i];
    }
    return NULL;
}

/* Walks a dotted path (no slices) from `root`, whose own segment is the first one. */
static velem *elem_at(const velem *root, const char *path)
{
    const char *p = strchr(path, '.');
    const velem *cur = root;
    while (p != NULL && cur != NULL) {
        const char *seg = p + 1;
        p = strchr(seg, '.');
        cur = kid_by_seg(cur, seg, p ? (size_t)(p - seg) : strlen(seg));
    }
    return (velem *)cur;
}

/* A base binding the definitions mark as not checkable here (its value set cannot be
 * listed offline: mimetypes, currencies). */
static int binding_unchecked(json_t *binding)
{
    size_t i;
    json_t *ext;
    json_array_foreach(json_object_get(binding, "extension"), i, ext)
    {
        if (strcmp(member_or(ext, "url", ""), UNCHECKED_EXT) == 0)
            return 1;
    }
    return 0;
}

static int load_base(loader *ld, json_t *sd, vdef *def)
{
    json_t *elements = json_object_get(json_object_get(sd, "snapshot"), "element");
    size_t i;
    json_t *el;
    int rc;

    def->type = member_str(sd, "type");
    def->url = member_str(sd, "url");
    def->resource = strcmp(member_or(sd, "kind", ""), "resource") == 0;
    if (def->type == NULL || def->url == NULL || !json_is_array(elements))
        return load_fail(ld, "a base StructureDefinition needs type, url and snapshot.element");
    json_array_foreach(elements, i, el)
    {
        const char *path = member_str(el, "path");
        const char *dot;
        json_t *binding = json_object_get(el, "binding");
        velem *e = arena_alloc(ld->v, sizeof(*e));
        if (e == NULL)
            return nomem(ld);
        if (path == NULL)
            return load_fail(ld, "%s: an element has no path", def->type);
        e->min = (int)json_integer_value(json_object_get(el, "min"));
        if (parse_max(member_str(el, "max"), &e->max) < 0)
            return load_fail(ld, "%s: bad max", path);
        rc = load_types(ld, json_object_get(el, "type"), &e->types, &e->ntypes);
        if (rc < 0)
            return rc;
        e->content_ref = member_str(el, "contentReference");
        if (strcmp(member_or(binding, "strength", ""), "required") == 0 &&
            !binding_unchecked(binding)) {
            e->vs = find_vset(ld->v, member_or(binding, "valueSet", ""));
            if (e->vs == NULL)
                return load_fail(ld,
                                 "%s: required binding to %s, which no file in valuesets/ "
                                 "defines",
                                 path, member_or(binding, "valueSet", "(none)"));
        }
        if (i == 0) {
            if (strcmp(path, def->type) != 0)
                return load_fail(ld, "%s: the first element must be the root", def->type);
            rc = set_names(ld, e, path);
            if (rc < 0)
                return rc;
            def->root = e;
            continue;
        }
        dot = strrchr(path, '.');
        if (dot == NULL || strncmp(path, def->type, strlen(def->type)) != 0)
            return load_fail(ld, "%s: element %s is outside the type", def->type, path);
        rc = set_names(ld, e, dot + 1);
        if (rc < 0)
            return rc;
        {
            char parent_path[256];
            velem *parent;
            snprintf(parent_path, sizeof(parent_path), "%.*s", (int)(dot - path), path);
            parent = elem_at(def->root, parent_path);
            if (parent == NULL)
                return load_fail(ld, "%s: element %s comes before its parent", def->type, path);
            if (parent->nkids >= MAX_KIDS)
                return load_fail(ld, "%s: more than %d children", parent_path, MAX_KIDS);
            if (arena_push(ld->v, (void ***)&parent->kids, &parent->nkids, e) < 0)
                return nomem(ld);
            parent->own_kids = 1;
        }
    }
    return 0;
}

static int resolve_refs(loader *ld, const vdef *def, velem *e)
{
    if (e->content_ref != NULL) {
        e->ref = e->content_ref[0] == '#' ? elem_at(def->root, e->content_ref + 1) : NULL;
        if (e->ref == NULL)
            return load_fail(ld, "%s: contentReference %s does not resolve", def->type,
                             e->content_ref);
    }
    for (size_t i = 0; i < e->nkids; i++) {
        int rc = resolve_refs(ld, def, e->kids[i]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Deep copy of an element and its own children (not slices: a slice starts unsliced). */
static velem *clone_elem(loader *ld, const velem *src)
{
    velem *e = arena_alloc(ld->v, sizeof(*e));
    if (e == NULL)
        return NULL;
    *e = *src;
    e->kids = NULL;
    e->nkids = 0;
    e->slices = NULL;
    e->nslices = 0;
    e->slice_name = NULL;
    e->disc_path = NULL;
    for (size_t i = 0; i < src->nkids; i++) {
        velem *k = clone_elem(ld, src->kids[i]);
        if (k == NULL || arena_push(ld->v, (void ***)&e->kids, &e->nkids, k) < 0)
            return NULL;
    }
    return e;
}

/* Gives a datatype element its own copy of the datatype's children, so a profile can
 * constrain them for this element only. */
static int unfold(loader *ld, velem *e, const char *where)
{
    const vdef *d;
    if (e->own_kids || e->ref != NULL)
        return 0;
    if (e->ntypes != 1)
        return load_fail(ld, "%s: cannot constrain inside an element of %zu types", where,
                         e->ntypes);
    d = find_def(ld->v, e->types[0].code);
    if (d == NULL)
        return load_fail(ld, "%s: type %s has no loaded definition", where, e->types[0].code);
    for (size_t i = 0; i < d->root->nkids; i++) {
        velem *k = clone_elem(ld, d->root->kids[i]);
        if (k == NULL || arena_push(ld->v, (void ***)&e->kids, &e->nkids, k) < 0)
            return nomem(ld);
    }
    e->own_kids = 1;
    return 0;
}

/* Finds (creating slices and unfolding datatypes as needed) the element a differential
 * element id names: "Patient.identifier:nhsNumber.system". */
static int locate(loader *ld, velem *root, const char *type, const char *id, velem **out)
{
    const char *seg = id;
    velem *cur = root;
    int first = 1;

    while (seg != NULL) {
        const char *dot = strchr(seg, '.');
        size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
        const char *colon = memchr(seg, ':', len);
        size_t nlen = colon ? (size_t)(colon - seg) : len;
        velem *kid;
        int rc;

        if (first) {
            if (colon != NULL || strlen(type) != len || strncmp(seg, type, len) != 0)
                return load_fail(ld, "element %s does not start with the profile's type %s", id,
                                 type);
            first = 0;
            seg = dot ? dot + 1 : NULL;
            continue;
        }
        rc = unfold(ld, cur, id);
        if (rc < 0)
            return rc;
        kid = kid_by_seg(cur, seg, nlen);
        if (kid == NULL)
            return load_fail(ld, "element %s: %s has no element %.*s in the base definition", id,
                             cur->seg, (int)nlen, seg);
        if (colon != NULL) {
            size_t slen = len - nlen - 1;
            velem *found = NULL;
            for (size_t i = 0; i < kid->nslices; i++) {
                if (strlen(kid->slices[i]->slice_name) == slen &&
                    strncmp(kid->slices[i]->slice_name, colon + 1, slen) == 0)
                    found = kid->slices[i];
            }
            if (found == NULL) {
                char *name = arena_alloc(ld->v, slen + 1);
                if (name == NULL)
                    return nomem(ld);
                memcpy(name, colon + 1, slen);
                name[slen] = '\0';
                found = clone_elem(ld, kid);
                if (found == NULL)
                    return nomem(ld);
                found->slice_name = name;
                found->min = 0; /* a slice's own cardinality comes from its definition */
                if (kid->nslices >= 16)
                    return load_fail(ld, "element %s: more than 16 slices", id);
                if (arena_push(ld->v, (void ***)&kid->slices, &kid->nslices, found) < 0)
                    return nomem(ld);
            }
            kid = found;
        }
        cur = kid;
        seg = dot ? dot + 1 : NULL;
    }
    *out = cur;
    return 0;
}

static int type_has(const velem *e, const char *code)
{
    for (size_t i = 0; i < e->ntypes; i++) {
        if (strcmp(e->types[i].code, code) == 0)
            return 1;
    }
    return 0;
}

/* Applies one differential element; refuses what the walk would not enforce. */
static int apply_diff(loader *ld, const char *type, velem *root, json_t *el)
{
    static const char *const ignored[] = {
        "id",    "path",        "sliceName", "short", "definition", "comment",  "requirements",
        "alias", "mustSupport", "isSummary", "label", "mapping",    "extension"};
    const char *id = member_or(el, "id", member_str(el, "path"));
    const char *key;
    json_t *val;
    velem *e = NULL;
    int rc;

    if (id == NULL)
        return load_fail(ld, "a differential element has neither id nor path");
    rc = locate(ld, root, type, id, &e);
    if (rc < 0)
        return rc;
    json_object_foreach(el, key, val)
    {
        int skip = 0;
        for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++)
            skip |= strcmp(key, ignored[i]) == 0;
        if (skip)
            continue;
        if (strcmp(key, "min") == 0) {
            int min = (int)json_integer_value(val);
            if (!json_is_integer(val) || min < e->min)
                return load_fail(ld, "%s: min must be an integer of at least the base's %d", id,
                                 e->min);
            e->min = min;
        } else if (strcmp(key, "max") == 0) {
            int max;
            if (parse_max(json_string_value(val), &max) < 0 ||
                (e->max >= 0 && (max < 0 || max > e->max)))
                return load_fail(ld, "%s: max must not exceed the base's", id);
            e->max = max;
        } else if (strcmp(key, "type") == 0) {
            const vtype *types;
            size_t ntypes;
            rc = load_types(ld, val, &types, &ntypes);
            if (rc < 0)
                return rc;
            for (size_t i = 0; i < ntypes; i++) {
                const vtype *base = NULL;
                for (size_t j = 0; j < e->ntypes; j++) {
                    if (strcmp(e->types[j].code, types[i].code) == 0)
                        base = &e->types[j];
                }
                if (base == NULL)
                    return load_fail(ld, "%s: type %s is not allowed by the base", id,
                                     types[i].code);
                for (size_t k = 0; k < types[i].ntargets && base->ntargets > 0; k++) {
                    int ok = 0;
                    for (size_t m = 0; m < base->ntargets; m++)
                        ok |= strcmp(base->targets[m], types[i].targets[k]) == 0 ||
                              strcmp(base->targets[m], "Resource") == 0;
                    if (!ok)
                        return load_fail(ld, "%s: target %s is not allowed by the base", id,
                                         types[i].targets[k]);
                }
            }
            e->types = types;
            e->ntypes = ntypes;
        } else if (strcmp(key, "binding") == 0) {
            const char *strength = member_or(val, "strength", "");
            if (strcmp(strength, "required") == 0) {
                e->vs = find_vset(ld->v, member_or(val, "valueSet", ""));
                if (e->vs == NULL)
                    return load_fail(ld, "%s: binding to %s, which no file in valuesets/ defines",
                                     id, member_or(val, "valueSet", "(none)"));
                if (!type_has(e, "code") && !type_has(e, "Coding") &&
                    !type_has(e, "CodeableConcept"))
                    return load_fail(ld, "%s: a required binding needs a coded element", id);
            } else if (strcmp(strength, "extensible") != 0 && strcmp(strength, "preferred") != 0 &&
                       strcmp(strength, "example") != 0) {
                return load_fail(ld, "%s: unknown binding strength", id);
            }
        } else if (strncmp(key, "fixed", 5) == 0 || strncmp(key, "pattern", 7) == 0) {
            int fixed = key[0] == 'f';
            const char *suffix = key + (fixed ? 5 : 7);
            int ok = 0;
            for (size_t i = 0; i < e->ntypes; i++) {
                const char *code = e->types[i].code;
                ok |= suffix[0] == toupper((unsigned char)code[0]) &&
                      strcmp(suffix + 1, code + 1) == 0;
            }
            if (!ok)
                return load_fail(ld, "%s: %s does not match the element's type", id, key);
            if (fixed)
                e->fixed = val;
            else
                e->pattern = val;
        } else if (strcmp(key, "slicing") == 0) {
            json_t *disc = json_object_get(val, "discriminator");
            json_t *d0 = json_array_get(disc, 0);
            const char *dtype = member_or(d0, "type", "");
            const char *dpath = member_or(d0, "path", "");
            if (json_array_size(disc) != 1 ||
                (strcmp(dtype, "value") != 0 && strcmp(dtype, "pattern") != 0) ||
                strchr(dpath, '.') != NULL || dpath[0] == '\0')
                return load_fail(ld,
                                 "%s: only slicing on one value or pattern discriminator "
                                 "naming a direct child is supported",
                                 id);
            if (strcmp(member_or(val, "rules", "open"), "open") != 0)
                return load_fail(ld, "%s: only open slicing is supported", id);
            if (e->max == 1)
                return load_fail(ld, "%s: slicing needs a repeating element", id);
            e->disc_path = dpath;
        } else if (strcmp(key, "constraint") == 0) {
            size_t i;
            json_t *con;
            json_array_foreach(val, i, con)
            {
                const char *ckey = member_or(con, "key", "");
                const char *sev = member_or(con, "severity", "error");
                const invariant *inv = NULL;
                vinv *grown;
                for (size_t k = 0; k < sizeof(invariants) / sizeof(invariants[0]); k++) {
                    if (strcmp(invariants[k].key, ckey) == 0)
                        inv = &invariants[k];
                }
                if (inv == NULL)
                    return load_fail(ld,
                                     "%s: constraint %s is not implemented by the built-in "
                                     "validator (fhir/validator.c invariants[])",
                                     id, ckey);
                if (!(e == root ? strcmp(type, inv->context) == 0
                                : e->ntypes == 1 && strcmp(e->types[0].code, inv->context) == 0))
                    return load_fail(ld, "%s: constraint %s applies to %s elements only", id, ckey,
                                     inv->context);
                grown = arena_alloc(ld->v, (e->ninvs + 1) * sizeof(*grown));
                if (grown == NULL)
                    return nomem(ld);
                if (e->ninvs > 0)
                    memcpy(grown, e->invs, e->ninvs * sizeof(*grown));
                grown[e->ninvs].inv = inv;
                grown[e->ninvs].human = member_or(con, "human", ckey);
                grown[e->ninvs].severity =
                    strcmp(sev, "warning") == 0 ? SPB_SEVERITY_WARNING : SPB_SEVERITY_ERROR;
                e->invs = grown;
                e->ninvs++;
            }
        } else {
            return load_fail(ld, "%s: '%s' is not supported by the built-in validator", id, key);
        }
    }
    return 0;
}

/* Every slice must be recognisable: its discriminator child has a fixed or pattern value. */
static int check_slices(loader *ld, const velem *e)
{
    if (e->nslices > 0 && e->disc_path == NULL)
        return load_fail(ld, "element %s has slices but no slicing discriminator", e->seg);
    for (size_t s = 0; s < e->nslices; s++) {
        int ok = 0;
        for (size_t k = 0; k < e->slices[s]->nkids; k++) {
            const velem *kid = e->slices[s]->kids[k];
            ok |= strcmp(kid->name, e->disc_path) == 0 && (kid->fixed || kid->pattern);
        }
        if (!ok)
            return load_fail(ld, "slice %s: its %s needs a fixed or pattern value",
                             e->slices[s]->slice_name, e->disc_path);
        if (check_slices(ld, e->slices[s]) < 0)
            return SPB_ECONFIG;
    }
    for (size_t i = 0; i < e->nkids; i++) {
        if (check_slices(ld, e->kids[i]) < 0)
            return SPB_ECONFIG;
    }
    return 0;
}

static int load_profile(loader *ld, json_t *sd, vprof *p)
{
    static const char base[] = "http://hl7.org/fhir/StructureDefinition/";
    const char *based = member_or(sd, "baseDefinition", "");
    const vdef *d;
    size_t i;
    json_t *el;
    int rc;

    p->url = member_str(sd, "url");
    p->type = member_str(sd, "type");
    if (p->url == NULL || p->type == NULL)
        return load_fail(ld, "a profile needs url and type");
    d = find_def(ld->v, p->type);
    if (d == NULL || !d->resource)
        return load_fail(ld, "profile %s: no base definition of %s is loaded", p->url, p->type);
    if (strncmp(based, base, sizeof(base) - 1) != 0 ||
        strcmp(based + sizeof(base) - 1, p->type) != 0)
        return load_fail(ld,
                         "profile %s: baseDefinition must be %s%s (profiles on profiles are not "
                         "supported)",
                         p->url, base, p->type);
    if (find_prof(ld->v, p->type) != NULL)
        return load_fail(ld, "profile %s: a second profile for %s", p->url, p->type);
    p->root = clone_elem(ld, d->root);
    if (p->root == NULL)
        return nomem(ld);
    json_array_foreach(json_object_get(json_object_get(sd, "differential"), "element"), i, el)
    {
        rc = apply_diff(ld, p->type, p->root, el);
        if (rc < 0)
            return rc;
    }
    return check_slices(ld, p->root);
}

static int is_json_name(const struct dirent *de)
{
    size_t len = strlen(de->d_name);
    return de->d_name[0] != '.' && len > 5 && strcmp(de->d_name + len - 5, ".json") == 0;
}

/* Loads every *.json in dir (sorted by name) into v->docs; each element of `out` gets
 * the document, with its file name in "name". */
static int load_dir(loader *ld, const char *dir, json_t *out)
{
    struct dirent **names = NULL;
    int n = scandir(dir, &names, is_json_name, alphasort);
    int rc = 0;

    if (n < 0) {
        ld->file = dir;
        return load_fail(ld, "cannot read the folder");
    }
    for (int i = 0; i < n; i++) {
        char path[1024];
        json_error_t jerr;
        json_t *doc;
        if (rc < 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        doc = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        if (doc == NULL) {
            spb_err_set(ld->err, SPB_ECONFIG, SPB_ISSUE_STRUCTURE, "not valid JSON: %s", jerr.text);
            spb_err_where(ld->err, path, jerr.line, jerr.column, NULL);
            rc = SPB_ECONFIG;
            continue;
        }
        json_array_append_new(ld->v->docs, doc);
        json_array_append_new(out, json_pack("{s:s, s:O}", "name", path, "doc", doc));
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* The resources of a file: the file itself, or a Bundle's entries. */
static void each_resource(json_t *doc, json_t *into, const char *file)
{
    if (strcmp(member_or(doc, "resourceType", ""), "Bundle") == 0) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(doc, "entry"), i, e) json_array_append_new(
            into, json_pack("{s:s, s:O}", "name", file, "doc", json_object_get(e, "resource")));
    } else {
        json_array_append_new(into, json_pack("{s:s, s:O}", "name", file, "doc", doc));
    }
}

int spb_validator_load(spb_validator **out, const char *dir, spb_err *err)
{
    spb_validator *v = calloc(1, sizeof(*v));
    json_t *vs_files = json_array(), *sd_files = json_array(), *sds = json_array();
    json_t *vsets = json_array();
    char sub[1024];
    loader ld;
    size_t vcap = 0, i;
    json_t *item;
    size_t nbase = 0, nprof = 0;
    int rc = SPB_ENOMEM;

    *out = NULL;
    ld.v = v;
    ld.err = err;
    ld.file = NULL;
    if (v == NULL || vs_files == NULL || sd_files == NULL || sds == NULL || vsets == NULL) {
        spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
        goto out;
    }
    v->docs = json_array();
    snprintf(sub, sizeof(sub), "%s/valuesets", dir);
    rc = load_dir(&ld, sub, vs_files);
    if (rc < 0)
        goto out;
    json_array_foreach(vs_files, i, item)
        each_resource(json_object_get(item, "doc"), vsets, member_str(item, "name"));
    json_array_foreach(vsets, i, item)
    {
        ld.file = member_str(item, "name");
        rc = load_valueset(&ld, json_object_get(item, "doc"), &vcap);
        if (rc < 0)
            goto out;
    }
    snprintf(sub, sizeof(sub), "%s/profiles", dir);
    ld.file = NULL;
    rc = load_dir(&ld, sub, sd_files);
    if (rc < 0)
        goto out;
    json_array_foreach(sd_files, i, item)
        each_resource(json_object_get(item, "doc"), sds, member_str(item, "name"));
    /* count, and pre-scan the profiles' url -> type for reference targets */
    json_array_foreach(sds, i, item)
    {
        json_t *sd = json_object_get(item, "doc");
        ld.file = member_str(item, "name");
        if (strcmp(member_or(sd, "resourceType", ""), "StructureDefinition") != 0) {
            rc = load_fail(&ld, "profiles/ holds only StructureDefinitions (or Bundles of them)");
            goto out;
        }
        if (strcmp(member_or(sd, "derivation", ""), "constraint") == 0)
            nprof++;
        else
            nbase++;
    }
    v->defs = calloc(nbase ? nbase : 1, sizeof(*v->defs));
    v->profs = calloc(nprof ? nprof : 1, sizeof(*v->profs));
    v->prof_urls = calloc(nprof ? nprof : 1, sizeof(char *));
    v->prof_types = calloc(nprof ? nprof : 1, sizeof(char *));
    if (v->defs == NULL || v->profs == NULL || v->prof_urls == NULL || v->prof_types == NULL) {
        rc = nomem(&ld);
        goto out;
    }
    json_array_foreach(sds, i, item)
    {
        json_t *sd = json_object_get(item, "doc");
        if (strcmp(member_or(sd, "derivation", ""), "constraint") == 0 &&
            member_str(sd, "url") != NULL && member_str(sd, "type") != NULL) {
            v->prof_urls[v->nprof_urls] = member_str(sd, "url");
            v->prof_types[v->nprof_urls++] = member_str(sd, "type");
        }
    }
    /* base definitions first (datatypes before the resources that use them is not needed:
     * types are looked up by name when walking), then their contentReferences */
    json_array_foreach(sds, i, item)
    {
        json_t *sd = json_object_get(item, "doc");
        ld.file = member_str(item, "name");
        if (strcmp(member_or(sd, "derivation", ""), "constraint") == 0)
            continue;
        if (find_def(v, member_or(sd, "type", "")) != NULL) {
            rc = load_fail(&ld, "type %s is defined twice", member_str(sd, "type"));
            goto out;
        }
        rc = load_base(&ld, sd, &v->defs[v->ndefs]);
        if (rc < 0)
            goto out;
        v->ndefs++;
        rc = resolve_refs(&ld, &v->defs[v->ndefs - 1], v->defs[v->ndefs - 1].root);
        if (rc < 0)
            goto out;
    }
    json_array_foreach(sds, i, item)
    {
        json_t *sd = json_object_get(item, "doc");
        vprof p;
        ld.file = member_str(item, "name");
        if (strcmp(member_or(sd, "derivation", ""), "constraint") != 0)
            continue;
        memset(&p, 0, sizeof(p));
        rc = load_profile(&ld, sd, &p);
        if (rc < 0)
            goto out;
        v->profs[v->nprofs++] = p;
    }
    if (find_def(v, "Element") == NULL) {
        ld.file = sub;
        rc = load_fail(&ld, "no definition of Element is loaded (r4-base-definitions.json)");
        goto out;
    }
    *out = v;
    v = NULL;
    rc = 0;
out:
    json_decref(vs_files);
    json_decref(vsets);
    json_decref(sd_files);
    json_decref(sds);
    spb_validator_free(v);
    return rc;
}

void spb_validator_free(spb_validator *v)
{
    arena_block *b;
    if (v == NULL)
        return;
    b = v->arena;
    while (b != NULL) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(v->vsets);
    free(v->defs);
    free(v->profs);
    free(v->prof_urls);
    free(v->prof_types);
    json_decref(v->docs);
    free(v);
}

size_t spb_validator_profile_count(const spb_validator *v)
{
    return v ? v->nprofs : 0;
}

const char *spb_validator_profile_url(const spb_validator *v, size_t i)
{
    return v != NULL && i < v->nprofs ? v->profs[i].url : NULL;
}

/* ------------------------------------------------------------------ the shared instance */

static pthread_once_t shared_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static char shared_dir[1024] = SPB_CONFORMANCE_DIR;
static int shared_started;
static spb_validator *shared;
static spb_err shared_err;
static int shared_rc;

static void shared_load(void)
{
    char dir[sizeof(shared_dir)];
    pthread_mutex_lock(&shared_lock);
    shared_started = 1;
    memcpy(dir, shared_dir, sizeof(dir));
    pthread_mutex_unlock(&shared_lock);
    spb_err_clear(&shared_err);
    shared_rc = spb_validator_load(&shared, dir, &shared_err);
}

int spb_validator_shared(const spb_validator **out, spb_err *err)
{
    pthread_once(&shared_once, shared_load);
    if (shared_rc < 0) {
        if (err != NULL && err->code == 0)
            *err = shared_err;
        return shared_rc;
    }
    *out = shared;
    return 0;
}

int spb_validator_shared_init(const char *dir, spb_err *err)
{
    const spb_validator *v;
    int started;

    pthread_mutex_lock(&shared_lock);
    started = shared_started;
    if (!started)
        snprintf(shared_dir, sizeof(shared_dir), "%s", dir);
    pthread_mutex_unlock(&shared_lock);
    if (started)
        return spb_err_set(err, SPB_ERR, SPB_ISSUE_PROCESSING,
                           "the shared validator is already loaded");
    return spb_validator_shared(&v, err);
}
