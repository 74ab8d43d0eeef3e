/*
 * The built-in FHIR R4 validator: checks a resource, or a Bundle and every entry in it,
 * against the definitions shipped in conformance/ (docs/conformance.md).
 *
 * Everything it knows about elements comes from JSON loaded at start: HL7's R4 base
 * definitions of every resource type and datatype (conformance/profiles/
 * r4-base-definitions.json), spbridge's own profiles (conformance/profiles/spbridge-NAME.json:
 * StructureDefinitions read from their differential) and the value sets required bindings
 * name (conformance/valuesets). What stays in C: the lexical forms of the primitive types,
 * the JSON shape rules, ext-1, the Bundle invariants (bdl-1..5, bdl-7, bdl-8), reference
 * resolution, and the profile invariants named by key (spb-nhs-1, spb-ods-1, spb-uuid-1,
 * spb-task-1). A profile that asks for a rule the C does not implement is refused at load,
 * never silently ignored.
 *
 * A loaded validator is read-only and may be shared by threads.
 */
#ifndef SPB_VALIDATOR_H
#define SPB_VALIDATOR_H

#include <jansson.h>
#include <stddef.h>

#include "spbridge/error.h"

typedef struct spb_validator spb_validator;

typedef enum {
    SPB_SEVERITY_FATAL = 0,
    SPB_SEVERITY_ERROR,
    SPB_SEVERITY_WARNING,
    SPB_SEVERITY_INFORMATION,
} spb_severity;

#define SPB_VALIDATION_MAX_ISSUES 32
#define SPB_VALIDATION_MSG_MAX    240

/* One problem: severity, FHIR issue type, a message that never quotes patient data, and
 * the FHIRPath of the element (e.g. "Bundle.entry[4].resource.intent", "Task.status"). */
typedef struct spb_validation_issue {
    spb_severity severity;
    spb_issue code; /* structure, required, value, code-invalid, invariant, not-supported */
    char message[SPB_VALIDATION_MSG_MAX];
    char expression[SPB_ERR_PATH_MAX];
} spb_validation_issue;

/* What one spb_validate call found. Fixed size: issues past the array are counted in
 * `dropped` (and in nerrors/nwarnings), never allocated. */
typedef struct spb_validation_report {
    size_t nissues; /* filled entries of issues[] */
    size_t nerrors; /* fatal and error issues found, stored or not */
    size_t nwarnings;
    size_t dropped;         /* issues found after issues[] was full */
    char resource_type[64]; /* of the validated resource, or "" */
    spb_validation_issue issues[SPB_VALIDATION_MAX_ISSUES];
} spb_validation_report;

/*
 * Loads the definitions under `dir`, a folder laid out like conformance/: every *.json in
 * dir/valuesets (ValueSets listing their codes), then every *.json in dir/profiles (base
 * StructureDefinitions with a snapshot, or Bundles of them; then profiles with a
 * differential). Returns 0 or SPB_ECONFIG with err naming the file and the rule.
 */
int spb_validator_load(spb_validator **out, const char *dir, spb_err *err);

/* NULL-safe. */
void spb_validator_free(spb_validator *v);

/*
 * The process-wide validator loaded once (thread-safe) from this build's conformance
 * folder (SPB_CONFORMANCE_DIR). Borrowed: never freed by the caller. Returns 0, or the
 * load failure (SPB_ECONFIG) on this and every later call.
 */
int spb_validator_shared(const spb_validator **out, spb_err *err);

/*
 * Makes the shared validator load from `dir` instead of the build's folder (an installed
 * copy, or a test's definitions) and loads it. Call before anything uses
 * spb_validator_shared; once it is loaded, this returns SPB_ERR and changes nothing.
 */
int spb_validator_shared_init(const char *dir, spb_err *err);

/* Number of profiles loaded and the canonical URL of the i-th (in load order). */
size_t spb_validator_profile_count(const spb_validator *v);
const char *spb_validator_profile_url(const spb_validator *v, size_t i);

/*
 * Validates `resource` (any resource type the definitions cover; a Bundle with its entries)
 * against base R4 and spbridge's profile for its type. `rep` may be NULL.
 * Returns 0 when there is no error (warnings allowed), SPB_EINVALID when there is one:
 * err then carries the first error (its issue type, message and err->path = the FHIRPath
 * expression). Other negative codes mean the validator itself failed.
 */
int spb_validate(const spb_validator *v, json_t *resource, spb_validation_report *rep,
                 spb_err *err);

/* As spb_validate, with flags: SPB_VALIDATE_BASE_ONLY checks base R4 alone (no spbridge
 * profile is applied), for FHIR that is not meant to be spbridge's. */
#define SPB_VALIDATE_BASE_ONLY 1u
int spb_validate_flags(const spb_validator *v, json_t *resource, unsigned flags,
                       spb_validation_report *rep, spb_err *err);

/*
 * OperationOutcome for a report: one issue per stored problem (severity, code,
 * details.text, expression), diagnostics prefixed with `source` when given ("file#3"), and
 * a final note when issues were dropped. A report without issues gives one information
 * issue saying the resource is valid. New reference.
 */
json_t *spb_validation_outcome(const spb_validation_report *rep, const char *source);

/* "fatal", "error", "warning", "information". */
const char *spb_severity_name(spb_severity s);

#endif
