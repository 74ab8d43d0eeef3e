/*
 * Unit tests for mappings/conceptmap.c: the shipped ConceptMaps and the loader's checks.
 *
 * Which GP codes are social prescribing events is data, not C, so the lookups of the
 * shipped maps are tested here by code; and because a referral must never depend on which
 * file loaded first, the loader's refusal of conflicting or malformed maps is tested with
 * small temporary ConceptMaps.
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

#include "spbridge/conceptmap.h"
#include "spbridge/diag.h"
#include "spbridge/error.h"

#define SNOMED        "http://snomed.info/sct"
#define READV2        "http://read.info/readv2"
#define CTV3          "http://read.info/ctv3"
#define TRIGGERS_JSON SPB_SOURCE_DIR "/mappings/conceptmaps/triggers.json"
#define NEEDS_JSON    SPB_SOURCE_DIR "/mappings/conceptmaps/needs.json"

/* ---------- temporary folder ---------- */

static int setup_group(void **state)
{
    (void)state;
    return support_make_tmpdir("cmap");
}

static int teardown_group(void **state)
{
    (void)state;
    support_remove_tmpdir();
    return 0;
}

/* A whole test ConceptMap: the header every test map shares around one `group`. */
static void cmap_text(char *buf, size_t size, const char *id, const char *group)
{
    snprintf(buf, size,
             "{\n"
             "  \"resourceType\": \"ConceptMap\",\n"
             "  \"url\": \"https://example.org/fhir/ConceptMap/%s\",\n"
             "  \"version\": \"0.0.1\",\n"
             "  \"status\": \"draft\",\n"
             "  \"group\": [\n"
             "%s"
             "  ]\n"
             "}\n",
             id, group);
}

/* ---------- the shipped maps ---------- */

static spb_cmap_set *shipped;

/* Loads triggers.json and needs.json once for the lookup tests. */
static int setup_shipped(void **state)
{
    spb_err err;

    (void)state;
    spb_err_clear(&err);
    if (spb_cmap_set_new(&shipped, &err) < 0)
        return -1;
    if (spb_cmap_set_load(shipped, SPB_ROLE_TRIGGERS, TRIGGERS_JSON, NULL, &err) < 0 ||
        spb_cmap_set_load(shipped, SPB_ROLE_NEEDS, NEEDS_JSON, NULL, &err) < 0) {
        fprintf(stderr, "shipped ConceptMaps refused: %s:%d: %s\n", err.file, err.line,
                err.message);
        return -1;
    }
    return 0;
}

static int teardown_shipped(void **state)
{
    (void)state;
    spb_cmap_set_free(shipped);
    shipped = NULL;
    return 0;
}

static void test_shipped_load_clean(void **state)
{
    /* the shipped maps load with no error and no warning */
    spb_cmap_set *s = NULL;
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, TRIGGERS_JSON, diags, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_NEEDS, NEEDS_JSON, diags, &err), 0);
    assert_int_equal(diags->errors, 0);
    assert_int_equal(diags->warnings, 0);
    {
        /* the "extend this map" hint names the file (by its place in the set) */
        const char *files = spb_cmap_files(s, SPB_ROLE_TRIGGERS);
        const char *tail = "conceptmaps/triggers.json";
        assert_true(strlen(files) >= strlen(tail));
        assert_string_equal(files + strlen(files) - strlen(tail), tail);
    }
    {
        char versions[512];
        spb_cmap_versions(s, versions, sizeof(versions));
        assert_string_equal(versions,
                            "https://spbridge.dev/fhir/ConceptMap/spbridge-triggers|1.0.0,"
                            "https://spbridge.dev/fhir/ConceptMap/spbridge-needs|1.0.0");
    }
    spb_cmap_set_free(s);
    free(diags);
}

static void test_trigger_snomed_referral(void **state)
{
    spb_cmap_match m;

    (void)state;
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, SNOMED, "871731000000106", &m),
                     1);
    assert_string_equal(m.target_code, "referral");
    assert_string_equal(m.target_system, "https://spbridge.dev/fhir/CodeSystem/event-kind");
    assert_string_equal(m.equivalence, "wider");
    assert_null(m.product_code); /* already SNOMED: nothing to add */
    assert_string_equal(m.map_url, "https://spbridge.dev/fhir/ConceptMap/spbridge-triggers");
    assert_string_equal(m.map_version, "1.0.0");
    assert_string_equal(m.map_file, TRIGGERS_JSON);
    assert_true(m.element_line > 0);
}

static void test_trigger_read_codes(void **state)
{
    spb_cmap_match m;

    (void)state;
    /* legacy codes map to referral and carry the SNOMED concept as their product */
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, READV2, "8T09.", &m), 1);
    assert_string_equal(m.target_code, "referral");
    assert_non_null(m.product_code);
    assert_string_equal(m.product_code, "871731000000106");
    assert_string_equal(m.product_system, SNOMED);

    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, CTV3, "XaaEC", &m), 1);
    assert_string_equal(m.target_code, "referral");
    assert_string_equal(m.product_code, "871731000000106");
}

static void test_trigger_declined(void **state)
{
    spb_cmap_match m;

    (void)state;
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, SNOMED, "871711000000103", &m),
                     1);
    assert_string_equal(m.target_code, "declined");
}

static void test_trigger_not_mapped(void **state)
{
    spb_cmap_match m;

    (void)state;
    /* a code nobody mapped */
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, SNOMED, "88551000000109", &m),
                     0);
    /* the right code under the wrong system */
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, READV2, "871731000000106", &m),
                     0);
    assert_int_equal(
        spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, "urn:oid:1.2.3", "871731000000106", &m), 0);
    /* roles are separate: a trigger is not a need, a need is not a trigger */
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_NEEDS, SNOMED, "871731000000106", &m), 0);
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_TRIGGERS, SNOMED, "267076002", &m), 0);
}

static void test_needs(void **state)
{
    spb_cmap_match m;

    (void)state;
    assert_int_equal(spb_cmap_translate(shipped, SPB_ROLE_NEEDS, SNOMED, "267076002", &m), 1);
    assert_string_equal(m.target_code, "267076002");
    assert_string_equal(m.target_system, SNOMED);
    assert_string_equal(m.target_display, "Feeling lonely");
}

static void test_role_names(void **state)
{
    (void)state;
    assert_int_equal(spb_map_role_parse("triggers"), SPB_ROLE_TRIGGERS);
    assert_int_equal(spb_map_role_parse("needs"), SPB_ROLE_NEEDS);
    assert_int_equal(spb_map_role_parse("outcomes"), SPB_ROLE_OUTCOMES);
    assert_int_equal(spb_map_role_parse("trigger"), -1);
    assert_string_equal(spb_map_role_name(SPB_ROLE_NEEDS), "needs");
}

/* ---------- the loader's refusals ---------- */

/* Loads `path` into a fresh set under `role`; returns the result, fills diags and err. */
static int load_one(spb_map_role role, const char *path, spb_diags *diags, spb_err *err)
{
    spb_cmap_set *s = NULL;
    int rc;

    spb_err_clear(err);
    assert_int_equal(spb_cmap_set_new(&s, err), 0);
    rc = spb_cmap_set_load(s, role, path, diags, err);
    spb_cmap_set_free(s);
    return rc;
}

static void test_conflict_between_files(void **state)
{
    /* a second triggers map giving the referral code another meaning */
    static const char group[] =
        "    {\n"
        "      \"source\": \"http://snomed.info/sct\",\n"
        "      \"target\": \"https://spbridge.dev/fhir/CodeSystem/event-kind\",\n"
        "      \"element\": [\n"
        "        {\n"
        "          \"code\": \"871731000000106\",\n"
        "          \"target\": [{\n"
        "            \"code\": \"declined\",\n"
        "            \"equivalence\": \"wider\"\n"
        "          }]\n"
        "        }\n"
        "      ]\n"
        "    }\n";
    char text[2048];
    char path[512];
    spb_cmap_set *s = NULL;
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;
    const spb_diag_item *hit = NULL;

    (void)state;
    assert_non_null(diags);
    cmap_text(text, sizeof(text), "conflict", group);
    write_file(path, sizeof(path), "conflict.json", text);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, TRIGGERS_JSON, diags, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, path, diags, &err), SPB_ECONFIG);
    assert_int_equal(err.code, SPB_ECONFIG);
    assert_true(diags->errors >= 1);
    for (size_t i = 0; i < diags->n && hit == NULL; i++) {
        if (diags->items[i].severity == SPB_DIAG_ERROR &&
            strstr(diags->items[i].message, "871731000000106") != NULL)
            hit = &diags->items[i];
    }
    assert_non_null(hit);
    /* the diagnostic is filed against the new map and names the old one, both meanings
     * and where each is */
    assert_string_equal(hit->file, path);
    assert_int_equal(hit->line, line_of(text, "\"code\": \"871731000000106\""));
    assert_non_null(strstr(hit->message, "triggers.json"));
    assert_non_null(strstr(hit->message, "'declined'"));
    assert_non_null(strstr(hit->message, "'referral'"));
    spb_cmap_set_free(s);
    free(diags);
}

static void test_same_target_twice_is_a_warning(void **state)
{
    /* the same mapping repeated is harmless: a warning, not an error */
    static const char group[] =
        "    {\n"
        "      \"source\": \"http://snomed.info/sct\",\n"
        "      \"target\": \"https://spbridge.dev/fhir/CodeSystem/event-kind\",\n"
        "      \"element\": [\n"
        "        {\n"
        "          \"code\": \"871731000000106\",\n"
        "          \"target\": [{\n"
        "            \"code\": \"referral\",\n"
        "            \"equivalence\": \"wider\"\n"
        "          }]\n"
        "        }\n"
        "      ]\n"
        "    }\n";
    char text[2048];
    char path[512];
    spb_cmap_set *s = NULL;
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    cmap_text(text, sizeof(text), "repeat", group);
    write_file(path, sizeof(path), "repeat.json", text);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, TRIGGERS_JSON, diags, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, path, diags, &err), 0);
    assert_int_equal(diags->errors, 0);
    assert_true(diags->warnings >= 1);
    spb_cmap_set_free(s);
    free(diags);
}

static void test_invalid_equivalence(void **state)
{
    static const char group[] = "    {\n"
                                "      \"source\": \"http://snomed.info/sct\",\n"
                                "      \"target\": \"http://snomed.info/sct\",\n"
                                "      \"element\": [\n"
                                "        {\n"
                                "          \"code\": \"267076002\",\n"
                                "          \"target\": [{\n"
                                "            \"code\": \"267076002\",\n"
                                "            \"equivalence\": \"same\"\n"
                                "          }]\n"
                                "        }\n"
                                "      ]\n"
                                "    }\n";
    char text[2048];
    char path[512];
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    cmap_text(text, sizeof(text), "same", group);
    write_file(path, sizeof(path), "same.json", text);
    assert_int_equal(load_one(SPB_ROLE_NEEDS, path, diags, &err), SPB_ECONFIG);
    assert_true(diags->errors >= 1);
    assert_non_null(strstr(diags->items[0].message, "'same'"));
    assert_int_equal(diags->items[0].line, line_of(text, "\"code\": \"267076002\""));
    assert_string_equal(err.file, path);
    free(diags);
}

static void test_r5_relationship(void **state)
{
    /* an R5 map (relationship instead of equivalence) must not be half-read as R4 */
    static const char group[] = "    {\n"
                                "      \"source\": \"http://snomed.info/sct\",\n"
                                "      \"target\": \"http://snomed.info/sct\",\n"
                                "      \"element\": [\n"
                                "        {\n"
                                "          \"code\": \"81877007\",\n"
                                "          \"target\": [{\n"
                                "            \"code\": \"81877007\",\n"
                                "            \"relationship\": \"equivalent\"\n"
                                "          }]\n"
                                "        }\n"
                                "      ]\n"
                                "    }\n";
    char text[2048];
    char path[512];
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    cmap_text(text, sizeof(text), "r5", group);
    write_file(path, sizeof(path), "r5.json", text);
    assert_int_equal(load_one(SPB_ROLE_NEEDS, path, diags, &err), SPB_ECONFIG);
    assert_true(diags->errors >= 1);
    assert_non_null(strstr(diags->items[0].message, "relationship"));
    assert_int_equal(diags->items[0].line, line_of(text, "\"code\": \"81877007\""));
    free(diags);
}

static void test_not_json(void **state)
{
    /* the bare word on line 4 is where jansson stops */
    static const char text[] = "{\n"
                               "  \"resourceType\": \"ConceptMap\",\n"
                               "  \"status\": \"draft\",\n"
                               "  \"url\": oops\n"
                               "}\n";
    char path[512];
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    write_file(path, sizeof(path), "broken.json", text);
    assert_int_equal(load_one(SPB_ROLE_TRIGGERS, path, diags, &err), SPB_ECONFIG);
    assert_true(diags->errors >= 1);
    assert_int_equal(diags->items[0].line, 4);
    assert_int_equal(err.line, 4);
    assert_string_equal(diags->items[0].file, path);
    free(diags);
}

static void test_not_a_conceptmap(void **state)
{
    char path[512];
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    write_file(path, sizeof(path), "valueset.json",
               "{\"resourceType\": \"ValueSet\", \"status\": \"draft\"}\n");
    assert_int_equal(load_one(SPB_ROLE_TRIGGERS, path, diags, &err), SPB_ECONFIG);
    assert_true(diags->errors >= 1);
    free(diags);
}

static void test_unmapped_provided(void **state)
{
    /* local codes: one mapped explicitly, every other one passed through as itself */
    static const char group[] = "    {\n"
                                "      \"source\": \"http://example.org/local-codes\",\n"
                                "      \"target\": \"http://snomed.info/sct\",\n"
                                "      \"element\": [\n"
                                "        {\n"
                                "          \"code\": \"LONELY\",\n"
                                "          \"target\": [{\n"
                                "            \"code\": \"267076002\",\n"
                                "            \"equivalence\": \"equivalent\"\n"
                                "          }]\n"
                                "        }\n"
                                "      ],\n"
                                "      \"unmapped\": {\"mode\": \"provided\"}\n"
                                "    }\n";
    char text[2048];
    char path[512];
    spb_cmap_set *s = NULL;
    spb_cmap_match m;
    spb_err err;

    (void)state;
    cmap_text(text, sizeof(text), "local", group);
    write_file(path, sizeof(path), "local.json", text);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_NEEDS, path, NULL, &err), 0);

    /* an explicit element still wins */
    assert_int_equal(
        spb_cmap_translate(s, SPB_ROLE_NEEDS, "http://example.org/local-codes", "LONELY", &m), 1);
    assert_string_equal(m.target_code, "267076002");
    /* any other code of the system is returned as itself */
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_NEEDS, "http://example.org/local-codes",
                                        "ANYTHING-ELSE", &m),
                     1);
    assert_string_equal(m.target_code, "ANYTHING-ELSE");
    assert_string_equal(m.target_system, SNOMED);
    assert_string_equal(m.equivalence, "equal");
    /* only for that system and that role */
    assert_int_equal(
        spb_cmap_translate(s, SPB_ROLE_NEEDS, "http://example.org/other", "ANYTHING-ELSE", &m), 0);
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_TRIGGERS, "http://example.org/local-codes",
                                        "ANYTHING-ELSE", &m),
                     0);
    spb_cmap_set_free(s);
}

/* Regression: an element marked unmatched must not fall through to the group's
 * `unmapped: provided` rule, and each group's own target system is reported. */
static void test_unmatched_and_group_targets(void **state)
{
    static const char text[] =
        "{\"resourceType\":\"ConceptMap\",\"url\":\"http://x.example/cm\",\"version\":\"1\",\n"
        " \"status\":\"active\",\"group\":[\n"
        "  {\"source\":\"http://example.org/local\",\"target\":\"http://snomed.info/sct\",\n"
        "   \"element\":[{\"code\":\"NOTANEED\",\"target\":[{\"equivalence\":\"unmatched\"}]}],\n"
        "   \"unmapped\":{\"mode\":\"provided\"}},\n"
        "  {\"source\":\"http://snomed.info/sct\",\"target\":\"http://snomed.info/sct\",\n"
        "   "
        "\"element\":[{\"code\":\"A\",\"target\":[{\"code\":\"A\",\"equivalence\":\"equal\"}]}]},\n"
        "  {\"source\":\"http://snomed.info/sct\",\"target\":\"http://example.org/other\",\n"
        "   "
        "\"element\":[{\"code\":\"B\",\"target\":[{\"code\":\"B2\",\"equivalence\":\"equal\"}]}]}]}"
        "\n";
    char path[512];
    spb_cmap_set *s = NULL;
    spb_cmap_match m;
    spb_err err;

    (void)state;
    write_file(path, sizeof(path), "groups.json", text);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_NEEDS, path, NULL, &err), 0);
    assert_int_equal(
        spb_cmap_translate(s, SPB_ROLE_NEEDS, "http://example.org/local", "NOTANEED", &m), 0);
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_NEEDS, "http://example.org/local", "OTHER", &m),
                     1);
    assert_string_equal(m.target_code, "OTHER");
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_NEEDS, SNOMED, "B", &m), 1);
    assert_string_equal(m.target_system, "http://example.org/other");
    assert_string_equal(m.target_code, "B2");
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_NEEDS, SNOMED, "A", &m), 1);
    assert_string_equal(m.target_system, SNOMED);
    spb_cmap_set_free(s);
}

/* Regression: a bad url is reported at its own line. */
static void test_bad_url_line(void **state)
{
    static const char text[] =
        "{\n  \"resourceType\": \"ConceptMap\",\n  \"url\": \"not a uri\",\n"
        "  \"status\": \"active\",\n  \"group\": [{\"source\": \"http://a.example\", "
        "\"target\": \"http://b.example\", \"element\": []}]\n}\n";
    char path[512];
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    write_file(path, sizeof(path), "badurl.json", text);
    assert_int_equal(load_one(SPB_ROLE_TRIGGERS, path, diags, &err), SPB_ECONFIG);
    assert_int_equal(diags->items[0].line, 3);
    free(diags);
}

/* The first diagnostic of loading `text` as `name` under `role`: refused, with `says` in the
 * message, at the first line holding `marker`. */
static void expect_refused_at(spb_map_role role, const char *name, const char *text,
                              const char *marker, const char *says)
{
    char path[512];
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    assert_non_null(diags);
    write_file(path, sizeof(path), name, text);
    assert_int_equal(load_one(role, path, diags, &err), SPB_ECONFIG);
    assert_true(diags->errors >= 1);
    if (strstr(diags->items[0].message, says) == NULL ||
        diags->items[0].line != line_of(text, marker))
        fail_msg("%s: line %d (want %d): %s", name, diags->items[0].line, line_of(text, marker),
                 diags->items[0].message);
    assert_string_equal(diags->items[0].file, path);
    assert_int_equal(err.line, diags->items[0].line);
    free(diags);
}

/* A group source that is not a URI is reported at its "source" member, not at line 0. */
static void test_group_source_line(void **state)
{
    static const char group[] = "    {\n"
                                "      \"target\": \"http://snomed.info/sct\",\n"
                                "      \"source\": \"SNOMED CT\",\n"
                                "      \"element\": [{\"code\": \"A\", \"target\": [\n"
                                "        {\"code\": \"A\", \"equivalence\": \"equal\"}]}]\n"
                                "    }\n";
    char text[2048];

    (void)state;
    cmap_text(text, sizeof(text), "source", group);
    expect_refused_at(SPB_ROLE_NEEDS, "source.json", text, "\"SNOMED CT\"",
                      "source must be the code system URI");
}

/* An emptied element list is refused (R4 needs one), at the "element" member. */
static void test_group_without_elements(void **state)
{
    static const char group[] = "    {\n"
                                "      \"source\": \"http://snomed.info/sct\",\n"
                                "      \"target\": \"http://snomed.info/sct\",\n"
                                "      \"element\": [\n"
                                "      ]\n"
                                "    }\n";
    char text[2048];

    (void)state;
    cmap_text(text, sizeof(text), "empty", group);
    expect_refused_at(SPB_ROLE_NEEDS, "empty.json", text, "\"element\"", "has no element");
}

/*
 * Element lines come from the document's structure, not from a text search: a target
 * with the same code earlier in the file, and strings holding quotes, brackets and commas,
 * must not move the line of an element.
 */
static void test_element_lines_follow_structure(void **state)
{
    static const char text[] =
        "{\"resourceType\": \"ConceptMap\", \"url\": \"http://x.example/cm\",\n"
        " \"version\": \"1\", \"status\": \"draft\",\n"
        " \"description\": \"tricky: \\\"}], {\\\"code\\\": \\\"267076002\\\"\",\n"
        " \"group\": [\n"
        "  {\"source\": \"http://read.info/readv2\", \"target\": \"http://snomed.info/sct\",\n"
        "   \"element\": [{\"code\": \"1B1K.\", \"target\": [\n"
        "     {\"code\": \"267076002\", \"equivalence\": \"equivalent\"}]}]},\n"
        "  {\"source\": \"http://snomed.info/sct\", \"target\": \"http://snomed.info/sct\",\n"
        "   \"element\": [\n"
        "    {\"display\": \"Feeling lonely\",\n"
        "     \"code\": \"267076002\", \"target\": [\n"
        "     {\"code\": \"267076002\", \"equivalence\": \"equal\"}]}]}]}\n";
    char path[512];
    spb_cmap_set *s = NULL;
    spb_cmap_match m;
    spb_err err;
    const char *file = NULL;

    (void)state;
    write_file(path, sizeof(path), "lines.json", text);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_NEEDS, path, NULL, &err), 0);
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_NEEDS, SNOMED, "267076002", &m), 1);
    assert_int_equal(m.element_line, 11);
    assert_int_equal(spb_cmap_translate(s, SPB_ROLE_NEEDS, READV2, "1B1K.", &m), 1);
    assert_int_equal(m.element_line, 6);
    /* and a group is found by its source, at its '{' */
    assert_int_equal(spb_cmap_group_line(s, SPB_ROLE_NEEDS, SNOMED, &file), 8);
    assert_string_equal(file, path);
    assert_int_equal(spb_cmap_group_line(s, SPB_ROLE_NEEDS, CTV3, &file), 0);
    assert_null(file);
    assert_int_equal(spb_cmap_group_line(s, SPB_ROLE_TRIGGERS, SNOMED, &file), 0);
    spb_cmap_set_free(s);
}

/* Two elements of one file giving a code two meanings: the later one is the error. */
static void test_conflict_within_a_file(void **state)
{
    static const char group[] =
        "    {\n"
        "      \"source\": \"http://snomed.info/sct\",\n"
        "      \"target\": \"https://spbridge.dev/fhir/CodeSystem/event-kind\",\n"
        "      \"element\": [\n"
        "        {\"code\": \"871731000000106\",\n"
        "         \"target\": [{\"code\": \"referral\", \"equivalence\": \"wider\"}]},\n"
        "        {\"code\": \"871731000000106\", \"comment\": \"again\",\n"
        "         \"target\": [{\"code\": \"declined\", \"equivalence\": \"wider\"}]}\n"
        "      ]\n"
        "    }\n";
    char text[2048];

    (void)state;
    cmap_text(text, sizeof(text), "twice", group);
    expect_refused_at(SPB_ROLE_TRIGGERS, "twice.json", text, "\"again\"",
                      "mapped to two different meanings: 'declined' here and 'referral'");
}

/* A copied map that kept its url would make audit records ambiguous. */
static void test_same_url_twice(void **state)
{
    static const char text[] =
        "{\n"
        "  \"resourceType\": \"ConceptMap\",\n"
        "  \"url\": \"https://spbridge.dev/fhir/ConceptMap/spbridge-triggers\",\n"
        "  \"version\": \"1.0.0\", \"status\": \"draft\",\n"
        "  \"group\": [{\"source\": \"http://example.org/x\",\n"
        "    \"target\": \"https://spbridge.dev/fhir/CodeSystem/event-kind\",\n"
        "    \"element\": [{\"code\": \"X\",\n"
        "      \"target\": [{\"code\": \"referral\", \"equivalence\": \"wider\"}]}]}]\n"
        "}\n";
    char path[512];
    spb_cmap_set *s = NULL;
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;

    (void)state;
    assert_non_null(diags);
    write_file(path, sizeof(path), "copy.json", text);
    spb_err_clear(&err);
    assert_int_equal(spb_cmap_set_new(&s, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, TRIGGERS_JSON, diags, &err), 0);
    assert_int_equal(spb_cmap_set_load(s, SPB_ROLE_TRIGGERS, path, diags, &err), SPB_ECONFIG);
    assert_non_null(strstr(diags->items[0].message, "is also the url of"));
    assert_int_equal(diags->items[0].line, 3);
    spb_cmap_set_free(s);
    free(diags);
}

int main(void)
{
    const struct CMUnitTest shipped_tests[] = {
        cmocka_unit_test(test_shipped_load_clean), cmocka_unit_test(test_trigger_snomed_referral),
        cmocka_unit_test(test_trigger_read_codes), cmocka_unit_test(test_trigger_declined),
        cmocka_unit_test(test_trigger_not_mapped), cmocka_unit_test(test_needs),
        cmocka_unit_test(test_role_names),
    };
    const struct CMUnitTest loader_tests[] = {
        cmocka_unit_test(test_conflict_between_files),
        cmocka_unit_test(test_same_target_twice_is_a_warning),
        cmocka_unit_test(test_invalid_equivalence),
        cmocka_unit_test(test_r5_relationship),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_not_a_conceptmap),
        cmocka_unit_test(test_unmapped_provided),
        cmocka_unit_test(test_unmatched_and_group_targets),
        cmocka_unit_test(test_bad_url_line),
        cmocka_unit_test(test_group_source_line),
        cmocka_unit_test(test_group_without_elements),
        cmocka_unit_test(test_element_lines_follow_structure),
        cmocka_unit_test(test_conflict_within_a_file),
        cmocka_unit_test(test_same_url_twice),
    };
    int failed =
        cmocka_run_group_tests_name("shipped", shipped_tests, setup_shipped, teardown_shipped);
    failed += cmocka_run_group_tests_name("loader", loader_tests, setup_group, teardown_group);
    return failed;
}
