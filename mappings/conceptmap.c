/*
 * ConceptMap loading and lookup.
 *
 * Each file is parsed with jansson and kept alive for the set's lifetime, so lookups hand
 * out borrowed strings with no copying. Every (role, source system, source code) becomes one
 * sorted index entry; lookups are a binary search. Loading refuses anything ambiguous: a
 * source code that two elements map to different targets is an error, because a referral
 * must never depend on which file happened to load first.
 */
#include "spbridge/conceptmap.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/transform.h"

#define MAX_FILES 64

typedef struct entry {
    spb_map_role role;
    const char *system;
    const char *code;
    json_t *target;            /* borrowed from the file's document; NULL: explicitly unmatched */
    const char *target_system; /* the group's target */
    int file;
    int line;
} entry;

typedef struct unmapped_rule {
    spb_map_role role;
    const char *system;
    const char *mode; /* provided | fixed */
    const char *code;
    const char *display;
    const char *target_system;
    int file;
} unmapped_rule;

/* Lines of a group's parts in its file (0: not present). */
typedef struct group_pos {
    int at; /* the group's '{' */
    int source, target, unmapped, element;
    int *elements; /* per element: the line of its "code" member, else of its '{' */
    size_t nelements;
} group_pos;

/* Lines of a ConceptMap's parts, found once after parsing (see json_walk). */
typedef struct file_pos {
    int resource_type, url, status, group;
    group_pos *groups;
    size_t ngroups;
} file_pos;

typedef struct map_file {
    char path[512];
    spb_map_role role;
    json_t *doc;
    char *text;
    file_pos pos;
    const char *url;
    const char *version;
} map_file;

struct spb_cmap_set {
    map_file files[MAX_FILES];
    int nfiles;
    entry *entries;
    size_t n, cap;
    int sorted;
    unmapped_rule unmapped[MAX_FILES * 4];
    int nunmapped;
    char file_lists[SPB_ROLE__COUNT][1024];
};

static const char *role_names[SPB_ROLE__COUNT] = {"triggers", "needs", "outcomes"};

/* ---------- where things are in a file's text ---------- */

/*
 * jansson gives a position only when it refuses a document, yet `mappings check` must point
 * at the group, member or element it is talking about. So once jansson has accepted a
 * file, its text is walked once more by a tokenizer that knows only JSON's structure
 * (strings and their escapes, brackets, commas, colons) and notes the line where each
 * top-level member, each group, each group member and each element starts. The text is
 * known to be valid JSON, so the walk needs no error handling; it only never reads past
 * the terminating NUL. (Searching the text for `"code": "X"` instead finds a target's
 * code, or an earlier element with the same code, and puts errors on the wrong line.)
 */

#define JPOS_DEPTH 8 /* containers tracked; deeper ones are walked through, not noted */

typedef struct jstep {
    int is_array;
    size_t index;    /* in an array: the item being read */
    const char *key; /* in an object: the member being read (not NUL-terminated) */
    size_t keylen;
} jstep;

/* Called where each value starts, with the containers around it (path[0..depth-1]); the
 * line is that of the member's key in an object, of the value itself in an array. */
typedef void (*jpos_fn)(void *user, const jstep *path, int depth, int line);

/* `p` is at a string's opening quote; returns the closing quote (or the NUL). */
static const char *skip_string(const char *p)
{
    for (p++; *p != '\0' && *p != '"'; p++) {
        if (*p == '\\' && p[1] != '\0')
            p++;
    }
    return p;
}

static void json_walk(const char *text, jpos_fn fn, void *user)
{
    jstep path[JPOS_DEPTH];
    int depth = 0, line = 1, key_line = 0, want_key = 0;
    const char *p = text;

    while (*p != '\0') {
        char c = *p;
        jstep *top = depth > 0 && depth <= JPOS_DEPTH ? &path[depth - 1] : NULL;
        if (c == '\n' || c == ' ' || c == '\t' || c == '\r' || c == ':') {
            line += c == '\n';
            p++;
        } else if (c == ',' || c == '}' || c == ']') {
            if (c != ',')
                depth--;
            else if (top != NULL && top->is_array)
                top->index++;
            want_key = c == ',' && !(top != NULL && top->is_array);
            p++;
        } else if (c == '"' && want_key) {
            const char *end = skip_string(p);
            if (top != NULL) {
                top->key = p + 1;
                top->keylen = (size_t)(end - p - 1);
            }
            key_line = line;
            want_key = 0;
            p = *end != '\0' ? end + 1 : end;
        } else {
            if (top != NULL || depth == 0)
                fn(user, path, depth, top != NULL && !top->is_array ? key_line : line);
            if (c == '{' || c == '[') {
                if (depth < JPOS_DEPTH)
                    path[depth] = (jstep){c == '[', 0, NULL, 0};
                depth++;
                want_key = c == '{';
                p++;
            } else if (c == '"') {
                const char *end = skip_string(p);
                p = *end != '\0' ? end + 1 : end;
            } else {
                while (*p != '\0' && strchr(",}] \t\r\n", *p) == NULL)
                    p++;
            }
        }
    }
}

static int key_is(const jstep *s, const char *key)
{
    return !s->is_array && s->key != NULL && s->keylen == strlen(key) &&
           memcmp(s->key, key, s->keylen) == 0;
}

/* Where a ConceptMap's parts are: the fields the loader's messages point at. */
static void note_position(void *user, const jstep *path, int depth, int line)
{
    file_pos *fp = user;
    group_pos *g;

    if (depth == 1) {
        int *slot = key_is(&path[0], "resourceType") ? &fp->resource_type
                    : key_is(&path[0], "url")        ? &fp->url
                    : key_is(&path[0], "status")     ? &fp->status
                    : key_is(&path[0], "group")      ? &fp->group
                                                     : NULL;
        if (slot != NULL)
            *slot = line;
        return;
    }
    if (depth < 2 || !key_is(&path[0], "group") || !path[1].is_array ||
        path[1].index >= fp->ngroups)
        return;
    g = &fp->groups[path[1].index];
    if (depth == 2) {
        g->at = line;
    } else if (depth == 3) {
        int *slot = key_is(&path[2], "source")     ? &g->source
                    : key_is(&path[2], "target")   ? &g->target
                    : key_is(&path[2], "unmapped") ? &g->unmapped
                    : key_is(&path[2], "element")  ? &g->element
                                                   : NULL;
        if (slot != NULL)
            *slot = line;
    } else if (key_is(&path[2], "element") && path[3].is_array && path[3].index < g->nelements &&
               (depth == 4 || (depth == 5 && key_is(&path[4], "code")))) {
        g->elements[path[3].index] = line; /* the element's '{', then its "code" */
    }
}

static void positions_free(file_pos *fp)
{
    for (size_t i = 0; i < fp->ngroups; i++)
        free(fp->groups[i].elements);
    free(fp->groups);
    memset(fp, 0, sizeof(*fp));
}

/* Sizes the tables from the parsed document, then fills them from the text. */
static int positions_find(file_pos *fp, json_t *doc, const char *text)
{
    json_t *groups = json_object_get(doc, "group");
    size_t n = json_is_array(groups) ? json_array_size(groups) : 0;

    memset(fp, 0, sizeof(*fp));
    if (n > 0) {
        fp->groups = calloc(n, sizeof(*fp->groups));
        if (fp->groups == NULL)
            return -1;
        fp->ngroups = n;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *el = json_object_get(json_array_get(groups, i), "element");
        size_t ne = json_is_array(el) ? json_array_size(el) : 0;
        if (ne == 0)
            continue;
        fp->groups[i].elements = calloc(ne, sizeof(int));
        if (fp->groups[i].elements == NULL) {
            positions_free(fp);
            return -1;
        }
        fp->groups[i].nelements = ne;
    }
    json_walk(text, note_position, fp);
    return 0;
}

/* The recorded lines of group `gi` (all 0 if it was not seen). */
static const group_pos *group_at(const file_pos *fp, size_t gi)
{
    static const group_pos none;
    return gi < fp->ngroups ? &fp->groups[gi] : &none;
}

/* `line` if it is known, else `fallback`. */
static int line_or(int line, int fallback)
{
    return line > 0 ? line : fallback;
}

static int element_line(const file_pos *fp, size_t gi, size_t ei)
{
    const group_pos *g = group_at(fp, gi);
    return ei < g->nelements ? line_or(g->elements[ei], g->at) : g->at;
}

int spb_map_role_parse(const char *name)
{
    for (int i = 0; i < SPB_ROLE__COUNT; i++) {
        if (strcmp(name, role_names[i]) == 0)
            return i;
    }
    return -1;
}

const char *spb_map_role_name(spb_map_role role)
{
    return role_names[role];
}

int spb_cmap_set_new(spb_cmap_set **out, spb_err *err)
{
    *out = calloc(1, sizeof(**out));
    if (*out == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    return 0;
}

void spb_cmap_set_free(spb_cmap_set *s)
{
    if (s == NULL)
        return;
    for (int i = 0; i < s->nfiles; i++) {
        json_decref(s->files[i].doc);
        free(s->files[i].text);
        positions_free(&s->files[i].pos);
    }
    free(s->entries);
    free(s);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long len;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || len > 64L * 1024 * 1024 ||
        fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc((size_t)len + 1);
    if (buf == NULL)
        goto out;
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[len] = '\0';
out:
    fclose(f);
    return buf;
}

static int add_entry(spb_cmap_set *s, const entry *e)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        entry *grown = realloc(s->entries, cap * sizeof(*grown));
        if (grown == NULL)
            return -1;
        s->entries = grown;
        s->cap = cap;
    }
    s->entries[s->n++] = *e;
    s->sorted = 0;
    return 0;
}

static int valid_equivalence(const char *e)
{
    static const char *ok[] = {"relatedto", "equivalent",  "equal",   "wider",     "subsumes",
                               "narrower",  "specializes", "inexact", "unmatched", "disjoint"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (strcmp(e, ok[i]) == 0)
            return 1;
    }
    return 0;
}

static const char *str_member(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int cmp_entry(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    int c;
    if (x->role != y->role)
        return (int)x->role - (int)y->role;
    c = strcmp(x->system, y->system);
    if (c != 0)
        return c;
    return strcmp(x->code, y->code);
}

static const char *target_code_of(json_t *t)
{
    return t ? str_member(t, "code") : NULL;
}

/* ---------- loading one file ---------- */

typedef struct cm_loader {
    spb_cmap_set *s;
    spb_map_role role;
    const char *path;
    map_file *mf;
    int fidx;
    size_t first_entry; /* this file's entries start here */
    spb_diags *diags;
    spb_err *err;
    int errors;
} cm_loader;

static void cm_error(cm_loader *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Every problem goes to the list; the first also becomes the caller's error. */
static void cm_error(cm_loader *ld, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spb_diag_add(ld->diags, SPB_DIAG_ERROR, ld->path, line, "%s", msg);
    if (ld->errors++ == 0 && (ld->err == NULL || ld->err->code == 0)) {
        spb_err_set(ld->err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg);
        spb_err_where(ld->err, ld->path, line, 0, NULL);
        spb_err_hint(ld->err, "fix the ConceptMap; `spbridge mappings check` lists every problem");
    }
}

/* Reads and parses the file and finds where its parts are. 0, or -1 with the error told
 * (the file then does not count as loaded). */
static int read_map(cm_loader *ld)
{
    map_file *mf = ld->mf;
    json_error_t jerr;

    memset(mf, 0, sizeof(*mf));
    mf->text = slurp(ld->path);
    if (mf->text == NULL) {
        cm_error(ld, 0, "cannot read ConceptMap file");
        return -1;
    }
    mf->doc = json_loads(mf->text, JSON_REJECT_DUPLICATES, &jerr);
    if (mf->doc == NULL) {
        cm_error(ld, jerr.line, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
    } else if (positions_find(&mf->pos, mf->doc, mf->text) < 0) {
        cm_error(ld, 0, "out of memory");
        json_decref(mf->doc);
        mf->doc = NULL;
    }
    if (mf->doc == NULL) {
        free(mf->text);
        mf->text = NULL;
        return -1;
    }
    snprintf(mf->path, sizeof(mf->path), "%s", ld->path);
    mf->role = ld->role;
    return 0;
}

/* resourceType, url, version, status. -1 when the file is not a ConceptMap at all. */
static int check_header(cm_loader *ld)
{
    map_file *mf = ld->mf;
    const char *type = str_member(mf->doc, "resourceType");
    const char *status = str_member(mf->doc, "status");

    if (!json_is_object(mf->doc) || type == NULL || strcmp(type, "ConceptMap") != 0) {
        if (type == NULL)
            cm_error(ld, 1, "resourceType is missing; it must be \"ConceptMap\"");
        else
            cm_error(ld, line_or(mf->pos.resource_type, 1),
                     "resourceType is \"%s\"; it must be \"ConceptMap\"", type);
        return -1;
    }
    mf->url = str_member(mf->doc, "url");
    mf->version = str_member(mf->doc, "version");
    if (mf->url == NULL || !spb_is_absolute_uri(mf->url))
        cm_error(ld, line_or(mf->pos.url, 1), "ConceptMap url must be an absolute URI");
    /* audit records name a map by url|version: a copied file that kept its url would make
     * them ambiguous */
    for (int i = 0; mf->url != NULL && i < ld->fidx; i++) {
        if (ld->s->files[i].url != NULL && strcmp(ld->s->files[i].url, mf->url) == 0)
            cm_error(ld, line_or(mf->pos.url, 1),
                     "ConceptMap url %s is also the url of %s (line %d); give each map its own",
                     mf->url, ld->s->files[i].path, ld->s->files[i].pos.url);
    }
    if (mf->version == NULL)
        spb_diag_add(ld->diags, SPB_DIAG_WARNING, ld->path, 1,
                     "ConceptMap has no version; audit records will show only its hash");
    if (status == NULL || (strcmp(status, "draft") != 0 && strcmp(status, "active") != 0 &&
                           strcmp(status, "retired") != 0 && strcmp(status, "unknown") != 0))
        cm_error(ld, line_or(mf->pos.status, 1),
                 "status must be draft, active, retired or unknown");
    return 0;
}

/* The group's `unmapped` rule: what a code with no element of its own maps to. */
static void load_unmapped(cm_loader *ld, size_t gi, json_t *unmapped, const char *src,
                          const char *tgt)
{
    spb_cmap_set *s = ld->s;
    const char *mode = str_member(unmapped, "mode");
    int line = line_or(group_at(&ld->mf->pos, gi)->unmapped, group_at(&ld->mf->pos, gi)->at);
    unmapped_rule *u;

    if (mode == NULL || (strcmp(mode, "provided") != 0 && strcmp(mode, "fixed") != 0)) {
        cm_error(ld, line,
                 "group %zu: unmapped.mode must be provided or fixed (other-map is not "
                 "supported)",
                 gi + 1);
        return;
    }
    if (s->nunmapped >= (int)(sizeof(s->unmapped) / sizeof(s->unmapped[0]))) {
        cm_error(ld, line, "group %zu: too many unmapped rules in the set", gi + 1);
        return;
    }
    u = &s->unmapped[s->nunmapped++];
    u->role = ld->role;
    u->system = src;
    u->mode = mode;
    u->code = str_member(unmapped, "code");
    u->display = str_member(unmapped, "display");
    u->target_system = tgt;
    u->file = ld->fidx;
    if (strcmp(mode, "fixed") == 0 && u->code == NULL)
        cm_error(ld, line, "group %zu: unmapped.mode fixed needs unmapped.code", gi + 1);
}

/* The element's targets: the first that maps (into *chosen), and whether one says "does not
 * map". Each bad target is reported at the element's line. */
static void read_targets(cm_loader *ld, const char *code, json_t *targets, int line,
                         json_t **chosen, int *unmatched)
{
    for (size_t ti = 0; ti < json_array_size(targets); ti++) {
        json_t *t = json_array_get(targets, ti);
        const char *eq = str_member(t, "equivalence");
        if (json_object_get(t, "relationship") != NULL) {
            cm_error(ld, line,
                     "element %s uses 'relationship' (FHIR R5); R4 ConceptMaps use "
                     "'equivalence'",
                     code);
        } else if (eq == NULL || !valid_equivalence(eq)) {
            cm_error(ld, line,
                     "element %s: equivalence '%s' is not an R4 value (relatedto, equivalent, "
                     "equal, wider, subsumes, narrower, specializes, inexact, unmatched, "
                     "disjoint)",
                     code, eq ? eq : "(none)");
        } else if (strcmp(eq, "unmatched") == 0 || strcmp(eq, "disjoint") == 0) {
            *unmatched = 1; /* an explicit "does not map" */
        } else if (target_code_of(t) == NULL) {
            cm_error(ld, line, "element %s: target has no code", code);
        } else if (*chosen == NULL) {
            *chosen = t;
        }
    }
}

/* One element becomes one index entry. -1 only when out of memory. */
static int load_element(cm_loader *ld, size_t gi, size_t ei, json_t *el, const char *src,
                        const char *tgt)
{
    const char *code = str_member(el, "code");
    json_t *targets = json_object_get(el, "target");
    int line = element_line(&ld->mf->pos, gi, ei);
    json_t *chosen = NULL;
    int unmatched = 0;
    entry e;

    if (code == NULL || !spb_is_fhir_code(code)) {
        cm_error(ld, line, "group %zu element %zu: code is missing or not a code", gi + 1, ei + 1);
        return 0;
    }
    if (!json_is_array(targets) || json_array_size(targets) == 0) {
        cm_error(ld, line, "element %s has no target", code);
        return 0;
    }
    read_targets(ld, code, targets, line, &chosen, &unmatched);
    if (chosen == NULL && !unmatched)
        return 0;
    /* An explicitly unmatched code is indexed too, so the group's `unmapped` rule never
     * applies to it (FHIR R4 ConceptMap semantics). */
    e = (entry){ld->role, src, code, chosen, tgt, ld->fidx, line};
    if (add_entry(ld->s, &e) < 0) {
        cm_error(ld, line, "out of memory");
        return -1;
    }
    return 0;
}

/* One group: its source and target systems, its unmapped rule and its elements. */
static int load_group(cm_loader *ld, size_t gi, json_t *g)
{
    const group_pos *gp = group_at(&ld->mf->pos, gi);
    const char *src = str_member(g, "source");
    const char *tgt = str_member(g, "target");
    json_t *elements = json_object_get(g, "element");
    json_t *unmapped = json_object_get(g, "unmapped");

    if (src == NULL || !spb_is_absolute_uri(src)) {
        cm_error(ld, line_or(gp->source, gp->at),
                 "group %zu: source must be the code system URI (e.g. http://snomed.info/sct), "
                 "got '%s'",
                 gi + 1, src ? src : "(none)");
        return 0;
    }
    if (tgt == NULL || !spb_is_absolute_uri(tgt)) {
        cm_error(ld, line_or(gp->target, gp->at),
                 "group %zu: target must be a code system URI, got '%s'", gi + 1,
                 tgt ? tgt : "(none)");
        return 0;
    }
    if (json_is_object(unmapped))
        load_unmapped(ld, gi, unmapped, src, tgt);
    if (!json_is_array(elements) || json_array_size(elements) == 0) {
        /* R4 requires one: a group with none is usually a list that was emptied by mistake */
        cm_error(ld, line_or(gp->element, gp->at),
                 "group %zu (source %s) has no element; an R4 ConceptMap group needs at least "
                 "one",
                 gi + 1, src);
        return 0;
    }
    for (size_t ei = 0; ei < json_array_size(elements); ei++) {
        if (load_element(ld, gi, ei, json_array_get(elements, ei), src, tgt) < 0)
            return -1;
    }
    return 0;
}

/* Within the role, one (system, code) must have one meaning, whichever file says it. */
static void check_conflicts(cm_loader *ld)
{
    spb_cmap_set *s = ld->s;

    if (s->n <= ld->first_entry)
        return;
    qsort(s->entries, s->n, sizeof(entry), cmp_entry);
    s->sorted = 1;
    for (size_t i = 1; i < s->n; i++) {
        entry *a = &s->entries[i - 1], *b = &s->entries[i];
        const entry *newer, *older;
        const char *tn, *to;
        if (cmp_entry(a, b) != 0 || (a->file != ld->fidx && b->file != ld->fidx))
            continue;
        /* within one file the later line is the repeat; across files, this file's */
        newer = (a->file == b->file ? a->line > b->line : a->file == ld->fidx) ? a : b;
        older = newer == a ? b : a;
        tn = newer->target ? target_code_of(newer->target) : "(unmatched)";
        to = older->target ? target_code_of(older->target) : "(unmatched)";
        if (strcmp(tn, to) != 0)
            cm_error(ld, newer->line,
                     "%s|%s is mapped to two different meanings: '%s' here and '%s' in %s "
                     "(line %d)",
                     a->system, a->code, tn, to, s->files[older->file].path, older->line);
        else
            spb_diag_add(ld->diags, SPB_DIAG_WARNING, ld->path, newer->line,
                         "%s|%s is mapped twice to the same target '%s' (also in %s, line %d)",
                         a->system, a->code, tn, s->files[older->file].path, older->line);
    }
}

/* Names the file in the role's list by its place in the mapping set (conceptmaps/x.json),
 * not by the absolute path of this machine. */
static void add_file_label(spb_cmap_set *s, spb_map_role role, const char *path)
{
    char *list = s->file_lists[role];
    size_t used = strlen(list);
    const char *label = path + strlen(path);
    int slashes = 0;

    while (label > path && slashes < 2) {
        if (label[-1] == '/' && ++slashes == 2)
            break;
        label--;
    }
    snprintf(list + used, sizeof(s->file_lists[role]) - used, "%s%s", used ? ", " : "", label);
}

int spb_cmap_set_load(spb_cmap_set *s, spb_map_role role, const char *path, spb_diags *diags,
                      spb_err *err)
{
    cm_loader ld = {s, role, path, NULL, s->nfiles, s->n, diags, err, 0};
    json_t *groups;

    if (s->nfiles >= MAX_FILES) {
        cm_error(&ld, 0, "more than %d ConceptMap files", MAX_FILES);
        return SPB_ECONFIG;
    }
    ld.mf = &s->files[ld.fidx];
    if (read_map(&ld) < 0)
        return SPB_ECONFIG;
    s->nfiles++;
    if (check_header(&ld) < 0)
        goto done;
    groups = json_object_get(ld.mf->doc, "group");
    if (!json_is_array(groups) || json_array_size(groups) == 0) {
        cm_error(&ld, line_or(ld.mf->pos.group, 1), "ConceptMap has no group");
        goto done;
    }
    for (size_t gi = 0; gi < json_array_size(groups); gi++) {
        if (load_group(&ld, gi, json_array_get(groups, gi)) < 0)
            goto done;
    }
done:
    if (ld.errors == 0)
        check_conflicts(&ld);
    add_file_label(s, role, path);
    return ld.errors ? SPB_ECONFIG : 0;
}

int spb_cmap_group_line(const spb_cmap_set *s, spb_map_role role, const char *system,
                        const char **file)
{
    *file = NULL;
    for (int i = 0; i < s->nfiles; i++) {
        json_t *groups = json_object_get(s->files[i].doc, "group");
        if (s->files[i].role != role)
            continue;
        for (size_t gi = 0; gi < json_array_size(groups); gi++) {
            const char *src = str_member(json_array_get(groups, gi), "source");
            if (src != NULL && strcmp(src, system) == 0) {
                *file = s->files[i].path;
                return group_at(&s->files[i].pos, gi)->at;
            }
        }
    }
    return 0;
}

static void fill_match(const spb_cmap_set *s, const entry *e, spb_cmap_match *out)
{
    const map_file *mf = &s->files[e->file];
    json_t *products = json_object_get(e->target, "product");

    memset(out, 0, sizeof(*out));
    out->target_code = str_member(e->target, "code");
    out->target_display = str_member(e->target, "display");
    out->equivalence = str_member(e->target, "equivalence");
    out->map_url = mf->url;
    out->map_version = mf->version;
    out->map_file = mf->path;
    out->element_line = e->line;
    if (json_is_array(products) && json_array_size(products) > 0) {
        json_t *p0 = json_array_get(products, 0);
        out->product_system = str_member(p0, "system");
        out->product_code = str_member(p0, "value");
        out->product_display = str_member(p0, "display");
    }
    out->target_system = e->target_system;
}

int spb_cmap_translate(const spb_cmap_set *s, spb_map_role role, const char *system,
                       const char *code, spb_cmap_match *out)
{
    entry key;
    const entry *hit = NULL;

    if (!s->sorted && s->n > 0)
        qsort(((spb_cmap_set *)s)->entries, s->n, sizeof(entry), cmp_entry);
    ((spb_cmap_set *)s)->sorted = 1;
    key.role = role;
    key.system = system;
    key.code = code;
    if (s->n > 0)
        hit = bsearch(&key, s->entries, s->n, sizeof(entry), cmp_entry);
    if (hit != NULL) {
        if (hit->target == NULL)
            return 0; /* listed as unmatched: no mapping, whatever `unmapped` says */
        fill_match(s, hit, out);
        return 1;
    }
    for (int i = 0; i < s->nunmapped; i++) {
        const unmapped_rule *u = &s->unmapped[i];
        if (u->role != role || strcmp(u->system, system) != 0)
            continue;
        memset(out, 0, sizeof(*out));
        out->target_system = u->target_system;
        if (strcmp(u->mode, "provided") == 0) {
            out->target_code = code;
            out->equivalence = "equal";
        } else {
            out->target_code = u->code;
            out->target_display = u->display;
            out->equivalence = "inexact";
        }
        out->map_url = s->files[u->file].url;
        out->map_version = s->files[u->file].version;
        out->map_file = s->files[u->file].path;
        return 1;
    }
    return 0;
}

int spb_cmap_is_unmatched(const spb_cmap_set *s, spb_map_role role, const char *system,
                          const char *code)
{
    entry key;
    const entry *hit;
    key.role = role;
    key.system = system;
    key.code = code;
    hit = s->n > 0 ? bsearch(&key, s->entries, s->n, sizeof(entry), cmp_entry) : NULL;
    return hit != NULL && hit->target == NULL;
}

const char *spb_cmap_files(const spb_cmap_set *s, spb_map_role role)
{
    return s->file_lists[role][0] ? s->file_lists[role] : "(no ConceptMap loaded for this role)";
}

void spb_cmap_versions(const spb_cmap_set *s, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->nfiles && used + 1 < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s|%s", i ? "," : "",
                         s->files[i].url ? s->files[i].url : s->files[i].path,
                         s->files[i].version ? s->files[i].version : "-");
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

void spb_cmap_each(const spb_cmap_set *s, spb_map_role role, spb_cmap_each_fn fn, void *user)
{
    spb_cmap_match m;
    if (!s->sorted && s->n > 0)
        qsort(((spb_cmap_set *)s)->entries, s->n, sizeof(entry), cmp_entry);
    ((spb_cmap_set *)s)->sorted = 1;
    for (size_t i = 0; i < s->n; i++) {
        if (s->entries[i].role != role || s->entries[i].target == NULL)
            continue;
        fill_match(s, &s->entries[i], &m);
        fn(user, s->entries[i].system, s->entries[i].code, &m);
    }
}
