/*
 * Intake pipeline shared by HTTPS and spool folders. Order matters:
 *  1. translate (all or nothing) under the runtime's read lock, so a reload never swaps
 *     the mapping set mid-document;
 *  2. refuse the whole document if any event belongs to another practice (403): a practice
 *     acts only for itself, and nothing of such a document is stored but the audit record;
 *  3. store everything in one transaction, then wake the delivery workers.
 * Refused documents (bad XML, unmapped code, ...) are parked with their error for replay.
 */
#include "spbridge/intake.h"

#include <stdio.h>
#include <string.h>

#include "spbridge/log.h"

int spb_http_status_for(const spb_err *err)
{
    switch (err->code) {
    case SPB_ETOOBIG:
        return 413;
    case SPB_EAUTH:
        return 403;
    case SPB_EUNMAPPED:
        return 422;
    case SPB_EINVALID:
        if (err->issue == SPB_ISSUE_STRUCTURE || err->issue == SPB_ISSUE_SECURITY)
            return 400;
        return 422;
    case SPB_ERETRY:
        return 503;
    default:
        return 500;
    }
}

static json_t *outcome_with_id(const spb_err *err, const char *parked_id)
{
    json_t *oo = spb_fhir_operation_outcome(err);
    /* the parked input's id, so the sender and support staff can find it for replay */
    if (parked_id != NULL && parked_id[0] != '\0')
        json_object_set_new(oo, "id", json_string(parked_id));
    return oo;
}

/*
 * A document whose content is refused (bad XML, unmapped code, ...) is kept for replay with
 * its reason, and the answer carries the parked input's id, but only when it really was
 * kept: an empty body has nothing to keep (its refusal is audited instead), and a failed
 * park gives no id that would lead nowhere.
 */
static void refuse_content(spb_runtime *rt, spb_store *store, const char *data, size_t len,
                           const spb_intake_meta *meta, const spb_err *err, spb_intake_outcome *out)
{
    spb_err perr;
    char parked[SPB_UUID_LEN + 1] = "";

    spb_err_clear(&perr);
    if (len == 0) {
        spb_store_audit(store, meta->identity, meta->identity_ods, NULL, "refused", "empty",
                        meta->channel, &perr);
    } else if (spb_store_park(store, meta, data, len, err, parked, &perr) < 0) {
        spb_log_err("park_failed", &perr);
        parked[0] = '\0';
    }
    spb_log(SPB_LOG_WARN, "intake_refused", "identity", meta->identity, "channel", meta->channel,
            "source", meta->source_name, "parked", parked, "code", spb_code_name(err->code),
            "error", err->message, "fix", err->hint, (const char *)NULL);
    atomic_fetch_add(&rt->metrics.refused, 1);
    out->http_status = spb_http_status_for(err);
    out->body = outcome_with_id(err, parked);
}

/*
 * An event that acts on an earlier referral (a cancellation) for another patient or another
 * practice, or one that names no referral spbridge holds, would change the wrong record on
 * the service's server: the whole document is refused (nothing stored, nothing sent),
 * parked for replay and audited. Returns 1 when it refused the document (out is filled).
 */
static int refuse_bad_links(spb_runtime *rt, spb_store *store, const spb_translation *tr,
                            const char *data, size_t len, const spb_intake_meta *meta,
                            spb_intake_outcome *out)
{
    spb_err err, perr;
    char parked[SPB_UUID_LEN + 1] = "";
    size_t bad = 0;
    int rc;

    spb_err_clear(&err);
    spb_err_clear(&perr);
    rc = spb_store_check_links(store, tr, &bad, &err);
    if (rc == 0)
        return 0;
    if (rc != SPB_EINVALID && rc != SPB_EAUTH) {
        spb_log_err("intake_store_failed", &err);
        spb_err_hint(&err, "nothing was stored; send the document again");
        out->http_status = rc == SPB_ERETRY ? 503 : 500;
        out->body = spb_fhir_operation_outcome(&err);
        return 1;
    }
    spb_err_where(&err, meta->source_name, tr->items[bad].source_line, 0, NULL);
    if (spb_store_park(store, meta, data, len, &err, parked, &perr) < 0) {
        spb_log_err("park_failed", &perr);
        parked[0] = '\0';
    }
    spb_store_audit(store, meta->identity, tr->items[bad].practice_ods, tr->items[bad].source_uuid,
                    "refused", rc == SPB_EAUTH ? "forbidden" : "wrong_link", err.message, &perr);
    spb_log(SPB_LOG_WARN, "intake_refused", "identity", meta->identity, "channel", meta->channel,
            "source", meta->source_name, "parked", parked, "referral", tr->items[bad].source_uuid,
            "code", spb_code_name(err.code), "error", err.message, "fix", err.hint,
            (const char *)NULL);
    atomic_fetch_add(&rt->metrics.refused, 1);
    out->http_status = spb_http_status_for(&err);
    out->body = outcome_with_id(&err, parked);
    return 1;
}

void spb_intake_document(spb_runtime *rt, spb_store *store, const char *data, size_t len,
                         const spb_intake_meta *meta, const char *acting_ods, const char *dialect,
                         spb_intake_outcome *out)
{
    spb_translation tr;
    spb_translate_opts opts;
    spb_intake_item items[64];
    size_t nitems = 0;
    spb_err err;
    char parked[SPB_UUID_LEN + 1] = "";
    char trigger_maps[256];
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&tr, 0, sizeof(tr));
    memset(&opts, 0, sizeof(opts));
    spb_err_clear(&err);

    pthread_rwlock_rdlock(&rt->lock);
    opts.maps = rt->maps;
    opts.dialect = dialect;
    if (opts.dialect == NULL && acting_ods != NULL)
        opts.dialect = spb_config_practice_dialect(rt->cfg, acting_ods);
    opts.schema_dir = rt->cfg->schema_dir[0] ? rt->cfg->schema_dir : NULL;
    opts.limits.max_bytes = (size_t)rt->cfg->xml_max_bytes;
    opts.limits.max_depth = (int)rt->cfg->xml_max_depth;
    opts.route = spb_config_route;
    opts.route_user = rt->cfg;
    rc = spb_translate(&tr, data, len, meta->source_name, &opts, &err);
    snprintf(trigger_maps, sizeof(trigger_maps), "%s",
             spb_cmap_files(spb_mapping_set_cmaps(rt->maps), SPB_ROLE_TRIGGERS));
    pthread_rwlock_unlock(&rt->lock);

    if (rc < 0) {
        refuse_content(rt, store, data, len, meta, &err, out);
        return;
    }
    /* One document is stored whole or not at all; a batch this large is refused rather
     * than cut short. */
    if (tr.n > sizeof(items) / sizeof(items[0])) {
        spb_err_set(&err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                    "the document holds %zu events; at most %zu are accepted in one document", tr.n,
                    sizeof(items) / sizeof(items[0]));
        spb_err_hint(&err, "send the events in smaller documents (one consultation each)");
        out->http_status = 413;
        out->body = spb_fhir_operation_outcome(&err);
        spb_translation_clear(&tr);
        return;
    }
    /* A practice acts only for itself. */
    for (size_t i = 0; acting_ods != NULL && i < tr.n; i++) {
        if (strcmp(tr.items[i].practice_ods, acting_ods) != 0) {
            char detail[160];
            spb_err aerr;
            spb_err_clear(&aerr);
            spb_err_set(&aerr, SPB_EAUTH, SPB_ISSUE_SECURITY,
                        "the document records an event for practice %s, but the sender may "
                        "act only for practice %s",
                        tr.items[i].practice_ods, acting_ods);
            spb_err_hint(&aerr, "send each practice's events with that practice's own "
                                "certificate");
            snprintf(detail, sizeof(detail), "event for %s from a sender for %s",
                     tr.items[i].practice_ods, acting_ods);
            spb_store_audit(store, meta->identity, acting_ods, tr.items[i].source_uuid, "refused",
                            "forbidden", detail, &err);
            spb_log(SPB_LOG_WARN, "intake_forbidden", "identity", meta->identity, "channel",
                    meta->channel, "practice", acting_ods, "event_practice",
                    tr.items[i].practice_ods, (const char *)NULL);
            atomic_fetch_add(&rt->metrics.refused, 1);
            out->http_status = 403;
            out->body = spb_fhir_operation_outcome(&aerr);
            spb_translation_clear(&tr);
            return;
        }
    }
    if (refuse_bad_links(rt, store, &tr, data, len, meta, out)) {
        spb_translation_clear(&tr);
        return;
    }
    rc = spb_store_intake(store, &tr, meta, items, sizeof(items) / sizeof(items[0]), &nitems, &err);
    if (rc < 0) {
        spb_log_err("intake_store_failed", &err);
        out->http_status = rc == SPB_ERETRY ? 503 : 500;
        spb_err_hint(&err, "nothing was stored; send the document again");
        out->body = spb_fhir_operation_outcome(&err);
        spb_translation_clear(&tr);
        return;
    }
    {
        json_t *events = json_array();
        int fresh = 0;
        for (size_t i = 0; i < nitems; i++) {
            int send = items[i].kind == SPB_KIND_REFERRAL || items[i].kind == SPB_KIND_CANCELLATION;
            char loc[64];
            snprintf(loc, sizeof(loc), "/events/%s", items[i].tracking_id);
            json_array_append_new(
                events, json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "trackingId",
                                  items[i].tracking_id, "kind", spb_event_kind_name(items[i].kind),
                                  "referral", items[i].referral, "state",
                                  items[i].duplicate ? "duplicate"
                                  : send             ? "queued"
                                                     : "recorded",
                                  "duplicate", items[i].duplicate, "location", loc));
            if (!items[i].duplicate) {
                fresh++;
                if (send)
                    out->queued++;
            }
            spb_log(SPB_LOG_INFO, items[i].duplicate ? "intake_duplicate" : "intake_accepted",
                    "identity", meta->identity, "channel", meta->channel, "tracking_id",
                    items[i].tracking_id, "referral", items[i].referral, "kind",
                    spb_event_kind_name(items[i].kind), "practice", tr.items[i].practice_ods,
                    "mappings", tr.mapping_version, (const char *)NULL);
        }
        if (nitems == 0) {
            /* Not an error (a whole GP record may hold no referral), but if it should have
             * been one, its code is missing from the triggers map: keep the document so it
             * can be replayed after the map is extended, rather than drop it. */
            spb_err nerr;
            spb_err_clear(&nerr);
            spb_err_set(&nerr, SPB_EUNMAPPED, SPB_ISSUE_CODE_INVALID,
                        "no entry in the document has a trigger code (%zu entries looked at)",
                        tr.candidates);
            spb_err_hint(&nerr,
                         "if one is a referral, add its code to the triggers ConceptMap "
                         "(%s), then replay this parked input",
                         trigger_maps);
            if (spb_store_park(store, meta, data, len, &nerr, parked, &err) < 0) {
                spb_log_err("park_failed", &err);
                parked[0] = '\0';
            }
            spb_log(SPB_LOG_INFO, "no_events", "identity", meta->identity, "channel", meta->channel,
                    "source", meta->source_name, "parked", parked, "reason", nerr.message,
                    (const char *)NULL);
        }
        atomic_fetch_add(&rt->metrics.accepted, fresh);
        out->http_status = fresh > 0 ? 202 : 200;
        out->body = json_pack("{s:i, s:o, s:s, s:s}", "accepted", fresh, "events", events,
                              "dialect", tr.dialect, "mappingVersion", tr.mapping_version);
        if (nitems == 0) {
            json_object_set_new(out->body, "detail",
                                json_string("no entry in the document has a trigger code; the "
                                            "document is kept as a parked input in case one "
                                            "should have been"));
            json_object_set_new(out->body, "parked", json_string(parked));
        }
    }
    spb_translation_clear(&tr);
    if (out->queued > 0)
        spb_runtime_wake(rt);
}
