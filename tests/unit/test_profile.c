/*
 * Unit tests for mappings/profile.c: loading dialect profiles and extracting events.
 *
 * A dialect is added by writing an INI profile, never C, so the loader is what stands
 * between a typo and a wrong referral. These tests check that (a) every profile feature a
 * dialect relies on works end to end on a small document (scalar, list, fallback, [let]
 * variables, continuation lines, transform chains, value maps with a '*' fallback), and
 * (b) each kind of mistake is reported with the line that has to be fixed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "support.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libxml/tree.h>

#include "spbridge/diag.h"
#include "spbridge/error.h"
#include "spbridge/event.h"
#include "spbridge/profile.h"
#include "spbridge/xml_input.h"

/* ---------- temporary folder ---------- */

static int setup_group(void **state)
{
    (void)state;
    spb_xml_global_init();
    return support_make_tmpdir("profile");
}

static int teardown_group(void **state)
{
    (void)state;
    support_remove_tmpdir();
    spb_xml_global_cleanup();
    return 0;
}

/* ---------- (a) a working profile ---------- */

/*
 * Every feature in one small profile. Items point at their organisation by id; the ODS
 * code is found through a [let] variable, on an expression split over two lines, and
 * upper-cased. Surnames come from <surname> when present, else from <family>.
 */
static const char good_profile[] =
    "; a small dialect exercising every profile feature\n"
    "[dialect]\n"
    "name = unit\n"
    "title = Unit test dialect\n"
    "accept = /t:doc\n"
    "events = /t:doc/t:item\n"
    "\n"
    "[namespaces]\n"
    "t = urn:test\n"
    "\n"
    "[let]\n"
    "org = string(@org)\n"
    "\n"
    "[fields]\n"
    "event.id = @id\n"
    "; continuation: the indented line is appended to the expression above\n"
    "practice.ods = /t:doc/t:orgs/t:org[@id = $org]\n"
    "    /@ods\n"
    "practice.name = concat('Practice ', $org)\n"
    "patient.nhs_number = t:nhs\n"
    "patient.given = t:given\n"
    "; fallback: <surname> wins when present, else <family>\n"
    "patient.family = t:surname\n"
    "patient.family = t:family\n"
    "patient.gender = t:sex\n"
    "codes = t:code\n"
    "codes.code = @c\n"
    "codes.system = @s\n"
    "\n"
    "[transforms]\n"
    "practice.ods = upper\n"
    "patient.nhs_number = digits\n"
    "patient.family = collapse | upper\n"
    "patient.gender = lower | map gender\n"
    "codes.system = map codesystem\n"
    "\n"
    "[map.gender]\n"
    "f = female\n"
    "m = male\n"
    "\n"
    "[map.codesystem]\n"
    "sct = http://snomed.info/sct\n"
    "; anything else is kept, as an OID URI\n"
    "* = urn:oid:{}\n";

static const char good_doc[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                               "<doc xmlns=\"urn:test\">\n"
                               "  <orgs>\n"
                               "    <org id=\"o1\" ods=\"b83002\"/>\n"
                               "    <org id=\"o2\" ods=\"y12345\"/>\n"
                               "  </orgs>\n"
                               "  <item id=\"ITEM-1\" org=\"o1\">\n"
                               "    <nhs>943 476 5919</nhs>\n"
                               "    <given>Jane</given>\n"
                               "    <given>Ann</given>\n"
                               "    <family>Ex ample</family>\n"
                               "    <sex>F</sex>\n"
                               "    <code c=\"871731000000106\" s=\"sct\"/>\n"
                               "    <code c=\"8T09.\" s=\"2.16.840.1.113883.2.1.6.2\"/>\n"
                               "  </item>\n"
                               "  <item id=\"ITEM-2\" org=\"o2\">\n"
                               "    <nhs>999-000-0018</nhs>\n"
                               "    <given>Tom</given>\n"
                               "    <surname>Smith</surname>\n"
                               "    <family>Ignored</family>\n"
                               "    <sex>m</sex>\n"
                               "    <code c=\"XaaEC\" s=\"sct\"/>\n"
                               "  </item>\n"
                               "</doc>\n";

#define MAX_SEEN 4

/* What the sink saw, copied: the event is cleared after each call. */
typedef struct seen_event {
    char id[64];
    char ods[32];
    char practice_name[64];
    char nhs[32];
    char given[4][32];
    size_t ngiven;
    char family[64];
    char gender[16];
    char systems[4][64];
    char codes[4][32];
    size_t ncodes;
    int line;
} seen_event;

typedef struct seen {
    seen_event ev[MAX_SEEN];
    size_t n;
    size_t filtered;
    const char *skip_id; /* the filter rejects this event id */
} seen;

static void copy_field(char *dst, size_t size, const spb_event *ev, spb_field_id id)
{
    const char *v = spb_event_get(ev, id);
    snprintf(dst, size, "%s", v ? v : "");
}

static int filter_fn(void *user, const spb_event *ev, spb_err *err)
{
    seen *s = user;
    const char *id = spb_event_get(ev, SPB_F_EVENT_ID);

    (void)err;
    s->filtered++;
    /* the filter sees only what decides whether this is an event: id and codes */
    assert_non_null(id);
    assert_true(ev->ncodes > 0);
    assert_null(spb_event_get(ev, SPB_F_PATIENT_FAMILY));
    assert_null(spb_event_get(ev, SPB_F_PRACTICE_ODS));
    return s->skip_id != NULL && strcmp(id, s->skip_id) == 0 ? 0 : 1;
}

static int sink_fn(void *user, spb_event *ev, spb_err *err)
{
    seen *s = user;
    seen_event *out;

    (void)err;
    assert_true(s->n < MAX_SEEN);
    out = &s->ev[s->n++];
    memset(out, 0, sizeof(*out));
    copy_field(out->id, sizeof(out->id), ev, SPB_F_EVENT_ID);
    copy_field(out->ods, sizeof(out->ods), ev, SPB_F_PRACTICE_ODS);
    copy_field(out->practice_name, sizeof(out->practice_name), ev, SPB_F_PRACTICE_NAME);
    copy_field(out->nhs, sizeof(out->nhs), ev, SPB_F_PATIENT_NHS_NUMBER);
    copy_field(out->family, sizeof(out->family), ev, SPB_F_PATIENT_FAMILY);
    copy_field(out->gender, sizeof(out->gender), ev, SPB_F_PATIENT_GENDER);
    for (size_t i = 0; i < ev->f[SPB_F_PATIENT_GIVEN].n && i < 4; i++)
        snprintf(out->given[out->ngiven++], sizeof(out->given[0]), "%s",
                 ev->f[SPB_F_PATIENT_GIVEN].v[i]);
    for (size_t i = 0; i < ev->ncodes && i < 4; i++) {
        snprintf(out->systems[i], sizeof(out->systems[0]), "%s", ev->codes[i].system);
        snprintf(out->codes[i], sizeof(out->codes[0]), "%s", ev->codes[i].code);
        out->ncodes++;
    }
    out->line = ev->source_line;
    return 0;
}

/* Loads good_profile; fails the test if it has any error. */
static spb_profile *load_good(void)
{
    char path[512];
    spb_profile *p = NULL;
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    assert_non_null(diags);
    spb_err_clear(&err);
    write_file(path, sizeof(path), "good.ini", good_profile);
    if (spb_profile_load(&p, path, diags, &err) != 0)
        fail_msg("good profile refused: line %d: %s", err.line, err.message);
    assert_int_equal(diags->errors, 0);
    free(diags);
    return p;
}

static xmlDocPtr parse(const char *xml)
{
    xmlDocPtr doc = NULL;
    spb_err err;

    spb_err_clear(&err);
    if (spb_xml_parse(&doc, xml, strlen(xml), "unit.xml", NULL, &err) != 0)
        fail_msg("test document refused: %s", err.message);
    return doc;
}

static void test_profile_extract(void **state)
{
    spb_profile *p = load_good();
    xmlDocPtr doc = parse(good_doc);
    seen *s = calloc(1, sizeof(*s));
    spb_extract_ops ops = {filter_fn, sink_fn, NULL, NULL};
    spb_err err;

    (void)state;
    assert_non_null(s);
    ops.user = s;
    assert_string_equal(spb_profile_name(p), "unit");
    assert_string_equal(spb_profile_title(p), "Unit test dialect");
    assert_true(spb_profile_accepts(p, doc));

    spb_err_clear(&err);
    if (spb_profile_extract(p, doc, "unit.xml", &ops, &err) != 0)
        fail_msg("extract failed: %s", err.message);
    assert_int_equal(s->filtered, 2);
    assert_int_equal(s->n, 2);

    /* first item: the fallback finds <family>; [let] + continuation + upper give the ODS */
    assert_string_equal(s->ev[0].id, "ITEM-1");
    assert_int_equal(s->ev[0].line, 7);
    assert_string_equal(s->ev[0].ods, "B83002");
    assert_string_equal(s->ev[0].practice_name, "Practice o1");
    assert_string_equal(s->ev[0].nhs, "9434765919"); /* digits drops the spaces */
    assert_int_equal(s->ev[0].ngiven, 2);            /* a list keeps every value */
    assert_string_equal(s->ev[0].given[0], "Jane");
    assert_string_equal(s->ev[0].given[1], "Ann");
    assert_string_equal(s->ev[0].family, "EXAMPLE"); /* collapse | upper, in order */
    assert_string_equal(s->ev[0].gender, "female");  /* lower | map gender */
    assert_int_equal(s->ev[0].ncodes, 2);
    assert_string_equal(s->ev[0].systems[0], "http://snomed.info/sct");
    assert_string_equal(s->ev[0].codes[0], "871731000000106");
    /* '*' = urn:oid:{} puts the unmapped value into the hole */
    assert_string_equal(s->ev[0].systems[1], "urn:oid:2.16.840.1.113883.2.1.6.2");
    assert_string_equal(s->ev[0].codes[1], "8T09.");

    /* second item: <surname> is the first choice and wins over <family> */
    assert_string_equal(s->ev[1].id, "ITEM-2");
    assert_string_equal(s->ev[1].ods, "Y12345");
    assert_string_equal(s->ev[1].nhs, "9990000018");
    assert_int_equal(s->ev[1].ngiven, 1);
    assert_string_equal(s->ev[1].given[0], "Tom");
    assert_string_equal(s->ev[1].family, "SMITH");
    assert_string_equal(s->ev[1].gender, "male");

    /* a filter returning 0 skips the candidate before the sink */
    memset(s, 0, sizeof(*s));
    s->skip_id = "ITEM-1";
    spb_err_clear(&err);
    assert_int_equal(spb_profile_extract(p, doc, "unit.xml", &ops, &err), 0);
    assert_int_equal(s->filtered, 2);
    assert_int_equal(s->n, 1);
    assert_string_equal(s->ev[0].id, "ITEM-2");

    free(s);
    xmlFreeDoc(doc);
    spb_profile_free(p);
}

static void test_profile_accept_other_root(void **state)
{
    spb_profile *p = load_good();
    xmlDocPtr doc = parse("<other xmlns=\"urn:test\"/>");

    (void)state;
    assert_false(spb_profile_accepts(p, doc));
    xmlFreeDoc(doc);
    spb_profile_free(p);
}

static void test_profile_value_not_in_map(void **state)
{
    /* <sex>X</sex> is not in [map.gender], which has no '*' entry: the error names the
     * document and the line of the offending element */
    static const char doc_text[] = "<doc xmlns=\"urn:test\">\n"
                                   "  <orgs><org id=\"o1\" ods=\"b83002\"/></orgs>\n"
                                   "  <item id=\"ITEM-9\" org=\"o1\">\n"
                                   "    <nhs>9434765919</nhs>\n"
                                   "    <sex>X</sex>\n"
                                   "    <code c=\"871731000000106\" s=\"sct\"/>\n"
                                   "  </item>\n"
                                   "</doc>\n";
    spb_profile *p = load_good();
    xmlDocPtr doc = parse(doc_text);
    seen *s = calloc(1, sizeof(*s));
    spb_extract_ops ops = {filter_fn, sink_fn, NULL, NULL};
    spb_err err;

    (void)state;
    assert_non_null(s);
    ops.user = s;
    spb_err_clear(&err);
    assert_int_equal(spb_profile_extract(p, doc, "unit.xml", &ops, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_CODE_INVALID);
    assert_string_equal(err.file, "unit.xml");
    assert_int_equal(err.line, 5);
    assert_non_null(strstr(err.message, "patient.gender"));
    assert_int_equal(s->n, 0); /* nothing reached the sink */
    free(s);
    xmlFreeDoc(doc);
    spb_profile_free(p);
}

/* ---------- (b) broken profiles ---------- */

/* A valid minimal profile; each case below adds or changes one line. */
#define BASE_HEAD                                                                                  \
    "[dialect]\n"                                                                                  \
    "name = broken\n"                                                                              \
    "events = /t:doc/t:item\n"                                                                     \
    "\n"                                                                                           \
    "[namespaces]\n"                                                                               \
    "t = urn:test\n"                                                                               \
    "\n"                                                                                           \
    "[let]\n"                                                                                      \
    "org = string(@org)\n"                                                                         \
    "\n"                                                                                           \
    "[fields]\n"                                                                                   \
    "event.id = @id\n"                                                                             \
    "practice.ods = t:ods\n"                                                                       \
    "patient.nhs_number = t:nhs\n"                                                                 \
    "codes = t:code\n"                                                                             \
    "codes.system = @s\n"
#define BASE_CODE "codes.code = @c\n"

/*
 * Loads `text` and checks it is refused with SPB_ECONFIG, and that the first diagnostic
 * (and the error) points at the first line containing `marker`, in that file, and says
 * `says` (when not NULL).
 */
static void expect_refusal(const char *name, const char *text, const char *marker, const char *says)
{
    char path[512];
    spb_profile *p = (spb_profile *)1;
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;
    int want = line_of(text, marker);
    int rc;

    assert_non_null(diags);
    assert_true(want > 0);
    spb_err_clear(&err);
    write_file(path, sizeof(path), name, text);
    rc = spb_profile_load(&p, path, diags, &err);
    if (rc != SPB_ECONFIG || diags->errors < 1 || diags->items[0].line != want ||
        (says != NULL && strstr(diags->items[0].message, says) == NULL))
        fail_msg("%s: rc %d, %zu errors, first at line %d (want %d): %s", name, rc, diags->errors,
                 diags->n ? diags->items[0].line : -1, want,
                 diags->n ? diags->items[0].message : "(none)");
    assert_null(p);
    assert_int_equal(diags->items[0].severity, SPB_DIAG_ERROR);
    assert_string_equal(diags->items[0].file, path);
    assert_int_equal(err.code, SPB_ECONFIG);
    assert_int_equal(err.line, want);
    assert_string_equal(err.file, path);
    free(diags);
}

static void expect_broken(const char *name, const char *text, const char *marker)
{
    expect_refusal(name, text, marker, NULL);
}

static void test_broken_base_is_valid(void **state)
{
    /* the base of the broken cases must itself load, or the cases prove nothing */
    char path[512];
    spb_profile *p = NULL;
    spb_err err;

    (void)state;
    spb_err_clear(&err);
    write_file(path, sizeof(path), "base.ini", BASE_HEAD BASE_CODE);
    if (spb_profile_load(&p, path, NULL, &err) != 0)
        fail_msg("base profile refused: line %d: %s", err.line, err.message);
    spb_profile_free(p);
}

static void test_broken_unknown_field(void **state)
{
    (void)state;
    expect_broken("unknown_field.ini", BASE_HEAD BASE_CODE "patient.shoe_size = t:shoe\n",
                  "shoe_size");
}

static void test_broken_xpath_syntax(void **state)
{
    (void)state;
    expect_broken("xpath_syntax.ini", BASE_HEAD BASE_CODE "patient.family = t:family[\n",
                  "t:family[");
}

static void test_broken_undeclared_prefix(void **state)
{
    (void)state;
    expect_refusal("prefix.ini", BASE_HEAD BASE_CODE "patient.family = zz:family\n",
                   "zz:", "namespace prefix 'zz' is not declared in [namespaces]");
    /* inside a predicate, which a trial run on an empty document never evaluates */
    expect_refusal("prefix_predicate.ini",
                   BASE_HEAD BASE_CODE "patient.family = t:family[zz:x = 'a:b']\n",
                   "zz:", "namespace prefix 'zz'");
}

static void test_broken_undefined_variable(void **state)
{
    (void)state;
    expect_refusal("variable.ini", BASE_HEAD BASE_CODE "patient.family = string($nope)\n", "$nope",
                   "variable $nope is not defined");
    expect_refusal("function.ini", BASE_HEAD BASE_CODE "patient.family = t:f[lower-case(.)]\n",
                   "lower-case", "unknown function lower-case()");
}

static void test_broken_missing_map(void **state)
{
    (void)state;
    expect_broken("missing_map.ini",
                  BASE_HEAD BASE_CODE "patient.gender = t:sex\n"
                                      "\n"
                                      "[transforms]\n"
                                      "patient.gender = map sexes\n",
                  "map sexes");
}

static void test_broken_unknown_section(void **state)
{
    /* inih reports sections through their keys, so the line is the first key's */
    (void)state;
    expect_broken("section.ini",
                  BASE_HEAD BASE_CODE "\n"
                                      "[feilds]\n"
                                      "patient.family = t:family\n",
                  "patient.family");
}

static void test_broken_long_line(void **state)
{
    /* inih's line buffer is 200 bytes: a longer line must be an error, not a silent split */
    char text[2048];
    char xpath[300];
    size_t n = 0;

    (void)state;
    while (n + 4 < 250) {
        memcpy(xpath + n, "t:a/", 4);
        n += 4;
    }
    memcpy(xpath + n, "t:b", 4);
    snprintf(text, sizeof(text), "%s%spatient.family = %s\npatient.gender = t:sex\n", BASE_HEAD,
             BASE_CODE, xpath);
    assert_true(strlen(strstr(text, "patient.family")) > 250);
    expect_broken("long_line.ini", text, "patient.family");
}

static void test_broken_early_field_uses_variable(void **state)
{
    /* codes.code is read before [let] variables exist, so it may not use them */
    (void)state;
    expect_broken("early_var.ini", BASE_HEAD "codes.code = $org\n", "$org");
}

static void test_broken_syntax(void **state)
{
    (void)state;
    expect_broken("syntax.ini", BASE_HEAD BASE_CODE "this line has no equals sign\n", "no equals");
}

static void test_broken_missing_required(void **state)
{
    /* a profile without patient.nhs_number cannot produce a referral */
    (void)state;
    expect_broken("required.ini",
                  "[dialect]\nname = r\nevents = /x\n[fields]\nevent.id = @id\n"
                  "practice.ods = o\ncodes = c\ncodes.code = @c\ncodes.system = @s\n",
                  "[dialect]");
}

/* Regression: an indented line after a key that cannot continue is an error, never a
 * silent replacement of the value. */
static void test_broken_continuation_of_plain_key(void **state)
{
    (void)state;
    expect_broken("title_continued.ini",
                  "[dialect]\nname = t\ntitle = A long title\n    that continues here\n"
                  "events = /t:doc/t:item\n",
                  "that continues");
    expect_broken("transform_continued.ini",
                  BASE_HEAD BASE_CODE "\n[transforms]\ncodes.system = lower\n    | upper\n",
                  "| upper");
}

/* [dialect] keys are given once; a second `events =` used to replace the first silently. */
static void test_broken_dialect_key_twice(void **state)
{
    (void)state;
    expect_refusal("events_twice.ini", BASE_HEAD BASE_CODE "[dialect]\nevents = /t:other\n",
                   "/t:other", "[dialect] events is given twice (first on line 3)");
    expect_refusal("name_twice.ini", "[dialect]\nname = a\nname = b\n", "name = b",
                   "[dialect] name is given twice");
}

/* schema.ROOT may repeat with distinct ROOTs only, and never after a plain schema. */
static void test_schema_lines(void **state)
{
    char path[512];
    spb_profile *p = NULL;
    spb_err err;

    (void)state;
    expect_refusal("schema_twice.ini",
                   BASE_HEAD BASE_CODE "[dialect]\nschema.a = /x/a.xsd\nschema.a = /x/b.xsd\n",
                   "b.xsd", "schema.a is never used");
    expect_refusal("schema_after_plain.ini",
                   BASE_HEAD BASE_CODE "[dialect]\nschema = /x/a.xsd\nschema.b = /x/b.xsd\n",
                   "b.xsd", "already applies to every document");
    expect_refusal("schema_empty.ini", BASE_HEAD BASE_CODE "[dialect]\nschema =\n",
                   "schema =", "schema has no path");
    spb_err_clear(&err);
    write_file(path, sizeof(path), "schemas.ini",
               BASE_HEAD BASE_CODE "[dialect]\nschema.a = /x/a.xsd\nschema.b = /x/b.xsd\n"
                                   "schema = /x/any.xsd\n");
    if (spb_profile_load(&p, path, NULL, &err) != 0)
        fail_msg("distinct schema roots refused: line %d: %s", err.line, err.message);
    spb_profile_free(p);
}

/* A map value that is not a URI is reported at its own line, once. */
static void test_broken_map_value_line(void **state)
{
    (void)state;
    expect_refusal("map_value.ini",
                   BASE_HEAD BASE_CODE "needs = t:need\nneeds.code = @c\nneeds.system = @s\n"
                                       "[transforms]\ncodes.system = map cs\n"
                                       "needs.system = map cs\n"
                                       "[map.cs]\nsct = http://snomed.info/sct\nloc = local\n",
                   "loc = local", "map.cs gives 'local' for 'loc', which is not a URI");
    expect_refusal("map_key_twice.ini",
                   BASE_HEAD BASE_CODE "[transforms]\ncodes.system = map cs\n"
                                       "[map.cs]\nsct = http://snomed.info/sct\n"
                                       "sct = http://snomed.info/sct/again\n",
                   "again", "lists 'sct' twice (first on line 21)");
}

/* A transform for a field with no expression would never run: a misspelt or missing field. */
static void test_broken_transform_without_field(void **state)
{
    (void)state;
    expect_refusal("orphan_transform.ini",
                   BASE_HEAD BASE_CODE "[transforms]\npatient.gender = lower\n", "patient.gender",
                   "has no expression in [fields]");
    expect_refusal("empty_expression.ini", BASE_HEAD BASE_CODE "patient.family =\n",
                   "patient.family", "patient.family has no expression");
}

static void test_shipped_profiles_load(void **state)
{
    static const char *const files[][2] = {
        {SPB_SOURCE_DIR "/mappings/dialects/gp2gp.ini", "gp2gp"},
        {SPB_SOURCE_DIR "/mappings/dialects/native.ini", "native"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        spb_profile *p = NULL;
        spb_diags *diags = calloc(1, sizeof(*diags));
        spb_err err;

        assert_non_null(diags);
        spb_err_clear(&err);
        if (spb_profile_load(&p, files[i][0], diags, &err) != 0)
            fail_msg("%s: line %d: %s", files[i][0], err.line, err.message);
        assert_int_equal(diags->errors, 0);
        assert_string_equal(spb_profile_name(p), files[i][1]);
        spb_profile_free(p);
        free(diags);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_extract),
        cmocka_unit_test(test_profile_accept_other_root),
        cmocka_unit_test(test_profile_value_not_in_map),
        cmocka_unit_test(test_broken_base_is_valid),
        cmocka_unit_test(test_broken_unknown_field),
        cmocka_unit_test(test_broken_xpath_syntax),
        cmocka_unit_test(test_broken_undeclared_prefix),
        cmocka_unit_test(test_broken_undefined_variable),
        cmocka_unit_test(test_broken_missing_map),
        cmocka_unit_test(test_broken_unknown_section),
        cmocka_unit_test(test_broken_long_line),
        cmocka_unit_test(test_broken_early_field_uses_variable),
        cmocka_unit_test(test_broken_syntax),
        cmocka_unit_test(test_broken_missing_required),
        cmocka_unit_test(test_broken_continuation_of_plain_key),
        cmocka_unit_test(test_broken_dialect_key_twice),
        cmocka_unit_test(test_schema_lines),
        cmocka_unit_test(test_broken_map_value_line),
        cmocka_unit_test(test_broken_transform_without_field),
        cmocka_unit_test(test_shipped_profiles_load),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
