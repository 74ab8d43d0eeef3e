/*
 * Translation pipeline. The dialect profile only locates values; the meaning of an event
 * comes from the ConceptMaps, and every rule about what makes an acceptable referral
 * (valid NHS number, practice ODS, a known code, consent) is enforced here, once, for all
 * dialects. Each rejection says which field, where in the document, and how to fix it.
 */
#include "spbridge/translate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/ident.h"
#include "spbridge/log.h"
#include "spbridge/validator.h"

#define MAX_CODINGS 32

typedef struct run {
    const spb_translate_opts *opts;
    const spb_profile *profile;
    const char *name;
    spb_translation *out;
} run;

static int in_set(const char *v, const char *const *set)
{
    for (; *set; set++) {
        if (strcmp(v, *set) == 0)
            return 1;
    }
    return 0;
}

static int fail(spb_err *err, const spb_event *ev, const char *docname, int code, spb_issue issue,
                const char *field, const char *fix, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));

static int fail(spb_err *err, const spb_event *ev, const char *docname, int code, spb_issue issue,
                const char *field, const char *fix, const char *fmt, ...)
{
    char msg[SPB_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    spb_err_set(err, code, issue, "%s", msg);
    if (fix != NULL)
        spb_err_hint(err, "%s", fix);
    spb_err_where(err, docname, ev->source_line, 0, ev->source_path[0] ? ev->source_path : field);
    return code;
}

/* The first code of the event that the triggers map knows. */
static int find_trigger(const spb_cmap_set *cm, const spb_event *ev, spb_cmap_match *m,
                        size_t *which)
{
    for (size_t i = 0; i < ev->ncodes; i++) {
        if (spb_cmap_translate(cm, SPB_ROLE_TRIGGERS, ev->codes[i].system, ev->codes[i].code, m)) {
            *which = i;
            return 1;
        }
    }
    return 0;
}

static int filter(void *user, const spb_event *ev, spb_err *err)
{
    run *r = user;
    spb_cmap_match m;
    size_t which;
    (void)err;
    r->out->candidates++;
    if (spb_event_get(ev, SPB_F_EVENT_KIND) != NULL)
        return 1; /* the source says it is an event: it must then be fully valid */
    return find_trigger(spb_mapping_set_cmaps(r->opts->maps), ev, &m, &which);
}

static int default_route(spb_route *out)
{
    memset(out, 0, sizeof(*out));
    snprintf(out->service_id, sizeof(out->service_id), "default");
    snprintf(out->name, sizeof(out->name), "Social prescribing service");
    return 0;
}

static int add_coding(spb_coding *list, size_t *n, const char *system, const char *code,
                      const char *display)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(list[i].system, system) == 0 && strcmp(list[i].code, code) == 0)
            return 0;
    }
    if (*n >= MAX_CODINGS)
        return 0;
    list[*n].system = (char *)system;
    list[*n].code = (char *)code;
    list[*n].display = (char *)display;
    (*n)++;
    return 0;
}

static const char *normalise_verification(const char *v)
{
    static const struct {
        const char *text;
        const char *code;
    } retired[] = {
        {"number-present-and-verified", "01"},
        {"number-present-but-not-traced", "02"},
        {"trace-required", "03"},
        {"trace-attempted-no-match-or-multiple-match-found", "04"},
        {"trace-needs-to-be-resolved", "05"},
        {"trace-in-progress", "06"},
        {"number-not-present-and-trace-not-required", "07"},
        {"trace-postponed", "08"},
    };
    if (strlen(v) == 2 && v[0] == '0' && v[1] >= '1' && v[1] <= '8')
        return v;
    for (size_t i = 0; i < sizeof(retired) / sizeof(retired[0]); i++) {
        if (strcmp(v, retired[i].text) == 0)
            return retired[i].code;
    }
    return NULL;
}

static int to_uuid(char out[SPB_UUID_LEN + 1], const char *id, const char *ods)
{
    char name[600];
    if (spb_uuid_is_valid(id)) {
        spb_uuid_lower(out, id);
        return 0;
    }
    /* Not a UUID: derive a stable one, scoped to the practice that issued the id. */
    snprintf(name, sizeof(name), "event|%s|%s", ods, id);
    return spb_uuid_v5(out, name);
}

/*
 * The ODS code of the organisation the source addresses the referral to, checked and upper
 * case, or NULL. The recipient is not needed to send a referral (the practice's service
 * takes it), so a malformed code is left out with a warning rather than refusing it.
 */
static const char *recipient_of(const spb_event *ev, const char *doc, char *buf, size_t size)
{
    const char *v = spb_event_get(ev, SPB_F_RECIPIENT_ODS);
    spb_err rerr;
    char line[16];

    if (v == NULL)
        return NULL;
    spb_err_clear(&rerr);
    if (spb_ods_check(buf, size, v, &rerr) == 0)
        return buf;
    snprintf(line, sizeof(line), "%d", ev->source_line);
    spb_log(SPB_LOG_WARN, "recipient_left_out", "file", doc, "line", line, "field", "recipient.ods",
            "reason", rerr.message, (const char *)NULL);
    return NULL;
}

/* One event on its way through the steps of `sink`: what each step found. */
typedef struct work {
    const run *r;
    const spb_cmap_set *cm;
    const char *doc;
    spb_event *ev;
    spb_translated item;
    spb_referral ref;
    spb_cmap_match trig;
    size_t trig_index;
    spb_coding request_codes[MAX_CODINGS];
    spb_coding reasons[MAX_CODINGS];
    spb_cmap_match reason_matches[MAX_CODINGS];
    size_t nrequest, nreasons;
    spb_route route;
    char recipient_buf[16];
    const char *recipient_ods;
} work;

/* 1. What kind of event: the trigger ConceptMap, or the source's explicit kind. */
static int classify(work *w, spb_err *err)
{
    const spb_event *ev = w->ev;
    const char *explicit_kind = spb_event_get(ev, SPB_F_EVENT_KIND);
    int mapped_kind, kind;

    if (!find_trigger(w->cm, ev, &w->trig, &w->trig_index)) {
        char fix[SPB_ERR_HINT_MAX];
        snprintf(fix, sizeof(fix), "add the code to the triggers ConceptMap (%s), then replay",
                 spb_cmap_files(w->cm, SPB_ROLE_TRIGGERS));
        if (ev->ncodes == 0)
            return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_REQUIRED, "codes",
                        "send the event's code (system and code)", "the %s event has no code",
                        explicit_kind);
        return fail(err, ev, w->doc, SPB_EUNMAPPED, SPB_ISSUE_CODE_INVALID, "codes", fix,
                    "code %s (system %s) has no mapping in the triggers ConceptMap",
                    ev->codes[0].code, ev->codes[0].system);
    }
    mapped_kind = spb_event_kind_parse(w->trig.target_code);
    if (mapped_kind < 0)
        return fail(err, ev, w->doc, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "codes",
                    "trigger targets must be referral, cancellation, declined or signposting",
                    "the triggers ConceptMap maps %s to '%s', which is not an event kind",
                    ev->codes[w->trig_index].code, w->trig.target_code);
    kind = mapped_kind;
    if (explicit_kind != NULL) {
        int ek = spb_event_kind_parse(explicit_kind);
        if (ek < 0)
            return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_VALUE, "event.kind",
                        "use referral, cancellation, declined or signposting",
                        "event kind '%.40s' is not known", explicit_kind);
        /* A cancellation withdraws a referral and carries the referral's code. */
        if (ek != mapped_kind && ek != SPB_KIND_CANCELLATION)
            return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_INVARIANT, "event.kind",
                        "make the event kind and its code agree",
                        "the event says it is a %s but its code %s means %s", explicit_kind,
                        ev->codes[w->trig_index].code, w->trig.target_code);
        kind = ek;
    }
    w->item.kind = (spb_event_kind)kind;
    w->ref.kind = w->item.kind;
    snprintf(w->item.trigger_system, sizeof(w->item.trigger_system), "%s",
             ev->codes[w->trig_index].system);
    snprintf(w->item.trigger_code, sizeof(w->item.trigger_code), "%s",
             ev->codes[w->trig_index].code);
    return 0;
}

/* 2. Who and what: the practice, the patient, the event's and the referral's ids. */
static int identify(work *w, spb_err *err)
{
    const spb_event *ev = w->ev;
    spb_translated *item = &w->item;
    const char *v;
    int rc;

    rc = spb_ods_check(item->practice_ods, sizeof(item->practice_ods),
                       spb_event_get(ev, SPB_F_PRACTICE_ODS), err);
    if (rc < 0) {
        spb_err_where(err, w->doc, ev->source_line, 0, ev->source_path);
        if (err->hint[0] == '\0' || spb_event_get(ev, SPB_F_PRACTICE_ODS) == NULL)
            spb_err_hint(err, "the document must say which practice sent it (its ODS code; "
                              "GP2GP: the extract's author, EhrExtract/author/AgentOrgSDS, or "
                              "the requesting clinician's representedOrganization); check the "
                              "dialect's practice.ods expression");
        return rc;
    }
    rc = spb_nhs_number_check(item->nhs_number, spb_event_get(ev, SPB_F_PATIENT_NHS_NUMBER), err);
    if (rc < 0) {
        spb_err_where(err, w->doc, ev->source_line, 0, ev->source_path);
        if (spb_event_get(ev, SPB_F_PATIENT_NHS_NUMBER) == NULL)
            spb_err_hint(err, "the document must identify the patient by NHS number "
                              "(GP2GP: recordTarget/patient/id/@extension)");
        return rc;
    }
    v = spb_event_get(ev, SPB_F_EVENT_ID);
    if (v == NULL)
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_REQUIRED, "event.id",
                    "every event needs its source id (GP2GP: the statement's id/@root)",
                    "the event has no id");
    if (strlen(v) > 200)
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_VALUE, "event.id",
                    "use an id of at most 200 characters", "the event id is too long");
    if (to_uuid(item->event_uuid, v, item->practice_ods) < 0)
        return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot derive an identifier");
    snprintf(item->source_uuid, sizeof(item->source_uuid), "%s", item->event_uuid);
    v = spb_event_get(ev, SPB_F_PATIENT_BIRTH_DATE);
    snprintf(item->birth_date, sizeof(item->birth_date), "%s", v != NULL ? v : "");
    if (item->kind == SPB_KIND_CANCELLATION) {
        const char *cancels = spb_event_get(ev, SPB_F_EVENT_CANCELS);
        if (cancels == NULL)
            return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_REQUIRED, "event.cancels",
                        "send the id of the referral being withdrawn",
                        "a cancellation must say which referral it cancels");
        if (to_uuid(item->source_uuid, cancels, item->practice_ods) < 0)
            return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot derive an identifier");
    }
    return 0;
}

/* 3. The values FHIR constrains: codes from fixed sets, and the consent to share. */
static int check_values(work *w, spb_err *err)
{
    static const char *const genders[] = {"male", "female", "other", "unknown", NULL};
    static const char *const priorities[] = {"routine", "urgent", "asap", "stat", NULL};
    static const char *const phone_uses[] = {"home", "work", "mobile", "temp", "old", NULL};
    const spb_event *ev = w->ev;
    const char *v;

    if (spb_event_get(ev, SPB_F_EVENT_RECORDED) == NULL)
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_REQUIRED, "event.recorded",
                    "send when the entry was recorded (GP2GP: availabilityTime/@value)",
                    "the event has no recorded time");
    v = spb_event_get(ev, SPB_F_PATIENT_GENDER);
    if (v != NULL && !in_set(v, genders))
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_VALUE, "patient.gender",
                    "use male, female, other or unknown, or map the source's codes in the "
                    "dialect profile",
                    "patient gender '%.20s' is not a FHIR administrative gender", v);
    v = spb_event_get(ev, SPB_F_EVENT_PRIORITY);
    if (v != NULL && !in_set(v, priorities))
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_VALUE, "event.priority",
                    "use routine, urgent, asap or stat, or map the source's priority codes",
                    "priority '%.40s' is not a FHIR request priority", v);
    v = spb_event_get(ev, SPB_F_PATIENT_PHONE_USE);
    if (v != NULL && !in_set(v, phone_uses))
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_VALUE, "patient.phone_use",
                    "use home, work, mobile, temp or old, or map the source's telecom use "
                    "codes in the dialect profile",
                    "telephone use '%.20s' is not a FHIR contact point use", v);
    v = spb_event_get(ev, SPB_F_PATIENT_NHS_VERIFICATION);
    if (v != NULL) {
        w->ref.nhs_verification = normalise_verification(v);
        if (w->ref.nhs_verification == NULL)
            return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_VALUE, "patient.nhs_verification",
                        "use 01 to 08 (UKCore-NHSNumberVerificationStatusEngland)",
                        "NHS number verification status '%.40s' is not known", v);
    }
    v = spb_event_get(ev, SPB_F_EVENT_CONSENT);
    if (v != NULL && strcmp(v, "false") == 0 && w->item.kind == SPB_KIND_REFERRAL)
        return fail(err, ev, w->doc, SPB_EINVALID, SPB_ISSUE_INVARIANT, "event.consent",
                    "record the patient's consent to share before referring, or record the "
                    "event as declined",
                    "the patient has not consented to share their details with the service, "
                    "so the referral cannot be sent");
    return 0;
}

/* 4. Codes: the trigger concept first (SNOMED via the map's product for legacy codes),
 *    then the needs through the needs ConceptMap. */
static int collect_codes(work *w, spb_err *err)
{
    const spb_event *ev = w->ev;
    const spb_coding *trigger = &ev->codes[w->trig_index];

    if (w->trig.product_code != NULL && w->trig.product_system != NULL)
        add_coding(w->request_codes, &w->nrequest, w->trig.product_system, w->trig.product_code,
                   w->trig.product_display);
    add_coding(w->request_codes, &w->nrequest, trigger->system, trigger->code, trigger->display);
    for (size_t i = 0; i < ev->ncodes; i++)
        add_coding(w->request_codes, &w->nrequest, ev->codes[i].system, ev->codes[i].code,
                   ev->codes[i].display);
    for (size_t i = 0; i < ev->nneeds && w->nreasons < MAX_CODINGS; i++) {
        spb_cmap_match *m = &w->reason_matches[w->nreasons];
        if (!spb_cmap_translate(w->cm, SPB_ROLE_NEEDS, ev->needs[i].system, ev->needs[i].code, m)) {
            char fix[SPB_ERR_HINT_MAX];
            snprintf(fix, sizeof(fix), "add the code to the needs ConceptMap (%s), then replay",
                     spb_cmap_files(w->cm, SPB_ROLE_NEEDS));
            return fail(err, ev, w->doc, SPB_EUNMAPPED, SPB_ISSUE_CODE_INVALID, "needs", fix,
                        "need code %s (system %s) has no mapping in the needs ConceptMap",
                        ev->needs[i].code, ev->needs[i].system);
        }
        add_coding(w->reasons, &w->nreasons, m->target_system, m->target_code,
                   m->target_display ? m->target_display : ev->needs[i].display);
    }
    return 0;
}

/* 5. Where it goes and who carries it out. Only referrals and cancellations are routed
 *    (report records stay). The recipient the source names is the performer; else the
 *    routed service. A practice that names itself (GP systems often do) names no one else:
 *    its service takes the referral, which is the practice itself only when it is
 *    configured as a service. */
static int choose_performer(work *w, spb_err *err)
{
    const spb_route *route = &w->route;
    const char *recipient_name = spb_event_get(w->ev, SPB_F_RECIPIENT_NAME);
    int rc;

    w->recipient_ods = recipient_of(w->ev, w->doc, w->recipient_buf, sizeof(w->recipient_buf));
    if (w->r->opts->route != NULL &&
        (w->item.kind == SPB_KIND_REFERRAL || w->item.kind == SPB_KIND_CANCELLATION))
        rc = w->r->opts->route(w->r->opts->route_user, w->item.practice_ods, w->recipient_ods,
                               &w->route, err);
    else
        rc = default_route(&w->route);
    if (rc < 0) {
        spb_err_where(err, w->doc, w->ev->source_line, 0, NULL);
        return rc;
    }
    snprintf(w->item.service_id, sizeof(w->item.service_id), "%s", route->service_id);
    if (w->recipient_ods != NULL && strcmp(w->recipient_ods, w->item.practice_ods) == 0) {
        w->ref.performer_name = route->name[0] ? route->name : NULL;
        w->ref.performer_ods = route->ods[0] ? route->ods : NULL;
    } else if (w->recipient_ods != NULL || recipient_name != NULL) {
        w->ref.performer_name = recipient_name;
        w->ref.performer_ods = w->recipient_ods;
        if (recipient_name == NULL && strcmp(w->recipient_ods, route->ods) == 0 && route->name[0])
            w->ref.performer_name = route->name;
    } else {
        w->ref.performer_name = route->name[0] ? route->name : NULL;
        w->ref.performer_ods = route->ods[0] ? route->ods : NULL;
    }
    return 0;
}

/* 6. The FHIR, checked: nothing is queued that spbridge's own profiles reject
 *    (docs/conformance.md); the first problem becomes the error, err->path its FHIRPath. */
static int build(work *w, spb_err *err)
{
    spb_referral *ref = &w->ref;
    const spb_validator *validator = NULL;
    int rc;

    ref->ev = w->ev;
    ref->source_uuid = w->item.source_uuid;
    ref->nhs_number = w->item.nhs_number;
    ref->practice_ods = w->item.practice_ods;
    ref->priority = spb_event_get(w->ev, SPB_F_EVENT_PRIORITY);
    ref->request_codes = w->request_codes;
    ref->nrequest_codes = w->nrequest;
    ref->reasons = w->reasons;
    ref->nreasons = w->nreasons;
    if (w->item.kind == SPB_KIND_REFERRAL)
        w->item.resource = spb_fhir_referral_bundle(ref, err);
    else if (w->item.kind == SPB_KIND_CANCELLATION)
        w->item.resource = spb_fhir_cancellation_bundle(ref, err);
    else
        w->item.resource = spb_fhir_report_record(ref, err);
    if (w->item.resource == NULL)
        return err->code ? err->code : SPB_ERR;
    rc = spb_validator_shared(&validator, err);
    if (rc == 0)
        rc = spb_validate(validator, w->item.resource, NULL, err);
    if (rc < 0) {
        json_decref(w->item.resource);
        w->item.resource = NULL;
        if (rc == SPB_EINVALID)
            spb_err_hint(err, "the FHIR built from this event does not conform to "
                              "spbridge's profiles; check the event's values or the mapping");
        spb_err_where(err, w->doc, w->ev->source_line, 0, NULL);
    }
    return rc;
}

/* 7. Keeps the result, once: the same statement twice in one document (nested copies)
 *    yields one. Takes the resource on every path. */
static int keep(run *r, spb_translated *item, spb_err *err)
{
    spb_translated *grown;

    for (size_t i = 0; i < r->out->n; i++) {
        if (strcmp(r->out->items[i].event_uuid, item->event_uuid) != 0)
            continue;
        if (!json_equal(r->out->items[i].resource, item->resource)) {
            char line[16];
            snprintf(line, sizeof(line), "%d", item->source_line);
            spb_log(SPB_LOG_WARN, "duplicate_event", "file", r->name, "line", line, "event_id",
                    item->event_uuid, "reason",
                    "a second entry with the same id differs from the first; the first is kept",
                    (const char *)NULL);
        }
        json_decref(item->resource);
        return 0;
    }
    grown = realloc(r->out->items, (r->out->n + 1) * sizeof(*grown));
    if (grown == NULL) {
        json_decref(item->resource);
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    }
    r->out->items = grown;
    r->out->items[r->out->n++] = *item;
    return 0;
}

/* Every rule about what makes an acceptable event, in order; the first that fails is the
 * document's error. */
static int sink(void *user, spb_event *ev, spb_err *err)
{
    run *r = user;
    work *w = calloc(1, sizeof(*w));
    int rc;

    if (w == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    w->r = r;
    w->cm = spb_mapping_set_cmaps(r->opts->maps);
    w->doc = r->name;
    w->ev = ev;
    w->item.source_line = ev->source_line;
    rc = classify(w, err);
    if (rc == 0)
        rc = identify(w, err);
    if (rc == 0)
        rc = check_values(w, err);
    if (rc == 0)
        rc = collect_codes(w, err);
    if (rc == 0)
        rc = choose_performer(w, err);
    if (rc == 0)
        rc = build(w, err);
    if (rc == 0)
        rc = keep(r, &w->item, err);
    free(w);
    return rc;
}

/* The extractor's callbacks share one user pointer (the run); hand the caller's trace
 * its own. */
static void trace_thunk(void *user, const char *field, const char *xpath, int xpath_line,
                        const char *raw, const char *value)
{
    run *r = user;
    r->opts->trace(r->opts->trace_user, field, xpath, xpath_line, raw, value);
}

static int choose_dialect(const spb_translate_opts *opts, xmlDocPtr doc, const char *name,
                          const spb_profile **out, spb_err *err)
{
    xmlNodePtr root = xmlDocGetRootElement(doc);
    const char *root_name = root ? (const char *)root->name : "(none)";
    const char *root_ns = root && root->ns ? (const char *)root->ns->href : "";
    char known[512] = "";
    size_t n = spb_mapping_set_dialect_count(opts->maps);

    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(known);
        snprintf(known + used, sizeof(known) - used, "%s%s", i ? ", " : "",
                 spb_profile_name(spb_mapping_set_dialect_at(opts->maps, i)));
    }
    if (opts->dialect != NULL) {
        const spb_profile *p = spb_mapping_set_dialect(opts->maps, opts->dialect);
        if (p == NULL) {
            spb_err_set(err, SPB_EINVALID, SPB_ISSUE_NOT_SUPPORTED, "unknown dialect '%.60s'",
                        opts->dialect);
            spb_err_hint(err, "use one of: %s; or add a profile to the mapping set", known);
            spb_err_where(err, name, 0, 0, NULL);
            return SPB_EINVALID;
        }
        if (!spb_profile_accepts(p, doc)) {
            spb_err_set(err, SPB_EINVALID, SPB_ISSUE_NOT_SUPPORTED,
                        "the root element {%.100s}%.60s is not a %s document", root_ns, root_name,
                        spb_profile_name(p));
            spb_err_hint(err,
                         "send the dialect's document type, or choose the right dialect "
                         "(known: %s)",
                         known);
            spb_err_where(err, name, root ? (int)xmlGetLineNo(root) : 0, 0, NULL);
            return SPB_EINVALID;
        }
        *out = p;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const spb_profile *p = spb_mapping_set_dialect_at(opts->maps, i);
        if (spb_profile_accepts(p, doc)) {
            *out = p;
            return 0;
        }
    }
    spb_err_set(err, SPB_EINVALID, SPB_ISSUE_NOT_SUPPORTED,
                "no dialect accepts a document whose root element is {%.100s}%.60s", root_ns,
                root_name);
    spb_err_hint(err,
                 "name the dialect explicitly (known: %s) or write a dialect profile for "
                 "this format (docs/dialect-profiles.md)",
                 known);
    spb_err_where(err, name, root ? (int)xmlGetLineNo(root) : 0, 0, NULL);
    return SPB_EINVALID;
}

int spb_translate(spb_translation *out, const char *data, size_t len, const char *name,
                  const spb_translate_opts *opts, spb_err *err)
{
    xmlDocPtr doc = NULL;
    const spb_profile *profile = NULL;
    spb_extract_ops ops;
    run r;
    int rc;

    memset(out, 0, sizeof(*out));
    snprintf(out->mapping_version, sizeof(out->mapping_version), "%s",
             spb_mapping_set_version(opts->maps));
    rc = spb_xml_parse(&doc, data, len, name, &opts->limits, err);
    if (rc < 0)
        goto out;
    rc = choose_dialect(opts, doc, name, &profile, err);
    if (rc < 0)
        goto out;
    snprintf(out->dialect, sizeof(out->dialect), "%s", spb_profile_name(profile));
    {
        char xsd[1024];
        xmlNodePtr root = xmlDocGetRootElement(doc);
        const char *path = spb_profile_schema_for(profile, (const char *)root->name,
                                                  opts->schema_dir, xsd, sizeof(xsd));
        if (path != NULL) {
            rc = spb_xml_validate_schema(doc, path, err);
            if (rc < 0) {
                spb_err_where(err, name, 0, 0, NULL);
                goto out;
            }
        }
    }
    r.opts = opts;
    r.profile = profile;
    r.name = name;
    r.out = out;
    ops.filter = filter;
    ops.sink = sink;
    ops.trace = opts->trace != NULL ? trace_thunk : NULL;
    ops.user = &r;
    rc = spb_profile_extract(profile, doc, name, &ops, err);
out:
    if (rc < 0) {
        spb_translation_clear(out);
        if (err->file[0] == '\0')
            spb_err_where(err, name, 0, 0, NULL);
    }
    xmlFreeDoc(doc);
    return rc;
}

void spb_translation_clear(spb_translation *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        json_decref(t->items[i].resource);
    free(t->items);
    t->items = NULL;
    t->n = 0;
}
