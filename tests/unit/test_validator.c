/*
 * Unit tests of fhir/validator.c against the shipped definitions (conformance/).
 *
 * They pin what callers rely on: valid resources (and every good conformance case) pass;
 * each broken conformance case fails with the FHIRPath its expectations.tsv names; the
 * lexical forms of dates, times, codes and ids; the report's bounds; warnings that do not
 * fail; profiles the loader must refuse rather than half-apply; and the translate hook,
 * whose failure is a 422 naming the element.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "spbridge/diag.h"
#include "spbridge/intake.h"
#include "spbridge/mapping_set.h"
#include "spbridge/translate.h"
#include "spbridge/validator.h"
#include "spbridge/xml_input.h"

#define CONFORMANCE SPB_SOURCE_DIR "/conformance"
#define CASES       SPB_SOURCE_DIR "/tests/conformance-cases"

static spb_validator *shipped;
static char scratch[64];

/* A Task that conforms to spbridge-Task; tests change one member at a time. */
static const char *task_json =
    "{\"resourceType\":\"Task\",\"status\":\"requested\",\"intent\":\"order\","
    "\"code\":{\"coding\":[{\"system\":\"http://hl7.org/fhir/CodeSystem/task-code\","
    "\"code\":\"fulfill\"}]},\"focus\":{\"reference\":\"ServiceRequest/sr1\"},"
    "\"for\":{\"reference\":\"Patient/p1\"},\"authoredOn\":\"2026-11-20T10:15:00+00:00\","
    "\"requester\":{\"reference\":\"Organization/o1\"},"
    "\"owner\":{\"reference\":\"Organization/o2\"}}";

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        fail_msg("test JSON does not parse: %s", jerr.text);
    return j;
}

static json_t *load_file(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL)
        fail_msg("%s: %s", path, jerr.text);
    return j;
}

/* Validates a copy of the Task with `key` set to the JSON `value` (NULL: removed). */
static int validate_task_with(const char *key, const char *value, spb_validation_report *rep,
                              spb_err *err)
{
    json_t *task = parse(task_json);
    int rc;
    if (value == NULL)
        json_object_del(task, key);
    else
        json_object_set_new(task, key, json_loads(value, JSON_DECODE_ANY, NULL));
    spb_err_clear(err);
    rc = spb_validate(shipped, task, rep, err);
    json_decref(task);
    return rc;
}

static int has_issue(const spb_validation_report *rep, spb_issue code, const char *expression)
{
    for (size_t i = 0; i < rep->nissues; i++) {
        if (rep->issues[i].code == code && strcmp(rep->issues[i].expression, expression) == 0)
            return 1;
    }
    return 0;
}

static void remove_tree(const char *path)
{
    struct stat st;
    DIR *d;
    struct dirent *de;

    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    d = opendir(path);
    while (d != NULL && (de = readdir(d)) != NULL) {
        char sub[512];
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
        remove_tree(sub);
    }
    if (d != NULL)
        closedir(d);
    rmdir(path);
}

/*
 * A conformance folder in `scratch`: the shipped value sets and base definitions, the
 * shipped profiles except `replace` (a file name), and `extra` written as
 * profiles/`extra_name` when given.
 */
static void make_conformance_dir(const char *replace, const char *extra_name, json_t *extra)
{
    char path[512], target[512];
    DIR *d;
    struct dirent *de;

    remove_tree(scratch);
    assert_int_equal(mkdir(scratch, 0700), 0);
    snprintf(path, sizeof(path), "%s/valuesets", scratch);
    assert_int_equal(symlink(CONFORMANCE "/valuesets", path), 0);
    snprintf(path, sizeof(path), "%s/profiles", scratch);
    assert_int_equal(mkdir(path, 0700), 0);
    d = opendir(CONFORMANCE "/profiles");
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || (replace != NULL && strcmp(de->d_name, replace) == 0))
            continue;
        snprintf(path, sizeof(path), "%s/profiles/%s", scratch, de->d_name);
        snprintf(target, sizeof(target), "%s/profiles/%s", CONFORMANCE, de->d_name);
        assert_int_equal(symlink(target, path), 0);
    }
    closedir(d);
    if (extra != NULL) {
        snprintf(path, sizeof(path), "%s/profiles/%s", scratch, extra_name);
        assert_int_equal(json_dump_file(extra, path, JSON_INDENT(2)), 0);
    }
}

/* The shipped spbridge-Task profile with one more differential element. */
static json_t *task_profile_plus(const char *element_json)
{
    json_t *sd = load_file(CONFORMANCE "/profiles/spbridge-Task.json");
    json_array_append_new(json_object_get(json_object_get(sd, "differential"), "element"),
                          parse(element_json));
    json_object_del(sd, "snapshot");
    return sd;
}

static int setup_group(void **state)
{
    spb_err err;
    (void)state;
    snprintf(scratch, sizeof(scratch), "/tmp/spb-test-validator-%ld", (long)getpid());
    spb_err_clear(&err);
    if (spb_validator_load(&shipped, CONFORMANCE, &err) != 0) {
        fprintf(stderr, "shipped definitions refused: %s: %s\n", err.file, err.message);
        return -1;
    }
    return 0;
}

static int teardown_group(void **state)
{
    (void)state;
    spb_validator_free(shipped);
    remove_tree(scratch);
    return 0;
}

/* ---- the translate hook (first: it sets up the process-wide validator) */

static void test_translate_refuses_nonconforming_output(void **state)
{
    spb_diags *diags = calloc(1, sizeof(*diags));
    spb_mapping_set *maps = NULL;
    spb_translate_opts opts;
    spb_translation tr;
    json_t *sd, *oo;
    spb_err err;
    FILE *f;
    char *xml;
    long n;
    (void)state;

    /* a stricter Patient profile: the example referral has no maritalStatus */
    sd = load_file(CONFORMANCE "/profiles/spbridge-Patient.json");
    json_object_del(sd, "snapshot");
    json_array_append_new(json_object_get(json_object_get(sd, "differential"), "element"),
                          parse("{\"id\":\"Patient.maritalStatus\",\"path\":"
                                "\"Patient.maritalStatus\",\"min\":1}"));
    make_conformance_dir("spbridge-Patient.json", "spbridge-Patient.json", sd);
    json_decref(sd);
    spb_err_clear(&err);
    assert_int_equal(spb_validator_shared_init(scratch, &err), 0);
    assert_int_equal(spb_validator_shared_init(CONFORMANCE, &err), SPB_ERR); /* once only */

    spb_xml_global_init();
    assert_non_null(diags);
    spb_err_clear(&err);
    assert_int_equal(spb_mapping_set_load(&maps, SPB_SOURCE_DIR "/mappings", diags, &err), 0);
    f = fopen(SPB_SOURCE_DIR "/examples/native/referral.xml", "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    xml = malloc((size_t)n + 1);
    assert_non_null(xml);
    assert_int_equal(fread(xml, 1, (size_t)n, f), (size_t)n);
    fclose(f);

    memset(&opts, 0, sizeof(opts));
    opts.maps = maps;
    opts.limits.max_bytes = 1 << 20;
    opts.limits.max_depth = 64;
    spb_err_clear(&err);
    assert_int_equal(spb_translate(&tr, xml, (size_t)n, "referral.xml", &opts, &err), SPB_EINVALID);
    assert_int_equal(tr.n, 0);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);
    assert_string_equal(err.path, "Bundle.entry[0].resource.maritalStatus");
    assert_string_equal(err.file, "referral.xml");
    assert_true(err.line > 0);
    assert_non_null(strstr(err.message, "maritalStatus"));
    assert_int_equal(spb_http_status_for(&err), 422);
    oo = spb_fhir_operation_outcome(&err);
    assert_string_equal(
        json_string_value(json_array_get(
            json_object_get(json_array_get(json_object_get(oo, "issue"), 0), "expression"), 0)),
        "Bundle.entry[0].resource.maritalStatus");
    json_decref(oo);

    free(xml);
    spb_mapping_set_free(maps);
    free(diags);
    spb_xml_global_cleanup();
}

/* ---- loading */

static void test_loads_shipped_profiles(void **state)
{
    static const char *const want[] = {
        "https://spbridge.dev/fhir/StructureDefinition/spbridge-Organization",
        "https://spbridge.dev/fhir/StructureDefinition/spbridge-Patient",
        "https://spbridge.dev/fhir/StructureDefinition/spbridge-ServiceRequest",
        "https://spbridge.dev/fhir/StructureDefinition/spbridge-Task",
    };
    (void)state;
    assert_int_equal(spb_validator_profile_count(shipped), 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(spb_validator_profile_url(shipped, i), want[i]);
    assert_null(spb_validator_profile_url(shipped, 4));
}

static void expect_load_failure(json_t *profile, const char *fragment)
{
    spb_validator *v = NULL;
    spb_err err;
    make_conformance_dir("spbridge-Task.json", "spbridge-Task.json", profile);
    json_decref(profile);
    spb_err_clear(&err);
    assert_int_equal(spb_validator_load(&v, scratch, &err), SPB_ECONFIG);
    assert_null(v);
    if (strstr(err.message, fragment) == NULL)
        fail_msg("load error '%s' does not mention '%s'", err.message, fragment);
    assert_non_null(strstr(err.file, "spbridge-Task.json"));
}

static void test_refuses_rules_it_cannot_enforce(void **state)
{
    (void)state;
    /* an invariant the C does not implement */
    expect_load_failure(task_profile_plus("{\"id\":\"Task.note\",\"path\":\"Task.note\","
                                          "\"constraint\":[{\"key\":\"xyz-1\",\"severity\":"
                                          "\"error\",\"human\":\"x\",\"expression\":\"true\"}]}"),
                        "xyz-1");
    /* an element the base does not have */
    expect_load_failure(task_profile_plus("{\"id\":\"Task.colour\",\"path\":\"Task.colour\","
                                          "\"min\":1}"),
                        "colour");
    /* a rule the walk does not apply */
    expect_load_failure(task_profile_plus("{\"id\":\"Task.note\",\"path\":\"Task.note\","
                                          "\"maxLength\":10}"),
                        "maxLength");
    /* loosening the base */
    expect_load_failure(task_profile_plus("{\"id\":\"Task.intent\",\"path\":\"Task.intent\","
                                          "\"min\":0}"),
                        "min");
    /* a binding to a value set nobody ships */
    expect_load_failure(task_profile_plus("{\"id\":\"Task.priority\",\"path\":\"Task.priority\","
                                          "\"binding\":{\"strength\":\"required\",\"valueSet\":"
                                          "\"https://example.org/ValueSet/none\"}}"),
                        "https://example.org/ValueSet/none");
    /* a reference target the base does not allow */
    expect_load_failure(
        task_profile_plus("{\"id\":\"Task.owner\",\"path\":\"Task.owner\","
                          "\"type\":[{\"code\":\"Reference\",\"targetProfile\":"
                          "[\"http://hl7.org/fhir/StructureDefinition/Location\"]}]}"),
        "Location");
}

static void test_missing_folder_is_a_config_error(void **state)
{
    spb_validator *v = NULL;
    spb_err err;
    (void)state;
    spb_err_clear(&err);
    assert_int_equal(spb_validator_load(&v, "/nonexistent/conformance", &err), SPB_ECONFIG);
    assert_null(v);
    spb_validator_free(NULL); /* NULL-safe */
}

/* ---- verdicts */

static void test_good_cases_pass(void **state)
{
    DIR *d = opendir(CASES "/good");
    struct dirent *de;
    int n = 0;
    (void)state;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char path[512];
        spb_validation_report rep;
        spb_err err;
        json_t *r;
        if (strstr(de->d_name, ".json") == NULL)
            continue;
        snprintf(path, sizeof(path), "%s/good/%s", CASES, de->d_name);
        r = load_file(path);
        spb_err_clear(&err);
        if (spb_validate(shipped, r, &rep, &err) != 0)
            fail_msg("good/%s rejected: %s: %s", de->d_name, err.path, err.message);
        assert_int_equal(rep.nerrors, 0);
        json_decref(r);
        n++;
    }
    closedir(d);
    assert_true(n >= 5);
}

static void test_broken_cases_fail_where_expected(void **state)
{
    FILE *f = fopen(CASES "/expectations.tsv", "r");
    char line[2048];
    int n = 0;
    (void)state;
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *fields[8];
        int nf = 0;
        char *p = line, path[512];
        spb_validation_report rep;
        spb_err err;
        json_t *r;
        int found = 0;

        if (line[0] == '#' || line[0] == '\n')
            continue;
        line[strcspn(line, "\n")] = '\0';
        while (nf < 8 && p != NULL) {
            fields[nf++] = p;
            p = strchr(p, '\t');
            if (p != NULL)
                *p++ = '\0';
        }
        assert_true(nf >= 6);
        snprintf(path, sizeof(path), "%s/broken/%s.json", CASES, fields[0]);
        r = load_file(path);
        spb_err_clear(&err);
        if (spb_validate(shipped, r, &rep, &err) != SPB_EINVALID)
            fail_msg("broken/%s accepted", fields[0]);
        assert_int_equal(err.code, SPB_EINVALID);
        assert_true(err.path[0] != '\0' || rep.issues[0].expression[0] == '\0');
        for (size_t i = 0; i < rep.nissues; i++)
            found |= strcmp(rep.issues[i].expression, fields[5]) == 0;
        if (!found)
            fail_msg("broken/%s: no issue at %s (first: %s %s)", fields[0], fields[5],
                     rep.issues[0].expression, rep.issues[0].message);
        json_decref(r);
        n++;
    }
    fclose(f);
    assert_true(n >= 12);
}

static void test_first_error_fills_err(void **state)
{
    spb_validation_report rep;
    spb_err err;
    (void)state;
    assert_int_equal(validate_task_with("intent", NULL, &rep, &err), SPB_EINVALID);
    assert_int_equal(err.code, SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);
    assert_string_equal(err.path, "Task.intent");
    assert_true(has_issue(&rep, SPB_ISSUE_REQUIRED, "Task.intent"));
    assert_string_equal(rep.resource_type, "Task");
    /* without a report only err is filled */
    spb_err_clear(&err);
    {
        json_t *task = parse(task_json);
        json_object_set_new(task, "status", json_string("bogus"));
        assert_int_equal(spb_validate(shipped, task, NULL, &err), SPB_EINVALID);
        assert_int_equal(err.issue, SPB_ISSUE_CODE_INVALID);
        assert_string_equal(err.path, "Task.status");
        json_decref(task);
    }
}

static void test_element_rules(void **state)
{
    static const struct {
        const char *key, *value; /* NULL value: removed */
        int valid;
        spb_issue code;
    } cases[] = {
        {"intent", "\"order\"", 1, 0},
        {"intent", "\"plan\"", 0, SPB_ISSUE_VALUE},            /* fixed by the profile */
        {"intent", "\"nonsense\"", 0, SPB_ISSUE_CODE_INVALID}, /* base binding */
        {"status", "\"in-progress\"", 1, 0},
        {"status", "\"received\"", 1, 0},
        {"status", "\"bogus\"", 0, SPB_ISSUE_CODE_INVALID},
        {"status", "1", 0, SPB_ISSUE_STRUCTURE},
        {"priority", "\"asap\"", 1, 0},
        {"priority", "\"soon\"", 0, SPB_ISSUE_CODE_INVALID},
        {"owner", NULL, 0, SPB_ISSUE_REQUIRED},
        {"owner", "{\"display\":\"The service\"}", 1, 0}, /* a logical reference */
        {"owner", "{\"reference\":\"Patient/p1\"}", 0, SPB_ISSUE_STRUCTURE},
        {"owner", "{\"reference\":\"HealthcareService/h1\"}", 1, 0},
        {"focus", "{\"reference\":\"https://sp.example.org/fhir/ServiceRequest/9\"}", 1, 0},
        {"focus", "{\"reference\":\"ServiceRequest?identifier=urn:ietf:rfc:3986|x\"}", 1, 0},
        {"focus", "{\"reference\":\"Task/9\"}", 0, SPB_ISSUE_STRUCTURE},
        {"focus", "{\"reference\":\"a b\"}", 0, SPB_ISSUE_VALUE},
        {"focus", "{}", 0, SPB_ISSUE_VALUE},
        {"focus", "[{\"reference\":\"ServiceRequest/1\"}]", 0, SPB_ISSUE_STRUCTURE},
        {"code",
         "{\"coding\":[{\"system\":\"http://hl7.org/fhir/CodeSystem/task-code\","
         "\"code\":\"fulfill\",\"display\":\"Fulfil\"}],\"text\":\"x\"}",
         1, 0}, /* a pattern allows more */
        {"code", "{\"text\":\"fulfill\"}", 0, SPB_ISSUE_VALUE},
        {"note", "[{\"text\":\"x\"}]", 1, 0},
        {"note", "[]", 0, SPB_ISSUE_STRUCTURE},
        {"note", "{\"text\":\"x\"}", 0, SPB_ISSUE_STRUCTURE},
        {"note", "[{\"text\":\"\"}]", 0, SPB_ISSUE_VALUE},
        {"colour", "\"blue\"", 0, SPB_ISSUE_STRUCTURE},
        {"_authoredOn",
         "{\"extension\":[{\"url\":\"http://example.org/x\",\"valueString\":"
         "\"y\"}]}",
         1, 0},
        {"_intent", "{\"extension\":[{\"url\":\"http://example.org/x\"}]}", 0,
         SPB_ISSUE_INVARIANT},                   /* ext-1 */
        {"_code", "{}", 0, SPB_ISSUE_STRUCTURE}, /* code is not a primitive */
        {"id", "\"task-1.v2\"", 1, 0},
        {"id", "\"task_1\"", 0, SPB_ISSUE_VALUE},
        {"meta", "{\"lastUpdated\":\"2026-11-20T10:15:00Z\",\"versionId\":\"3\"}", 1, 0},
        {"meta", "{\"lastUpdated\":\"2026-11-20\"}", 0, SPB_ISSUE_VALUE}, /* instant */
        {"meta", "{\"project\":\"x\"}", 0, SPB_ISSUE_STRUCTURE},          /* medplum's own */
        {"input", "[{\"type\":{\"text\":\"t\"},\"valueDecimal\":1.5}]", 1, 0},
        {"input", "[{\"type\":{\"text\":\"t\"},\"valueInteger\":1.5}]", 0, SPB_ISSUE_STRUCTURE},
        {"input", "[{\"type\":{\"text\":\"t\"},\"valueBoolean\":true,\"valueString\":\"x\"}]", 0,
         SPB_ISSUE_STRUCTURE},
        {"input", "[{\"type\":{\"text\":\"t\"}}]", 0, SPB_ISSUE_REQUIRED},
        {"restriction", "{\"repetitions\":0}", 0, SPB_ISSUE_VALUE}, /* positiveInt */
        {"restriction", "{\"repetitions\":2}", 1, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        spb_validation_report rep;
        spb_err err;
        int rc = validate_task_with(cases[i].key, cases[i].value, &rep, &err);
        if (cases[i].valid && rc != 0)
            fail_msg("case %zu (%s = %s) rejected: %s: %s", i, cases[i].key,
                     cases[i].value ? cases[i].value : "(removed)", err.path, err.message);
        if (!cases[i].valid) {
            if (rc != SPB_EINVALID)
                fail_msg("case %zu (%s = %s) accepted", i, cases[i].key, cases[i].value);
            if (err.issue != cases[i].code)
                fail_msg("case %zu (%s = %s): issue %s, want %s (%s)", i, cases[i].key,
                         cases[i].value ? cases[i].value : "(removed)", spb_issue_name(err.issue),
                         spb_issue_name(cases[i].code), err.message);
        }
    }
}

static void test_lexical_forms(void **state)
{
    static const struct {
        const char *value;
        int date, datetime; /* valid as Patient.birthDate, as Task.authoredOn */
    } cases[] = {
        {"1951", 1, 1},
        {"1951-03", 1, 1},
        {"1951-03-14", 1, 1},
        {"2000-02-29", 1, 1},
        {"1900-02-29", 0, 0},
        {"2026-02-30", 0, 0},
        {"2026-13-01", 0, 0},
        {"0000", 0, 0},
        {"1951-3-14", 0, 0},
        {"19510314", 0, 0},
        {" 1951-03-14", 0, 0},
        {"1951-03-14T10:15:00Z", 0, 1},
        {"1951-03-14T10:15:00.123+01:00", 0, 1},
        {"1951-03-14T23:59:60-05:30", 0, 1},
        {"1951-03-14T10:15:00+14:00", 0, 1},
        {"1951-03-14T10:15:00+14:30", 0, 0},
        {"1951-03-14T10:15:00", 0, 0}, /* a time needs a zone */
        {"1951-03-14T10:15Z", 0, 0},
        {"1951-03-14T24:00:00Z", 0, 0},
        {"1951-03-14T10:15:00.Z", 0, 0},
        {"1951-03T10:15:00Z", 0, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256];
        spb_validation_report rep;
        spb_err err;
        json_t *patient;
        int rc;

        snprintf(text, sizeof(text), "\"%s\"", cases[i].value);
        rc = validate_task_with("authoredOn", text, &rep, &err);
        if ((rc == 0) != cases[i].datetime)
            fail_msg("dateTime '%s': %s", cases[i].value, rc ? "rejected" : "accepted");
        snprintf(text, sizeof(text),
                 "{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"https://"
                 "fhir.nhs.uk/Id/nhs-number\",\"value\":\"9434765919\"}],\"birthDate\":\"%s\"}",
                 cases[i].value);
        patient = parse(text);
        spb_err_clear(&err);
        rc = spb_validate(shipped, patient, &rep, &err);
        json_decref(patient);
        if ((rc == 0) != cases[i].date)
            fail_msg("date '%s': %s", cases[i].value, rc ? "rejected" : "accepted");
    }
}

static void test_nhs_number_and_ods(void **state)
{
    static const struct {
        const char *json;
        int valid;
    } cases[] = {
        {"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/Id/"
         "nhs-number\",\"value\":\"9434765919\"}]}",
         1},
        {"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/Id/"
         "nhs-number\",\"value\":\"9434765918\"}]}",
         0},
        {"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/Id/"
         "nhs-number\",\"value\":\"943 476 5919\"}]}",
         0},
        {"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/Id/"
         "nhs-number\",\"value\":\"9434765919\"},{\"system\":\"https://fhir.nhs.uk/Id/"
         "nhs-number\",\"value\":\"9990000018\"}]}",
         0}, /* one NHS number only */
        {"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:oid:1.2.3\",\"value\":"
         "\"12\"},{\"system\":\"https://fhir.nhs.uk/Id/nhs-number\",\"value\":\"9434765919\"}]}",
         1},
        {"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:oid:1.2.3\",\"value\":"
         "\"12\"}]}",
         0},
        {"{\"resourceType\":\"Organization\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/"
         "Id/ods-organization-code\",\"value\":\"B83002\"}]}",
         1},
        {"{\"resourceType\":\"Organization\",\"identifier\":[{\"system\":\"https://fhir.nhs.uk/"
         "Id/ods-organization-code\",\"value\":\"B8\"}]}",
         0},
        {"{\"resourceType\":\"Organization\",\"name\":\"No ODS code\"}", 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        spb_err err;
        json_t *r = parse(cases[i].json);
        int rc;
        spb_err_clear(&err);
        rc = spb_validate(shipped, r, NULL, &err);
        json_decref(r);
        if ((rc == 0) != cases[i].valid)
            fail_msg("case %zu: %s (%s)", i, rc ? "rejected" : "accepted", err.message);
        /* never quote the number itself */
        assert_null(strstr(err.message, "943"));
    }
}

static void test_bundle_rules(void **state)
{
    json_t *b = load_file(CASES "/good/referral-bundle-routed.json");
    json_t *entries = json_object_get(b, "entry");
    spb_validation_report rep;
    spb_err err;
    (void)state;

    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, b, &rep, &err), 0);
    /* the Task's for: a urn:uuid no entry has */
    json_object_set_new(
        json_object_get(json_array_get(entries, 6), "resource"), "for",
        json_pack("{s:s}", "reference", "urn:uuid:00000000-0000-5000-8000-000000000000"));
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, b, &rep, &err), SPB_EINVALID);
    assert_string_equal(err.path, "Bundle.entry[6].resource.for");
    assert_int_equal(err.issue, SPB_ISSUE_INVARIANT);
    json_decref(b);
}

static void test_warnings_do_not_fail(void **state)
{
    spb_validation_report rep;
    spb_err err;
    json_t *oo;
    (void)state;
    /* cancelled without statusReason: spb-task-1 is a warning */
    assert_int_equal(validate_task_with("status", "\"cancelled\"", &rep, &err), 0);
    assert_int_equal(rep.nerrors, 0);
    assert_int_equal(rep.nwarnings, 1);
    assert_int_equal(rep.issues[0].severity, SPB_SEVERITY_WARNING);
    assert_int_equal(rep.issues[0].code, SPB_ISSUE_INVARIANT);
    assert_string_equal(rep.issues[0].expression, "Task");
    oo = spb_validation_outcome(&rep, "t.json#1");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(oo, "issue"), 0), "severity")),
                        "warning");
    json_decref(oo);
    /* a urn:uuid reference outside a Bundle cannot be resolved: a warning */
    assert_int_equal(validate_task_with("for",
                                        "{\"reference\":\"urn:uuid:5f0c2b1e-7a43-4d0b-9a36-"
                                        "2f1d8c7e9b10\"}",
                                        &rep, &err),
                     0);
    assert_int_equal(rep.nwarnings, 1);
}

static void test_report_is_bounded(void **state)
{
    json_t *p = parse("{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"https://"
                      "fhir.nhs.uk/Id/nhs-number\",\"value\":\"9434765919\"}]}");
    spb_validation_report rep;
    spb_err err;
    json_t *oo, *issues;
    (void)state;
    for (int i = 0; i < 40; i++) {
        char key[32];
        snprintf(key, sizeof(key), "unknown%d", i);
        json_object_set_new(p, key, json_true());
    }
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, p, &rep, &err), SPB_EINVALID);
    assert_int_equal(rep.nissues, SPB_VALIDATION_MAX_ISSUES);
    assert_int_equal(rep.nerrors, 40);
    assert_int_equal(rep.dropped, 40 - SPB_VALIDATION_MAX_ISSUES);
    oo = spb_validation_outcome(&rep, NULL);
    issues = json_object_get(oo, "issue");
    assert_int_equal(json_array_size(issues), SPB_VALIDATION_MAX_ISSUES + 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(issues, SPB_VALIDATION_MAX_ISSUES), "code")),
                        "informational");
    json_decref(oo);
    json_decref(p);
}

static void test_outcome_of_a_valid_resource(void **state)
{
    spb_validation_report rep;
    spb_err err;
    json_t *oo;
    const char *text;
    (void)state;
    assert_int_equal(validate_task_with("intent", "\"order\"", &rep, &err), 0);
    oo = spb_validation_outcome(&rep, "x.json#2");
    text = json_string_value(json_object_get(
        json_object_get(json_array_get(json_object_get(oo, "issue"), 0), "details"), "text"));
    assert_non_null(strstr(text, "x.json#2"));
    assert_non_null(strstr(text, "Task conforms"));
    json_decref(oo);
}

static void test_unsupported_input(void **state)
{
    spb_validation_report rep;
    spb_err err;
    json_t *r = parse("{\"resourceType\":\"Clinician\",\"status\":\"completed\"}");
    (void)state;
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, r, &rep, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_NOT_SUPPORTED);
    json_decref(r);
    /* every R4 resource type is covered by base R4: a Procedure needs its subject */
    r = parse("{\"resourceType\":\"Procedure\",\"status\":\"completed\"}");
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, r, &rep, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_REQUIRED);
    assert_string_equal(err.path, "Procedure.subject");
    json_decref(r);
    r = parse("{\"status\":\"completed\"}");
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, r, &rep, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_STRUCTURE);
    json_decref(r);
    r = parse("[1]");
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, r, &rep, &err), SPB_EINVALID);
    json_decref(r);
}

static void test_deep_nesting_is_bounded(void **state)
{
    /* Extensions inside extensions, far deeper than the walk goes. */
    json_t *task = parse(task_json);
    json_t *inner = json_pack("{s:s, s:s}", "url", "http://example.org/x", "valueString", "y");
    spb_validation_report rep;
    spb_err err;
    (void)state;
    for (int i = 0; i < 200; i++)
        inner = json_pack("{s:s, s:[o]}", "url", "http://example.org/x", "extension", inner);
    json_object_set_new(task, "extension", json_pack("[o]", inner));
    spb_err_clear(&err);
    assert_int_equal(spb_validate(shipped, task, &rep, &err), SPB_EINVALID);
    assert_int_equal(err.issue, SPB_ISSUE_STRUCTURE);
    assert_non_null(strstr(err.message, "deep"));
    json_decref(task);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_translate_refuses_nonconforming_output),
        cmocka_unit_test(test_loads_shipped_profiles),
        cmocka_unit_test(test_refuses_rules_it_cannot_enforce),
        cmocka_unit_test(test_missing_folder_is_a_config_error),
        cmocka_unit_test(test_good_cases_pass),
        cmocka_unit_test(test_broken_cases_fail_where_expected),
        cmocka_unit_test(test_first_error_fills_err),
        cmocka_unit_test(test_element_rules),
        cmocka_unit_test(test_lexical_forms),
        cmocka_unit_test(test_nhs_number_and_ods),
        cmocka_unit_test(test_bundle_rules),
        cmocka_unit_test(test_warnings_do_not_fail),
        cmocka_unit_test(test_report_is_bounded),
        cmocka_unit_test(test_outcome_of_a_valid_resource),
        cmocka_unit_test(test_unsupported_input),
        cmocka_unit_test(test_deep_nesting_is_bounded),
    };
    return cmocka_run_group_tests(tests, setup_group, teardown_group);
}
