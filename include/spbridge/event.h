/*
 * The canonical event: what spbridge knows about one coded GP record entry after a
 * dialect profile has read it, before any FHIR is built. Every dialect fills the same
 * named fields, so the FHIR builders never see XML and adding a dialect never touches C.
 *
 * Field names ("patient.nhs_number", "codes.system", ...) are the vocabulary of dialect
 * profiles; docs/dialect-profiles.md lists them. Values are UTF-8 strings after the
 * profile's transforms; an absent value is a NULL/empty list.
 */
#ifndef SPB_EVENT_H
#define SPB_EVENT_H

#include <stddef.h>

typedef enum {
    SPB_F_EVENT_ID = 0,
    SPB_F_EVENT_KIND,
    SPB_F_EVENT_RECORDED,
    SPB_F_EVENT_PRIORITY,
    SPB_F_EVENT_CONSENT,
    SPB_F_EVENT_NOTE,
    SPB_F_EVENT_CANCELS,
    SPB_F_PRACTICE_ODS,
    SPB_F_PRACTICE_NAME,
    SPB_F_RECIPIENT_ODS,
    SPB_F_RECIPIENT_NAME,
    SPB_F_CLINICIAN_ID,
    SPB_F_CLINICIAN_SDS_USER_ID,
    SPB_F_CLINICIAN_SDS_ROLE_PROFILE_ID,
    SPB_F_CLINICIAN_PREFIX,
    SPB_F_CLINICIAN_GIVEN,
    SPB_F_CLINICIAN_FAMILY,
    SPB_F_CLINICIAN_ROLE_CODE,
    SPB_F_CLINICIAN_ROLE_SYSTEM,
    SPB_F_CLINICIAN_ROLE_DISPLAY,
    SPB_F_PATIENT_NHS_NUMBER,
    SPB_F_PATIENT_NHS_VERIFICATION,
    SPB_F_PATIENT_PREFIX,
    SPB_F_PATIENT_GIVEN,
    SPB_F_PATIENT_FAMILY,
    SPB_F_PATIENT_BIRTH_DATE,
    SPB_F_PATIENT_GENDER,
    SPB_F_PATIENT_ADDRESS_LINE,
    SPB_F_PATIENT_ADDRESS_CITY,
    SPB_F_PATIENT_ADDRESS_DISTRICT,
    SPB_F_PATIENT_ADDRESS_POSTCODE,
    SPB_F_PATIENT_PHONE,
    SPB_F_PATIENT_PHONE_USE,
    SPB_F_PATIENT_MOBILE,
    SPB_F_PATIENT_EMAIL,
    SPB_F_PATIENT_LANGUAGE,
    SPB_F_PATIENT_INTERPRETER,
    SPB_F_CODES, /* group selector: each node is one coded entry */
    SPB_F_CODES_CODE,
    SPB_F_CODES_SYSTEM,
    SPB_F_CODES_DISPLAY,
    SPB_F_NEEDS, /* group selector: each node is one need / reason */
    SPB_F_NEEDS_CODE,
    SPB_F_NEEDS_SYSTEM,
    SPB_F_NEEDS_DISPLAY,
    SPB_F__COUNT
} spb_field_id;

typedef enum {
    SPB_FT_SCALAR = 0, /* first value found */
    SPB_FT_LIST,       /* every value found, in document order */
    SPB_FT_GROUP,      /* selects nodes; its members are evaluated against each */
    SPB_FT_MEMBER,     /* a scalar evaluated per node of its group */
} spb_field_type;

/* What a value must look like after transforms; checked before FHIR is built. */
typedef enum {
    SPB_FV_TEXT = 0,
    SPB_FV_DATETIME, /* FHIR dateTime */
    SPB_FV_DATE,     /* FHIR date */
    SPB_FV_BOOLEAN,  /* "true" or "false" */
    SPB_FV_CODE,     /* a token without spaces */
    SPB_FV_URI,      /* an absolute URI */
} spb_field_value;

typedef struct spb_field_def {
    const char *name;
    spb_field_type type;
    spb_field_value value;
    spb_field_id group; /* for members: their group; else SPB_F__COUNT */
    int sensitive;      /* identifies the patient or is free text: never logged */
    const char *doc;
} spb_field_def;

/* The table of canonical fields, indexed by spb_field_id. */
extern const spb_field_def spb_fields[SPB_F__COUNT];

/* Looks a field up by name; returns its id or -1. */
int spb_field_lookup(const char *name);

typedef struct spb_coding {
    char *system; /* URI after the dialect's code-system map */
    char *code;
    char *display;
} spb_coding;

typedef struct spb_values {
    char **v;
    size_t n;
} spb_values;

typedef struct spb_event {
    spb_values f[SPB_F__COUNT]; /* scalar and list fields (groups and members unused) */
    spb_coding *codes;
    size_t ncodes;
    spb_coding *needs;
    size_t nneeds;
    int source_line;       /* line of the event's node in the input, for messages */
    char source_path[256]; /* XPath-like location of the event node */
} spb_event;

/* Returns the first value of a field or NULL. Borrowed. */
const char *spb_event_get(const spb_event *ev, spb_field_id id);

/* Appends a copy of `value` to a field; returns 0 or SPB_ENOMEM. */
int spb_event_add(spb_event *ev, spb_field_id id, const char *value);

/* Appends a coding (copies) to codes or needs; returns 0 or SPB_ENOMEM. */
int spb_event_add_coding(spb_event *ev, spb_field_id group, const char *system, const char *code,
                         const char *display);

/* Frees the contents of an event (not the struct). NULL-safe. */
void spb_event_clear(spb_event *ev);

#endif
