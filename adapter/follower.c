/*
 * Outcome follower (see follower.h). One thread, its own store handle and curl handle.
 *
 * Polling: for each service and each practice with delivered referrals there,
 *   GET {base}/Task?requester=Organization/{practice org id}&_lastUpdated=ge{cursor}
 *       &_sort=_lastUpdated&_count=50, following Bundle.link "next".
 * The cursor is the newest lastUpdated seen and is stored only after a page is processed,
 * so a restart repeats at most the last page; 'ge' rather than 'gt' means a version written
 * in the same instant as the cursor is never missed, and the (service, Task, version) key
 * makes seeing it again harmless. Notifications name Tasks; each is read and processed the
 * same way.
 *
 * For each new Task version: out-of-order versions (older lastUpdated than the newest
 * processed) are recorded and change nothing; transitions outside the state machine are
 * recorded and flagged but still followed (the service's record is the truth); the Task's
 * patient is read and must match the referral's NHS number (and birth date when both are
 * known), else the version is quarantined and nothing is written back.
 */
#include "spbridge/follower.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spbridge/conceptmap.h"
#include "spbridge/delivery.h"
#include "spbridge/json_exact.h"
#include "spbridge/log.h"
#include "spbridge/store.h"
#include "spbridge/writeback.h"

#define BODY_MAX           (8u * 1024u * 1024u)
#define MAX_TARGETS        512
#define MAX_PAGES          200
#define MAX_ENTRIES        32
#define TASK_STATUS_SYSTEM "http://hl7.org/fhir/task-status"

struct spb_follower {
    spb_runtime *rt;
    pthread_t thread;
    int started;
    atomic_int stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int woken;
};

/* ---------------------------------------------------------------- state machine */

int spb_task_status_terminal(const char *s)
{
    return s != NULL &&
           (strcmp(s, "completed") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "rejected") == 0 ||
            strcmp(s, "cancelled") == 0 || strcmp(s, "entered-in-error") == 0);
}

int spb_task_transition_ok(const char *from, const char *to)
{
    static const struct {
        const char *from;
        const char *to[8];
    } allowed[] = {
        {"draft", {"requested", "received", "ready", NULL}},
        {"requested", {"received", "accepted", "rejected", "cancelled", "ready", NULL}},
        {"received", {"accepted", "rejected", "cancelled", "ready", NULL}},
        {"ready",
         {"accepted", "in-progress", "cancelled", "rejected", "completed", "failed", NULL}},
        {"accepted", {"in-progress", "on-hold", "cancelled", "completed", "failed", "ready", NULL}},
        {"in-progress", {"on-hold", "cancelled", "completed", "failed", NULL}},
        {"on-hold", {"in-progress", "cancelled", "completed", "failed", NULL}},
    };
    if (from == NULL || to == NULL)
        return 0;
    if (strcmp(from, to) == 0 || strcmp(to, "entered-in-error") == 0)
        return 1;
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        if (strcmp(allowed[i].from, from) != 0)
            continue;
        for (int k = 0; allowed[i].to[k] != NULL; k++) {
            if (strcmp(allowed[i].to[k], to) == 0)
                return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- HTTP */

typedef struct body {
    char *data;
    size_t len;
    int over;
} body;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    body *b = user;
    size_t n = size * nmemb;
    char *grown;
    if (b->len + n > BODY_MAX) {
        b->over = 1;
        return 0;
    }
    grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* GET `url` as FHIR JSON (numbers kept exact). Returns the parsed body or NULL (error in
 * `msg`). */
static json_t *fhir_get(CURL *curl, const spb_tls_client *tls, const char *url, int exact,
                        long *status_out, char *msg, size_t msg_size)
{
    struct curl_slist *hdrs = NULL;
    body b = {NULL, 0, 0};
    long status = 0;
    CURLcode cc;
    json_t *doc = NULL;
    json_error_t jerr;

    curl_easy_reset(curl);
    hdrs = curl_slist_append(hdrs, "Accept: application/fhir+json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    spb_curl_apply_tls(curl, tls);
    cc = curl_easy_perform(curl);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK) {
        snprintf(msg, msg_size, "%s", curl_easy_strerror(cc));
    } else if (status != 200) {
        snprintf(msg, msg_size, "HTTP %ld", status);
    } else {
        doc = exact ? spb_json_loads_exact(b.data ? b.data : "", BODY_MAX, &jerr)
                    : json_loads(b.data ? b.data : "", 0, &jerr);
        if (doc == NULL)
            snprintf(msg, msg_size, "not JSON: %s", jerr.text);
    }
    free(b.data);
    if (status_out != NULL)
        *status_out = cc == CURLE_OK ? status : 0;
    return doc;
}

/* ---------------------------------------------------------------- processing */

typedef struct ctx {
    spb_follower *f;
    spb_store *store;
    CURL *curl;
    /* copied under the read lock for one pass */
    spb_tls_client tls;
    char base[512];
    char service_id[64];
    char service_name[200];
    char service_ods[16];
} ctx;

static const char *str_at(json_t *obj, const char *key)
{
    return spb_json_string(json_object_get(obj, key));
}

/* The referral uuid a Task carries (identifier urn:ietf:rfc:3986 = urn:uuid:...). */
static const char *task_referral(json_t *task)
{
    json_t *ids = json_object_get(task, "identifier");
    for (size_t i = 0; i < json_array_size(ids); i++) {
        json_t *id = json_array_get(ids, i);
        const char *sys = str_at(id, "system");
        const char *val = str_at(id, "value");
        if (sys && val && strcmp(sys, "urn:ietf:rfc:3986") == 0 &&
            strncmp(val, "urn:uuid:", 9) == 0)
            return val + 9;
    }
    return NULL;
}

/* Reads a referenced resource ("Type/id" relative to the service base); `status` gets the
 * HTTP status (0 when there was no answer). */
static json_t *read_ref_status(ctx *c, const char *ref, int exact, long *status, char *msg,
                               size_t msg_size)
{
    char url[1200];
    if (status != NULL)
        *status = 0;
    if (ref == NULL || strchr(ref, '/') == NULL || strstr(ref, "..") != NULL ||
        strchr(ref, '?') != NULL) {
        snprintf(msg, msg_size, "unusable reference");
        return NULL;
    }
    snprintf(url, sizeof(url), "%s/%s", c->base, ref);
    return fhir_get(c->curl, &c->tls, url, exact, status, msg, msg_size);
}

static json_t *read_ref(ctx *c, const char *ref, char *msg, size_t msg_size)
{
    return read_ref_status(c, ref, 1, NULL, msg, msg_size);
}

/* Does the Task's patient match the referral (NHS number, and birth date when both are
 * known)? Returns 1 yes, 0 no (reason in msg), -1 when it could not be checked. */
static int right_patient(ctx *c, json_t *task, const spb_referral_row *ref, char *msg,
                         size_t msg_size)
{
    const char *pref = str_at(json_object_get(task, "for"), "reference");
    json_t *patient;
    json_t *ids;
    const char *nhs = NULL, *birth;
    int ok = 0;

    if (pref == NULL) {
        snprintf(msg, msg_size, "the Task names no patient (Task.for)");
        return 0;
    }
    patient = read_ref(c, pref, msg, msg_size);
    if (patient == NULL)
        return -1;
    ids = json_object_get(patient, "identifier");
    for (size_t i = 0; i < json_array_size(ids); i++) {
        const char *sys = str_at(json_array_get(ids, i), "system");
        if (sys && strcmp(sys, "https://fhir.nhs.uk/Id/nhs-number") == 0)
            nhs = str_at(json_array_get(ids, i), "value");
    }
    birth = str_at(patient, "birthDate");
    if (nhs == NULL || strcmp(nhs, ref->nhs_number) != 0)
        snprintf(msg, msg_size, "%s",
                 nhs ? "the Task's patient has a different NHS number than the referral"
                     : "the Task's patient has no NHS number");
    else if (birth != NULL && ref->birth_date[0] != '\0' && strcmp(birth, ref->birth_date) != 0)
        snprintf(msg, msg_size, "the Task's patient has a different birth date than the referral");
    else
        ok = 1;
    json_decref(patient);
    return ok;
}

/* Maps one coding through the outcomes ConceptMap; NULL target when unmapped or marked
 * "do not write back". */
static int map_outcome(const spb_cmap_set *cm, const char *system, const char *code,
                       spb_cmap_match *m)
{
    if (system == NULL || code == NULL)
        return 0;
    return spb_cmap_translate(cm, SPB_ROLE_OUTCOMES, system, code, m);
}

typedef struct entries {
    spb_wb_entry e[MAX_ENTRIES];
    size_t n;
    char keys[MAX_ENTRIES][300]; /* output keys written by this version */
    const char *key_ptrs[MAX_ENTRIES];
    int nkeys;
    json_t *keep[MAX_ENTRIES]; /* documents whose strings the entries borrow */
    size_t nkeep;
} entries;

static void entries_clear(entries *es)
{
    for (size_t i = 0; i < es->nkeep; i++)
        json_decref(es->keep[i]);
    memset(es, 0, sizeof(*es));
}

/* A new write-back entry for a mapped code, or NULL when the list is full. */
static spb_wb_entry *new_entry(entries *es, const spb_cmap_match *m, const char *display,
                               const char *source)
{
    spb_wb_entry *e;
    if (es->n >= MAX_ENTRIES)
        return NULL;
    e = &es->e[es->n++];
    memset(e, 0, sizeof(*e));
    e->system = m->target_system;
    e->code = m->target_code;
    e->display = m->target_display ? m->target_display : display;
    e->source = source;
    return e;
}

/* Adds the Observation (or CodeableConcept) outputs of the Task that map to GP codes. */
/* An output is written back once per referral: its key is the reference (or code) and the
 * value, so a corrected value is written again but an unchanged one never is. */
static int output_new(ctx *c, const char *referral, entries *es, const char *a, const char *b)
{
    char key[300];
    spb_err err;
    snprintf(key, sizeof(key), "%s|%s", a ? a : "", b ? b : "");
    spb_err_clear(&err);
    if (spb_store_output_written(c->store, referral, key, &err) != 0)
        return 0;
    if (es->nkeys < MAX_ENTRIES) {
        snprintf(es->keys[es->nkeys], sizeof(es->keys[0]), "%s", key);
        es->key_ptrs[es->nkeys] = es->keys[es->nkeys];
        es->nkeys++;
    }
    return 1;
}

static void add_outputs(ctx *c, const spb_cmap_set *cm, json_t *task, const char *referral,
                        entries *es)
{
    json_t *outputs = json_object_get(task, "output");
    for (size_t i = 0; i < json_array_size(outputs) && es->n < MAX_ENTRIES; i++) {
        json_t *out = json_array_get(outputs, i);
        json_t *vref = json_object_get(out, "valueReference");
        json_t *vcc = json_object_get(out, "valueCodeableConcept");
        spb_cmap_match m;
        if (vref != NULL) {
            char msg[200];
            const char *ref = str_at(vref, "reference");
            json_t *obs;
            json_t *codings;
            if (ref == NULL || strncmp(ref, "Observation/", 12) != 0)
                continue;
            obs = read_ref(c, ref, msg, sizeof(msg));
            if (obs == NULL) {
                spb_log(SPB_LOG_WARN, "output_unreadable", "service", c->service_id, "output", ref,
                        "reason", msg, (const char *)NULL);
                continue;
            }
            codings = json_object_get(json_object_get(obs, "code"), "coding");
            for (size_t k = 0; k < json_array_size(codings); k++) {
                json_t *cd = json_array_get(codings, k);
                spb_wb_entry *e;
                json_t *q;
                if (!map_outcome(cm, str_at(cd, "system"), str_at(cd, "code"), &m))
                    continue;
                e = new_entry(es, &m, str_at(cd, "display"), ref);
                if (e == NULL)
                    break;
                e->effective = str_at(obs, "effectiveDateTime");
                q = json_object_get(obs, "valueQuantity");
                if (q != NULL) {
                    e->value_kind = "quantity";
                    e->value = spb_json_number_text(json_object_get(q, "value"));
                    e->unit = str_at(q, "code") ? str_at(q, "code") : str_at(q, "unit");
                } else if (json_object_get(obs, "valueInteger") != NULL) {
                    e->value_kind = "integer";
                    e->value = spb_json_number_text(json_object_get(obs, "valueInteger"));
                } else if (json_object_get(obs, "valueString") != NULL) {
                    e->value_kind = "string";
                    e->value = str_at(obs, "valueString");
                } else if (json_object_get(obs, "valueCodeableConcept") != NULL) {
                    json_t *vc = json_array_get(
                        json_object_get(json_object_get(obs, "valueCodeableConcept"), "coding"), 0);
                    e->value_kind = "code";
                    e->value_system = str_at(vc, "system");
                    e->value_code = str_at(vc, "code");
                    e->value_display = str_at(vc, "display");
                }
                if (!output_new(c, referral, es, ref, e->value ? e->value : e->value_code))
                    es->n--; /* written back before: not again */
                break;
            }
            if (es->nkeep < MAX_ENTRIES)
                es->keep[es->nkeep++] = obs;
            else
                json_decref(obs);
        } else if (vcc != NULL) {
            json_t *codings = json_object_get(vcc, "coding");
            for (size_t k = 0; k < json_array_size(codings); k++) {
                json_t *cd = json_array_get(codings, k);
                spb_wb_entry *e;
                if (!map_outcome(cm, str_at(cd, "system"), str_at(cd, "code"), &m))
                    continue;
                e = new_entry(es, &m, str_at(cd, "display"), "Task.output");
                if (e != NULL &&
                    !output_new(c, referral, es, str_at(cd, "system"), str_at(cd, "code")))
                    es->n--;
                break;
            }
        }
    }
}

/* Processes one Task version. Returns 0 when done with it (recorded, or not ours), -1 when
 * it must be tried again later (the patient or ServiceRequest could not be read, or the
 * store failed): callers then keep their cursor or notification. */
static int process_task(ctx *c, json_t *task)
{
    const char *task_id = str_at(task, "id");
    json_t *meta = json_object_get(task, "meta");
    const char *version = str_at(meta, "versionId");
    const char *updated = str_at(meta, "lastUpdated");
    const char *status = str_at(task, "status");
    const char *referral_id = task_referral(task);
    json_t *bs =
        json_array_get(json_object_get(json_object_get(task, "businessStatus"), "coding"), 0);
    const char *business = bs ? str_at(bs, "code") : NULL;
    const char *reason = str_at(json_object_get(task, "statusReason"), "text");
    spb_referral_row ref;
    spb_task_version tv;
    spb_outbox_new rows[2];
    int nrows = 0;
    char detail[300] = "", msg[300];
    char *doc_text = NULL, *close_text = NULL;
    char wb_key[400], close_key[200], close_path[200], task_ref[200];
    entries es;
    spb_err err;
    int rc, result = 0;

    memset(&ref, 0, sizeof(ref));
    memset(&tv, 0, sizeof(tv));
    memset(&es, 0, sizeof(es));
    spb_err_clear(&err);
    if (task_id == NULL || version == NULL || status == NULL)
        return 0;
    /* ours? by the Task's server id, else by its referral identifier */
    rc = spb_store_referral_get(c->store, task_id, 1, c->service_id, &ref, &err);
    if (rc == 0 && referral_id != NULL)
        rc = spb_store_referral_get(c->store, referral_id, 0, NULL, &ref, &err);
    if (rc <= 0 || strcmp(ref.service_id, c->service_id) != 0)
        goto out; /* not a referral spbridge sent to this service */
    if (spb_store_task_version_seen(c->store, c->service_id, task_id, version, &err) == 1)
        goto out;
    tv.service_id = c->service_id;
    tv.task_id = task_id;
    tv.version_id = version;
    tv.referral = ref.referral;
    tv.status = status;
    tv.business_status = business;
    tv.last_updated = updated;
    tv.advance = 1;
    snprintf(task_ref, sizeof(task_ref), "Task/%s", task_id);

    if (updated != NULL && ref.task_last_updated[0] != '\0' &&
        strcmp(updated, ref.task_last_updated) < 0) {
        tv.flag = "out_of_order";
        tv.detail = "older than the newest version already processed";
        tv.advance = 0;
        goto record;
    }
    if (!spb_task_transition_ok(ref.task_status[0] ? ref.task_status : "requested", status)) {
        snprintf(detail, sizeof(detail), "unexpected transition %s -> %s",
                 ref.task_status[0] ? ref.task_status : "requested", status);
        tv.flag = "unexpected_transition";
        tv.detail = detail;
        spb_log(SPB_LOG_WARN, "task_unexpected_transition", "service", c->service_id, "referral",
                ref.referral, "task", task_ref, "version", version, "reason", detail,
                (const char *)NULL);
    }
    {
        int who = right_patient(c, task, &ref, msg, sizeof(msg));
        if (who < 0) {
            spb_log(SPB_LOG_WARN, "task_patient_unchecked", "service", c->service_id, "referral",
                    ref.referral, "task", task_ref, "reason", msg, (const char *)NULL);
            result = -1; /* not recorded: tried again on the next pass */
            goto out;
        }
        if (who == 0) {
            tv.flag = "quarantined";
            snprintf(detail, sizeof(detail), "%s", msg);
            tv.detail = detail;
            tv.advance = 0;
            spb_log(SPB_LOG_ERROR, "writeback_quarantined", "service", c->service_id, "referral",
                    ref.referral, "task", task_ref, "version", version, "reason", msg,
                    (const char *)NULL);
            goto record;
        }
    }
    /* what to write back: the status (when it changed), the business status, the outputs */
    {
        const spb_cmap_set *cm;
        spb_cmap_match m;
        const char *practice_format = "gp2gp";
        spb_wb_doc doc;
        size_t len = 0;
        char doc_uuid[SPB_UUID_LEN + 1], name[300];

        pthread_rwlock_rdlock(&c->f->rt->lock);
        cm = spb_mapping_set_cmaps(c->f->rt->maps);
        {
            const spb_practice_cfg *p = spb_config_practice(c->f->rt->cfg, ref.practice);
            if (p != NULL && strcmp(p->writeback_format, "native") == 0)
                practice_format = "native";
        }
        if (strcmp(status, ref.task_status[0] ? ref.task_status : "requested") != 0 &&
            map_outcome(cm, TASK_STATUS_SYSTEM, status, &m))
            new_entry(&es, &m, NULL, "Task.status");
        if (bs != NULL && business != NULL && strcmp(business, ref.task_business_status) != 0 &&
            map_outcome(cm, str_at(bs, "system"), business, &m))
            new_entry(&es, &m, str_at(bs, "display"), "Task.businessStatus");
        add_outputs(c, cm, task, ref.referral, &es);
        if (strcmp(status, "entered-in-error") == 0)
            es.n = 0; /* the service withdrew the Task: nothing of it enters the record */
        if (es.n > 0) {
            snprintf(name, sizeof(name), "writeback|%s|%s|%s", c->service_id, task_id, version);
            spb_uuid_v5(doc_uuid, name);
            memset(&doc, 0, sizeof(doc));
            doc.format = practice_format;
            doc.doc_uuid = doc_uuid;
            doc.referral = ref.referral;
            doc.task_ref = task_ref;
            doc.version = version;
            doc.practice_ods = ref.practice;
            doc.nhs_number = ref.nhs_number;
            doc.service_name = c->service_name;
            doc.service_ods = c->service_ods[0] ? c->service_ods : NULL;
            doc.recorded = updated;
            doc.status = status;
            doc.business_status = business;
            doc.reason_text = reason;
            doc.entries = es.e;
            doc.nentries = es.n;
            doc_text = spb_writeback_render(&doc, &len, &err);
        }
        pthread_rwlock_unlock(&c->f->rt->lock);
        if (doc_text != NULL) {
            snprintf(wb_key, sizeof(wb_key), "wb|%s|%s|%s", c->service_id, task_id, version);
            rows[nrows].kind = "writeback";
            rows[nrows].channel = "writeback";
            rows[nrows].method = "POST";
            rows[nrows].url_path = NULL;
            rows[nrows].content_type = "application/xml";
            rows[nrows].payload = doc_text;
            rows[nrows].dedupe_key = wb_key;
            nrows++;
        }
    }
    /* the Task has ended: close the ServiceRequest (completed, else revoked) */
    if (spb_task_status_terminal(status) && !ref.closed && ref.sr_id[0] != '\0') {
        /* the server's own copy (its references, its version), with the status changed */
        char sr_ref[200];
        long http = 0;
        json_t *sr;
        snprintf(sr_ref, sizeof(sr_ref), "ServiceRequest/%s", ref.sr_id);
        sr = read_ref_status(c, sr_ref, 0, &http, msg, sizeof(msg));
        if (sr == NULL) {
            spb_log(SPB_LOG_WARN, "servicerequest_unreadable", "service", c->service_id, "referral",
                    ref.referral, "reason", msg, (const char *)NULL);
            result = -1;
            goto out;
        }
        json_object_del(sr, "meta");
        json_object_set_new(
            sr, "status", json_string(strcmp(status, "completed") == 0 ? "completed" : "revoked"));
        close_text = json_dumps(sr, JSON_COMPACT);
        json_decref(sr);
        if (close_text != NULL) {
            snprintf(close_key, sizeof(close_key), "close|%s", ref.referral);
            snprintf(close_path, sizeof(close_path), "ServiceRequest/%s", ref.sr_id);
            rows[nrows].kind = "close";
            rows[nrows].channel = "fhir";
            rows[nrows].method = "PUT";
            rows[nrows].url_path = close_path;
            rows[nrows].content_type = "application/fhir+json";
            rows[nrows].payload = close_text;
            rows[nrows].dedupe_key = close_key;
            nrows++;
        }
    }
    if (doc_text != NULL) {
        tv.output_keys = es.key_ptrs;
        tv.noutput_keys = es.nkeys;
    }
record:
    rc = spb_store_task_version(c->store, &tv, &ref, rows, nrows, &err);
    if (rc < 0) {
        spb_log_err("task_record_failed", &err);
        result = -1;
    } else if (rc == 0) {
        char n_s[8];
        snprintf(n_s, sizeof(n_s), "%zu", es.n);
        spb_log(SPB_LOG_INFO, "task_change", "service", c->service_id, "referral", ref.referral,
                "task", task_ref, "version", version, "status", status, "business_status", business,
                "flag", tv.flag, "writeback_entries", n_s, (const char *)NULL);
        if (nrows > 0)
            spb_runtime_wake(c->f->rt);
    }
out:
    free(doc_text);
    free(close_text);
    entries_clear(&es);
    spb_referral_row_clear(&ref);
    return result;
}

static void url_encode(char *out, size_t size, const char *in)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 4 < size; p++) {
        unsigned char ch = (unsigned char)*p;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, size - o, "%%%02X", ch);
    }
    out[o] = '\0';
}

static void poll_practice(ctx *c, const spb_follow_target *t)
{
    char cursor[64], enc[200], url[2048], msg[300];
    char newest[64] = "";
    spb_err err;
    int pages = 0, failed = 0;

    spb_err_clear(&err);
    spb_store_cursor_get(c->store, c->service_id, t->practice, cursor, sizeof(cursor), &err);
    if (cursor[0] != '\0') {
        url_encode(enc, sizeof(enc), cursor);
        snprintf(url, sizeof(url),
                 "%s/Task?requester=Organization/%s&_lastUpdated=ge%s&_sort=_lastUpdated&_count=50",
                 c->base, t->org_id, enc);
    } else {
        snprintf(url, sizeof(url), "%s/Task?requester=Organization/%s&_sort=_lastUpdated&_count=50",
                 c->base, t->org_id);
    }
    while (url[0] != '\0' && pages++ < MAX_PAGES && !atomic_load(&c->f->stop)) {
        json_t *bundle = fhir_get(c->curl, &c->tls, url, 1, NULL, msg, sizeof(msg));
        json_t *entries_arr, *links;
        if (bundle == NULL) {
            spb_log(SPB_LOG_WARN, "poll_failed", "service", c->service_id, "practice", t->practice,
                    "reason", msg, (const char *)NULL);
            return;
        }
        entries_arr = json_object_get(bundle, "entry");
        for (size_t i = 0; i < json_array_size(entries_arr); i++) {
            json_t *res = json_object_get(json_array_get(entries_arr, i), "resource");
            const char *type = str_at(res, "resourceType");
            const char *lu = str_at(json_object_get(res, "meta"), "lastUpdated");
            if (type == NULL || strcmp(type, "Task") != 0)
                continue;
            if (process_task(c, res) < 0) {
                /* keep the cursor before this Task: the next pass starts from it again */
                failed = 1;
                break;
            }
            if (lu != NULL && strcmp(lu, newest) > 0)
                snprintf(newest, sizeof(newest), "%s", lu);
        }
        url[0] = '\0';
        links = json_object_get(bundle, "link");
        for (size_t i = 0; i < json_array_size(links); i++) {
            json_t *l = json_array_get(links, i);
            const char *rel = str_at(l, "relation");
            const char *next = str_at(l, "url");
            /* follow only links to the same service */
            if (rel && next && strcmp(rel, "next") == 0 &&
                strncmp(next, c->base, strlen(c->base)) == 0)
                snprintf(url, sizeof(url), "%s", next);
        }
        json_decref(bundle);
        /* the cursor moves only over what was processed */
        if (newest[0] != '\0')
            spb_store_cursor_set(c->store, c->service_id, t->practice, newest, &err);
        if (failed)
            break;
    }
}

static void process_notifications(ctx *c)
{
    spb_notification ns[64];
    int n = 0;
    spb_err err;
    spb_err_clear(&err);
    if (spb_store_notify_pending(c->store, c->service_id, ns, 64, &n, &err) < 0)
        return;
    for (int i = 0; i < n; i++) {
        char ref[200], msg[300];
        json_t *task;
        if (strcmp(ns[i].service_id, c->service_id) != 0)
            continue;
        long http = 0;
        snprintf(ref, sizeof(ref), "Task/%s", ns[i].task_id);
        task = read_ref_status(c, ref, 1, &http, msg, sizeof(msg));
        if (task == NULL) {
            spb_log(SPB_LOG_WARN, "notify_read_failed", "service", c->service_id, "task", ref,
                    "reason", msg, (const char *)NULL);
            /* a Task the service says does not exist (or refuses) will not appear later: drop
             * the notification; anything else (no answer, 5xx) is read again next pass */
            if (http >= 400 && http < 500)
                spb_store_notify_done(c->store, ns[i].id, &err);
            continue;
        }
        if (process_task(c, task) == 0)
            spb_store_notify_done(c->store, ns[i].id, &err);
        json_decref(task);
    }
}

static void *follower_main(void *arg)
{
    spb_follower *f = arg;
    spb_runtime *rt = f->rt;
    ctx c;
    spb_err err;
    int64_t next_poll[SPB_CONFIG_MAX_SERVICES] = {0};

    memset(&c, 0, sizeof(c));
    c.f = f;
    spb_err_clear(&err);
    c.store = spb_runtime_open_store(rt, "follower_store_failed");
    if (c.store == NULL)
        return NULL;
    c.curl = curl_easy_init();
    while (!atomic_load(&f->stop)) {
        int nservices;
        pthread_rwlock_rdlock(&rt->lock);
        nservices = rt->cfg->nservices;
        pthread_rwlock_unlock(&rt->lock);
        for (int s = 0; s < nservices && !atomic_load(&f->stop); s++) {
            spb_follow_target *targets;
            int n = 0;
            long interval;
            int due;
            pthread_rwlock_rdlock(&rt->lock);
            if (s >= rt->cfg->nservices) {
                pthread_rwlock_unlock(&rt->lock);
                break;
            }
            snprintf(c.base, sizeof(c.base), "%s", rt->cfg->services[s].endpoint);
            snprintf(c.service_id, sizeof(c.service_id), "%s", rt->cfg->services[s].id);
            snprintf(c.service_name, sizeof(c.service_name), "%s", rt->cfg->services[s].name);
            snprintf(c.service_ods, sizeof(c.service_ods), "%s", rt->cfg->services[s].ods);
            interval = rt->cfg->services[s].poll_interval_s;
            spb_tls_client_from_config(&c.tls, rt->cfg);
            pthread_rwlock_unlock(&rt->lock);
            if (c.base[0] == '\0')
                continue;
            process_notifications(&c);
            due = interval > 0 && spb_now_ms() >= next_poll[s];
            if (!due)
                continue;
            next_poll[s] = spb_now_ms() + interval * 1000;
            targets = calloc(MAX_TARGETS, sizeof(*targets));
            if (targets == NULL)
                continue;
            spb_store_follow_targets(c.store, c.service_id, targets, MAX_TARGETS, &n, &err);
            for (int i = 0; i < n && !atomic_load(&f->stop); i++)
                poll_practice(&c, &targets[i]);
            free(targets);
        }
        /* sleep up to a second, or until a notification wakes us */
        pthread_mutex_lock(&f->lock);
        if (!f->woken && !atomic_load(&f->stop)) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&f->cond, &f->lock, &until);
        }
        f->woken = 0;
        pthread_mutex_unlock(&f->lock);
    }
    curl_easy_cleanup(c.curl);
    spb_store_close(c.store);
    return NULL;
}

int spb_follower_start(spb_follower **out, spb_runtime *rt, spb_err *err)
{
    spb_follower *f = calloc(1, sizeof(*f));
    *out = NULL;
    if (f == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    f->rt = rt;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    if (pthread_create(&f->thread, NULL, follower_main, f) != 0) {
        free(f);
        return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot start the follower");
    }
    f->started = 1;
    *out = f;
    return 0;
}

void spb_follower_wake(spb_follower *f)
{
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    f->woken = 1;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

void spb_follower_stop(spb_follower *f)
{
    if (f == NULL)
        return;
    atomic_store(&f->stop, 1);
    spb_follower_wake(f);
    if (f->started)
        pthread_join(f->thread, NULL);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f);
}
