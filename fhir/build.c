/*
 * Referral resource builders, following the HL7 Gravity SDOH referral pattern on UK Core
 * identifiers (see ../shared/domain.md):
 *   ServiceRequest: status active, intent order, code = the referral concept, subject the
 *     Patient, requester the practitioner role or practice, performer the service.
 *   Task: intent order, code fulfill, focus -> ServiceRequest, for -> Patient,
 *     requester = the practice Organization, owner = the service.
 * Every entry is a conditional create on a stable identifier, so posting the same Bundle
 * twice creates nothing twice. fullUrls are name-based UUIDs of those identifiers, so the
 * same input always yields byte-identical JSON.
 */
#include "spbridge/fhir_build.h"

#include <stdio.h>
#include <string.h>

#include "spbridge/ident.h"

#define EXT_NHS_VERIFICATION                                                                       \
    "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-NHSNumberVerificationStatus"
#define CS_NHS_VERIFICATION                                                                        \
    "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland"
#define EXT_INTERPRETER "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"

static const char *kind_names[SPB_KIND__COUNT] = {"referral", "cancellation", "declined",
                                                  "signposting"};

const char *spb_event_kind_name(spb_event_kind k)
{
    return kind_names[k];
}

int spb_event_kind_parse(const char *s)
{
    for (int i = 0; i < SPB_KIND__COUNT; i++) {
        if (strcmp(s, kind_names[i]) == 0)
            return i;
    }
    return -1;
}

/* ---- small JSON helpers; json_object_set_new steals, so a NULL value is simply skipped */

static void set_str(json_t *o, const char *key, const char *val)
{
    if (val != NULL && *val != '\0')
        json_object_set_new(o, key, json_string(val));
}

static json_t *identifier(const char *system, const char *value)
{
    return json_pack("{s:s, s:s}", "system", system, "value", value);
}

static json_t *reference(const char *full_url)
{
    return json_pack("{s:s}", "reference", full_url);
}

static json_t *coding(const char *system, const char *code, const char *display)
{
    json_t *c = json_object();
    set_str(c, "system", system);
    set_str(c, "code", code);
    set_str(c, "display", display);
    return c;
}

static json_t *codeable(const char *system, const char *code, const char *display)
{
    return json_pack("{s:[o]}", "coding", coding(system, code, display));
}

static int full_url(char out[64], const char *kind, const char *key)
{
    char name[512];
    char uuid[SPB_UUID_LEN + 1];
    snprintf(name, sizeof(name), "%s|%s", kind, key);
    if (spb_uuid_v5(uuid, name) < 0)
        return -1;
    snprintf(out, 64, "urn:uuid:%s", uuid);
    return 0;
}

static json_t *entry(const char *fullurl, json_t *resource, const char *method, const char *url,
                     const char *if_none_exist)
{
    json_t *req = json_object();
    json_t *e = json_object();
    json_object_set_new(req, "method", json_string(method));
    json_object_set_new(req, "url", json_string(url));
    set_str(req, "ifNoneExist", if_none_exist);
    json_object_set_new(e, "fullUrl", json_string(fullurl));
    json_object_set_new(e, "resource", resource);
    json_object_set_new(e, "request", req);
    return e;
}

static json_t *human_name(const spb_event *ev, spb_field_id prefix, spb_field_id given,
                          spb_field_id family, int official)
{
    json_t *n = json_object();
    if (official)
        json_object_set_new(n, "use", json_string("official"));
    set_str(n, "family", spb_event_get(ev, family));
    if (ev->f[given].n > 0) {
        json_t *g = json_array();
        for (size_t i = 0; i < ev->f[given].n; i++)
            json_array_append_new(g, json_string(ev->f[given].v[i]));
        json_object_set_new(n, "given", g);
    }
    if (spb_event_get(ev, prefix) != NULL)
        json_object_set_new(n, "prefix", json_pack("[s]", spb_event_get(ev, prefix)));
    if (json_object_size(n) <= (size_t)official) {
        json_decref(n);
        return NULL;
    }
    return n;
}

static const char *verification_display(const char *code)
{
    static const char *displays[] = {
        "Number present and verified",
        "Number present but not traced",
        "Trace required",
        "Trace attempted - No match or multiple match found",
        "Trace needs to be resolved - (NHS Number or patient detail conflict)",
        "Trace in progress",
        "Number not present and trace not required",
        "Trace postponed (baby under six weeks old)",
    };
    if (code[0] == '0' && code[1] >= '1' && code[1] <= '8' && code[2] == '\0')
        return displays[code[1] - '1'];
    return NULL;
}

static json_t *build_patient(const spb_referral *r)
{
    const spb_event *ev = r->ev;
    json_t *p = json_object();
    json_t *id = identifier(SPB_SYS_NHS_NUMBER, r->nhs_number);
    json_t *name;

    json_object_set_new(p, "resourceType", json_string("Patient"));
    if (spb_event_get(ev, SPB_F_PATIENT_INTERPRETER) != NULL) {
        int yes = strcmp(spb_event_get(ev, SPB_F_PATIENT_INTERPRETER), "true") == 0;
        json_object_set_new(p, "extension",
                            json_pack("[{s:s, s:b}]", "url", EXT_INTERPRETER, "valueBoolean", yes));
    }
    if (r->nhs_verification != NULL) {
        json_t *ext = json_pack("[{s:s, s:o}]", "url", EXT_NHS_VERIFICATION, "valueCodeableConcept",
                                codeable(CS_NHS_VERIFICATION, r->nhs_verification,
                                         verification_display(r->nhs_verification)));
        /* extension first: FHIR JSON element order within Identifier */
        json_t *with_ext = json_object();
        json_object_set_new(with_ext, "extension", ext);
        json_object_update(with_ext, id);
        json_decref(id);
        id = with_ext;
    }
    json_object_set_new(p, "identifier", json_pack("[o]", id));
    name = human_name(ev, SPB_F_PATIENT_PREFIX, SPB_F_PATIENT_GIVEN, SPB_F_PATIENT_FAMILY, 1);
    if (name != NULL)
        json_object_set_new(p, "name", json_pack("[o]", name));
    {
        json_t *telecom = json_array();
        const char *phone_use = spb_event_get(ev, SPB_F_PATIENT_PHONE_USE);
        if (spb_event_get(ev, SPB_F_PATIENT_PHONE) != NULL)
            json_array_append_new(telecom, json_pack("{s:s, s:s, s:s}", "system", "phone", "value",
                                                     spb_event_get(ev, SPB_F_PATIENT_PHONE), "use",
                                                     phone_use != NULL ? phone_use : "home"));
        if (spb_event_get(ev, SPB_F_PATIENT_MOBILE) != NULL)
            json_array_append_new(telecom, json_pack("{s:s, s:s, s:s}", "system", "phone", "value",
                                                     spb_event_get(ev, SPB_F_PATIENT_MOBILE), "use",
                                                     "mobile"));
        if (spb_event_get(ev, SPB_F_PATIENT_EMAIL) != NULL)
            json_array_append_new(telecom,
                                  json_pack("{s:s, s:s, s:s}", "system", "email", "value",
                                            spb_event_get(ev, SPB_F_PATIENT_EMAIL), "use", "home"));
        if (json_array_size(telecom) > 0)
            json_object_set_new(p, "telecom", telecom);
        else
            json_decref(telecom);
    }
    set_str(p, "gender", spb_event_get(ev, SPB_F_PATIENT_GENDER));
    set_str(p, "birthDate", spb_event_get(ev, SPB_F_PATIENT_BIRTH_DATE));
    if (ev->f[SPB_F_PATIENT_ADDRESS_LINE].n > 0 ||
        spb_event_get(ev, SPB_F_PATIENT_ADDRESS_POSTCODE) != NULL ||
        spb_event_get(ev, SPB_F_PATIENT_ADDRESS_CITY) != NULL) {
        json_t *a = json_object();
        json_object_set_new(a, "use", json_string("home"));
        if (ev->f[SPB_F_PATIENT_ADDRESS_LINE].n > 0) {
            json_t *lines = json_array();
            for (size_t i = 0; i < ev->f[SPB_F_PATIENT_ADDRESS_LINE].n; i++)
                json_array_append_new(lines, json_string(ev->f[SPB_F_PATIENT_ADDRESS_LINE].v[i]));
            json_object_set_new(a, "line", lines);
        }
        set_str(a, "city", spb_event_get(ev, SPB_F_PATIENT_ADDRESS_CITY));
        set_str(a, "district", spb_event_get(ev, SPB_F_PATIENT_ADDRESS_DISTRICT));
        set_str(a, "postalCode", spb_event_get(ev, SPB_F_PATIENT_ADDRESS_POSTCODE));
        json_object_set_new(p, "address", json_pack("[o]", a));
    }
    if (spb_event_get(ev, SPB_F_PATIENT_LANGUAGE) != NULL)
        json_object_set_new(
            p, "communication",
            json_pack("[{s:o, s:b}]", "language",
                      codeable("urn:ietf:bcp:47", spb_event_get(ev, SPB_F_PATIENT_LANGUAGE), NULL),
                      "preferred", 1));
    return p;
}

static json_t *build_org(const char *ods, const char *name)
{
    json_t *o = json_object();
    json_object_set_new(o, "resourceType", json_string("Organization"));
    json_object_set_new(o, "identifier", json_pack("[o]", identifier(SPB_SYS_ODS, ods)));
    set_str(o, "name", name);
    return o;
}

/* The practitioner's stable identifier: SDS user id, else the source system's id. */
static int practitioner_identifier(const spb_referral *r, char *system, size_t ssize, char *value,
                                   size_t vsize)
{
    const char *sds = spb_event_get(r->ev, SPB_F_CLINICIAN_SDS_USER_ID);
    const char *local = spb_event_get(r->ev, SPB_F_CLINICIAN_ID);
    if (sds != NULL) {
        snprintf(system, ssize, "%s", SPB_SYS_SDS_USER);
        snprintf(value, vsize, "%s", sds);
        return 1;
    }
    if (local != NULL) {
        char uuid[SPB_UUID_LEN + 1];
        snprintf(system, ssize, "%s", SPB_SYS_URN);
        if (spb_uuid_is_valid(local)) {
            spb_uuid_lower(uuid, local);
        } else {
            /* a non-UUID local id is only unique within its practice */
            char name[300];
            snprintf(name, sizeof(name), "clinician|%s|%s", r->practice_ods, local);
            if (spb_uuid_v5(uuid, name) < 0)
                return -1;
        }
        snprintf(value, vsize, "urn:uuid:%s", uuid);
        return 1;
    }
    return 0;
}

typedef struct parties {
    char patient[64], practice[64], service[64], practitioner[64], role[64];
    int have_practitioner;
    json_t *service_ref;   /* owned */
    json_t *requester_ref; /* owned */
} parties;

static int add_parties(json_t *entries, const spb_referral *r, parties *pt)
{
    char query[600];
    char psys[128], pval[300];
    int have;

    memset(pt, 0, sizeof(*pt));
    if (full_url(pt->patient, "Patient", r->nhs_number) < 0 ||
        full_url(pt->practice, "Organization", r->practice_ods) < 0)
        return -1;
    snprintf(query, sizeof(query), "identifier=%s|%s", SPB_SYS_NHS_NUMBER, r->nhs_number);
    json_array_append_new(entries, entry(pt->patient, build_patient(r), "POST", "Patient", query));
    json_object_set_new(
        json_object_get(json_array_get(entries, json_array_size(entries) - 1), "resource"),
        "generalPractitioner", json_pack("[o]", reference(pt->practice)));
    snprintf(query, sizeof(query), "identifier=%s|%s", SPB_SYS_ODS, r->practice_ods);
    json_array_append_new(
        entries,
        entry(pt->practice, build_org(r->practice_ods, spb_event_get(r->ev, SPB_F_PRACTICE_NAME)),
              "POST", "Organization", query));

    have = practitioner_identifier(r, psys, sizeof(psys), pval, sizeof(pval));
    if (have < 0)
        return -1;
    if (have) {
        json_t *prac = json_object();
        json_t *role = json_object();
        json_t *name;
        char role_key[400];
        char role_sys[128], role_val[300];
        const char *role_profile = spb_event_get(r->ev, SPB_F_CLINICIAN_SDS_ROLE_PROFILE_ID);

        snprintf(role_key, sizeof(role_key), "%s|%s", pval, r->practice_ods);
        if (full_url(pt->practitioner, "Practitioner", pval) < 0 ||
            full_url(pt->role, "PractitionerRole", role_key) < 0)
            return -1;
        json_object_set_new(prac, "resourceType", json_string("Practitioner"));
        json_object_set_new(prac, "identifier", json_pack("[o]", identifier(psys, pval)));
        name = human_name(r->ev, SPB_F_CLINICIAN_PREFIX, SPB_F_CLINICIAN_GIVEN,
                          SPB_F_CLINICIAN_FAMILY, 0);
        if (name != NULL)
            json_object_set_new(prac, "name", json_pack("[o]", name));
        snprintf(query, sizeof(query), "identifier=%s|%s", psys, pval);
        json_array_append_new(entries,
                              entry(pt->practitioner, prac, "POST", "Practitioner", query));

        if (role_profile != NULL) {
            snprintf(role_sys, sizeof(role_sys), "%s", SPB_SYS_SDS_ROLE);
            snprintf(role_val, sizeof(role_val), "%s", role_profile);
        } else {
            /* no SDS role profile: identify the role by practitioner + practice */
            snprintf(role_sys, sizeof(role_sys), "%s", SPB_SYS_URN);
            snprintf(role_val, sizeof(role_val), "%s", pt->role);
        }
        json_object_set_new(role, "resourceType", json_string("PractitionerRole"));
        json_object_set_new(role, "identifier", json_pack("[o]", identifier(role_sys, role_val)));
        json_object_set_new(role, "practitioner", reference(pt->practitioner));
        json_object_set_new(role, "organization", reference(pt->practice));
        if (spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_CODE) != NULL &&
            spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_SYSTEM) != NULL) {
            json_object_set_new(
                role, "code",
                json_pack("[o]", codeable(spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_SYSTEM),
                                          spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_CODE),
                                          spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_DISPLAY))));
        } else if (spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_DISPLAY) != NULL) {
            json_object_set_new(
                role, "code",
                json_pack("[{s:s}]", "text", spb_event_get(r->ev, SPB_F_CLINICIAN_ROLE_DISPLAY)));
        }
        snprintf(query, sizeof(query), "identifier=%s|%s", role_sys, role_val);
        json_array_append_new(entries, entry(pt->role, role, "POST", "PractitionerRole", query));
        pt->have_practitioner = 1;
        pt->requester_ref = reference(pt->role);
    } else {
        pt->requester_ref = reference(pt->practice);
    }

    if (r->performer_ods != NULL && strcmp(r->performer_ods, r->practice_ods) == 0) {
        /* a practice that runs its own social prescribing service: one Organization */
        pt->service_ref = reference(pt->practice);
    } else if (r->performer_ods != NULL) {
        if (full_url(pt->service, "Organization", r->performer_ods) < 0)
            return -1;
        snprintf(query, sizeof(query), "identifier=%s|%s", SPB_SYS_ODS, r->performer_ods);
        json_array_append_new(entries,
                              entry(pt->service, build_org(r->performer_ods, r->performer_name),
                                    "POST", "Organization", query));
        pt->service_ref = reference(pt->service);
    } else {
        /* no ODS code configured for the service: a logical reference by name */
        pt->service_ref =
            json_pack("{s:s}", "display",
                      r->performer_name ? r->performer_name : "Social prescribing service");
    }
    return 0;
}

static json_t *request_code(const spb_referral *r)
{
    json_t *codings = json_array();
    for (size_t i = 0; i < r->nrequest_codes; i++)
        json_array_append_new(codings, coding(r->request_codes[i].system, r->request_codes[i].code,
                                              r->request_codes[i].display));
    return json_pack("{s:o}", "coding", codings);
}

static json_t *build_service_request(const spb_referral *r, const parties *pt, const char *status)
{
    json_t *sr = json_object();
    char idval[64];
    const char *recorded = spb_event_get(r->ev, SPB_F_EVENT_RECORDED);
    const char *note = spb_event_get(r->ev, SPB_F_EVENT_NOTE);

    snprintf(idval, sizeof(idval), "urn:uuid:%s", r->source_uuid);
    json_object_set_new(sr, "resourceType", json_string("ServiceRequest"));
    json_object_set_new(sr, "identifier", json_pack("[o]", identifier(SPB_SYS_URN, idval)));
    json_object_set_new(sr, "status", json_string(status));
    json_object_set_new(sr, "intent", json_string("order"));
    json_object_set_new(
        sr, "category",
        json_pack("[o]", codeable(SPB_SYS_SNOMED, "410606002", "Social service procedure")));
    set_str(sr, "priority", r->priority);
    json_object_set_new(sr, "code", request_code(r));
    json_object_set_new(sr, "subject", reference(pt->patient));
    set_str(sr, "authoredOn", recorded);
    json_object_set_new(sr, "requester", json_deep_copy(pt->requester_ref));
    json_object_set_new(sr, "performer", json_pack("[O]", pt->service_ref));
    if (r->nreasons > 0) {
        json_t *reasons = json_array();
        for (size_t i = 0; i < r->nreasons; i++)
            json_array_append_new(
                reasons, codeable(r->reasons[i].system, r->reasons[i].code, r->reasons[i].display));
        json_object_set_new(sr, "reasonCode", reasons);
    }
    if (note != NULL)
        json_object_set_new(sr, "note", json_pack("[{s:s}]", "text", note));
    return sr;
}

static json_t *build_task(const spb_referral *r, const parties *pt, const char *sr_url,
                          const char *status, const char *status_reason)
{
    json_t *t = json_object();
    char idval[64];
    const char *recorded = spb_event_get(r->ev, SPB_F_EVENT_RECORDED);

    snprintf(idval, sizeof(idval), "urn:uuid:%s", r->source_uuid);
    json_object_set_new(t, "resourceType", json_string("Task"));
    json_object_set_new(t, "identifier", json_pack("[o]", identifier(SPB_SYS_URN, idval)));
    json_object_set_new(t, "status", json_string(status));
    if (status_reason != NULL)
        json_object_set_new(t, "statusReason", json_pack("{s:s}", "text", status_reason));
    json_object_set_new(t, "intent", json_string("order"));
    set_str(t, "priority", r->priority);
    json_object_set_new(t, "code",
                        codeable("http://hl7.org/fhir/CodeSystem/task-code", "fulfill",
                                 "Fulfill the focal request"));
    json_object_set_new(t, "focus", reference(sr_url));
    json_object_set_new(t, "for", reference(pt->patient));
    set_str(t, "authoredOn", recorded);
    /* The Task's requester is always the practice, so a service's Tasks for one practice are
     * found with one search (Task?requester=Organization/<id>), whoever the clinician was;
     * the clinician is the ServiceRequest's requester. */
    json_object_set_new(t, "requester", reference(pt->practice));
    json_object_set_new(t, "owner", json_deep_copy(pt->service_ref));
    return t;
}

static json_t *bundle_with(json_t *entries)
{
    json_t *b = json_object();
    json_object_set_new(b, "resourceType", json_string("Bundle"));
    json_object_set_new(b, "type", json_string("transaction"));
    json_object_set_new(b, "entry", entries);
    return b;
}

static void parties_clear(parties *pt)
{
    json_decref(pt->service_ref);
    json_decref(pt->requester_ref);
    pt->service_ref = NULL;
    pt->requester_ref = NULL;
}

json_t *spb_fhir_referral_bundle(const spb_referral *r, spb_err *err)
{
    json_t *entries = json_array();
    parties pt;
    char sr_url[64], task_url[64], query[200];
    json_t *out = NULL;

    if (add_parties(entries, r, &pt) < 0 ||
        full_url(sr_url, "ServiceRequest", r->source_uuid) < 0 ||
        full_url(task_url, "Task", r->source_uuid) < 0) {
        spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot build the referral bundle");
        goto out;
    }
    snprintf(query, sizeof(query), "identifier=%s|urn:uuid:%s", SPB_SYS_URN, r->source_uuid);
    json_array_append_new(entries, entry(sr_url, build_service_request(r, &pt, "active"), "POST",
                                         "ServiceRequest", query));
    json_array_append_new(entries, entry(task_url, build_task(r, &pt, sr_url, "requested", NULL),
                                         "POST", "Task", query));
    out = bundle_with(entries);
    entries = NULL;
out:
    parties_clear(&pt);
    json_decref(entries);
    return out;
}

json_t *spb_fhir_cancellation_bundle(const spb_referral *r, spb_err *err)
{
    json_t *entries = json_array();
    parties pt;
    char sr_url[64], task_url[64], sr_cond[200], task_cond[200];
    json_t *out = NULL;

    if (add_parties(entries, r, &pt) < 0 ||
        full_url(sr_url, "ServiceRequest", r->source_uuid) < 0 ||
        full_url(task_url, "Task", r->source_uuid) < 0) {
        spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot build the cancellation bundle");
        goto out;
    }
    /* Conditional updates by the original referral's identifier. */
    snprintf(sr_cond, sizeof(sr_cond), "ServiceRequest?identifier=%s|urn:uuid:%s", SPB_SYS_URN,
             r->source_uuid);
    snprintf(task_cond, sizeof(task_cond), "Task?identifier=%s|urn:uuid:%s", SPB_SYS_URN,
             r->source_uuid);
    json_array_append_new(
        entries, entry(sr_url, build_service_request(r, &pt, "revoked"), "PUT", sr_cond, NULL));
    json_array_append_new(entries, entry(task_url,
                                         build_task(r, &pt, sr_url, "cancelled",
                                                    "Referral withdrawn by the referring practice"),
                                         "PUT", task_cond, NULL));
    out = bundle_with(entries);
    entries = NULL;
out:
    parties_clear(&pt);
    json_decref(entries);
    return out;
}

json_t *spb_fhir_report_record(const spb_referral *r, spb_err *err)
{
    json_t *o = json_object();
    char idval[64];
    (void)err;

    snprintf(idval, sizeof(idval), "urn:uuid:%s", r->source_uuid);
    json_object_set_new(o, "resourceType", json_string("Observation"));
    json_object_set_new(o, "meta",
                        json_pack("{s:[o]}", "tag",
                                  coding(SPB_SYS_EVENT_KIND, spb_event_kind_name(r->kind), NULL)));
    json_object_set_new(o, "identifier", json_pack("[o]", identifier(SPB_SYS_URN, idval)));
    json_object_set_new(o, "status", json_string("final"));
    json_object_set_new(o, "category",
                        json_pack("[o]", codeable("http://terminology.hl7.org/CodeSystem/"
                                                  "observation-category",
                                                  "social-history", "Social History")));
    json_object_set_new(o, "code", request_code(r));
    json_object_set_new(
        o, "subject",
        json_pack("{s:o}", "identifier", identifier(SPB_SYS_NHS_NUMBER, r->nhs_number)));
    set_str(o, "effectiveDateTime", spb_event_get(r->ev, SPB_F_EVENT_RECORDED));
    json_object_set_new(
        o, "performer",
        json_pack("[{s:o}]", "identifier", identifier(SPB_SYS_ODS, r->practice_ods)));
    return o;
}

json_t *spb_fhir_operation_outcome(const spb_err *err)
{
    json_t *issue = json_object();
    char diag[SPB_ERR_MSG_MAX + SPB_ERR_HINT_MAX + SPB_ERR_FILE_MAX + 64];
    size_t used = 0;

    if (err->file[0] != '\0') {
        used += (size_t)snprintf(diag + used, sizeof(diag) - used, "%s", err->file);
        if (err->line > 0)
            used += (size_t)snprintf(diag + used, sizeof(diag) - used, ":%d", err->line);
        if (err->column > 0)
            used += (size_t)snprintf(diag + used, sizeof(diag) - used, ":%d", err->column);
        used += (size_t)snprintf(diag + used, sizeof(diag) - used, ": ");
    }
    used += (size_t)snprintf(diag + used, sizeof(diag) - used, "%s",
                             err->message[0] ? err->message : "unknown error");
    while (used > 0 && used < sizeof(diag) && diag[used - 1] == '.')
        diag[--used] = '\0';
    if (err->hint[0] != '\0' && used < sizeof(diag))
        snprintf(diag + used, sizeof(diag) - used, ". Fix: %s", err->hint);
    json_object_set_new(issue, "severity", json_string("error"));
    json_object_set_new(issue, "code", json_string(spb_issue_name(err->issue)));
    json_object_set_new(issue, "details",
                        json_pack("{s:s}", "text", err->message[0] ? err->message : "error"));
    json_object_set_new(issue, "diagnostics", json_string(diag));
    if (err->path[0] != '\0') {
        /* FHIRPath expressions start with a resource type; anything else is a location
         * in the source document (XPath) */
        int fhirpath = err->path[0] != '/';
        json_object_set_new(issue, fhirpath ? "expression" : "location",
                            json_pack("[s]", err->path));
    }
    return json_pack("{s:s, s:[o]}", "resourceType", "OperationOutcome", "issue", issue);
}
