/*
 * Delivery workers. Each worker owns a store handle and a curl easy handle (so keep-alive
 * connections are reused between Bundles to the same service). The loop is:
 * claim a due row (with a lease) -> POST -> classify -> record the attempt and the row's
 * new state in one transaction. A crash anywhere leaves the row 'delivering' with a lease
 * that expires; recovery re-queues it, and the Bundle's conditional creates make the
 * second send harmless. docs/delivery-guarantees.md has the full argument.
 */
#include "spbridge/delivery.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <jansson.h>
#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "spbridge/log.h"
#include "spbridge/store.h"

#define RESPONSE_MAX (4u * 1024u * 1024u)
#define MAX_WORKERS  64

typedef struct worker {
    struct spb_delivery *d;
    pthread_t thread;
    int index;
    int started;
} worker;

struct spb_delivery {
    spb_runtime *rt;
    worker workers[MAX_WORKERS];
    int nworkers;
};

/* What one attempt needs from the configuration, copied under the read lock. */
typedef struct target {
    char service_id[64];
    char endpoint[512];
    spb_tls_client tls;
    long retry_base_ms, retry_max_ms, max_attempts, lease_ms;
    /* write-back rows: the practice's channel */
    char wb_spool_dir[512];
    char wb_endpoint[512];
} target;

typedef struct buffer {
    char *data;
    size_t len;
    int truncated;
} buffer;

typedef struct headers {
    char retry_after[128];
} headers;

long spb_backoff_ms(long base_ms, long max_ms, int attempt, double rnd)
{
    double delay = (double)base_ms;
    for (int i = 1; i < attempt && delay < (double)max_ms; i++)
        delay *= 2;
    if (delay > (double)max_ms)
        delay = (double)max_ms;
    /* "equal jitter": never less than half the delay, so backoff still grows */
    return (long)(delay / 2 + rnd * delay / 2);
}

long spb_retry_after_ms(const char *value, long now_s)
{
    char *end = NULL;
    long secs;
    time_t when;

    if (value == NULL || *value == '\0')
        return -1;
    secs = strtol(value, &end, 10);
    if (end != value && (*end == '\0' || *end == '\r' || *end == '\n' || *end == ' ')) {
        if (secs < 0)
            return -1;
        return secs > 86400 ? 86400000L : secs * 1000L;
    }
    when = curl_getdate(value, NULL);
    if (when < 0)
        return -1;
    if ((long)when <= now_s)
        return 0;
    return ((long)when - now_s) > 86400 ? 86400000L : ((long)when - now_s) * 1000L;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    buffer *b = user;
    size_t n = size * nmemb;
    if (b->len + n > RESPONSE_MAX) {
        b->truncated = 1;
        return 0; /* abort: a response this large is not a FHIR answer we accept */
    }
    {
        char *grown = realloc(b->data, b->len + n + 1);
        if (grown == NULL)
            return 0;
        b->data = grown;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *user)
{
    headers *h = user;
    size_t n = size * nitems;
    if (n > 12 && strncasecmp(buf, "Retry-After:", 12) == 0) {
        const char *v = buf + 12;
        size_t len;
        while (*v == ' ' || *v == '\t')
            v++;
        len = n - (size_t)(v - buf);
        while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
            len--;
        if (len >= sizeof(h->retry_after))
            len = sizeof(h->retry_after) - 1;
        memcpy(h->retry_after, v, len);
        h->retry_after[len] = '\0';
    }
    return n;
}

static double random_unit(void)
{
    unsigned int r = 0;
    RAND_bytes((unsigned char *)&r, sizeof(r));
    return (double)r / 4294967296.0;
}

static int read_passphrase(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n;
    if (f == NULL)
        return -1;
    if (fgets(out, (int)size, f) == NULL)
        out[0] = '\0';
    fclose(f);
    n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    return 0;
}

void spb_tls_client_from_config(spb_tls_client *t, const spb_config *cfg)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->client_cert, sizeof(t->client_cert), "%s", cfg->client_cert);
    snprintf(t->client_key, sizeof(t->client_key), "%s", cfg->client_key);
    snprintf(t->ca_file, sizeof(t->ca_file), "%s", cfg->ca_file);
    snprintf(t->pin, sizeof(t->pin), "%s", cfg->pinned_public_key);
    if (cfg->client_key_passphrase_file[0] != '\0')
        read_passphrase(cfg->client_key_passphrase_file, t->key_pass, sizeof(t->key_pass));
    t->connect_timeout_ms = cfg->connect_timeout_ms;
    t->timeout_ms = cfg->timeout_ms;
}

void spb_curl_apply_tls(void *handle, const spb_tls_client *t)
{
    CURL *curl = handle;
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, t->connect_timeout_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, t->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    if (t->client_cert[0])
        curl_easy_setopt(curl, CURLOPT_SSLCERT, t->client_cert);
    if (t->client_key[0])
        curl_easy_setopt(curl, CURLOPT_SSLKEY, t->client_key);
    if (t->key_pass[0])
        curl_easy_setopt(curl, CURLOPT_KEYPASSWD, t->key_pass);
    if (t->ca_file[0])
        curl_easy_setopt(curl, CURLOPT_CAINFO, t->ca_file);
    if (t->pin[0])
        curl_easy_setopt(curl, CURLOPT_PINNEDPUBLICKEY, t->pin);
}

static int load_target(spb_runtime *rt, const spb_outbox_job *job, target *t)
{
    const spb_service_cfg *svc;
    const spb_practice_cfg *pr;
    int found = 0;

    memset(t, 0, sizeof(*t));
    pthread_rwlock_rdlock(&rt->lock);
    svc = spb_config_service(rt->cfg, job->service_id);
    if (svc != NULL) {
        found = 1;
        snprintf(t->endpoint, sizeof(t->endpoint), "%s", svc->endpoint);
    }
    pr = spb_config_practice(rt->cfg, job->practice);
    if (pr != NULL) {
        snprintf(t->wb_spool_dir, sizeof(t->wb_spool_dir), "%s", pr->writeback_spool_dir);
        snprintf(t->wb_endpoint, sizeof(t->wb_endpoint), "%s", pr->writeback_endpoint);
    }
    snprintf(t->service_id, sizeof(t->service_id), "%s", job->service_id);
    spb_tls_client_from_config(&t->tls, rt->cfg);
    t->retry_base_ms = rt->cfg->retry_base_ms;
    t->retry_max_ms = rt->cfg->retry_max_ms;
    t->max_attempts = rt->cfg->max_attempts;
    t->lease_ms = rt->cfg->lease_ms;
    pthread_rwlock_unlock(&rt->lock);
    return found;
}

/* {"resourceType","id","status"} for each entry of a transaction-response. */
static char *server_ids_of(const char *body)
{
    json_t *doc = json_loads(body, 0, NULL);
    json_t *out = json_array();
    json_t *entries;
    char *text = NULL;

    if (doc == NULL)
        goto done;
    entries = json_object_get(doc, "entry");
    for (size_t i = 0; i < json_array_size(entries); i++) {
        json_t *resp = json_object_get(json_array_get(entries, i), "response");
        const char *loc = json_string_value(json_object_get(resp, "location"));
        const char *status = json_string_value(json_object_get(resp, "status"));
        json_t *item = json_object();
        if (loc != NULL) {
            char type[64] = "", id[128] = "";
            const char *slash = strchr(loc, '/');
            /* location is Type/id[/_history/vid], possibly with a base URL in front */
            const char *start = loc;
            for (const char *p = loc; *p; p++) {
                if (p[0] == '/' && p[1] >= 'A' && p[1] <= 'Z')
                    start = p + 1;
            }
            slash = strchr(start, '/');
            if (slash != NULL) {
                const char *id_end = strchr(slash + 1, '/');
                size_t tl = (size_t)(slash - start);
                size_t il = id_end ? (size_t)(id_end - slash - 1) : strlen(slash + 1);
                if (tl < sizeof(type) && il < sizeof(id)) {
                    memcpy(type, start, tl);
                    type[tl] = '\0';
                    memcpy(id, slash + 1, il);
                    id[il] = '\0';
                }
            }
            json_object_set_new(item, "resourceType", json_string(type));
            json_object_set_new(item, "id", json_string(id));
            json_object_set_new(item, "location", json_string(loc));
        }
        if (status != NULL)
            json_object_set_new(item, "status", json_string(status));
        json_array_append_new(out, item);
    }
done:
    text = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    json_decref(doc);
    return text;
}

static int has_operation_outcome(const char *body)
{
    json_t *doc = body ? json_loads(body, 0, NULL) : NULL;
    const char *rt = json_string_value(json_object_get(doc, "resourceType"));
    int yes = rt != NULL && strcmp(rt, "OperationOutcome") == 0;
    json_decref(doc);
    return yes;
}

/* Writes a write-back document into a practice's spool folder: a hidden temporary name,
 * fsync, rename to the final name (the row's id makes it unique and stable across
 * retries), fsync the folder. A GP system never sees a partial file. */
static int write_spool_file(const char *dir, const spb_outbox_job *job, char *msg, size_t msg_size)
{
    char tmp[1024], final_path[1024];
    const char *ext = strstr(job->content_type, "xml") ? "xml" : "json";
    size_t len = strlen(job->payload), done = 0;
    int fd, dfd;

    snprintf(tmp, sizeof(tmp), "%s/.spbridge-outcome-%lld.tmp", dir, (long long)job->id);
    snprintf(final_path, sizeof(final_path), "%s/spbridge-outcome-%s-%lld.%s", dir, job->referral,
             (long long)job->id, ext);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(msg, msg_size, "cannot write to the write-back folder %s: %s", dir,
                 strerror(errno));
        return -1;
    }
    while (done < len) {
        ssize_t w = write(fd, job->payload + done, len - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            snprintf(msg, msg_size, "write-back folder %s: %s", dir, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        done += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, final_path) != 0) {
        snprintf(msg, msg_size, "write-back folder %s: %s", dir, strerror(errno));
        unlink(tmp);
        return -1;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* One attempt: fills `res` (error text and response point into `msg`/`body`). */
static void attempt(worker *w, CURL *curl, const spb_outbox_job *job, const target *t,
                    spb_attempt_result *res, char *msg, size_t msg_size, buffer *body, char **ids)
{
    struct curl_slist *hdrs = NULL;
    headers h;
    char errbuf[CURL_ERROR_SIZE] = "";
    char hdr[128];
    CURLcode cc;
    long status = 0;
    long retry_after;

    (void)w;
    memset(&h, 0, sizeof(h));
    res->started_at = spb_now_ms();
    char url[1024];
    int writeback = strcmp(job->channel, "writeback") == 0;

    if (writeback && t->wb_spool_dir[0] != '\0') {
        /* the GP system imports files: write once, durably, under the final name */
        if (write_spool_file(t->wb_spool_dir, job, msg, msg_size) < 0) {
            res->outcome = SPB_RETRY;
            goto classify_retry;
        }
        res->outcome = SPB_DELIVERED;
        res->finished_at = spb_now_ms();
        return;
    }
    if (writeback && t->wb_endpoint[0] == '\0') {
        snprintf(msg, msg_size,
                 "practice %s has no write-back channel; set [practice.%s] "
                 "writeback_spool_dir or writeback_endpoint and reload",
                 job->practice, job->practice);
        res->outcome = SPB_RETRY;
        goto classify_retry;
    }
    if (!writeback && t->endpoint[0] == '\0') {
        snprintf(msg, msg_size,
                 "service '%s' has no endpoint configured; set [service.%s] endpoint and reload",
                 t->service_id, t->service_id);
        res->outcome = SPB_RETRY;
        goto classify_retry;
    }
    if (writeback)
        snprintf(url, sizeof(url), "%s", t->wb_endpoint);
    else if (job->url_path[0] != '\0')
        snprintf(url, sizeof(url), "%s/%s", t->endpoint, job->url_path);
    else
        snprintf(url, sizeof(url), "%s", t->endpoint);
    curl_easy_reset(curl);
    snprintf(hdr, sizeof(hdr), "Content-Type: %s", job->content_type);
    hdrs = curl_slist_append(hdrs, hdr);
    hdrs = curl_slist_append(hdrs, writeback ? "Accept: */*" : "Accept: application/fhir+json");
    snprintf(hdr, sizeof(hdr), "X-Request-Id: %s-%lld-%d", job->event_id, (long long)job->id,
             job->attempts);
    hdrs = curl_slist_append(hdrs, hdr);
    snprintf(hdr, sizeof(hdr), "X-Correlation-Id: %s", job->event_id);
    hdrs = curl_slist_append(hdrs, hdr);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    if (strcmp(job->method, "PUT") == 0)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, "PUT");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, job->payload);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(job->payload));
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &h);
    spb_curl_apply_tls(curl, &t->tls);
    cc = curl_easy_perform(curl);
    curl_slist_free_all(hdrs);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = (int)status;
    res->response = body->data;
    if (cc != CURLE_OK) {
        snprintf(msg, msg_size, "%s: %s", curl_easy_strerror(cc), errbuf[0] ? errbuf : "no detail");
        if (body->truncated)
            snprintf(msg, msg_size, "the service's answer is over %u bytes", RESPONSE_MAX);
        res->outcome = SPB_RETRY;
        goto classify_retry;
    }
    if (status >= 200 && status < 300) {
        res->outcome = SPB_DELIVERED;
        *ids = server_ids_of(body->data ? body->data : "{}");
        res->server_ids = *ids;
        res->finished_at = spb_now_ms();
        return;
    }
    if (status == 408 || status == 429 || status >= 500) {
        snprintf(msg, msg_size, "the service answered HTTP %ld%s", status,
                 status == 429 ? " (too many requests)" : "");
        res->outcome = SPB_RETRY;
        goto classify_retry;
    }
    snprintf(msg, msg_size, "the service refused the Bundle: HTTP %ld%s", status,
             has_operation_outcome(body->data) ? " with an OperationOutcome (kept)"
                                               : " (no OperationOutcome)");
    res->outcome = SPB_DEAD;
    res->error = msg;
    res->finished_at = spb_now_ms();
    return;

classify_retry:
    res->error = msg;
    res->finished_at = spb_now_ms();
    if (job->attempts >= t->max_attempts) {
        size_t used = strlen(msg);
        snprintf(msg + used, msg_size - used, "; gave up after %d attempts", job->attempts);
        res->outcome = SPB_DEAD;
        return;
    }
    {
        long delay =
            spb_backoff_ms(t->retry_base_ms, t->retry_max_ms, job->attempts, random_unit());
        retry_after = spb_retry_after_ms(h.retry_after, (long)(res->finished_at / 1000));
        if (retry_after > delay)
            delay = retry_after;
        res->next_attempt_at = res->finished_at + delay;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    spb_runtime *rt = w->d->rt;
    spb_store *store = spb_runtime_open_store(rt, "delivery_store_failed");
    CURL *curl = NULL;
    spb_err err;

    if (store == NULL)
        return NULL;
    curl = curl_easy_init();
    while (!atomic_load(&rt->stopping)) {
        spb_outbox_job job;
        target t;
        int got;
        long lease;

        pthread_rwlock_rdlock(&rt->lock);
        lease = rt->cfg->lease_ms;
        pthread_rwlock_unlock(&rt->lock);
        spb_err_clear(&err);
        got = spb_store_claim(store, spb_now_ms(), lease, &job, &err);
        if (got < 0) {
            if (err.code != SPB_ERETRY)
                spb_log_err("delivery_claim_failed", &err);
            got = 0;
        }
        if (got == 0) {
            int n = 0;
            /* rows whose worker lease expired (a failed record, a stuck worker) go back */
            if (spb_store_recover(store, spb_now_ms(), 0, &n, &err) == 0 && n > 0) {
                char n_s[16];
                snprintf(n_s, sizeof(n_s), "%d", n);
                spb_log(SPB_LOG_WARN, "lease_expired", "rows", n_s, (const char *)NULL);
                continue;
            }
            /* sleep until the next row is due (at most 1 s), or until woken */
            int64_t due = spb_store_next_due(store);
            int64_t now = spb_now_ms();
            int64_t wait_ms = due < 0 ? 1000 : due - now;
            struct timespec until;
            if (wait_ms <= 0)
                continue;
            if (wait_ms > 1000)
                wait_ms = 1000;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += wait_ms / 1000;
            until.tv_nsec += (wait_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_mutex_lock(&rt->wake_lock);
            if (!atomic_load(&rt->stopping))
                pthread_cond_timedwait(&rt->wake, &rt->wake_lock, &until);
            pthread_mutex_unlock(&rt->wake_lock);
            continue;
        }
        load_target(rt, &job, &t);
        {
            spb_attempt_result res;
            buffer body = {NULL, 0, 0};
            char msg[512] = "";
            char *ids = NULL;
            char id_s[24], attempt_s[16], status_s[16];

            memset(&res, 0, sizeof(res));
            attempt(w, curl, &job, &t, &res, msg, sizeof(msg), &body, &ids);
            spb_err_clear(&err);
            if (spb_store_finish(store, &job, &res, &err) < 0)
                spb_log_err("delivery_record_failed", &err);
            snprintf(id_s, sizeof(id_s), "%lld", (long long)job.id);
            snprintf(attempt_s, sizeof(attempt_s), "%d", job.attempts);
            snprintf(status_s, sizeof(status_s), "%d", res.http_status);
            if (res.outcome == SPB_DELIVERED) {
                atomic_fetch_add(&rt->metrics.delivered, 1);
                spb_metrics_observe_latency(&rt->metrics, (long)(res.finished_at - job.created_at));
                spb_log(SPB_LOG_INFO, "delivered", "outbox", id_s, "tracking_id", job.event_id,
                        "referral", job.referral, "practice", job.practice, "service",
                        job.service_id, "attempt", attempt_s, "status", status_s,
                        (const char *)NULL);
            } else {
                atomic_fetch_add(&rt->metrics.failed_attempts, 1);
                if (res.outcome == SPB_RETRY)
                    atomic_fetch_add(&rt->metrics.retries, 1);
                else
                    atomic_fetch_add(&rt->metrics.dead, 1);
                spb_log(res.outcome == SPB_RETRY ? SPB_LOG_WARN : SPB_LOG_ERROR,
                        res.outcome == SPB_RETRY ? "delivery_retry" : "delivery_dead", "outbox",
                        id_s, "tracking_id", job.event_id, "referral", job.referral, "practice",
                        job.practice, "service", job.service_id, "attempt", attempt_s, "status",
                        res.http_status ? status_s : NULL, "reason", msg, (const char *)NULL);
            }
            free(ids);
            free(body.data);
            free(job.payload);
        }
    }
    curl_easy_cleanup(curl);
    spb_store_close(store);
    return NULL;
}

int spb_delivery_start(spb_delivery **out, spb_runtime *rt, spb_err *err)
{
    spb_delivery *d = calloc(1, sizeof(*d));
    long n;

    *out = NULL;
    if (d == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    d->rt = rt;
    pthread_rwlock_rdlock(&rt->lock);
    n = rt->cfg->delivery_workers;
    pthread_rwlock_unlock(&rt->lock);
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    for (int i = 0; i < n; i++) {
        d->workers[i].d = d;
        d->workers[i].index = i;
        if (pthread_create(&d->workers[i].thread, NULL, worker_main, &d->workers[i]) != 0) {
            spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot start delivery worker");
            atomic_store(&rt->stopping, 1);
            spb_delivery_stop(d);
            return SPB_ERR;
        }
        d->workers[i].started = 1;
        d->nworkers++;
    }
    *out = d;
    return 0;
}

void spb_delivery_stop(spb_delivery *d)
{
    if (d == NULL)
        return;
    atomic_store(&d->rt->stopping, 1);
    spb_runtime_wake(d->rt);
    for (int i = 0; i < d->nworkers; i++) {
        if (d->workers[i].started)
            pthread_join(d->workers[i].thread, NULL);
    }
    free(d);
}
