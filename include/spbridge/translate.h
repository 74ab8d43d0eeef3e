/*
 * The translation pipeline: XML bytes -> dialect profile -> canonical events ->
 * ConceptMaps -> FHIR. One call translates one document, all or nothing: if any event in
 * it is bad, nothing is returned but the error, so a caller can never queue half a
 * document.
 */
#ifndef SPB_TRANSLATE_H
#define SPB_TRANSLATE_H

#include <jansson.h>

#include "spbridge/error.h"
#include "spbridge/fhir_build.h"
#include "spbridge/ident.h"
#include "spbridge/mapping_set.h"
#include "spbridge/xml_input.h"

/* The social prescribing service a practice's referrals go to. */
typedef struct spb_route {
    char service_id[64];
    char name[200];
    char ods[16]; /* may be empty */
} spb_route;

/* Chooses the service a referral goes to: the service whose ODS code is the referral's
 * recipient (`recipient_ods`, NULL when the source names none), else the practice's; 0, or
 * a negative spb_code with err set. */
typedef int (*spb_route_fn)(void *user, const char *practice_ods, const char *recipient_ods,
                            spb_route *out, spb_err *err);

typedef struct spb_translate_opts {
    const spb_mapping_set *maps;
    const char *dialect;    /* NULL: detect from the document */
    const char *schema_dir; /* GP2GP XSD folder, or NULL to skip that optional check */
    spb_xml_limits limits;
    spb_route_fn route; /* NULL: every practice goes to a default service */
    void *route_user;
    spb_trace_fn trace; /* for `mappings explain`; may be NULL */
    void *trace_user;
} spb_translate_opts;

typedef struct spb_translated {
    spb_event_kind kind;
    char source_uuid[SPB_UUID_LEN + 1]; /* the referral's identifier (for cancellations:
                                           the referral withdrawn) */
    char event_uuid[SPB_UUID_LEN + 1];  /* this event's own identifier */
    char practice_ods[16];
    char nhs_number[11];
    char birth_date[16]; /* FHIR date, "" when the source gives none */
    char service_id[64];
    int source_line;
    char trigger_system[128];
    char trigger_code[64];
    json_t *resource; /* owned: transaction Bundle, or Observation for report records */
} spb_translated;

typedef struct spb_translation {
    spb_translated *items;
    size_t n;
    size_t candidates; /* entries the dialect looked at */
    char dialect[64];
    char mapping_version[160];
} spb_translation;

/* Translates one document named `name`. Returns 0 (possibly with n == 0) or a negative
 * spb_code with err set; on failure `out` is left empty. */
int spb_translate(spb_translation *out, const char *data, size_t len, const char *name,
                  const spb_translate_opts *opts, spb_err *err);

/* Frees what a translation holds. NULL-safe. */
void spb_translation_clear(spb_translation *t);

#endif
