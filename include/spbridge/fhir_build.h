/*
 * FHIR R4 resource builders: the referral transaction Bundle (Patient, practice
 * Organization, Practitioner/PractitionerRole, service Organization, ServiceRequest, Task),
 * the cancellation Bundle, the report record for declined/signposting events, and the
 * OperationOutcome for errors. Builders are pure: the same input gives byte-identical JSON
 * (fullUrls are name-based UUIDs, keys are emitted in FHIR element order).
 */
#ifndef SPB_FHIR_BUILD_H
#define SPB_FHIR_BUILD_H

#include <jansson.h>

#include "spbridge/error.h"
#include "spbridge/event.h"

#define SPB_SYS_NHS_NUMBER "https://fhir.nhs.uk/Id/nhs-number"
#define SPB_SYS_ODS        "https://fhir.nhs.uk/Id/ods-organization-code"
#define SPB_SYS_SDS_USER   "https://fhir.nhs.uk/Id/sds-user-id"
#define SPB_SYS_SDS_ROLE   "https://fhir.nhs.uk/Id/sds-role-profile-id"
#define SPB_SYS_URN        "urn:ietf:rfc:3986"
#define SPB_SYS_SNOMED     "http://snomed.info/sct"
#define SPB_SYS_EVENT_KIND "https://spbridge.dev/fhir/CodeSystem/event-kind"

typedef enum {
    SPB_KIND_REFERRAL = 0,
    SPB_KIND_CANCELLATION,
    SPB_KIND_DECLINED,
    SPB_KIND_SIGNPOSTING,
    SPB_KIND__COUNT
} spb_event_kind;

/* "referral", ... ; and back (-1 if unknown). */
const char *spb_event_kind_name(spb_event_kind k);
int spb_event_kind_parse(const char *s);

/* Everything the builders need, already checked and mapped. Strings are borrowed. */
typedef struct spb_referral {
    spb_event_kind kind;
    const spb_event *ev;             /* names, address, telecom, clinician, note, times */
    const char *source_uuid;         /* lower-case UUID identifying the referral */
    const char *nhs_number;          /* ten checked digits */
    const char *nhs_verification;    /* normalised 01..08, or NULL */
    const char *practice_ods;        /* checked, upper case */
    const char *priority;            /* routine|urgent|asap|stat or NULL */
    const spb_coding *request_codes; /* ServiceRequest.code codings, preferred first */
    size_t nrequest_codes;
    const spb_coding *reasons; /* mapped needs for reasonCode */
    size_t nreasons;
    /* who is to carry the referral out (ServiceRequest.performer, Task.owner): the
     * recipient the source names, else the configured social prescribing service */
    const char *performer_name;
    const char *performer_ods; /* may be NULL: then referenced by display only */
} spb_referral;

/* Transaction Bundle for a new referral (conditional creates throughout). */
json_t *spb_fhir_referral_bundle(const spb_referral *r, spb_err *err);

/* Transaction Bundle withdrawing the referral `r->source_uuid` (conditional updates:
 * ServiceRequest revoked, Task cancelled). */
json_t *spb_fhir_cancellation_bundle(const spb_referral *r, spb_err *err);

/* Report record (Observation) for a declined or signposting event: kept for reporting,
 * never sent as a referral. */
json_t *spb_fhir_report_record(const spb_referral *r, spb_err *err);

/* OperationOutcome for an error: severity error, issue code from err->issue, diagnostics
 * with the message and the fix, location/expression where known. */
json_t *spb_fhir_operation_outcome(const spb_err *err);

#endif
