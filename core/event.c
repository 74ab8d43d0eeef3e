/*
 * The canonical event model's field table and storage. The table is the single source
 * of truth for field names: profiles are checked against it, `mappings explain` prints
 * it, and docs/dialect-profiles.md documents it.
 */
#include "spbridge/event.h"

#include <stdlib.h>
#include <string.h>

#define NONE SPB_F__COUNT

const spb_field_def spb_fields[SPB_F__COUNT] = {
    [SPB_F_EVENT_ID] = {"event.id", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 0,
                        "the source entry's id (a UUID in GP2GP); identifies the referral"},
    [SPB_F_EVENT_KIND] = {"event.kind", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                          "referral|cancellation|declined|signposting, when the source says "
                          "so explicitly; otherwise the trigger ConceptMap decides"},
    [SPB_F_EVENT_RECORDED] = {"event.recorded", SPB_FT_SCALAR, SPB_FV_DATETIME, NONE, 0,
                              "when the entry was recorded"},
    [SPB_F_EVENT_PRIORITY] = {"event.priority", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                              "routine|urgent|asap|stat"},
    [SPB_F_EVENT_CONSENT] = {"event.consent", SPB_FT_SCALAR, SPB_FV_BOOLEAN, NONE, 0,
                             "the patient consents to share with the service"},
    [SPB_F_EVENT_NOTE] = {"event.note", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                          "free-text note for the link worker"},
    [SPB_F_EVENT_CANCELS] = {"event.cancels", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 0,
                             "for a cancellation: the id of the referral it withdraws"},
    [SPB_F_PRACTICE_ODS] = {"practice.ods", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                            "the referring practice's ODS code"},
    [SPB_F_PRACTICE_NAME] = {"practice.name", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 0,
                             "the practice's name"},
    [SPB_F_RECIPIENT_ODS] = {"recipient.ods", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                             "the ODS code of the organisation the referral is addressed to "
                             "(GP2GP: the RequestStatement's responsibleParty), when it has one"},
    [SPB_F_RECIPIENT_NAME] = {"recipient.name", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 0,
                              "the name of the organisation the referral is addressed to"},
    [SPB_F_CLINICIAN_ID] = {"clinician.id", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 0,
                            "the source system's id for the clinician (GP2GP agent UUID)"},
    [SPB_F_CLINICIAN_SDS_USER_ID] = {"clinician.sds_user_id", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                                     "the clinician's SDS user id"},
    [SPB_F_CLINICIAN_SDS_ROLE_PROFILE_ID] = {"clinician.sds_role_profile_id", SPB_FT_SCALAR,
                                             SPB_FV_CODE, NONE, 0,
                                             "the clinician's SDS role profile id"},
    [SPB_F_CLINICIAN_PREFIX] = {"clinician.prefix", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                                "title, e.g. Dr"},
    [SPB_F_CLINICIAN_GIVEN] = {"clinician.given", SPB_FT_LIST, SPB_FV_TEXT, NONE, 1, "given names"},
    [SPB_F_CLINICIAN_FAMILY] = {"clinician.family", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                                "family name"},
    [SPB_F_CLINICIAN_ROLE_CODE] = {"clinician.role_code", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                                   "the clinician's role code"},
    [SPB_F_CLINICIAN_ROLE_SYSTEM] = {"clinician.role_system", SPB_FT_SCALAR, SPB_FV_URI, NONE, 0,
                                     "the role code's system URI"},
    [SPB_F_CLINICIAN_ROLE_DISPLAY] = {"clinician.role_display", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 0,
                                      "the role's display text"},
    [SPB_F_PATIENT_NHS_NUMBER] = {"patient.nhs_number", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                                  "the patient's NHS number (checked, modulus 11)"},
    [SPB_F_PATIENT_NHS_VERIFICATION] = {"patient.nhs_verification", SPB_FT_SCALAR, SPB_FV_CODE,
                                        NONE, 0, "NHS number verification status, 01 to 08"},
    [SPB_F_PATIENT_PREFIX] = {"patient.prefix", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1, "title"},
    [SPB_F_PATIENT_GIVEN] = {"patient.given", SPB_FT_LIST, SPB_FV_TEXT, NONE, 1, "given names"},
    [SPB_F_PATIENT_FAMILY] = {"patient.family", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1, "family name"},
    [SPB_F_PATIENT_BIRTH_DATE] = {"patient.birth_date", SPB_FT_SCALAR, SPB_FV_DATE, NONE, 1,
                                  "date of birth"},
    [SPB_F_PATIENT_GENDER] = {"patient.gender", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                              "male|female|other|unknown"},
    [SPB_F_PATIENT_ADDRESS_LINE] = {"patient.address_line", SPB_FT_LIST, SPB_FV_TEXT, NONE, 1,
                                    "address lines"},
    [SPB_F_PATIENT_ADDRESS_CITY] = {"patient.address_city", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                                    "town or city"},
    [SPB_F_PATIENT_ADDRESS_DISTRICT] = {"patient.address_district", SPB_FT_SCALAR, SPB_FV_TEXT,
                                        NONE, 1, "county or district"},
    [SPB_F_PATIENT_ADDRESS_POSTCODE] = {"patient.address_postcode", SPB_FT_SCALAR, SPB_FV_TEXT,
                                        NONE, 1, "postcode"},
    [SPB_F_PATIENT_PHONE] = {"patient.phone", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                             "telephone number (its use is patient.phone_use, default home)"},
    [SPB_F_PATIENT_PHONE_USE] = {"patient.phone_use", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                                 "what patient.phone is: home|work|mobile|temp|old"},
    [SPB_F_PATIENT_MOBILE] = {"patient.mobile", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1,
                              "mobile telephone number (sent with use mobile)"},
    [SPB_F_PATIENT_EMAIL] = {"patient.email", SPB_FT_SCALAR, SPB_FV_TEXT, NONE, 1, "email address"},
    [SPB_F_PATIENT_LANGUAGE] = {"patient.language", SPB_FT_SCALAR, SPB_FV_CODE, NONE, 0,
                                "preferred language, a BCP-47 tag such as en or pl"},
    [SPB_F_PATIENT_INTERPRETER] = {"patient.interpreter", SPB_FT_SCALAR, SPB_FV_BOOLEAN, NONE, 0,
                                   "an interpreter is needed"},
    [SPB_F_CODES] = {"codes", SPB_FT_GROUP, SPB_FV_TEXT, NONE, 0,
                     "selects each coded entry of the event (code and its translations)"},
    [SPB_F_CODES_CODE] = {"codes.code", SPB_FT_MEMBER, SPB_FV_TEXT, SPB_F_CODES, 0, "the code"},
    [SPB_F_CODES_SYSTEM] = {"codes.system", SPB_FT_MEMBER, SPB_FV_URI, SPB_F_CODES, 0,
                            "the code system URI"},
    [SPB_F_CODES_DISPLAY] = {"codes.display", SPB_FT_MEMBER, SPB_FV_TEXT, SPB_F_CODES, 0,
                             "the code's display term"},
    [SPB_F_NEEDS] = {"needs", SPB_FT_GROUP, SPB_FV_TEXT, NONE, 0,
                     "selects each need or reason for referral"},
    [SPB_F_NEEDS_CODE] = {"needs.code", SPB_FT_MEMBER, SPB_FV_TEXT, SPB_F_NEEDS, 0, "the code"},
    [SPB_F_NEEDS_SYSTEM] = {"needs.system", SPB_FT_MEMBER, SPB_FV_URI, SPB_F_NEEDS, 0,
                            "the code system URI"},
    [SPB_F_NEEDS_DISPLAY] = {"needs.display", SPB_FT_MEMBER, SPB_FV_TEXT, SPB_F_NEEDS, 0,
                             "the display term"},
};

int spb_field_lookup(const char *name)
{
    for (int i = 0; i < SPB_F__COUNT; i++) {
        if (strcmp(spb_fields[i].name, name) == 0)
            return i;
    }
    return -1;
}

const char *spb_event_get(const spb_event *ev, spb_field_id id)
{
    if (ev->f[id].n == 0)
        return NULL;
    return ev->f[id].v[0];
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int spb_event_add(spb_event *ev, spb_field_id id, const char *value)
{
    spb_values *vals = &ev->f[id];
    char **grown;
    char *copy = strdup(value);

    if (copy == NULL)
        return -10;
    grown = realloc(vals->v, (vals->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(copy);
        return -10;
    }
    vals->v = grown;
    vals->v[vals->n++] = copy;
    return 0;
}

int spb_event_add_coding(spb_event *ev, spb_field_id group, const char *system, const char *code,
                         const char *display)
{
    spb_coding **list = group == SPB_F_CODES ? &ev->codes : &ev->needs;
    size_t *n = group == SPB_F_CODES ? &ev->ncodes : &ev->nneeds;
    spb_coding *grown = realloc(*list, (*n + 1) * sizeof(**list));
    spb_coding *c;

    if (grown == NULL)
        return -10;
    *list = grown;
    c = &grown[*n];
    c->system = dup_or_null(system);
    c->code = dup_or_null(code);
    c->display = dup_or_null(display);
    if ((system && !c->system) || (code && !c->code) || (display && !c->display)) {
        free(c->system);
        free(c->code);
        free(c->display);
        return -10;
    }
    (*n)++;
    return 0;
}

static void free_codings(spb_coding *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(list[i].system);
        free(list[i].code);
        free(list[i].display);
    }
    free(list);
}

void spb_event_clear(spb_event *ev)
{
    if (ev == NULL)
        return;
    for (int i = 0; i < SPB_F__COUNT; i++) {
        for (size_t k = 0; k < ev->f[i].n; k++)
            free(ev->f[i].v[k]);
        free(ev->f[i].v);
    }
    free_codings(ev->codes, ev->ncodes);
    free_codings(ev->needs, ev->nneeds);
    memset(ev, 0, sizeof(*ev));
}
