/*
 * Dialect profile loader and evaluator.
 *
 * A profile is an INI file read with libinih. We feed inih through our own line reader so
 * every key is known with its line number (for `mappings check`), so indented
 * continuation lines can carry long XPath expressions past inih's 200-byte line limit,
 * and so an over-long line is an error instead of a silent split.
 *
 * Evaluation runs each compiled XPath with the candidate event node as context. `[let]`
 * variables are evaluated first, in file order, and are visible to later expressions as
 * $name; this is how GP2GP's agentRef ids are resolved through the agentDirectory without
 * any GP2GP-specific C. A field listed more than once has fallbacks: the first expression
 * that finds a value wins.
 */
#include "spbridge/profile.h"

#include <ctype.h>
#include <ini.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "spbridge/log.h"
#include "spbridge/transform.h"

#ifndef SPB_CONFORMANCE_DIR
#define SPB_CONFORMANCE_DIR "conformance"
#endif

#define MAX_NS    16
#define MAX_LETS  48
#define MAX_ALTS  8
#define MAX_MAPS  24
#define MAX_STEPS 4
#define VALUE_MAX 4096     /* longest field value kept; longer text is an input error */
#define MAP_OMIT  "(omit)" /* a map value (or '*' fallback) meaning "leave the field out" */

typedef struct expr {
    char *text;
    int line;
    xmlXPathCompExprPtr comp;
} expr;

typedef struct alt_list {
    expr e[MAX_ALTS];
    int n;
} alt_list;

typedef struct let_def {
    char name[64];
    alt_list alts; /* like fields: later lines are fallbacks */
} let_def;

typedef enum {
    T_UPPER,
    T_LOWER,
    T_DIGITS,
    T_BOOLEAN,
    T_DATE,
    T_DATETIME,
    T_MAP,
    T_UUID,
    T_COLLAPSE,
    T_SPLIT, /* always the last step: one value becomes several (arg: "", name.PART) */
} step_kind;

typedef struct tstep {
    step_kind kind;
    char arg[96]; /* time format or map name */
    spb_zone zone;
    int map;
} tstep;

typedef struct transform {
    tstep steps[MAX_STEPS];
    int n;
    int line;
    char text[256]; /* as written, for diff and explain */
} transform;

typedef struct vmap_entry {
    char *key;
    char *value;
    int line; /* where the entry is, for check messages about its value */
} vmap_entry;

typedef struct vmap {
    char name[64];
    vmap_entry *entries;
    size_t n;
    char *fallback; /* the "*" entry: "{}" stands for the original value */
    int fallback_line;
    int line;
} vmap;

struct spb_profile {
    char path[512];
    char name[64];
    char title[200];
    struct {
        char root[64]; /* root element local name, or "" for any */
        char path[512];
        int line;
    } schemas[8];
    int nschemas;
    char version[32];
    expr accept;
    expr events;
    struct {
        char prefix[32];
        char uri[256];
    } ns[MAX_NS];
    int nns;
    let_def lets[MAX_LETS];
    int nlets;
    alt_list fields[SPB_F__COUNT];
    transform transforms[SPB_F__COUNT];
    vmap maps[MAX_MAPS];
    int nmaps;
};

/* ---------- loading ---------- */

typedef struct load_state {
    spb_profile *p;
    FILE *f;
    int line;
    int indented;
    int long_line;
    char **last_value; /* target of an indented continuation */
    char last_section[64];
    char last_name[64];
    char unknown_section[64]; /* reported once, not once per key */
    char raw[256];            /* the current raw line, as read */
    int dialect_line[5];      /* where each once-only [dialect] key was given */
    char empty_ns_told[32];   /* a prefix with an empty URI, reported once */
    spb_diags *diags;
    spb_err *err;
    int errors;
} load_state;

static void load_error(load_state *st, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void load_error(load_state *st, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spb_diag_add(st->diags, SPB_DIAG_ERROR, st->p->path, line, "%s", msg);
    if (st->errors++ == 0 && (st->err == NULL || st->err->code == 0)) {
        spb_err_set(st->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg);
        spb_err_where(st->err, st->p->path, line, 0, NULL);
        spb_err_hint(st->err, "fix the dialect profile; `spbridge mappings check` lists "
                              "every problem");
    }
}

static char *reader(char *str, int num, void *stream)
{
    load_state *st = stream;
    size_t n;

    if (fgets(str, num, st->f) == NULL)
        return NULL;
    st->line++;
    n = strlen(str);
    snprintf(st->raw, sizeof(st->raw), "%s", str);
    st->indented = (str[0] == ' ' || str[0] == '\t');
    if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(st->f)) {
        int c;
        /* Over inih's line buffer: drop the rest of the line and report it. */
        while ((c = fgetc(st->f)) != EOF && c != '\n')
            ;
        load_error(st, st->line,
                   "line is longer than %d characters; continue a long expression on the "
                   "next line, indented",
                   num - 2);
    }
    return str;
}

static int valid_name(const char *s, int allow_dot)
{
    if (!isalpha((unsigned char)*s) && *s != '_')
        return 0;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && !(allow_dot && *s == '.'))
            return 0;
    }
    return 1;
}

static int set_expr(load_state *st, expr *e, const char *value)
{
    free(e->text);
    e->text = strdup(value);
    e->line = st->line;
    st->last_value = &e->text;
    return e->text != NULL;
}

static int find_map(const spb_profile *p, const char *name)
{
    for (int i = 0; i < p->nmaps; i++) {
        if (strcmp(p->maps[i].name, name) == 0)
            return i;
    }
    return -1;
}

/* `split` alone cuts a value at white space into several values, so it belongs on a list
 * field; `split name.PART` reads one part of a whole personal name ("Dr Priya Shah",
 * "SHAH, Priya") and can feed a scalar. */
static int split_arg_valid(load_state *st, const char *args, const char *field)
{
    int id = spb_field_lookup(field);
    if (strcmp(args, "name.prefix") == 0 || strcmp(args, "name.given") == 0 ||
        strcmp(args, "name.family") == 0)
        return 1;
    if (args[0] != '\0') {
        load_error(st, st->line,
                   "split for %s takes nothing or one of name.prefix, name.given, name.family, "
                   "not '%s'",
                   field, args);
        return 0;
    }
    if (id >= 0 && spb_fields[id].type != SPB_FT_LIST) {
        load_error(st, st->line,
                   "split gives several values but %s holds one; use it on a list field (such "
                   "as patient.given) or use split name.PART",
                   field);
        return 0;
    }
    return 1;
}

static void parse_transform(load_state *st, transform *t, const char *value, const char *field)
{
    char buf[512];
    char *save = NULL, *tok;

    snprintf(buf, sizeof(buf), "%s", value);
    snprintf(t->text, sizeof(t->text), "%s", value);
    t->n = 0;
    t->line = st->line;
    /* steps are separated by '|' and applied left to right */
    for (char *seg = buf; seg != NULL; seg = save) {
        char *bar = strchr(seg, '|');
        char *args;
        tstep *s;
        save = NULL;
        if (bar != NULL) {
            *bar = '\0';
            save = bar + 1;
        }
        while (isspace((unsigned char)*seg))
            seg++;
        tok = seg;
        args = tok;
        while (*args && !isspace((unsigned char)*args))
            args++;
        if (*args) {
            *args++ = '\0';
            while (isspace((unsigned char)*args))
                args++;
        }
        {
            size_t al = strlen(args);
            while (al > 0 && isspace((unsigned char)args[al - 1]))
                args[--al] = '\0';
        }
        if (*tok == '\0') {
            load_error(st, st->line, "empty transform step for %s", field);
            return;
        }
        if (t->n >= MAX_STEPS) {
            load_error(st, st->line, "more than %d transform steps for %s", MAX_STEPS, field);
            return;
        }
        s = &t->steps[t->n];
        memset(s, 0, sizeof(*s));
        s->map = -1;
        if (strcmp(tok, "upper") == 0) {
            s->kind = T_UPPER;
        } else if (strcmp(tok, "lower") == 0) {
            s->kind = T_LOWER;
        } else if (strcmp(tok, "digits") == 0) {
            s->kind = T_DIGITS;
        } else if (strcmp(tok, "boolean") == 0) {
            s->kind = T_BOOLEAN;
        } else if (strcmp(tok, "uuid") == 0) {
            s->kind = T_UUID;
        } else if (strcmp(tok, "collapse") == 0) {
            s->kind = T_COLLAPSE;
        } else if (strcmp(tok, "date") == 0 || strcmp(tok, "datetime") == 0) {
            char fmt[96] = "", zone[32] = "";
            char *sp;
            s->kind = strcmp(tok, "date") == 0 ? T_DATE : T_DATETIME;
            snprintf(fmt, sizeof(fmt), "%s", args);
            /* an optional zone word follows the format: uk (default) or utc */
            sp = strrchr(fmt, ' ');
            if (sp != NULL && (strcasecmp(sp + 1, "uk") == 0 || strcasecmp(sp + 1, "utc") == 0 ||
                               strcasecmp(sp + 1, "Europe/London") == 0)) {
                snprintf(zone, sizeof(zone), "%s", sp + 1);
                *sp = '\0';
            }
            if (fmt[0] == '\0') {
                load_error(st, st->line, "%s for %s needs a format: hl7, iso or pattern:...", tok,
                           field);
                return;
            }
            if (strcmp(fmt, "hl7") != 0 && strcmp(fmt, "iso") != 0 &&
                strncmp(fmt, "pattern:", 8) != 0) {
                load_error(st, st->line,
                           "unknown time format '%s' for %s (use hl7, iso or pattern:...)", fmt,
                           field);
                return;
            }
            snprintf(s->arg, sizeof(s->arg), "%s", fmt);
            s->zone = strcasecmp(zone, "utc") == 0 ? SPB_ZONE_UTC : SPB_ZONE_UK;
        } else if (strcmp(tok, "split") == 0) {
            s->kind = T_SPLIT;
            if (!split_arg_valid(st, args, field))
                return;
            snprintf(s->arg, sizeof(s->arg), "%s", args);
        } else if (strcmp(tok, "map") == 0) {
            s->kind = T_MAP;
            if (*args == '\0') {
                load_error(st, st->line, "map for %s needs a map name ([map.NAME])", field);
                return;
            }
            snprintf(s->arg, sizeof(s->arg), "%s", args);
        } else {
            load_error(st, st->line,
                       "unknown transform '%s' for %s (known: upper, lower, digits, boolean, "
                       "uuid, collapse, date FMT, datetime FMT [uk|utc], map NAME, split "
                       "[name.prefix|name.given|name.family])",
                       tok, field);
            return;
        }
        t->n++;
        if (s->kind == T_SPLIT && save != NULL) {
            load_error(st, st->line, "split must be the last transform step for %s", field);
            return;
        }
    }
}

static int add_map_entry(load_state *st, vmap *m, const char *key, const char *value)
{
    vmap_entry *grown;

    if (strcmp(key, "*") == 0) {
        if (m->fallback != NULL) {
            load_error(st, st->line, "map.%s has two '*' entries (first on line %d)", m->name,
                       m->fallback_line);
            return 1;
        }
        m->fallback = strdup(value);
        m->fallback_line = st->line;
        st->last_value = &m->fallback;
        return m->fallback != NULL;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->entries[i].key, key) == 0) {
            load_error(st, st->line, "map.%s lists '%s' twice (first on line %d)", m->name, key,
                       m->entries[i].line);
            return 1;
        }
    }
    grown = realloc(m->entries, (m->n + 1) * sizeof(*grown));
    if (grown == NULL)
        return 0;
    m->entries = grown;
    grown[m->n].key = strdup(key);
    grown[m->n].value = strdup(value);
    grown[m->n].line = st->line;
    if (grown[m->n].key == NULL || grown[m->n].value == NULL) {
        free(grown[m->n].key);
        free(grown[m->n].value);
        return 0;
    }
    st->last_value = &grown[m->n].value;
    m->n++;
    return 1;
}

/*
 * Each [dialect] key may be given once: a second `events =` used to replace the first
 * silently. `schema.ROOT` lines may repeat with distinct ROOTs, but none can follow a plain
 * `schema`, which already applies to every document. 1 (reported) if `name` repeats.
 */
static int dialect_key_repeated(load_state *st, const char *name)
{
    static const char *const once[] = {"name", "title", "version", "accept", "events"};
    const spb_profile *p = st->p;
    const char *root;

    for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
        if (strcmp(name, once[i]) != 0)
            continue;
        if (st->dialect_line[i] == 0) {
            st->dialect_line[i] = st->line;
            return 0;
        }
        load_error(st, st->line,
                   "[dialect] %s is given twice (first on line %d); a second value would "
                   "replace the first, so keep one",
                   name, st->dialect_line[i]);
        return 1;
    }
    if (strcmp(name, "schema") != 0 && strncmp(name, "schema.", 7) != 0)
        return 0;
    root = name[6] == '.' ? name + 7 : "";
    for (int i = 0; i < p->nschemas; i++) {
        if (strcmp(p->schemas[i].root, root) == 0 || p->schemas[i].root[0] == '\0') {
            load_error(st, st->line,
                       "%s is never used: the %s on line %d already applies%s; give each ROOT "
                       "one schema, and put schema.ROOT lines before a plain schema",
                       name, p->schemas[i].root[0] ? "schema for that ROOT" : "plain schema",
                       p->schemas[i].line, p->schemas[i].root[0] ? "" : " to every document");
            return 1;
        }
    }
    return 0;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    spb_profile *p = st->p;

    /* An indented line continues the previous value (inih calls us with the same name). */
    if (st->indented && st->last_value != NULL && *st->last_value != NULL &&
        strcmp(section, st->last_section) == 0 && strcmp(name, st->last_name) == 0) {
        size_t a = strlen(*st->last_value), b = strlen(value);
        char *joined = realloc(*st->last_value, a + b + 2);
        if (joined == NULL)
            return 0;
        joined[a] = ' ';
        memcpy(joined + a + 1, value, b + 1);
        *st->last_value = joined;
        return 1;
    }
    if (st->indented && strcmp(section, st->last_section) == 0 &&
        strcmp(name, st->last_name) == 0) {
        load_error(st, st->line,
                   "'%s' cannot continue on an indented line (only XPath expressions and map "
                   "values can); put it on one line",
                   name);
        return 1;
    }
    st->last_value = NULL;
    snprintf(st->last_section, sizeof(st->last_section), "%s", section);
    snprintf(st->last_name, sizeof(st->last_name), "%s", name);

    if (strcmp(section, "dialect") == 0) {
        if (dialect_key_repeated(st, name))
            return 1;
        if (strcmp(name, "name") == 0) {
            if (!valid_name(value, 0) || strlen(value) >= sizeof(p->name))
                load_error(st, st->line, "dialect name '%s' must be letters, digits, '_' or '-'",
                           value);
            else
                snprintf(p->name, sizeof(p->name), "%s", value);
        } else if (strcmp(name, "title") == 0) {
            snprintf(p->title, sizeof(p->title), "%s", value);
        } else if (strcmp(name, "version") == 0) {
            snprintf(p->version, sizeof(p->version), "%s", value);
        } else if (strcmp(name, "schema") == 0 || strncmp(name, "schema.", 7) == 0) {
            if (p->nschemas >= 8) {
                load_error(st, st->line, "more than 8 schemas");
                return 1;
            }
            if (value[0] == '\0' || strcmp(value, "$schema_dir/") == 0 ||
                strcmp(value, "$conformance_dir/") == 0) {
                load_error(st, st->line, "%s has no path", name);
                return 1;
            }
            snprintf(p->schemas[p->nschemas].root, sizeof(p->schemas[0].root), "%s",
                     name[6] == '.' ? name + 7 : "");
            if (strncmp(value, "$conformance_dir/", 17) == 0) {
                /* spbridge's own schemas (the native format): where this build keeps them */
                snprintf(p->schemas[p->nschemas].path, sizeof(p->schemas[0].path), "%s/%s",
                         SPB_CONFORMANCE_DIR, value + 17);
                if (access(p->schemas[p->nschemas].path, R_OK) != 0)
                    load_error(st, st->line, "schema file %s is not readable",
                               p->schemas[p->nschemas].path);
            } else if (strncmp(value, "$schema_dir/", 12) == 0 || value[0] == '/') {
                snprintf(p->schemas[p->nschemas].path, sizeof(p->schemas[0].path), "%s", value);
            } else {
                /* relative to the profile's own folder */
                const char *slash = strrchr(p->path, '/');
                int dl = slash ? (int)(slash - p->path) : 1;
                snprintf(p->schemas[p->nschemas].path, sizeof(p->schemas[0].path), "%.*s/%s", dl,
                         slash ? p->path : ".", value);
                if (access(p->schemas[p->nschemas].path, R_OK) != 0)
                    load_error(st, st->line, "schema file %s is not readable",
                               p->schemas[p->nschemas].path);
            }
            p->schemas[p->nschemas].line = st->line;
            p->nschemas++;
        } else if (strcmp(name, "accept") == 0) {
            return set_expr(st, &p->accept, value);
        } else if (strcmp(name, "events") == 0) {
            return set_expr(st, &p->events, value);
        } else {
            load_error(st, st->line,
                       "unknown key '%s' in [dialect] (known: name, title, version, schema, "
                       "accept, events)",
                       name);
        }
        return 1;
    }
    if (strcmp(section, "namespaces") == 0) {
        for (int i = 0; i < p->nns; i++) {
            if (strcmp(p->ns[i].prefix, name) == 0) {
                load_error(st, st->line, "namespace prefix '%s' is declared twice", name);
                return 1;
            }
        }
        if (p->nns >= MAX_NS) {
            load_error(st, st->line, "more than %d namespaces", MAX_NS);
            return 1;
        }
        if (!valid_name(name, 0) || strlen(name) >= sizeof(p->ns[0].prefix)) {
            load_error(st, st->line, "'%s' is not a valid namespace prefix", name);
            return 1;
        }
        if (value[0] == '\0') {
            /* reported here, at the line to edit, not at the first expression using it */
            load_error(st, st->line, "namespace prefix '%s' has an empty URI", name);
            snprintf(st->empty_ns_told, sizeof(st->empty_ns_told), "%s", name);
        }
        snprintf(p->ns[p->nns].prefix, sizeof(p->ns[0].prefix), "%s", name);
        snprintf(p->ns[p->nns].uri, sizeof(p->ns[0].uri), "%s", value);
        p->nns++;
        return 1;
    }
    if (strcmp(section, "let") == 0) {
        for (int i = 0; i < p->nlets; i++) {
            if (strcmp(p->lets[i].name, name) == 0) {
                alt_list *al = &p->lets[i].alts;
                if (i != p->nlets - 1) {
                    load_error(st, st->line,
                               "fallbacks for $%s must follow its first definition directly", name);
                    return 1;
                }
                if (al->n >= MAX_ALTS) {
                    load_error(st, st->line, "more than %d fallbacks for $%s", MAX_ALTS, name);
                    return 1;
                }
                return set_expr(st, &al->e[al->n++], value);
            }
        }
        if (p->nlets >= MAX_LETS) {
            load_error(st, st->line, "more than %d variables in [let]", MAX_LETS);
            return 1;
        }
        if (!valid_name(name, 0) || strlen(name) >= sizeof(p->lets[0].name)) {
            load_error(st, st->line, "'%s' is not a valid variable name", name);
            return 1;
        }
        snprintf(p->lets[p->nlets].name, sizeof(p->lets[0].name), "%s", name);
        p->lets[p->nlets].alts.n = 1;
        return set_expr(st, &p->lets[p->nlets++].alts.e[0], value);
    }
    if (strcmp(section, "fields") == 0) {
        int id = spb_field_lookup(name);
        alt_list *al;
        if (id < 0) {
            load_error(st, st->line,
                       "unknown field '%s' (see docs/dialect-profiles.md for the field list)",
                       name);
            return 1;
        }
        al = &p->fields[id];
        if (al->n >= MAX_ALTS) {
            load_error(st, st->line, "more than %d fallbacks for %s", MAX_ALTS, name);
            return 1;
        }
        if (spb_fields[id].type == SPB_FT_GROUP && al->n > 0) {
            load_error(st, st->line, "group '%s' is selected twice; use one expression with |",
                       name);
            return 1;
        }
        return set_expr(st, &al->e[al->n++], value);
    }
    if (strcmp(section, "transforms") == 0) {
        int id = spb_field_lookup(name);
        if (id < 0) {
            load_error(st, st->line, "transform for unknown field '%s'", name);
            return 1;
        }
        if (spb_fields[id].type == SPB_FT_GROUP) {
            load_error(st, st->line, "'%s' is a group; transform its members instead", name);
            return 1;
        }
        if (p->transforms[id].n > 0) {
            load_error(st, st->line, "field '%s' has two transforms; chain steps with |", name);
            return 1;
        }
        parse_transform(st, &p->transforms[id], value, name);
        return 1;
    }
    if (strncmp(section, "map.", 4) == 0) {
        int m = find_map(p, section + 4);
        /* inih splits a line at the first '=' or ':', so "urn:x = y" would silently
         * become the key "urn"; refuse such lines instead. */
        {
            const char *colon = strchr(st->raw, ':');
            const char *equals = strchr(st->raw, '=');
            if (colon != NULL && (equals == NULL || colon < equals)) {
                load_error(st, st->line,
                           "map keys cannot contain ':' (the line is split there); map a "
                           "value that has no colon, or transform it first");
                return 1;
            }
        }
        if (m < 0) {
            if (p->nmaps >= MAX_MAPS) {
                load_error(st, st->line, "more than %d maps", MAX_MAPS);
                return 1;
            }
            if (!valid_name(section + 4, 1) || strlen(section + 4) >= sizeof(p->maps[0].name)) {
                load_error(st, st->line, "'%s' is not a valid map name", section + 4);
                return 1;
            }
            m = p->nmaps++;
            snprintf(p->maps[m].name, sizeof(p->maps[m].name), "%s", section + 4);
            p->maps[m].line = st->line;
        }
        return add_map_entry(st, &p->maps[m], name, value);
    }
    if (strcmp(st->unknown_section, section) != 0) {
        snprintf(st->unknown_section, sizeof(st->unknown_section), "%s", section);
        load_error(st, st->line,
                   "unknown section [%s] (known: dialect, namespaces, let, fields, transforms, "
                   "map.NAME)",
                   section);
    }
    return 1;
}

typedef struct xpath_errs {
    char msg[200];
    int offset; /* where in the expression a compile error is (1-based), 0 if unknown */
} xpath_errs;

/* libxml2 2.9 gives an XPath context's error callback a code, the expression and an
 * offset, but no message (hence "invalid expression" for everything before); this says
 * in words what the codes an engineer meets mean. */
static const char *xpath_code_text(int code)
{
    static const struct {
        int code;
        const char *text;
    } known[] = {
        {XML_XPATH_UNDEF_VARIABLE_ERROR, "undefined variable"},
        {XML_XPATH_UNDEF_PREFIX_ERROR, "undefined namespace prefix"},
        {XML_XPATH_UNKNOWN_FUNC_ERROR, "unknown function"},
        {XML_XPATH_INVALID_ARITY, "wrong number of arguments to a function"},
        {XML_XPATH_INVALID_TYPE, "a value of the wrong type (nodes were expected)"},
        {XML_XPATH_INVALID_PREDICATE_ERROR, "invalid predicate"},
        {XML_XPATH_UNFINISHED_LITERAL_ERROR, "a string literal is not closed"},
        {XML_XPATH_START_LITERAL_ERROR, "a string literal was expected"},
        {XML_XPATH_VARIABLE_REF_ERROR, "a variable name was expected after $"},
        {XML_XPATH_NUMBER_ERROR, "invalid number"},
        {XML_XPATH_EXPR_ERROR, "invalid expression"},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (known[i].code == code)
            return known[i].text;
    }
    return NULL;
}

static void xpath_error(void *user, xmlErrorPtr xe)
{
    xpath_errs *e = user;
    const char *text;
    size_t n;
    if (e->msg[0] != '\0' || xe == NULL)
        return;
    text = xe->message != NULL ? xe->message : xpath_code_text(xe->code);
    if (text == NULL)
        return;
    snprintf(e->msg, sizeof(e->msg), "%s", text);
    n = strlen(e->msg);
    while (n > 0 && (e->msg[n - 1] == '\n' || e->msg[n - 1] == ' '))
        e->msg[--n] = '\0';
    e->offset = xe->str1 != NULL && xe->int1 >= 0 ? xe->int1 + 1 : 0;
}

static xmlXPathContextPtr new_context(const spb_profile *p, xmlDocPtr doc, xpath_errs *errs)
{
    xmlXPathContextPtr ctxt = xmlXPathNewContext(doc);
    if (ctxt == NULL)
        return NULL;
    for (int i = 0; i < p->nns; i++)
        xmlXPathRegisterNs(ctxt, BAD_CAST p->ns[i].prefix, BAD_CAST p->ns[i].uri);
    if (errs != NULL) {
        ctxt->error = xpath_error;
        ctxt->userData = errs;
    }
    return ctxt;
}

/* 1 if `name`, followed by '(', is neither a node test nor an operator but a function
 * the context does not have. */
static int unknown_function(xmlXPathContextPtr ctxt, const char *name)
{
    static const char *const not_functions[] = {"node", "text", "comment", "processing-instruction",
                                                "and",  "or",   "div",     "mod"};
    for (size_t i = 0; i < sizeof(not_functions) / sizeof(not_functions[0]); i++) {
        if (strcmp(name, not_functions[i]) == 0)
            return 0;
    }
    return xmlXPathFunctionLookup(ctxt, BAD_CAST name) == NULL;
}

/*
 * The first namespace prefix (result 'p', or 'e' when bound to an empty URI), variable
 * ('$') or function ('f') that `text` uses and `ctxt` does not know, copied to `name`; 0
 * if none. libxml2 reports these only by an error code, without the name, and only when the
 * step holding one is evaluated, which a trial run on an empty document may never reach (a
 * predicate, the right side of `and`). So the expression is scanned as text: string
 * literals are skipped, a name followed by a single ':' is a prefix (`child::` is an axis),
 * a name after '$' is a variable, a name followed by '(' is a function.
 */
static int unknown_name(xmlXPathContextPtr ctxt, const char *text, char *name, size_t size)
{
    for (const char *p = text; *p != '\0';) {
        const char *start, *end, *next;
        int var = *p == '$';
        if (*p == '\'' || *p == '"') {
            const char *close = strchr(p + 1, *p);
            p = close != NULL ? close + 1 : p + strlen(p);
            continue;
        }
        if (!var && !isalpha((unsigned char)*p) && *p != '_') {
            p++;
            continue;
        }
        start = var ? p + 1 : p;
        end = start;
        while (*end != '\0' && (isalnum((unsigned char)*end) || strchr("_-.", *end) != NULL))
            end++;
        snprintf(name, size, "%.*s", (int)(end - start), start);
        p = end > p ? end : p + 1;
        for (next = end; *next == ' ' || *next == '\t'; next++)
            ;
        if (name[0] == '\0')
            continue;
        if (*end == ':' && end[1] != ':') {
            const xmlChar *uri = xmlXPathNsLookup(ctxt, BAD_CAST name);
            if (uri == NULL || uri[0] == '\0')
                return uri == NULL ? 'p' : 'e'; /* "" would match nothing, silently */
        } else if (var) {
            xmlXPathObjectPtr v = xmlXPathVariableLookup(ctxt, BAD_CAST name);
            if (v == NULL)
                return '$';
            xmlXPathFreeObject(v);
        } else if (*next == '(' && unknown_function(ctxt, name)) {
            return 'f';
        }
    }
    return 0;
}

/* Compiles one expression, looks for prefixes and variables it cannot resolve, and runs it
 * once on a dummy document, which is how unknown functions are caught at load time. */
static void compile_expr(load_state *st, expr *e, const char *what, xmlXPathContextPtr ctxt,
                         xpath_errs *errs)
{
    xmlXPathObjectPtr res;
    char name[64], at[40] = "";

    if (e->text == NULL)
        return;
    if (e->text[0] == '\0') {
        load_error(st, e->line, "%s has no expression (nothing after '=')", what);
        return;
    }
    errs->msg[0] = '\0';
    errs->offset = 0;
    e->comp = xmlXPathCtxtCompile(ctxt, BAD_CAST e->text);
    if (e->comp == NULL) {
        if (errs->offset > 0)
            snprintf(at, sizeof(at), " (at character %d)", errs->offset);
        load_error(st, e->line, "XPath for %s does not compile: %s%s", what,
                   errs->msg[0] ? errs->msg : "invalid expression", at);
        return;
    }
    switch (unknown_name(ctxt, e->text, name, sizeof(name))) {
    case 'p':
        load_error(st, e->line,
                   "XPath for %s: namespace prefix '%s' is not declared in [namespaces]", what,
                   name);
        return;
    case 'e':
        if (strcmp(st->empty_ns_told, name) == 0)
            return; /* once is enough: every expression using it says the same */
        snprintf(st->empty_ns_told, sizeof(st->empty_ns_told), "%s", name);
        load_error(st, e->line,
                   "XPath for %s: namespace prefix '%s' has an empty URI in [namespaces], so "
                   "it would match nothing",
                   what, name);
        return;
    case '$':
        load_error(st, e->line,
                   "XPath for %s: variable $%s is not defined above this line in [let]", what,
                   name);
        return;
    case 'f':
        load_error(st, e->line, "XPath for %s: unknown function %s() (XPath 1.0 functions only)",
                   what, name);
        return;
    default:
        break;
    }
    errs->msg[0] = '\0';
    ctxt->node = xmlDocGetRootElement(ctxt->doc);
    res = xmlXPathCompiledEval(e->comp, ctxt);
    if (res == NULL)
        load_error(st, e->line, "XPath for %s fails: %s", what,
                   errs->msg[0] ? errs->msg : "evaluation error");
    xmlXPathFreeObject(res);
}

/* A map value a URI field can take: a URI, or "" or MAP_OMIT, which both leave the value
 * out. */
static int uri_map_value(const char *v)
{
    return spb_is_absolute_uri(v) || v[0] == '\0' || strcmp(v, MAP_OMIT) == 0;
}

/* A map feeding a URI field (code systems) must produce URIs. Each bad value is reported
 * once, at its own line, however many fields use the map. */
static void check_uri_maps(load_state *st)
{
    const spb_profile *p = st->p;
    int checked[MAX_MAPS] = {0};

    for (int id = 0; id < SPB_F__COUNT; id++) {
        for (int k = 0; spb_fields[id].value == SPB_FV_URI && k < p->transforms[id].n; k++) {
            const tstep *ts = &p->transforms[id].steps[k];
            const vmap *m;
            if (ts->kind != T_MAP || ts->map < 0 || checked[ts->map]++)
                continue;
            m = &p->maps[ts->map];
            for (size_t i = 0; i < m->n; i++) {
                if (!uri_map_value(m->entries[i].value))
                    load_error(st, m->entries[i].line,
                               "map.%s gives '%s' for '%s', which is not a URI, but %s needs "
                               "one (e.g. http://snomed.info/sct)",
                               m->name, m->entries[i].value, m->entries[i].key,
                               spb_fields[id].name);
            }
            if (m->fallback != NULL && !uri_map_value(m->fallback))
                load_error(st, m->fallback_line,
                           "map.%s's '*' fallback '%s' is not a URI, but %s needs one", m->name,
                           m->fallback, spb_fields[id].name);
        }
    }
}

/* Transforms that could never run and maps nothing uses: both accepted silently before,
 * and both usually mean a misspelt field or map name. */
static void check_transforms_used(load_state *st)
{
    spb_profile *p = st->p;
    int used[MAX_MAPS] = {0};

    for (int id = 0; id < SPB_F__COUNT; id++) {
        const transform *t = &p->transforms[id];
        if (t->line == 0)
            continue;
        if (p->fields[id].n == 0)
            load_error(st, t->line,
                       "[transforms] %s has no expression in [fields], so the transform would "
                       "never run",
                       spb_fields[id].name);
        for (int k = 0; k < t->n; k++) {
            int m = t->steps[k].kind == T_MAP ? find_map(p, t->steps[k].arg) : -1;
            if (m >= 0)
                used[m] = 1;
        }
    }
    for (int m = 0; m < p->nmaps; m++) {
        if (!used[m])
            spb_diag_add(st->diags, SPB_DIAG_WARNING, p->path, p->maps[m].line,
                         "[map.%s] is not used by any transform", p->maps[m].name);
    }
}

static void finish_load(load_state *st)
{
    spb_profile *p = st->p;
    xmlDocPtr dummy = NULL;
    xmlXPathContextPtr ctxt = NULL;
    xpath_errs errs;

    if (p->name[0] == '\0')
        load_error(st, 1, "[dialect] name is required");
    if (p->events.text == NULL)
        load_error(st, 1,
                   "[dialect] events is required: an XPath selecting each candidate "
                   "event");
    {
        static const spb_field_id required[] = {SPB_F_EVENT_ID,           SPB_F_PRACTICE_ODS,
                                                SPB_F_PATIENT_NHS_NUMBER, SPB_F_CODES,
                                                SPB_F_CODES_CODE,         SPB_F_CODES_SYSTEM};
        for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
            if (p->fields[required[i]].n == 0)
                load_error(st, 1, "[fields] %s is required", spb_fields[required[i]].name);
        }
    }
    check_transforms_used(st);
    for (int id = 0; id < SPB_F__COUNT; id++) {
        if (spb_fields[id].type == SPB_FT_MEMBER && p->fields[id].n > 0 &&
            p->fields[spb_fields[id].group].n == 0)
            load_error(st, p->fields[id].e[0].line, "%s is given but its group '%s' is not",
                       spb_fields[id].name, spb_fields[spb_fields[id].group].name);
        for (int k = 0; k < p->transforms[id].n; k++) {
            tstep *s = &p->transforms[id].steps[k];
            if (s->kind != T_MAP)
                continue;
            s->map = find_map(p, s->arg);
            if (s->map < 0)
                load_error(st, p->transforms[id].line,
                           "transform for %s uses map '%s' but there is no [map.%s] section",
                           spb_fields[id].name, s->arg, s->arg);
        }
    }
    check_uri_maps(st);
    if (spb_fields[SPB_F_NEEDS].type == SPB_FT_GROUP && p->fields[SPB_F_NEEDS].n > 0 &&
        p->fields[SPB_F_NEEDS_CODE].n == 0)
        load_error(st, p->fields[SPB_F_NEEDS].e[0].line,
                   "needs is selected but needs.code is "
                   "not given");

    /* Compile and trial-run every expression against an empty document. */
    dummy = xmlReadMemory("<spbridge-check/>", 17, "check.xml", NULL, XML_PARSE_NONET);
    memset(&errs, 0, sizeof(errs));
    if (dummy != NULL)
        ctxt = new_context(p, dummy, &errs);
    if (ctxt == NULL) {
        load_error(st, 0, "out of memory compiling XPath");
        goto out;
    }
    for (int i = 0; i < p->nlets; i++) {
        char what[96];
        snprintf(what, sizeof(what), "$%s", p->lets[i].name);
        for (int k = 0; k < p->lets[i].alts.n; k++)
            compile_expr(st, &p->lets[i].alts.e[k], what, ctxt, &errs);
        xmlXPathRegisterVariable(ctxt, BAD_CAST p->lets[i].name, xmlXPathNewCString(""));
    }
    /* event.id, event.kind and codes decide whether a candidate is an event at all, before
     * any variable is computed, so they must not use variables; nor can accept or events,
     * which run on the whole document. */
    {
        const expr *doc_level[] = {&p->accept, &p->events};
        for (size_t i = 0; i < 2; i++) {
            if (doc_level[i]->text != NULL && strchr(doc_level[i]->text, '$') != NULL)
                load_error(st, doc_level[i]->line,
                           "%s cannot use [let] variables: they are computed per event",
                           i == 0 ? "accept" : "events");
        }
    }
    {
        static const spb_field_id early[] = {SPB_F_EVENT_ID,     SPB_F_EVENT_KIND,
                                             SPB_F_CODES,        SPB_F_CODES_CODE,
                                             SPB_F_CODES_SYSTEM, SPB_F_CODES_DISPLAY};
        for (size_t i = 0; i < sizeof(early) / sizeof(early[0]); i++) {
            for (int k = 0; k < p->fields[early[i]].n; k++) {
                if (strchr(p->fields[early[i]].e[k].text, '$') != NULL)
                    load_error(st, p->fields[early[i]].e[k].line,
                               "%s cannot use [let] variables: it is read before they are "
                               "computed",
                               spb_fields[early[i]].name);
            }
        }
    }
    compile_expr(st, &p->accept, "accept", ctxt, &errs);
    compile_expr(st, &p->events, "events", ctxt, &errs);
    for (int id = 0; id < SPB_F__COUNT; id++) {
        for (int k = 0; k < p->fields[id].n; k++)
            compile_expr(st, &p->fields[id].e[k], spb_fields[id].name, ctxt, &errs);
    }
out:
    xmlXPathFreeContext(ctxt);
    xmlFreeDoc(dummy);
}

int spb_profile_load(spb_profile **out, const char *path, spb_diags *diags, spb_err *err)
{
    load_state st;
    spb_profile *p = NULL;
    int rc;

    *out = NULL;
    memset(&st, 0, sizeof(st));
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    snprintf(p->path, sizeof(p->path), "%s", path);
    st.p = p;
    st.diags = diags;
    st.err = err;
    st.f = fopen(path, "r");
    if (st.f == NULL) {
        load_error(&st, 0, "cannot open dialect profile");
        rc = SPB_ECONFIG;
        goto out;
    }
    rc = ini_parse_stream(reader, &st, handler, &st);
    if (rc > 0)
        load_error(&st, rc,
                   "syntax error (expected [section], key = value, or an indented "
                   "continuation)");
    else if (rc < 0)
        load_error(&st, 0, "cannot read the file (out of memory)");
    if (st.errors == 0)
        finish_load(&st);
    rc = st.errors ? SPB_ECONFIG : 0;
out:
    if (st.f != NULL)
        fclose(st.f);
    if (rc < 0) {
        spb_profile_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

static void free_expr(expr *e)
{
    free(e->text);
    if (e->comp != NULL)
        xmlXPathFreeCompExpr(e->comp);
}

void spb_profile_free(spb_profile *p)
{
    if (p == NULL)
        return;
    free_expr(&p->accept);
    free_expr(&p->events);
    for (int i = 0; i < p->nlets; i++) {
        for (int k = 0; k < p->lets[i].alts.n; k++)
            free_expr(&p->lets[i].alts.e[k]);
    }
    for (int id = 0; id < SPB_F__COUNT; id++) {
        for (int k = 0; k < p->fields[id].n; k++)
            free_expr(&p->fields[id].e[k]);
    }
    for (int m = 0; m < p->nmaps; m++) {
        for (size_t i = 0; i < p->maps[m].n; i++) {
            free(p->maps[m].entries[i].key);
            free(p->maps[m].entries[i].value);
        }
        free(p->maps[m].entries);
        free(p->maps[m].fallback);
    }
    free(p);
}

const char *spb_profile_name(const spb_profile *p)
{
    return p->name;
}

const char *spb_profile_title(const spb_profile *p)
{
    return p->title[0] ? p->title : p->name;
}

const char *spb_profile_path(const spb_profile *p)
{
    return p->path;
}

const char *spb_profile_schema_for(const spb_profile *p, const char *root_name,
                                   const char *schema_dir, char *buf, size_t size)
{
    for (int i = 0; i < p->nschemas; i++) {
        const char *path = p->schemas[i].path;
        if (p->schemas[i].root[0] != '\0' && strcmp(p->schemas[i].root, root_name) != 0)
            continue;
        if (strncmp(path, "$schema_dir/", 12) == 0) {
            if (schema_dir == NULL || *schema_dir == '\0')
                return NULL; /* optional: only checked when a schema folder is configured */
            snprintf(buf, size, "%s/%s", schema_dir, path + 12);
            return buf;
        }
        snprintf(buf, size, "%s", path);
        return buf;
    }
    return NULL;
}

void spb_profile_describe(const spb_profile *p, spb_profile_describe_fn fn, void *user)
{
    char key[256];
    fn(user, "dialect.title", p->title);
    fn(user, "dialect.accept", p->accept.text ? p->accept.text : "");
    fn(user, "dialect.events", p->events.text ? p->events.text : "");
    for (int i = 0; i < p->nschemas; i++) {
        snprintf(key, sizeof(key), "dialect.schema%s%s", p->schemas[i].root[0] ? "." : "",
                 p->schemas[i].root);
        fn(user, key, p->schemas[i].path);
    }
    for (int i = 0; i < p->nns; i++) {
        snprintf(key, sizeof(key), "namespaces.%s", p->ns[i].prefix);
        fn(user, key, p->ns[i].uri);
    }
    for (int i = 0; i < p->nlets; i++) {
        for (int k = 0; k < p->lets[i].alts.n; k++) {
            snprintf(key, sizeof(key), "let.$%s#%d", p->lets[i].name, k + 1);
            fn(user, key, p->lets[i].alts.e[k].text);
        }
    }
    for (int id = 0; id < SPB_F__COUNT; id++) {
        for (int k = 0; k < p->fields[id].n; k++) {
            snprintf(key, sizeof(key), "fields.%s#%d", spb_fields[id].name, k + 1);
            fn(user, key, p->fields[id].e[k].text);
        }
        if (p->transforms[id].text[0] != '\0') {
            snprintf(key, sizeof(key), "transforms.%s", spb_fields[id].name);
            fn(user, key, p->transforms[id].text);
        }
    }
    for (int m = 0; m < p->nmaps; m++) {
        for (size_t i = 0; i < p->maps[m].n; i++) {
            snprintf(key, sizeof(key), "map.%s[%s]", p->maps[m].name, p->maps[m].entries[i].key);
            fn(user, key, p->maps[m].entries[i].value);
        }
        if (p->maps[m].fallback != NULL) {
            snprintf(key, sizeof(key), "map.%s[*]", p->maps[m].name);
            fn(user, key, p->maps[m].fallback);
        }
    }
}

int spb_profile_field_exprs(const spb_profile *p, spb_field_id id, const char **out, int max)
{
    int n = 0;
    for (int k = 0; k < p->fields[id].n && n < max; k++)
        out[n++] = p->fields[id].e[k].text;
    return n;
}

const char *spb_profile_field_transform(const spb_profile *p, spb_field_id id)
{
    return p->transforms[id].text;
}

int spb_profile_accepts(const spb_profile *p, xmlDocPtr doc)
{
    xmlXPathContextPtr ctxt;
    xmlXPathObjectPtr res;
    int ok = 0;

    if (p->accept.comp == NULL)
        return 1;
    ctxt = new_context(p, doc, NULL);
    if (ctxt == NULL)
        return 0;
    ctxt->node = (xmlNodePtr)doc;
    res = xmlXPathCompiledEval(p->accept.comp, ctxt);
    if (res != NULL)
        ok = xmlXPathCastToBoolean(res);
    xmlXPathFreeObject(res);
    xmlXPathFreeContext(ctxt);
    return ok;
}

/* ---------- evaluation ---------- */

typedef struct eval {
    const spb_profile *p;
    xmlXPathContextPtr ctxt;
    const char *docname;
    const spb_extract_ops *ops;
    spb_err *err;
} eval;

/* Trims ends and folds internal runs of white space to one space (free text keeps its
 * line breaks but loses trailing blanks). Writes into `out` (bounded). Returns length or
 * -1 if the value is longer than VALUE_MAX. */
static int normalise(char *out, size_t out_size, const char *in, int keep_lines)
{
    size_t n = 0;
    int pending_space = 0;
    const char *s = in;

    while (*s && isspace((unsigned char)*s))
        s++;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isspace(c) && !(keep_lines && c == '\n')) {
            pending_space = 1;
            continue;
        }
        if (pending_space && n > 0) {
            if (n + 1 >= out_size)
                return -1;
            out[n++] = ' ';
        }
        pending_space = 0;
        if (n + 1 >= out_size)
            return -1;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return (int)n;
}

/* A readable location: local names with positions only where siblings share the name,
 * e.g. /EhrExtract/component/ehrFolder/component[2]/ehrComposition/.../@value. */
static void node_path(xmlNodePtr node, char *path, size_t path_size)
{
    char parts[32][80];
    int n = 0;
    size_t used = 0;

    path[0] = '\0';
    for (xmlNodePtr cur = node; cur != NULL && cur->type != XML_DOCUMENT_NODE && n < 32;
         cur = cur->parent) {
        if (cur->type == XML_ATTRIBUTE_NODE) {
            snprintf(parts[n++], sizeof(parts[0]), "@%s", (const char *)cur->name);
        } else if (cur->type == XML_ELEMENT_NODE) {
            int pos = 0, same = 0;
            for (xmlNodePtr sib = cur->parent ? cur->parent->children : NULL; sib != NULL;
                 sib = sib->next) {
                if (sib->type != XML_ELEMENT_NODE || !xmlStrEqual(sib->name, cur->name))
                    continue;
                same++;
                if (sib == cur)
                    pos = same;
            }
            if (same > 1)
                snprintf(parts[n++], sizeof(parts[0]), "%s[%d]", (const char *)cur->name, pos);
            else
                snprintf(parts[n++], sizeof(parts[0]), "%s", (const char *)cur->name);
        }
    }
    for (int i = n - 1; i >= 0 && used + 1 < path_size; i--) {
        int w = snprintf(path + used, path_size - used, "/%s", parts[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static void node_location(xmlNodePtr node, int *line, char *path, size_t path_size)
{
    *line = 0;
    path[0] = '\0';
    if (node == NULL)
        return;
    *line =
        (int)xmlGetLineNo(node->type == XML_ATTRIBUTE_NODE && node->parent ? node->parent : node);
    node_path(node, path, path_size);
}

static int value_error(eval *ev, xmlNodePtr where, int fallback_line, int code, spb_issue issue,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int value_error(eval *ev, xmlNodePtr where, int fallback_line, int code, spb_issue issue,
                       const char *fmt, ...)
{
    char msg[SPB_ERR_MSG_MAX];
    char path[SPB_ERR_PATH_MAX];
    int line;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    node_location(where, &line, path, sizeof(path));
    spb_err_set(ev->err, code, issue, "%s", msg);
    spb_err_where(ev->err, ev->docname, line ? line : fallback_line, 0, path[0] ? path : NULL);
    return code;
}

#define TRANSFORM_OMITTED 1

/* A value no map entry knows, left out as the map's '*' fallback says: the event goes on
 * without the field, and the log says which value and which map so an engineer can add it. */
static void warn_left_out(eval *ev, spb_field_id id, const char *val, const vmap *m,
                          xmlNodePtr where, int event_line)
{
    char line[16];
    xmlNodePtr at = where != NULL && where->type == XML_ATTRIBUTE_NODE ? where->parent : where;
    snprintf(line, sizeof(line), "%d", at != NULL ? (int)xmlGetLineNo(at) : event_line);
    spb_log(SPB_LOG_WARN, "value_left_out", "file", ev->docname, "line", line, "field",
            spb_fields[id].name, "value", spb_fields[id].sensitive ? "(withheld)" : val, "map",
            m->name, "dialect", ev->p->name, "reason",
            "the value is not in the map, whose '*' fallback says to leave the field out",
            (const char *)NULL);
}

/* Applies one field's transform chain in place. Returns 0, TRANSFORM_OMITTED (the value is
 * to be left out; `val` then says why) or a negative spb_code with the error set. */
static int apply_transform(eval *ev, spb_field_id id, char *val, size_t val_size, xmlNodePtr where,
                           int event_line)
{
    const transform *t = &ev->p->transforms[id];
    char tmp[VALUE_MAX];

    for (int k = 0; k < t->n; k++) {
        const tstep *s = &t->steps[k];
        switch (s->kind) {
        case T_UPPER:
            for (char *c = val; *c; c++)
                *c = (char)toupper((unsigned char)*c);
            break;
        case T_LOWER:
            for (char *c = val; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            break;
        case T_COLLAPSE: {
            size_t n = 0;
            for (char *c = val; *c; c++) {
                if (!isspace((unsigned char)*c))
                    val[n++] = *c;
            }
            val[n] = '\0';
            break;
        }
        case T_DIGITS: {
            size_t n = 0;
            for (char *c = val; *c; c++) {
                if (isdigit((unsigned char)*c))
                    val[n++] = *c;
                else if (*c != ' ' && *c != '-')
                    return value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE,
                                       "%s has a character that is not a digit, space or "
                                       "hyphen",
                                       spb_fields[id].name);
            }
            val[n] = '\0';
            break;
        }
        case T_BOOLEAN: {
            int b = spb_parse_boolean(val);
            if (b < 0) {
                value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE,
                            "%s is '%.40s', not a yes/no value", spb_fields[id].name,
                            spb_fields[id].sensitive ? "(withheld)" : val);
                spb_err_hint(ev->err, "send true or false (yes/no, Y/N and 1/0 are also read)");
                return SPB_EINVALID;
            }
            snprintf(val, val_size, "%s", b ? "true" : "false");
            break;
        }
        case T_UUID: {
            extern int spb_uuid_is_valid(const char *s);
            if (spb_uuid_is_valid(val)) {
                for (char *c = val; *c; c++)
                    *c = (char)tolower((unsigned char)*c);
            }
            break;
        }
        case T_DATE:
        case T_DATETIME: {
            spb_err terr;
            spb_err_clear(&terr);
            if (spb_time_convert(tmp, sizeof(tmp), val, s->arg, s->zone, s->kind == T_DATE, &terr) <
                0) {
                if (spb_fields[id].sensitive)
                    snprintf(terr.message, sizeof(terr.message), "not a valid %s %s", s->arg,
                             s->kind == T_DATE ? "date" : "date-time");
                value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE, "%s: %s",
                            spb_fields[id].name, terr.message);
                spb_err_hint(ev->err, "%s", terr.hint);
                return SPB_EINVALID;
            }
            snprintf(val, val_size, "%s", tmp);
            break;
        }
        case T_SPLIT:
            break; /* the last step: take_value turns the value into several */
        case T_MAP: {
            const vmap *m = &ev->p->maps[s->map];
            const char *found = NULL;
            for (size_t i = 0; i < m->n; i++) {
                if (strcmp(m->entries[i].key, val) == 0) {
                    found = m->entries[i].value;
                    break;
                }
            }
            /* left out: `val` then says why, for `mappings explain` */
            if (found != NULL && strcmp(found, MAP_OMIT) == 0) {
                snprintf(val, val_size, "(left out: map.%s says so)", m->name);
                return TRANSFORM_OMITTED;
            } else if (found != NULL) {
                snprintf(tmp, sizeof(tmp), "%s", found);
            } else if (m->fallback != NULL && strcmp(m->fallback, MAP_OMIT) == 0) {
                warn_left_out(ev, id, val, m, where, event_line);
                snprintf(tmp, sizeof(tmp),
                         "(left out: '%.60s' is not in map.%s, whose '*' is (omit))",
                         spb_fields[id].sensitive ? "(withheld)" : val, m->name);
                snprintf(val, val_size, "%s", tmp);
                return TRANSFORM_OMITTED;
            } else if (m->fallback != NULL) {
                const char *hole = strstr(m->fallback, "{}");
                if (hole != NULL)
                    snprintf(tmp, sizeof(tmp), "%.*s%s%s", (int)(hole - m->fallback), m->fallback,
                             val, hole + 2);
                else
                    snprintf(tmp, sizeof(tmp), "%s", m->fallback);
            } else {
                value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_CODE_INVALID,
                            "%s value '%.60s' is not in map.%s of dialect %s", spb_fields[id].name,
                            spb_fields[id].sensitive ? "(withheld)" : val, m->name, ev->p->name);
                spb_err_hint(ev->err,
                             "add the value to [map.%s] in %s (line %d) or correct "
                             "the sender",
                             m->name, ev->p->path, m->line);
                return SPB_EINVALID;
            }
            snprintf(val, val_size, "%s", tmp);
            break;
        }
        }
    }
    return 0;
}

/* Checks a final value against the field's declared type. */
static int check_value(eval *ev, spb_field_id id, const char *val, xmlNodePtr where, int event_line)
{
    const char *name = spb_fields[id].name;
    switch (spb_fields[id].value) {
    case SPB_FV_DATETIME:
    case SPB_FV_DATE:
        if (!spb_is_fhir_datetime(val, spb_fields[id].value == SPB_FV_DATE)) {
            value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE,
                        "%s is '%.40s', not a FHIR %s", name,
                        spb_fields[id].sensitive ? "(withheld)" : val,
                        spb_fields[id].value == SPB_FV_DATE ? "date" : "dateTime");
            spb_err_hint(ev->err,
                         "send a real date%s, or give the field a date transform in "
                         "the dialect profile",
                         spb_fields[id].value == SPB_FV_DATE ? "" : " and time with an offset");
            return SPB_EINVALID;
        }
        break;
    case SPB_FV_BOOLEAN:
        if (strcmp(val, "true") != 0 && strcmp(val, "false") != 0) {
            value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE,
                        "%s is '%.40s', not true or false", name, val);
            spb_err_hint(ev->err, "send true or false, or add a boolean transform");
            return SPB_EINVALID;
        }
        break;
    case SPB_FV_CODE:
        if (!spb_is_fhir_code(val)) {
            value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE,
                        "%s is '%.40s', not a code (no spaces at the ends, no line breaks)", name,
                        val);
            return SPB_EINVALID;
        }
        break;
    case SPB_FV_URI:
        if (!spb_is_absolute_uri(val)) {
            value_error(ev, where, event_line, SPB_EINVALID, SPB_ISSUE_VALUE,
                        "%s is '%.80s', not an absolute URI", name, val);
            spb_err_hint(ev->err, "map the source's code system identifier to a URI in the "
                                  "dialect profile (e.g. [map.codesystem])");
            return SPB_EINVALID;
        }
        break;
    case SPB_FV_TEXT:
        break;
    }
    return 0;
}

typedef int (*add_fn)(spb_event *, spb_field_id, const char *, void *);

/* Checks, traces and adds one final value; 1 if added. */
static int add_final(eval *ev, spb_field_id id, const expr *e, const char *raw, const char *val,
                     xmlNodePtr where, int event_line, spb_event *out_ev, add_fn add,
                     void *add_user)
{
    int rc = check_value(ev, id, val, where, event_line);
    if (rc == 0 && ev->ops->trace != NULL)
        ev->ops->trace(ev->ops->user, spb_fields[id].name, e->text, e->line,
                       spb_fields[id].sensitive ? "(withheld)" : raw, val);
    if (rc == 0)
        rc = add(out_ev, id, val, add_user);
    return rc < 0 ? rc : 1;
}

/* The words of one part of `val` after a final split step, space-separated, in `out`. */
static void split_words(const tstep *s, const char *val, char *out, size_t size)
{
    spb_name_parts parts;
    if (s->arg[0] == '\0') {
        snprintf(out, size, "%s", val);
        return;
    }
    spb_name_split(val, &parts);
    snprintf(out, size, "%s",
             strcmp(s->arg, "name.prefix") == 0  ? parts.prefix
             : strcmp(s->arg, "name.given") == 0 ? parts.given
                                                 : parts.family);
}

/*
 * Turns one raw value found by a field's expression into zero or more values of the
 * field: normalised, transformed, checked, traced and added. A final `split` step makes
 * several values of one (only the first is kept for a scalar); a map that leaves the value
 * out adds nothing. Returns how many values were added, or a negative spb_code.
 */
static int take_value(eval *ev, spb_field_id id, const expr *e, const char *raw, xmlNodePtr where,
                      int event_line, spb_event *out_ev, add_fn add, void *add_user)
{
    const transform *t = &ev->p->transforms[id];
    char val[VALUE_MAX], words[VALUE_MAX];
    int len = normalise(val, sizeof(val), raw, id == SPB_F_EVENT_NOTE);
    int rc, added = 0;

    if (len < 0) {
        value_error(ev, where, event_line, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                    "%s is longer than %d bytes", spb_fields[id].name, VALUE_MAX - 1);
        spb_err_hint(ev->err, "shorten the text at the source");
        return SPB_ETOOBIG;
    }
    if (len == 0)
        return 0;
    rc = apply_transform(ev, id, val, sizeof(val), where, event_line);
    if (rc < 0)
        return rc;
    if (rc == TRANSFORM_OMITTED) {
        if (ev->ops->trace != NULL)
            ev->ops->trace(ev->ops->user, spb_fields[id].name, e->text, e->line,
                           spb_fields[id].sensitive ? "(withheld)" : raw, val);
        return 0;
    }
    if (val[0] == '\0')
        return 0;
    if (t->n == 0 || t->steps[t->n - 1].kind != T_SPLIT)
        return add_final(ev, id, e, raw, val, where, event_line, out_ev, add, add_user);
    split_words(&t->steps[t->n - 1], val, words, sizeof(words));
    for (char *w = words, *next; *w != '\0'; w = next) {
        next = strchr(w, ' ');
        if (next != NULL)
            *next++ = '\0';
        else
            next = w + strlen(w);
        rc = add_final(ev, id, e, raw, w, where, event_line, out_ev, add, add_user);
        if (rc < 0)
            return rc;
        added++;
        if (spb_fields[id].type != SPB_FT_LIST && strcmp(t->steps[t->n - 1].arg, "name.given"))
            break; /* a scalar keeps one value; name.prefix/family are already whole */
    }
    return added;
}

/*
 * Evaluates one field's expression(s) with the context node already set and yields the
 * values found (after transforms) to `add`. For scalars only the first value is kept.
 */
static int eval_field(eval *ev, spb_field_id id, spb_event *out_ev, int event_line, add_fn add,
                      void *add_user)
{
    const alt_list *al = &ev->p->fields[id];
    xmlNodePtr ctx_node = ev->ctxt->node;
    int want_all = spb_fields[id].type == SPB_FT_LIST;
    int rc = 0;

    for (int k = 0; k < al->n && rc == 0; k++) {
        const expr *e = &al->e[k];
        xmlXPathObjectPtr res;
        int found = 0;

        if (e->comp == NULL)
            continue;
        ev->ctxt->node = ctx_node;
        res = xmlXPathCompiledEval(e->comp, ev->ctxt);
        if (res == NULL)
            return value_error(ev, ctx_node, event_line, SPB_ECONFIG, SPB_ISSUE_EXCEPTION,
                               "XPath for %s failed to evaluate (%s line %d)", spb_fields[id].name,
                               ev->p->path, e->line);
        if (res->type == XPATH_NODESET) {
            int n = res->nodesetval ? res->nodesetval->nodeNr : 0;
            for (int i = 0; i < n && rc >= 0 && !(found && !want_all); i++) {
                xmlNodePtr node = res->nodesetval->nodeTab[i];
                xmlChar *raw = xmlXPathCastNodeToString(node);
                rc = take_value(ev, id, e, raw ? (const char *)raw : "", node, event_line, out_ev,
                                add, add_user);
                found |= rc > 0;
                xmlFree(raw);
            }
        } else {
            xmlChar *raw = xmlXPathCastToString(res);
            rc = take_value(ev, id, e, raw ? (const char *)raw : "", ctx_node, event_line, out_ev,
                            add, add_user);
            found = rc > 0;
            xmlFree(raw);
        }
        xmlXPathFreeObject(res);
        ev->ctxt->node = ctx_node;
        if (rc < 0)
            return rc;
        rc = 0;
        if (found)
            break; /* fallbacks are tried only while nothing is found */
    }
    ev->ctxt->node = ctx_node;
    return rc;
}

static int add_plain(spb_event *e, spb_field_id id, const char *val, void *user)
{
    (void)user;
    return spb_event_add(e, id, val) < 0 ? SPB_ENOMEM : 0;
}

typedef struct member_vals {
    char code[VALUE_MAX];
    char system[512];
    char display[1024];
} member_vals;

static int add_member(spb_event *e, spb_field_id id, const char *val, void *user)
{
    member_vals *m = user;
    (void)e;
    if (id == SPB_F_CODES_CODE || id == SPB_F_NEEDS_CODE)
        snprintf(m->code, sizeof(m->code), "%s", val);
    else if (id == SPB_F_CODES_SYSTEM || id == SPB_F_NEEDS_SYSTEM)
        snprintf(m->system, sizeof(m->system), "%s", val);
    else
        snprintf(m->display, sizeof(m->display), "%s", val);
    return 0;
}

static int eval_group(eval *ev, spb_field_id group, spb_event *out_ev, int event_line)
{
    const alt_list *al = &ev->p->fields[group];
    xmlNodePtr ctx_node = ev->ctxt->node;
    xmlXPathObjectPtr res;
    spb_field_id mcode = group == SPB_F_CODES ? SPB_F_CODES_CODE : SPB_F_NEEDS_CODE;
    spb_field_id msys = group == SPB_F_CODES ? SPB_F_CODES_SYSTEM : SPB_F_NEEDS_SYSTEM;
    spb_field_id mdisp = group == SPB_F_CODES ? SPB_F_CODES_DISPLAY : SPB_F_NEEDS_DISPLAY;
    member_vals *mv = NULL;
    int rc = 0;

    if (al->n == 0 || al->e[0].comp == NULL)
        return 0;
    res = xmlXPathCompiledEval(al->e[0].comp, ev->ctxt);
    if (res == NULL || res->type != XPATH_NODESET) {
        xmlXPathFreeObject(res);
        return value_error(ev, ctx_node, event_line, SPB_ECONFIG, SPB_ISSUE_EXCEPTION,
                           "group %s must select nodes (%s line %d)", spb_fields[group].name,
                           ev->p->path, al->e[0].line);
    }
    mv = malloc(sizeof(*mv));
    if (mv == NULL) {
        rc = SPB_ENOMEM;
        goto out;
    }
    for (int i = 0; res->nodesetval && i < res->nodesetval->nodeNr; i++) {
        ev->ctxt->node = res->nodesetval->nodeTab[i];
        memset(mv, 0, sizeof(*mv));
        rc = eval_field(ev, mcode, out_ev, event_line, add_member, mv);
        if (rc == 0 && mv->code[0] == '\0')
            continue; /* e.g. <code nullFlavor="UNK"/>: no code to map */
        if (rc == 0)
            rc = eval_field(ev, msys, out_ev, event_line, add_member, mv);
        if (rc == 0)
            rc = eval_field(ev, mdisp, out_ev, event_line, add_member, mv);
        if (rc < 0)
            goto out;
        if (mv->system[0] == '\0') {
            rc = value_error(ev, res->nodesetval->nodeTab[i], event_line, SPB_EINVALID,
                             SPB_ISSUE_REQUIRED, "code '%.40s' has no code system", mv->code);
            spb_err_hint(ev->err, "send the code system with every code");
            goto out;
        }
        if (spb_event_add_coding(out_ev, group, mv->system, mv->code,
                                 mv->display[0] ? mv->display : NULL) < 0) {
            rc = SPB_ENOMEM;
            goto out;
        }
    }
out:
    free(mv);
    ev->ctxt->node = ctx_node;
    xmlXPathFreeObject(res);
    return rc;
}

static int eval_lets(eval *ev, int event_line)
{
    xmlNodePtr ctx_node = ev->ctxt->node;
    char val[VALUE_MAX];

    for (int i = 0; i < ev->p->nlets; i++) {
        const let_def *l = &ev->p->lets[i];
        const expr *used = &l->alts.e[0];
        val[0] = '\0';
        for (int k = 0; k < l->alts.n && val[0] == '\0'; k++) {
            xmlXPathObjectPtr res;
            xmlChar *raw;
            used = &l->alts.e[k];
            ev->ctxt->node = ctx_node;
            res = xmlXPathCompiledEval(used->comp, ev->ctxt);
            if (res == NULL)
                return value_error(ev, ctx_node, event_line, SPB_ECONFIG, SPB_ISSUE_EXCEPTION,
                                   "variable $%s failed to evaluate (%s line %d)", l->name,
                                   ev->p->path, used->line);
            raw = xmlXPathCastToString(res);
            xmlXPathFreeObject(res);
            if (normalise(val, sizeof(val), raw ? (const char *)raw : "", 0) < 0)
                val[0] = '\0';
            xmlFree(raw);
        }
        if (ev->ops->trace != NULL) {
            char name[80];
            snprintf(name, sizeof(name), "$%s", l->name);
            ev->ops->trace(ev->ops->user, name, used->text, used->line, val, val);
        }
        xmlXPathRegisterVariable(ev->ctxt, BAD_CAST l->name, xmlXPathNewCString(val));
    }
    ev->ctxt->node = ctx_node;
    return 0;
}

int spb_profile_extract(const spb_profile *p, xmlDocPtr doc, const char *docname,
                        const spb_extract_ops *ops, spb_err *err)
{
    xmlXPathContextPtr ctxt = NULL;
    xmlXPathObjectPtr events = NULL;
    spb_event ev_data;
    eval ev;
    int rc = 0;

    memset(&ev_data, 0, sizeof(ev_data));
    ctxt = new_context(p, doc, NULL);
    if (ctxt == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    ev.p = p;
    ev.ctxt = ctxt;
    ev.docname = docname;
    ev.ops = ops;
    ev.err = err;
    ctxt->node = (xmlNodePtr)doc;
    events = xmlXPathCompiledEval(p->events.comp, ctxt);
    if (events == NULL || events->type != XPATH_NODESET) {
        rc = spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_EXCEPTION,
                         "the events expression of dialect %s must select nodes", p->name);
        goto out;
    }
    for (int i = 0; events->nodesetval && i < events->nodesetval->nodeNr; i++) {
        xmlNodePtr node = events->nodesetval->nodeTab[i];
        int line;
        int want;

        spb_event_clear(&ev_data);
        node_location(node, &line, ev_data.source_path, sizeof(ev_data.source_path));
        ev_data.source_line = line;
        ctxt->node = node;
        /* First pass: just enough to decide whether this candidate is an event. */
        rc = eval_field(&ev, SPB_F_EVENT_ID, &ev_data, line, add_plain, NULL);
        if (rc == 0)
            rc = eval_field(&ev, SPB_F_EVENT_KIND, &ev_data, line, add_plain, NULL);
        if (rc == 0)
            rc = eval_group(&ev, SPB_F_CODES, &ev_data, line);
        if (rc < 0)
            goto out;
        want = ops->filter ? ops->filter(ops->user, &ev_data, err) : 1;
        if (want < 0) {
            rc = want;
            goto out;
        }
        if (want == 0)
            continue;
        rc = eval_lets(&ev, line);
        if (rc < 0)
            goto out;
        for (int id = 0; id < SPB_F__COUNT; id++) {
            if (id == SPB_F_EVENT_ID || id == SPB_F_EVENT_KIND)
                continue;
            if (spb_fields[id].type == SPB_FT_SCALAR || spb_fields[id].type == SPB_FT_LIST)
                rc = eval_field(&ev, (spb_field_id)id, &ev_data, line, add_plain, NULL);
            else if (id == SPB_F_NEEDS)
                rc = eval_group(&ev, SPB_F_NEEDS, &ev_data, line);
            if (rc < 0)
                goto out;
        }
        rc = ops->sink(ops->user, &ev_data, err);
        if (rc < 0)
            goto out;
    }
    rc = 0;
out:
    spb_event_clear(&ev_data);
    xmlXPathFreeObject(events);
    xmlXPathFreeContext(ctxt);
    return rc;
}
