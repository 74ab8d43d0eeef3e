/*
 * Write-back documents: the outcome of a social prescribing referral, as coded entries for
 * the patient's GP record. Two formats, chosen per practice: an HL7 v3 GP2GP EhrExtract
 * holding one ehrComposition of ObservationStatements (which spbridge's own gp2gp dialect
 * reads back), or the native <outcome> document (docs/native-format.md). Values keep the
 * exact text the service sent.
 */
#ifndef SPB_WRITEBACK_H
#define SPB_WRITEBACK_H

#include <stddef.h>

#include "spbridge/error.h"

typedef struct spb_wb_entry {
    const char *system; /* code system URI (SNOMED CT: http://snomed.info/sct) */
    const char *code;
    const char *display;
    const char *value_kind; /* NULL, "quantity", "integer", "string", "code", "boolean" */
    const char *value;      /* exact text */
    const char *unit;
    const char *value_system, *value_code, *value_display; /* for "code" */
    const char *effective;                                 /* FHIR dateTime */
    const char *source; /* what it came from, e.g. "Task.status", "Observation/12" */
} spb_wb_entry;

typedef struct spb_wb_doc {
    const char *format;   /* gp2gp | native */
    const char *doc_uuid; /* stable per Task version */
    const char *referral; /* the referral's uuid */
    const char *task_ref; /* Task/<id> at the service */
    const char *version;  /* Task meta.versionId */
    const char *practice_ods;
    const char *nhs_number;
    const char *service_name;
    const char *service_ods;
    const char *recorded; /* FHIR dateTime: when the service changed the Task */
    const char *status;   /* Task.status */
    const char *business_status;
    const char *reason_text; /* Task.statusReason.text (free text from the service) */
    const spb_wb_entry *entries;
    size_t nentries;
} spb_wb_doc;

/* Renders the document; returns malloc'd UTF-8 XML (length in *len) or NULL with err set. */
char *spb_writeback_render(const spb_wb_doc *d, size_t *len, spb_err *err);

/* HL7 v3 OID for a code system URI (SNOMED CT, Read v2, CTV3), else NULL. */
const char *spb_codesystem_oid(const char *uri);

#endif
