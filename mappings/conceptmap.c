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

typedef struct map_file {
    char path[512];
    spb_map_role role;
    json_t *doc;
    char *text;
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

/* Line of the `nth` occurrence of "\"code\": \"<code>\"" (any spacing) in the text; used only
 * to point people at the right place, so an approximation is acceptable. */
static int line_of_code(const char *text, const char *code, int nth)
{
    char needle[300];
    const char *p = text;
    int seen = 0;

    snprintf(needle, sizeof(needle), "\"%s\"", code);
    while ((p = strstr(p, needle)) != NULL) {
        const char *q = p;
        /* walk back over ": and spaces to see whether the key was "code" */
        while (q > text && (q[-1] == ' ' || q[-1] == ':' || q[-1] == '\t'))
            q--;
        if (q - text >= 6 && strncmp(q - 6, "\"code\"", 6) == 0 && seen++ == nth) {
            int line = 1;
            for (const char *c = text; c < p; c++)
                line += (*c == '\n');
            return line;
        }
        p += strlen(needle);
    }
    return 0;
}

/* Line of the first "<key>": in the text (top-level keys such as url are unique enough). */
static int line_of_key(const char *text, const char *key)
{
    char needle[80];
    const char *p;
    int line = 1;

    snprintf(needle, sizeof(needle), "\"%s\"", key);
    p = strstr(text, needle);
    if (p == NULL)
        return 0;
    for (const char *c = text; c < p; c++)
        line += (*c == '\n');
    return line;
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

int spb_cmap_set_load(spb_cmap_set *s, spb_map_role role, const char *path, spb_diags *diags,
                      spb_err *err)
{
    json_error_t jerr;
    json_t *doc = NULL, *groups;
    map_file *mf;
    int errors = 0;
    size_t first_entry = s->n;
    int fidx;

#define CM_ERROR(line_, ...)                                                                       \
    do {                                                                                           \
        char msg_[400];                                                                            \
        snprintf(msg_, sizeof(msg_), __VA_ARGS__);                                                 \
        spb_diag_add(diags, SPB_DIAG_ERROR, path, (line_), "%s", msg_);                            \
        if (errors++ == 0 && (err == NULL || err->code == 0)) {                                    \
            spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "%s", msg_);                       \
            spb_err_where(err, path, (line_), 0, NULL);                                            \
            spb_err_hint(err, "fix the ConceptMap; `spbridge mappings check` lists every "         \
                              "problem");                                                          \
        }                                                                                          \
    } while (0)

    if (s->nfiles >= MAX_FILES) {
        CM_ERROR(0, "more than %d ConceptMap files", MAX_FILES);
        return SPB_ECONFIG;
    }
    fidx = s->nfiles;
    mf = &s->files[fidx];
    memset(mf, 0, sizeof(*mf));
    mf->text = slurp(path);
    if (mf->text == NULL) {
        CM_ERROR(0, "cannot read ConceptMap file");
        return SPB_ECONFIG;
    }
    doc = json_loads(mf->text, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL) {
        CM_ERROR(jerr.line, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
        free(mf->text);
        mf->text = NULL;
        return SPB_ECONFIG;
    }
    snprintf(mf->path, sizeof(mf->path), "%s", path);
    mf->role = role;
    mf->doc = doc;
    s->nfiles++;
    if (!json_is_object(doc) || str_member(doc, "resourceType") == NULL ||
        strcmp(str_member(doc, "resourceType"), "ConceptMap") != 0) {
        CM_ERROR(1, "resourceType must be \"ConceptMap\"");
        goto done;
    }
    mf->url = str_member(doc, "url");
    mf->version = str_member(doc, "version");
    if (mf->url == NULL || !spb_is_absolute_uri(mf->url))
        CM_ERROR(line_of_key(mf->text, "url"), "ConceptMap url must be an absolute URI");
    if (mf->version == NULL)
        spb_diag_add(diags, SPB_DIAG_WARNING, path, 1,
                     "ConceptMap has no version; audit records will show only its hash");
    {
        const char *status = str_member(doc, "status");
        if (status == NULL || (strcmp(status, "draft") != 0 && strcmp(status, "active") != 0 &&
                               strcmp(status, "retired") != 0 && strcmp(status, "unknown") != 0))
            CM_ERROR(line_of_key(mf->text, "status"),
                     "status must be draft, active, retired or unknown");
    }
    groups = json_object_get(doc, "group");
    if (!json_is_array(groups) || json_array_size(groups) == 0) {
        CM_ERROR(1, "ConceptMap has no group");
        goto done;
    }
    for (size_t gi = 0; gi < json_array_size(groups); gi++) {
        json_t *g = json_array_get(groups, gi);
        const char *src = str_member(g, "source");
        const char *tgt = str_member(g, "target");
        json_t *elements = json_object_get(g, "element");
        json_t *unmapped = json_object_get(g, "unmapped");
        if (src == NULL || !spb_is_absolute_uri(src)) {
            CM_ERROR(0,
                     "group %zu: source must be the code system URI (e.g. "
                     "http://snomed.info/sct), got '%s'",
                     gi + 1, src ? src : "(none)");
            continue;
        }
        if (tgt == NULL || !spb_is_absolute_uri(tgt)) {
            CM_ERROR(0, "group %zu: target must be a code system URI, got '%s'", gi + 1,
                     tgt ? tgt : "(none)");
            continue;
        }
        if (json_is_object(unmapped)) {
            const char *mode = str_member(unmapped, "mode");
            if (mode == NULL || (strcmp(mode, "provided") != 0 && strcmp(mode, "fixed") != 0)) {
                CM_ERROR(0,
                         "group %zu: unmapped.mode must be provided or fixed "
                         "(other-map is not supported)",
                         gi + 1);
            } else if (s->nunmapped < (int)(sizeof(s->unmapped) / sizeof(s->unmapped[0]))) {
                unmapped_rule *u = &s->unmapped[s->nunmapped++];
                u->role = role;
                u->system = src;
                u->mode = mode;
                u->code = str_member(unmapped, "code");
                u->display = str_member(unmapped, "display");
                u->target_system = tgt;
                u->file = fidx;
                if (strcmp(mode, "fixed") == 0 && u->code == NULL)
                    CM_ERROR(0, "group %zu: unmapped.mode fixed needs unmapped.code", gi + 1);
            }
        }
        if (!json_is_array(elements))
            continue;
        for (size_t ei = 0; ei < json_array_size(elements); ei++) {
            json_t *el = json_array_get(elements, ei);
            const char *code = str_member(el, "code");
            json_t *targets = json_object_get(el, "target");
            json_t *chosen = NULL;
            int unmatched = 0;
            int line;
            entry e;
            if (code == NULL || !spb_is_fhir_code(code)) {
                CM_ERROR(0, "group %zu element %zu: code is missing or not a code", gi + 1, ei + 1);
                continue;
            }
            line = line_of_code(mf->text, code, 0);
            if (!json_is_array(targets) || json_array_size(targets) == 0) {
                CM_ERROR(line, "element %s has no target", code);
                continue;
            }
            for (size_t ti = 0; ti < json_array_size(targets); ti++) {
                json_t *t = json_array_get(targets, ti);
                const char *eq = str_member(t, "equivalence");
                if (json_object_get(t, "relationship") != NULL) {
                    CM_ERROR(line,
                             "element %s uses 'relationship' (FHIR R5); R4 ConceptMaps "
                             "use 'equivalence'",
                             code);
                    continue;
                }
                if (eq == NULL || !valid_equivalence(eq)) {
                    CM_ERROR(line,
                             "element %s: equivalence '%s' is not an R4 value (relatedto, "
                             "equivalent, equal, wider, subsumes, narrower, specializes, "
                             "inexact, unmatched, disjoint)",
                             code, eq ? eq : "(none)");
                    continue;
                }
                if (strcmp(eq, "unmatched") == 0 || strcmp(eq, "disjoint") == 0) {
                    unmatched = 1; /* an explicit "does not map" */
                    continue;
                }
                if (target_code_of(t) == NULL) {
                    CM_ERROR(line, "element %s: target has no code", code);
                    continue;
                }
                if (chosen == NULL)
                    chosen = t;
            }
            if (chosen == NULL && !unmatched)
                continue;
            /* An explicitly unmatched code is indexed too, so the group's `unmapped` rule
             * never applies to it (FHIR R4 ConceptMap semantics). */
            e.role = role;
            e.system = src;
            e.code = code;
            e.target = chosen;
            e.target_system = tgt;
            e.file = fidx;
            e.line = line;
            if (add_entry(s, &e) < 0) {
                CM_ERROR(0, "out of memory");
                goto done;
            }
        }
    }
done:
    /* Conflicts: within the role, one (system, code) must have one meaning. */
    if (errors == 0 && s->n > first_entry) {
        qsort(s->entries, s->n, sizeof(entry), cmp_entry);
        s->sorted = 1;
        for (size_t i = 1; i < s->n; i++) {
            entry *a = &s->entries[i - 1], *b = &s->entries[i];
            if (cmp_entry(a, b) == 0 && (a->file == fidx || b->file == fidx)) {
                const char *ta = a->target ? target_code_of(a->target) : "(unmatched)";
                const char *tb = b->target ? target_code_of(b->target) : "(unmatched)";
                const entry *newer = a->file == fidx ? a : b;
                const entry *older = newer == a ? b : a;
                if (strcmp(ta, tb) != 0)
                    CM_ERROR(newer->line,
                             "%s|%s is mapped to two different meanings: '%s' here and '%s' "
                             "in %s (line %d)",
                             a->system, a->code, newer == a ? ta : tb, newer == a ? tb : ta,
                             s->files[older->file].path, older->line);
                else
                    spb_diag_add(diags, SPB_DIAG_WARNING, s->files[newer->file].path, newer->line,
                                 "%s|%s is mapped twice to the same target '%s'", a->system,
                                 a->code, ta);
            }
        }
    }
    {
        char *list = s->file_lists[role];
        size_t used = strlen(list);
        /* name files by their place in the mapping set (conceptmaps/x.json), not by the
         * absolute path of this machine */
        const char *label = path + strlen(path);
        int slashes = 0;
        while (label > path && slashes < 2) {
            if (label[-1] == '/' && ++slashes == 2)
                break;
            label--;
        }
        snprintf(list + used, sizeof(s->file_lists[role]) - used, "%s%s", used ? ", " : "", label);
    }
    return errors ? SPB_ECONFIG : 0;
#undef CM_ERROR
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
