/*
 * End-to-end tests of adapter/translate.c with the shipped mapping set: XML bytes in,
 * FHIR out, or one precise error.
 *
 * These pin the contract the queue and the service rely on: a referral becomes one
 * transaction Bundle whose references hang together, the output is byte-for-byte
 * reproducible (fullUrls are name-based), a GP2GP record yields only its social
 * prescribing entries, and a bad or hostile document yields an error, never half a result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "spbridge/diag.h"
#include "spbridge/error.h"
#include "spbridge/mapping_set.h"
#include "spbridge/translate.h"
#include "spbridge/xml_input.h"

#define NATIVE_REFERRAL SPB_SOURCE_DIR "/examples/native/referral.xml"
#define NATIVE_DECLINED SPB_SOURCE_DIR "/examples/native/declined.xml"
#define GP2GP_SAMPLE    SPB_SHARED_DIR "/gp2gp/samples/RCMR_IN030000UK06-schema-example.xml"

static spb_mapping_set *maps;

static int setup_group(void **state)
{
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_err err;
    int rc;

    (void)state;
    if (diags == NULL)
        return -1;
    spb_xml_global_init();
    spb_err_clear(&err);
    rc = spb_mapping_set_load(&maps, SPB_SOURCE_DIR "/mappings", diags, &err);
    if (rc != 0)
        fprintf(stderr, "shipped mapping set refused: %s:%d: %s\n", err.file, err.line,
                err.message);
    free(diags);
    return rc;
}

static int teardown_group(void **state)
{
    (void)state;
    spb_mapping_set_free(maps);
    spb_xml_global_cleanup();
    return 0;
}

/* Reads a whole file into a NUL-terminated buffer. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (f == NULL)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* A copy of `in` with the first `from` replaced by `to` (which must be present). */
static char *replace_first(const char *in, const char *from, const char *to)
{
    const char *hit = strstr(in, from);
    size_t head, flen = strlen(from), tlen = strlen(to), total;
    char *out;

    assert_non_null(hit);
    head = (size_t)(hit - in);
    total = strlen(in) - flen + tlen;
    out = malloc(total + 1);
    assert_non_null(out);
    memcpy(out, in, head);
    memcpy(out + head, to, tlen);
    memcpy(out + head + tlen, hit + flen, strlen(hit + flen) + 1);
    return out;
}

static spb_translate_opts default_opts(void)
{
    spb_translate_opts o;

    memset(&o, 0, sizeof(o));
    o.maps = maps; /* dialect detected, no GP2GP schema check, default limits and route */
    return o;
}

static int translate_text(spb_translation *t, const char *data, size_t len, const char *name,
                          spb_err *err)
{
    spb_translate_opts o = default_opts();

    spb_err_clear(err);
    return spb_translate(t, data, len, name, &o, err);
}

/* The entry of `bundle` at `i`: its resource and fullUrl. */
static json_t *entry_resource(json_t *bundle, size_t i)
{
    return json_object_get(json_array_get(json_object_get(bundle, "entry"), i), "resource");
}

static const char *entry_full_url(json_t *bundle, size_t i)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(bundle, "entry"), i), "fullUrl"));
}

/* The fullUrl of the first entry of type `type`, or NULL. */
static const char *full_url_of(json_t *bundle, const char *type)
{
    json_t *entries = json_object_get(bundle, "entry");
    for (size_t i = 0; i < json_array_size(entries); i++) {
        const char *rt =
            json_string_value(json_object_get(entry_resource(bundle, i), "resourceType"));
        if (rt != NULL && strcmp(rt, type) == 0)
            return entry_full_url(bundle, i);
    }
    return NULL;
}

static json_t *resource_of(json_t *bundle, const char *type)
{
    json_t *entries = json_object_get(bundle, "entry");
    for (size_t i = 0; i < json_array_size(entries); i++) {
        json_t *r = entry_resource(bundle, i);
        const char *rt = json_string_value(json_object_get(r, "resourceType"));
        if (rt != NULL && strcmp(rt, type) == 0)
            return r;
    }
    return NULL;
}

static const char *reference_of(json_t *resource, const char *element)
{
    return json_string_value(json_object_get(json_object_get(resource, element), "reference"));
}

static void test_native_referral(void **state)
{
    /* with the default route (no service ODS) there is no service Organization entry */
    static const char *const types[] = {"Patient",          "Organization",   "Practitioner",
                                        "PractitionerRole", "ServiceRequest", "Task"};
    const size_t ntypes = sizeof(types) / sizeof(types[0]);
    spb_translation t;
    spb_err err;
    size_t len;
    char *xml = slurp(NATIVE_REFERRAL, &len);
    json_t *bundle, *task, *sr;

    (void)state;
    if (translate_text(&t, xml, len, "referral.xml", &err) != 0)
        fail_msg("referral.xml refused: line %d: %s", err.line, err.message);
    assert_int_equal(t.n, 1);
    assert_string_equal(t.dialect, "native");
    assert_int_equal(t.items[0].kind, SPB_KIND_REFERRAL);
    assert_string_equal(t.items[0].practice_ods, "B83002");
    assert_string_equal(t.items[0].nhs_number, "9434765919");
    assert_string_equal(t.items[0].source_uuid, "5f0c2b1e-7a43-4d0b-9a36-2f1d8c7e9b10");
    assert_string_equal(t.items[0].trigger_code, "871731000000106");
    assert_true(t.items[0].source_line > 0);

    bundle = t.items[0].resource;
    assert_string_equal(json_string_value(json_object_get(bundle, "resourceType")), "Bundle");
    assert_string_equal(json_string_value(json_object_get(bundle, "type")), "transaction");
    assert_int_equal(json_array_size(json_object_get(bundle, "entry")), ntypes);
    for (size_t i = 0; i < ntypes; i++) {
        const char *rt =
            json_string_value(json_object_get(entry_resource(bundle, i), "resourceType"));
        assert_non_null(rt);
        assert_string_equal(rt, types[i]);
        assert_non_null(entry_full_url(bundle, i));
        assert_int_equal(strncmp(entry_full_url(bundle, i), "urn:uuid:", 9), 0);
    }

    /* the references inside the Bundle point at the entries' fullUrls */
    task = resource_of(bundle, "Task");
    sr = resource_of(bundle, "ServiceRequest");
    assert_non_null(task);
    assert_non_null(sr);
    assert_string_equal(json_string_value(json_object_get(task, "intent")), "order");
    assert_non_null(reference_of(task, "focus"));
    assert_string_equal(reference_of(task, "focus"), full_url_of(bundle, "ServiceRequest"));
    assert_non_null(reference_of(sr, "subject"));
    assert_string_equal(reference_of(sr, "subject"), full_url_of(bundle, "Patient"));
    assert_string_equal(reference_of(task, "for"), full_url_of(bundle, "Patient"));

    spb_translation_clear(&t);
    free(xml);
}

static void test_native_referral_reproducible(void **state)
{
    /* the same input twice gives byte-identical JSON: fullUrls are name-based UUIDs and
     * keys are emitted in a fixed order, so a replay can be compared and deduplicated */
    spb_translation a, b;
    spb_err err;
    size_t len;
    char *xml = slurp(NATIVE_REFERRAL, &len);
    char *ja, *jb;

    (void)state;
    assert_int_equal(translate_text(&a, xml, len, "referral.xml", &err), 0);
    assert_int_equal(translate_text(&b, xml, len, "referral.xml", &err), 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(b.n, 1);
    ja = json_dumps(a.items[0].resource, JSON_COMPACT);
    jb = json_dumps(b.items[0].resource, JSON_COMPACT);
    assert_non_null(ja);
    assert_non_null(jb);
    assert_string_equal(ja, jb);
    assert_string_equal(a.mapping_version, b.mapping_version);
    free(ja);
    free(jb);
    spb_translation_clear(&a);
    spb_translation_clear(&b);
    free(xml);
}

static void test_native_declined_is_a_report(void **state)
{
    /* a declined event is kept for reporting as an Observation, never sent as a Bundle */
    spb_translation t;
    spb_err err;
    size_t len;
    char *xml = slurp(NATIVE_DECLINED, &len);

    (void)state;
    assert_int_equal(translate_text(&t, xml, len, "declined.xml", &err), 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.items[0].kind, SPB_KIND_DECLINED);
    assert_string_equal(json_string_value(json_object_get(t.items[0].resource, "resourceType")),
                        "Observation");
    spb_translation_clear(&t);
    free(xml);
}

/*
 * The GP2GP schema example, with its first coded entry turned into a social prescribing
 * referral. `fix_nhs` replaces the sample's NHS number (which fails modulus 11) with a
 * valid one.
 */
static char *gp2gp_with_referral(int fix_nhs, size_t *len)
{
    size_t raw_len;
    char *raw = slurp(GP2GP_SAMPLE, &raw_len);
    char *coded = replace_first(raw, "88551000000109", "871731000000106");
    char *out = coded;

    free(raw);
    if (fix_nhs) {
        out = replace_first(coded, "1234567890", "9434765919");
        free(coded);
    }
    *len = strlen(out);
    return out;
}

static void test_gp2gp_referral(void **state)
{
    spb_translation t;
    spb_err err;
    size_t len;
    char *xml = gp2gp_with_referral(1, &len);

    (void)state;
    if (translate_text(&t, xml, len, "gp2gp.xml", &err) != 0)
        fail_msg("GP2GP sample refused: line %d: %s", err.line, err.message);
    assert_string_equal(t.dialect, "gp2gp");
    /* the extract has many coded entries; only the one trigger becomes an event */
    assert_true(t.candidates > 1);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.items[0].kind, SPB_KIND_REFERRAL);
    assert_string_equal(t.items[0].practice_ods, "GP2GPTEST");
    assert_string_equal(t.items[0].nhs_number, "9434765919");
    assert_string_equal(t.items[0].trigger_code, "871731000000106");
    assert_string_equal(t.items[0].trigger_system, "http://snomed.info/sct");
    /* the statement's id, lower-cased: GP2GP ids are upper-case UUIDs */
    assert_string_equal(t.items[0].event_uuid, "263b2a9f-0b1d-4697-943a-328f70e068de");
    spb_translation_clear(&t);
    free(xml);
}

static void test_gp2gp_invalid_nhs_number(void **state)
{
    /* the sample's own NHS number fails its check digit: the whole document is refused,
     * with the line of the statement that carried the trigger */
    spb_translation t;
    spb_err err;
    size_t len;
    char *xml = gp2gp_with_referral(0, &len);

    (void)state;
    assert_int_equal(translate_text(&t, xml, len, "gp2gp.xml", &err), SPB_EINVALID);
    assert_int_equal(err.code, SPB_EINVALID);
    assert_true(err.line > 0);
    assert_string_equal(err.file, "gp2gp.xml");
    assert_null(strstr(err.message, "1234567890"));
    assert_int_equal(t.n, 0); /* all or nothing */
    assert_null(t.items);
    free(xml);
}

static void test_doctype_refused(void **state)
{
    /* any DOCTYPE is how XXE and entity bombs arrive, so it is refused outright */
    static const char xml[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!DOCTYPE event [<!ENTITY x \"expanded\">]>\n"
        "<event xmlns=\"urn:spbridge:native:1\" id=\"x\" kind=\"referral\">&x;</event>\n";
    spb_translation t;
    spb_err err;

    (void)state;
    assert_int_equal(translate_text(&t, xml, strlen(xml), "doctype.xml", &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_SECURITY);
    assert_int_equal(err.line, 2);
    assert_int_equal(t.n, 0);
}

static void test_too_deep_refused(void **state)
{
    /* 300 nested elements, over the default depth limit of 128 */
    enum { DEPTH = 300 };
    char *xml = malloc(DEPTH * 7 + 1);
    size_t n = 0;
    spb_translation t;
    spb_err err;

    (void)state;
    assert_non_null(xml);
    for (int i = 0; i < DEPTH; i++) {
        memcpy(xml + n, "<a>", 3);
        n += 3;
    }
    for (int i = 0; i < DEPTH; i++) {
        memcpy(xml + n, "</a>", 4);
        n += 4;
    }
    xml[n] = '\0';
    assert_int_equal(translate_text(&t, xml, n, "deep.xml", &err), SPB_ETOOBIG);
    assert_int_equal(err.issue, SPB_ISSUE_TOO_LONG);
    assert_int_equal(t.n, 0);
    free(xml);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native_referral),
        cmocka_unit_test(test_native_referral_reproducible),
        cmocka_unit_test(test_native_declined_is_a_report),
        cmocka_unit_test(test_gp2gp_referral),
        cmocka_unit_test(test_gp2gp_invalid_nhs_number),
        cmocka_unit_test(test_doctype_refused),
        cmocka_unit_test(test_too_deep_refused),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
