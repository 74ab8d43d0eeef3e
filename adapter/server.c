/*
 * The service process.
 *
 * Threads: the event loop (libevent: TLS handshakes, HTTP parsing, replies, signals), intake
 * threads (translation and SQLite for posted documents and queries), one spool thread, and
 * the delivery workers. The loop never blocks: a request is copied into a job, handed to an
 * intake thread, and its answer comes back through a queue and an event the loop waits on.
 *
 * Client certificates are required and verified against the configured CA bundle (and CRL).
 * A verified certificate is then mapped to a configured identity (fingerprint, SAN or
 * subject); a certificate that maps to no identity is refused like a bad one.
 */
#include "spbridge/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spbridge/audit.h"
#include "spbridge/dashboard.h"
#include "spbridge/delivery.h"
#include "spbridge/follower.h"
#include "spbridge/intake.h"
#include "spbridge/log.h"
#include "spbridge/report.h"
#include "spbridge/runtime.h"
#include "spbridge/store.h"
#include "spbridge/xml_input.h"

#define MAX_INTAKE 64

typedef struct identity {
    int known;
    char name[64];
    spb_client_role role;
    char ods[16];
    char region[32];
    char subject[256]; /* for refusal logs only */
} identity;

struct server;

typedef struct job {
    struct job *next;
    struct server *srv;
    struct evhttp_request *req; /* NULL once the client has gone */
    struct evhttp_connection *evcon;
    enum evhttp_cmd_type method;
    char path[256];
    char content_type[128];
    char dialect[64];
    char query[2048]; /* the query string as sent (GET /audit/...) */
    int query_too_long;
    char host[256]; /* the Host header, for absolute links in Bundles */
    identity who;
    char *body;
    size_t body_len;
    /* answer */
    int status;
    char *reply;
    const char *reply_type;
    /* a streamed answer (GET /audit/$export): the handler fills one chunk per pass */
    int stream;         /* 1: this chunk, more follow; 2: the last chunk */
    int stream_started; /* the loop has sent the status line */
    int64_t cursor;     /* where the next chunk starts */
} job;

typedef struct server {
    spb_runtime rt;
    const spb_serve_opts *opts;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    SSL_CTX *ssl_ctx; /* for new connections; swapped on reload (loop thread only) */
    struct event *done_ev;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    job *todo_head, *todo_tail;
    job *done_head;
    int pending; /* jobs handed out and not yet answered (loop thread) */
    int draining;
    atomic_int intake_stop;
    pthread_t intake[MAX_INTAKE];
    int nintake;
    pthread_t spool;
    int spool_started;
    spb_delivery *delivery;
    spb_follower *follower;
    long server_cert_expiry;
    long client_cert_expiry;
    pthread_mutex_t ctx_lock; /* guards ssl_ctx: reloads swap it from an intake thread */
    struct event *drain_timer;
    struct event *watch_timer;
    unsigned long long mappings_signature;
    int lock_fd;
    int64_t drain_started;
    struct event *audit_timer;     /* every second: a checkpoint when due */
    atomic_int audit_tick_pending; /* one checkpoint job at a time */
    int64_t audit_warned_at;       /* checkpoint failures are logged once a minute */
    struct event *sig_term, *sig_int, *sig_hup;
    int port;        /* the listening socket's port */
    int locks_ready; /* the queue and TLS-context locks are initialised */
} server;

/* ------------------------------------------------------------------ TLS */

static long cert_expiry_file(const char *path)
{
    FILE *f;
    X509 *x;
    long t = 0;
    struct tm tm;

    if (path == NULL || *path == '\0')
        return 0;
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return 0;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        t = (long)timegm(&tm);
    X509_free(x);
    return t;
}

static void enqueue(struct server *srv, struct job *j);

/* Runs on the loop thread during a handshake: log now, and hand the audit record to an
 * intake thread (no SQLite on the loop). */
static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    if (!ok) {
        X509 *cert = X509_STORE_CTX_get_current_cert(ctx);
        SSL *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
        server *srv = ssl ? SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)) : NULL;
        char subject[256] = "";
        int e = X509_STORE_CTX_get_error(ctx);
        if (cert != NULL)
            X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
        spb_log(SPB_LOG_WARN, "certificate_refused", "subject", subject, "reason",
                X509_verify_cert_error_string(e), (const char *)NULL);
        if (srv != NULL) {
            job *j = calloc(1, sizeof(*j));
            if (j != NULL) {
                j->srv = srv;
                snprintf(j->path, sizeof(j->path), "%s", "/_internal/certificate-refused");
                snprintf(j->who.subject, sizeof(j->who.subject), "%s", subject);
                snprintf(j->dialect, sizeof(j->dialect), "%.63s", X509_verify_cert_error_string(e));
                srv->pending++;
                atomic_fetch_add(&srv->rt.metrics.refused, 1);
                enqueue(srv, j);
            }
        }
    }
    return ok;
}

static SSL_CTX *make_ssl_ctx(struct server *srv, const spb_config *cfg, spb_err *err)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    static const unsigned char sid[] = "spbridge";

    if (ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "tls_ciphers selects no cipher");
        goto fail_ctx;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                    "cannot use the server certificate %s with key %s", cfg->tls_cert,
                    cfg->tls_key);
        spb_err_hint(err, "set [server] tls_cert and tls_key to a matching PEM pair "
                          "(scripts/dev-pki.sh makes one for development)");
        goto fail_ctx;
    }
    if (SSL_CTX_load_verify_locations(ctx, cfg->tls_ca, NULL) != 1) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "cannot read the client CA bundle %s",
                    cfg->tls_ca);
        spb_err_hint(err, "set [server] tls_ca to the CA that issues client certificates");
        goto fail_ctx;
    }
    if (cfg->tls_crl[0] != '\0') {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        FILE *f = fopen(cfg->tls_crl, "r");
        X509_CRL *crl = f ? PEM_read_X509_CRL(f, NULL, NULL, NULL) : NULL;
        if (f != NULL)
            fclose(f);
        if (crl == NULL || X509_STORE_add_crl(store, crl) != 1) {
            X509_CRL_free(crl);
            spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "cannot read the CRL %s",
                        cfg->tls_crl);
            goto fail_ctx;
        }
        X509_CRL_free(crl);
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    SSL_CTX_set_verify_depth(ctx, 4);
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    SSL_CTX_set_app_data(ctx, srv);
    return ctx;
fail_ctx:
    SSL_CTX_free(ctx);
fail:
    if (err->code == 0)
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "cannot set up TLS");
    return NULL;
}

static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    server *srv = arg;
    SSL *ssl;
    pthread_mutex_lock(&srv->ctx_lock);
    ssl = SSL_new(srv->ssl_ctx);
    pthread_mutex_unlock(&srv->ctx_lock);
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

/* --------------------------------------------------------------- identity */

static void fingerprint_of(X509 *cert, char *out, size_t size)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t used = 0;
    out[0] = '\0';
    if (X509_digest(cert, EVP_sha256(), md, &n) != 1)
        return;
    for (unsigned int i = 0; i < n && used + 4 < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%02X", i ? ":" : "", md[i]);
}

static int san_matches(X509 *cert, const char *want)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && !found; i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        ASN1_IA5STRING *s = NULL;
        if (gn->type == GEN_URI)
            s = gn->d.uniformResourceIdentifier;
        else if (gn->type == GEN_DNS)
            s = gn->d.dNSName;
        else if (gn->type == GEN_EMAIL)
            s = gn->d.rfc822Name;
        if (s != NULL && (size_t)ASN1_STRING_length(s) == strlen(want) &&
            memcmp(ASN1_STRING_get0_data(s), want, strlen(want)) == 0)
            found = 1;
    }
    GENERAL_NAMES_free(names);
    return found;
}

static void identify(server *srv, struct evhttp_request *req, identity *who)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    X509 *cert = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    char fp[128], cn[128] = "";

    memset(who, 0, sizeof(*who));
    if (cert == NULL)
        return;
    X509_NAME_oneline(X509_get_subject_name(cert), who->subject, sizeof(who->subject));
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    fingerprint_of(cert, fp, sizeof(fp));
    pthread_rwlock_rdlock(&srv->rt.lock);
    for (int i = 0; i < srv->rt.cfg->nclients && !who->known; i++) {
        const spb_client_cfg *c = &srv->rt.cfg->clients[i];
        int match = 0;
        if (c->fingerprint[0] != '\0')
            match = strcasecmp(c->fingerprint, fp) == 0;
        else if (c->san[0] != '\0')
            match = san_matches(cert, c->san);
        else if (strncmp(c->subject, "CN=", 3) == 0)
            match = strcmp(c->subject + 3, cn) == 0;
        else if (c->subject[0] != '\0')
            match = strcmp(c->subject, who->subject) == 0;
        if (match) {
            who->known = 1;
            snprintf(who->name, sizeof(who->name), "%s", c->name);
            who->role = c->role;
            snprintf(who->ods, sizeof(who->ods), "%s", c->ods);
            snprintf(who->region, sizeof(who->region), "%s", c->region);
        }
    }
    pthread_rwlock_unlock(&srv->rt.lock);
    X509_free(cert);
}

/* ------------------------------------------------------------- replies */

static char *outcome_text(int code, spb_issue issue, const char *msg, const char *hint)
{
    spb_err e;
    json_t *oo;
    char *text;
    spb_err_clear(&e);
    spb_err_set(&e, code, issue, "%s", msg);
    if (hint != NULL)
        spb_err_hint(&e, "%s", hint);
    oo = spb_fhir_operation_outcome(&e);
    text = json_dumps(oo, JSON_COMPACT);
    json_decref(oo);
    return text;
}

static void send_text(struct evhttp_request *req, int status, const char *type, const char *text)
{
    struct evbuffer *buf = evbuffer_new();
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", type);
    evhttp_add_header(out, "Cache-Control", "no-store");
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    if (text != NULL)
        evbuffer_add(buf, text, strlen(text));
    evhttp_send_reply(req, status, NULL, buf);
    evbuffer_free(buf);
}

static void send_outcome(struct evhttp_request *req, int status, spb_issue issue, const char *msg,
                         const char *hint)
{
    char *text = outcome_text(SPB_EINVALID, issue, msg, hint);
    send_text(req, status, "application/fhir+json", text);
    free(text);
}

/* -------------------------------------------------------------- job queue */

static void job_free(job *j)
{
    if (j == NULL)
        return;
    free(j->body);
    free(j->reply);
    free(j);
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    job *j = arg;
    (void)evcon;
    j->req = NULL; /* the client went away; the answer will be dropped */
    j->evcon = NULL;
}

static void enqueue(struct server *srv, struct job *j)
{
    pthread_mutex_lock(&srv->qlock);
    j->next = NULL;
    if (srv->todo_tail != NULL)
        srv->todo_tail->next = j;
    else
        srv->todo_head = j;
    srv->todo_tail = j;
    pthread_cond_signal(&srv->qcond);
    pthread_mutex_unlock(&srv->qlock);
}

/* An audit record from the loop thread, written by an intake thread. */
static void audit_later(server *srv, const char *actor, const char *step, const char *result,
                        const char *detail)
{
    job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->srv = srv;
    snprintf(j->path, sizeof(j->path), "/_internal/audit/%s/%s", step, result);
    snprintf(j->who.subject, sizeof(j->who.subject), "%s", actor ? actor : "spbridge");
    snprintf(j->content_type, sizeof(j->content_type), "%.120s", detail ? detail : "");
    srv->pending++;
    enqueue(srv, j);
}

/* Loop thread: sends one chunk of a streamed answer. Returns 1 when the job went back to the
 * intake threads for its next chunk, 0 when the answer is complete (or the client left). */
static int stream_chunk(server *srv, job *j)
{
    struct evbuffer *buf;
    if (j->req == NULL)
        return 0;
    if (!j->stream_started) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(j->req);
        evhttp_add_header(out, "Content-Type", j->reply_type);
        evhttp_add_header(out, "Cache-Control", "no-store");
        evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
        evhttp_send_reply_start(j->req, 200, "OK");
        j->stream_started = 1;
    }
    buf = evbuffer_new();
    if (buf != NULL && j->reply != NULL && j->reply[0] != '\0') {
        evbuffer_add(buf, j->reply, strlen(j->reply));
        evhttp_send_reply_chunk(j->req, buf);
    }
    evbuffer_free(buf);
    free(j->reply);
    j->reply = NULL;
    if (j->stream != 1) {
        evhttp_connection_set_closecb(j->evcon, NULL, NULL);
        evhttp_send_reply_end(j->req);
        j->req = NULL;
        return 0;
    }
    j->stream = 0;
    enqueue(srv, j);
    return 1;
}

/* Loop thread: send every finished job's answer. */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    server *srv = arg;
    job *list;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&srv->qlock);
    list = srv->done_head;
    srv->done_head = NULL;
    pthread_mutex_unlock(&srv->qlock);
    while (list != NULL) {
        job *j = list;
        list = j->next;
        if ((j->stream != 0 || j->stream_started) && stream_chunk(srv, j))
            continue; /* handed back for its next chunk */
        srv->pending--;
        if (j->req != NULL) {
            evhttp_connection_set_closecb(j->evcon, NULL, NULL);
            send_text(j->req, j->status, j->reply_type, j->reply);
        }
        job_free(j);
    }
}

/* ------------------------------------------------------------- handlers (threads) */

static int may_see_practice(const identity *who, const spb_config *cfg, const char *ods)
{
    const spb_practice_cfg *p;
    switch (who->role) {
    case SPB_ROLE_ADMIN:
        return 1;
    case SPB_ROLE_PRACTICE:
        return strcmp(who->ods, ods) == 0;
    case SPB_ROLE_AUDITOR:
        p = spb_config_practice(cfg, ods);
        return p != NULL && strcmp(p->region, who->region) == 0;
    default:
        return 0;
    }
}

static void set_json(job *j, int status, json_t *body, const char *type)
{
    j->status = status;
    /* durations in reports are doubles: print them as people write them, not %.17g */
    j->reply = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(10));
    j->reply_type = type;
    json_decref(body);
}

/* application/xml, text/xml or any application/...+xml (e.g. application/hl7-v3+xml),
 * case-insensitive, parameters such as charset allowed. */
static int is_xml_media_type(const char *ct)
{
    char type[128];
    size_t n = 0;
    while (*ct == ' ')
        ct++;
    while (ct[n] && ct[n] != ';' && ct[n] != ' ' && n + 1 < sizeof(type)) {
        type[n] = (char)((ct[n] >= 'A' && ct[n] <= 'Z') ? ct[n] + 32 : ct[n]);
        n++;
    }
    type[n] = '\0';
    if (strcmp(type, "application/xml") == 0 || strcmp(type, "text/xml") == 0)
        return 1;
    return strncmp(type, "application/", 12) == 0 && n > 4 && strcmp(type + n - 4, "+xml") == 0;
}

static void handle_post_events(server *srv, spb_store *store, job *j)
{
    spb_intake_meta meta;
    spb_intake_outcome out;
    const char *ct = j->content_type;

    if (j->who.role != SPB_ROLE_PRACTICE && j->who.role != SPB_ROLE_ADMIN) {
        spb_store_audit(store, j->who.name, NULL, NULL, "refused", "forbidden",
                        "only practices and administrators may post events", NULL);
        j->status = 403;
        j->reply =
            outcome_text(SPB_EAUTH, SPB_ISSUE_SECURITY, "this certificate may not post events",
                         "post with a practice's certificate");
        j->reply_type = "application/fhir+json";
        return;
    }
    if (!is_xml_media_type(ct)) {
        j->status = 415;
        j->reply = outcome_text(SPB_EINVALID, SPB_ISSUE_NOT_SUPPORTED, "events must be sent as XML",
                                "send Content-Type: application/xml (or text/xml, "
                                "application/hl7-v3+xml)");
        j->reply_type = "application/fhir+json";
        spb_store_audit(store, j->who.name, j->who.ods, NULL, "refused", "unsupported_media",
                        ct[0] ? ct : "(no content type)", NULL);
        return;
    }
    memset(&meta, 0, sizeof(meta));
    meta.identity = j->who.name;
    meta.identity_ods = j->who.ods;
    meta.channel = "https";
    meta.source_name = "POST /events";
    spb_intake_document(&srv->rt, store, j->body, j->body_len, &meta,
                        j->who.role == SPB_ROLE_ADMIN ? NULL : j->who.ods,
                        j->dialect[0] ? j->dialect : NULL, &out);
    set_json(j, out.http_status, out.body,
             out.http_status >= 400 ? "application/fhir+json" : "application/json");
}

static void handle_get_event(server *srv, spb_store *store, job *j, const char *id)
{
    json_t *status = NULL;
    char practice[16] = "";
    spb_err err;
    int allowed;

    spb_err_clear(&err);
    if (spb_store_event_status(store, id, &status, practice, &err) < 0) {
        j->status = err.code == SPB_ENOTFOUND ? 404 : 500;
        j->reply = outcome_text(err.code, SPB_ISSUE_NOT_FOUND, err.message,
                                "use the trackingId returned when the event was accepted");
        j->reply_type = "application/fhir+json";
        return;
    }
    pthread_rwlock_rdlock(&srv->rt.lock);
    allowed = may_see_practice(&j->who, srv->rt.cfg, practice);
    pthread_rwlock_unlock(&srv->rt.lock);
    if (!allowed) {
        json_decref(status);
        spb_store_audit(store, j->who.name, practice, NULL, "refused", "forbidden",
                        "status of another practice's event", NULL);
        /* 404, not 403: do not confirm that another practice's event exists */
        j->status = 404;
        j->reply = outcome_text(SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "no such event", NULL);
        j->reply_type = "application/fhir+json";
        return;
    }
    set_json(j, 200, status, "application/json");
}

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    int n;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        {
            char *grown = realloc(*buf, *cap * 2 + (size_t)n);
            if (grown == NULL)
                return;
            *buf = grown;
            *cap = *cap * 2 + (size_t)n;
        }
    }
}

static void handle_metrics(server *srv, spb_store *store, job *j)
{
    spb_store_counts c;
    spb_err err;
    spb_metrics *m = &srv->rt.metrics;
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    static const char *states[] = {"queued", "delivering", "retrying",
                                   "dead",   "delivered",  "recorded"};

    spb_err_clear(&err);
    if (buf == NULL)
        return;
    buf[0] = '\0';
    spb_store_counts_get(store, &c, &err);
    {
        long vals[] = {c.queued, c.delivering, c.retrying, c.dead, c.delivered, c.recorded};
        append(&buf, &len, &cap,
               "# HELP spbridge_outbox_rows Outbox rows by state.\n"
               "# TYPE spbridge_outbox_rows gauge\n");
        for (int i = 0; i < 6; i++)
            append(&buf, &len, &cap, "spbridge_outbox_rows{state=\"%s\"} %ld\n", states[i],
                   vals[i]);
        append(&buf, &len, &cap,
               "# HELP spbridge_queue_depth Rows waiting to be delivered (queued, retrying, "
               "delivering).\n# TYPE spbridge_queue_depth gauge\nspbridge_queue_depth %ld\n",
               c.queued + c.retrying + c.delivering);
    }
    append(&buf, &len, &cap,
           "# HELP spbridge_delivered_total Bundles delivered (all time).\n"
           "# TYPE spbridge_delivered_total counter\nspbridge_delivered_total %ld\n"
           "# HELP spbridge_delivery_failures_total Failed delivery attempts (all time).\n"
           "# TYPE spbridge_delivery_failures_total counter\n"
           "spbridge_delivery_failures_total %ld\n"
           "# HELP spbridge_delivery_retries_total Attempts scheduled for retry since start.\n"
           "# TYPE spbridge_delivery_retries_total counter\nspbridge_delivery_retries_total %ld\n"
           "# HELP spbridge_dead_letters Rows dead-lettered (all time).\n"
           "# TYPE spbridge_dead_letters gauge\nspbridge_dead_letters %ld\n"
           "# HELP spbridge_parked_inputs Refused inputs kept for replay.\n"
           "# TYPE spbridge_parked_inputs gauge\nspbridge_parked_inputs %ld\n"
           "# HELP spbridge_events_accepted_total Events accepted since start.\n"
           "# TYPE spbridge_events_accepted_total counter\nspbridge_events_accepted_total %ld\n"
           "# HELP spbridge_events_refused_total Documents refused since start.\n"
           "# TYPE spbridge_events_refused_total counter\nspbridge_events_refused_total %ld\n",
           c.delivered, c.failed_attempts, atomic_load(&m->retries), c.dead, c.parked,
           atomic_load(&m->accepted), atomic_load(&m->refused));
    append(&buf, &len, &cap,
           "# HELP spbridge_delivery_latency_seconds Time from acceptance to delivery.\n"
           "# TYPE spbridge_delivery_latency_seconds histogram\n");
    for (int i = 0; i < SPB_LATENCY_BUCKETS; i++)
        append(&buf, &len, &cap, "spbridge_delivery_latency_seconds_bucket{le=\"%g\"} %ld\n",
               spb_latency_bounds[i], atomic_load(&m->latency_le[i]));
    append(&buf, &len, &cap,
           "spbridge_delivery_latency_seconds_bucket{le=\"+Inf\"} %ld\n"
           "spbridge_delivery_latency_seconds_sum %.3f\n"
           "spbridge_delivery_latency_seconds_count %ld\n",
           atomic_load(&m->latency_count), (double)atomic_load(&m->latency_sum_ms) / 1000.0,
           atomic_load(&m->latency_count));
    append(&buf, &len, &cap,
           "# HELP spbridge_certificate_expiry_timestamp_seconds When each certificate "
           "expires.\n# TYPE spbridge_certificate_expiry_timestamp_seconds gauge\n"
           "spbridge_certificate_expiry_timestamp_seconds{certificate=\"server\"} %ld\n"
           "spbridge_certificate_expiry_timestamp_seconds{certificate=\"client\"} %ld\n",
           srv->server_cert_expiry, srv->client_cert_expiry);
    j->status = 200;
    j->reply = buf;
    j->reply_type = "text/plain; version=0.0.4";
}

/* Collects Task ids named by a notification: full resources, id-only entries (fullUrl or
 * request.url ending Task/<id>), and references inside a SubscriptionStatus. */
static void collect_task_ids(json_t *v, char ids[][128], int *n, int max)
{
    const char *key;
    json_t *val;
    size_t i;
    if (*n >= max || v == NULL)
        return;
    if (json_is_object(v)) {
        const char *type = json_string_value(json_object_get(v, "resourceType"));
        if (type != NULL && strcmp(type, "Task") == 0 && json_object_get(v, "id") != NULL) {
            snprintf(ids[(*n)++], 128, "%s", json_string_value(json_object_get(v, "id")));
            return;
        }
        json_object_foreach(v, key, val)
        {
            const char *s = json_string_value(val);
            if (s != NULL && (strcmp(key, "fullUrl") == 0 || strcmp(key, "reference") == 0 ||
                              strcmp(key, "url") == 0)) {
                const char *t = strstr(s, "Task/");
                if (t != NULL && (t == s || t[-1] == '/') && *n < max) {
                    char id[128];
                    size_t k = 0;
                    for (t += 5; *t && *t != '/' && *t != '?' && k + 1 < sizeof(id); t++)
                        id[k++] = *t;
                    id[k] = '\0';
                    if (k > 0)
                        snprintf(ids[(*n)++], 128, "%s", id);
                }
            } else {
                collect_task_ids(val, ids, n, max);
            }
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, val) collect_task_ids(val, ids, n, max);
    }
}

static void handle_notify(server *srv, spb_store *store, job *j)
{
    char service_id[64] = "";
    char ids[64][128];
    int n = 0;
    json_t *doc;
    json_error_t jerr;

    if (j->who.role != SPB_ROLE_SERVICE) {
        spb_store_audit(store, j->who.name, NULL, NULL, "refused", "forbidden",
                        "notifications are accepted from services only", NULL);
        j->status = 403;
        j->reply = outcome_text(SPB_EAUTH, SPB_ISSUE_SECURITY,
                                "only a social prescribing service may send notifications", NULL);
        return;
    }
    pthread_rwlock_rdlock(&srv->rt.lock);
    for (int i = 0; i < srv->rt.cfg->nservices; i++) {
        if (j->who.ods[0] != '\0' && strcmp(srv->rt.cfg->services[i].ods, j->who.ods) == 0)
            snprintf(service_id, sizeof(service_id), "%s", srv->rt.cfg->services[i].id);
    }
    pthread_rwlock_unlock(&srv->rt.lock);
    if (service_id[0] == '\0') {
        j->status = 403;
        j->reply = outcome_text(SPB_EAUTH, SPB_ISSUE_SECURITY,
                                "this service certificate matches no configured service",
                                "give the [client.NAME] the ods of its [service.ID]");
        return;
    }
    doc = j->body ? json_loadb(j->body, j->body_len, 0, &jerr) : NULL;
    if (doc == NULL) {
        j->status = 400;
        j->reply = outcome_text(SPB_EINVALID, SPB_ISSUE_STRUCTURE, "the notification is not JSON",
                                "send a FHIR subscription notification Bundle");
        return;
    }
    collect_task_ids(doc, ids, &n, 64);
    json_decref(doc);
    for (int i = 0; i < n; i++) {
        spb_err err;
        spb_err_clear(&err);
        if (spb_store_notify_add(store, service_id, ids[i], &err) < 0) {
            j->status = 503;
            j->reply = outcome_text(SPB_ERETRY, SPB_ISSUE_EXCEPTION,
                                    "the notification could not be stored", "send it again");
            return;
        }
    }
    spb_log(SPB_LOG_INFO, "notified", "service", service_id, "tasks", n > 0 ? ids[0] : NULL,
            (const char *)NULL);
    spb_follower_wake(srv->follower);
    j->status = 200;
    j->reply = strdup("{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"severity\":"
                      "\"information\",\"code\":\"informational\",\"diagnostics\":"
                      "\"notification accepted\"}]}");
}

/* ------------------------------------------------------------- audit, report, dashboard */

/* What the viewer may read of the audit trail: 1 for admin, auditor and practice identities
 * (audit.h says which records each sees), 0 for anyone else. */
static int audit_scope_of(const identity *who, spb_audit_scope *scope)
{
    memset(scope, 0, sizeof(*scope));
    scope->role = who->role;
    snprintf(scope->ods, sizeof(scope->ods), "%s", who->ods);
    snprintf(scope->region, sizeof(scope->region), "%s", who->region);
    return who->role == SPB_ROLE_ADMIN || who->role == SPB_ROLE_AUDITOR ||
           who->role == SPB_ROLE_PRACTICE;
}

/* 403, audited: the refusal is itself an audit record (on the practice asked for, if any). */
static void audit_forbidden(spb_store *store, job *j, const char *practice, const char *why)
{
    spb_store_audit(store, j->who.name, practice, NULL, "refused", "forbidden", why, NULL);
    j->status = 403;
    j->reply = outcome_text(SPB_EAUTH, SPB_ISSUE_SECURITY, why,
                            "auditors read their own region, practices their own records, "
                            "administrators everything (docs/audit.md)");
    j->reply_type = "application/fhir+json";
}

static void bad_request(job *j, int status, const char *msg, const char *hint)
{
    j->status = status;
    j->reply = outcome_text(status == 404 ? SPB_ENOTFOUND : SPB_EINVALID,
                            status == 404 ? SPB_ISSUE_NOT_FOUND : SPB_ISSUE_VALUE, msg, hint);
    j->reply_type = "application/fhir+json";
}

/* The search parameters shared by /audit/AuditEvent, /audit/$export and /audit/report. */
typedef struct audit_params {
    char region[32], practice[16], step[64], referral[64], format[8];
    int64_t since, until, cursor;
    int count;
} audit_params;

static int set_param(char *out, size_t size, const char *v)
{
    if (strlen(v) >= size || *v == '\0')
        return -1;
    snprintf(out, size, "%s", v);
    return 0;
}

/* A FHIR date parameter: [eq|ge|gt|le|lt]TIME, where a date alone is the whole day. */
static int date_param(audit_params *ap, const char *v)
{
    char prefix[3] = "eq";
    int64_t first, last;
    if (strlen(v) > 2 && v[0] >= 'a' && v[0] <= 'z') {
        memcpy(prefix, v, 2);
        v += 2;
    }
    if (spb_audit_parse_time(v, 0, &first) < 0 || spb_audit_parse_time(v, 1, &last) < 0)
        return -1;
    if (strcmp(prefix, "ge") == 0)
        ap->since = first;
    else if (strcmp(prefix, "gt") == 0)
        ap->since = last + 1;
    else if (strcmp(prefix, "le") == 0)
        ap->until = last;
    else if (strcmp(prefix, "lt") == 0)
        ap->until = first - 1;
    else if (strcmp(prefix, "eq") == 0) {
        ap->since = first;
        ap->until = last;
    } else
        return -1;
    return 0;
}

/* Parses the query string; on a bad or unknown parameter answers 400 and returns -1. `what`
 * names the endpoint: 's' search, 'e' export, 'r' report. */
static int audit_params_parse(job *j, int what, audit_params *ap)
{
    struct evkeyvalq q;
    struct evkeyval *kv;
    int rc = 0;
    char msg[160] = "";

    memset(ap, 0, sizeof(*ap));
    ap->count = 100;
    snprintf(ap->format, sizeof(ap->format), "json");
    if (j->query_too_long) {
        bad_request(j, 414, "the query string is too long", NULL);
        return -1;
    }
    if (evhttp_parse_query_str(j->query, &q) != 0) {
        bad_request(j, 400, "the query string cannot be read", NULL);
        return -1;
    }
    for (kv = q.tqh_first; kv != NULL; kv = kv->next.tqe_next) {
        const char *k = kv->key, *v = kv->value;
        long n;
        char *end = NULL;
        if (strcmp(k, "practice") == 0)
            rc = set_param(ap->practice, sizeof(ap->practice), v);
        else if (strcmp(k, "region") == 0)
            rc = set_param(ap->region, sizeof(ap->region), v);
        else if (what != 'r' && (strcmp(k, "step") == 0 || strcmp(k, "subtype") == 0))
            rc = set_param(ap->step, sizeof(ap->step), v);
        else if (what != 'r' && strcmp(k, "referral") == 0)
            rc = set_param(ap->referral, sizeof(ap->referral), v);
        else if (strcmp(k, "since") == 0 || (what == 'e' && strcmp(k, "_since") == 0))
            rc = spb_audit_parse_time(v, 0, &ap->since);
        else if (strcmp(k, "until") == 0)
            rc = spb_audit_parse_time(v, 1, &ap->until);
        else if (what != 'r' && strcmp(k, "date") == 0)
            rc = date_param(ap, v);
        else if (what == 's' && strcmp(k, "_count") == 0) {
            n = strtol(v, &end, 10);
            rc = (end == v || *end != '\0' || n < 1 || n > 1000) ? -1 : 0;
            ap->count = (int)n;
        } else if (what == 's' && strcmp(k, "_cursor") == 0) {
            n = strtol(v, &end, 10);
            rc = (end == v || *end != '\0' || n < 0) ? -1 : 0;
            ap->cursor = n;
        } else if (what == 'r' && (strcmp(k, "format") == 0 || strcmp(k, "_format") == 0)) {
            rc = (strcmp(v, "json") == 0 || strcmp(v, "csv") == 0)
                     ? set_param(ap->format, sizeof(ap->format), v)
                     : -1;
        } else if (strcmp(k, "_format") == 0) {
            rc = 0; /* the answer is FHIR JSON whatever is asked */
        } else {
            snprintf(msg, sizeof(msg), "unknown parameter '%.40s'", k);
            rc = -1;
        }
        if (rc < 0) {
            if (msg[0] == '\0')
                snprintf(msg, sizeof(msg), "bad value for parameter '%.40s'", k);
            break;
        }
    }
    evhttp_clear_headers(&q);
    if (rc < 0) {
        bad_request(j, 400, msg,
                    what == 'r' ? "parameters: practice, region, since, until, format=json|csv"
                                : "parameters: practice, region, step, referral, since, until, "
                                  "date=geT/leT, _count, _cursor");
        return -1;
    }
    return 0;
}

/* Whether the viewer may ask for these filters; 0 after answering 403 (audited). */
static int audit_params_allowed(server *srv, spb_store *store, job *j, const audit_params *ap)
{
    int ok = 1;
    if (j->who.role == SPB_ROLE_AUDITOR) {
        if (ap->region[0] != '\0' && strcmp(ap->region, j->who.region) != 0)
            ok = 0;
        if (ok && ap->practice[0] != '\0') {
            pthread_rwlock_rdlock(&srv->rt.lock);
            ok = may_see_practice(&j->who, srv->rt.cfg, ap->practice);
            pthread_rwlock_unlock(&srv->rt.lock);
        }
    } else if (j->who.role == SPB_ROLE_PRACTICE) {
        ok = ap->practice[0] == '\0' || strcmp(ap->practice, j->who.ods) == 0;
    }
    if (!ok)
        audit_forbidden(store, j, ap->practice[0] ? ap->practice : NULL,
                        "audit records of another region or practice");
    return ok;
}

static void audit_filter_of(const audit_params *ap, spb_audit_filter *f)
{
    memset(f, 0, sizeof(*f));
    f->region = ap->region;
    f->practice = ap->practice;
    f->step = ap->step;
    f->referral = ap->referral;
    f->since_ms = ap->since;
    f->until_ms = ap->until;
    f->after_id = ap->cursor;
    f->limit = ap->count;
}

static void audit_read(spb_store *store, job *j, const char *what, long n)
{
    char detail[128];
    snprintf(detail, sizeof(detail), "%s: %ld", what, n);
    spb_store_audit(store, j->who.name, NULL, NULL, "audit_read", "ok", detail, NULL);
}

/* The query string without its _cursor, for Bundle links. */
static void query_without_cursor(const char *query, char *out, size_t size)
{
    size_t used = 0;
    const char *p = query;
    out[0] = '\0';
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > 0 && strncmp(p, "_cursor=", 8) != 0 && used + n + 2 < size) {
            if (used > 0)
                out[used++] = '&';
            memcpy(out + used, p, n);
            used += n;
            out[used] = '\0';
        }
        p += n;
        if (*p == '&')
            p++;
    }
}

static void handle_audit_events(spb_store *store, job *j, const char *id_part)
{
    spb_audit_scope scope;
    spb_audit_filter f;
    audit_params ap;
    json_t *rows = NULL, *bundle, *entries, *links, *row;
    int64_t total = 0;
    int more = 0;
    size_t i;
    char base[300], rest[1100], url[1500];
    spb_err err;

    spb_err_clear(&err);
    if (!audit_scope_of(&j->who, &scope)) {
        audit_forbidden(store, j, NULL, "this certificate may not read audit records");
        return;
    }
    if (audit_params_parse(j, 's', &ap) < 0 || !audit_params_allowed(j->srv, store, j, &ap))
        return;
    audit_filter_of(&ap, &f);
    if (id_part != NULL) {
        char *end = NULL;
        long long id = strtoll(id_part, &end, 10);
        if (end == id_part || *end != '\0' || id <= 0) {
            bad_request(j, 404, "no such AuditEvent", NULL);
            return;
        }
        f.id = id;
        f.after_id = 0;
        f.limit = 1;
    }
    if (spb_audit_query(store, &scope, &f, &rows, &more, &err) < 0 ||
        (id_part == NULL && spb_audit_count(store, &scope, &f, &total, &err) < 0)) {
        j->status = 503;
        j->reply = outcome_text(SPB_ERETRY, SPB_ISSUE_EXCEPTION, err.message, "try again later");
        return;
    }
    if (id_part != NULL) {
        if (json_array_size(rows) == 0) {
            /* 404 whether it does not exist or is another region's: existence is not confirmed */
            json_decref(rows);
            bad_request(j, 404, "no such AuditEvent", NULL);
            return;
        }
        audit_read(store, j, "AuditEvent read", 1);
        set_json(j, 200, spb_audit_to_fhir(json_array_get(rows, 0)), "application/fhir+json");
        json_decref(rows);
        return;
    }
    snprintf(base, sizeof(base), "%s%s", j->host[0] ? "https://" : "", j->host);
    query_without_cursor(j->query, rest, sizeof(rest));
    entries = json_array();
    json_array_foreach(rows, i, row)
    {
        snprintf(url, sizeof(url), "%s/audit/AuditEvent/%lld", base,
                 (long long)json_integer_value(json_object_get(row, "id")));
        json_array_append_new(entries,
                              json_pack("{s:s, s:o, s:{s:s}}", "fullUrl", url, "resource",
                                        spb_audit_to_fhir(row), "search", "mode", "match"));
    }
    links = json_array();
    snprintf(url, sizeof(url), "%s/audit/AuditEvent%s%s", base, j->query[0] ? "?" : "", j->query);
    json_array_append_new(links, json_pack("{s:s, s:s}", "relation", "self", "url", url));
    if (more) {
        snprintf(url, sizeof(url), "%s/audit/AuditEvent?%s%s_cursor=%lld", base, rest,
                 rest[0] ? "&" : "",
                 (long long)json_integer_value(
                     json_object_get(json_array_get(rows, json_array_size(rows) - 1), "id")));
        json_array_append_new(links, json_pack("{s:s, s:s}", "relation", "next", "url", url));
    }
    bundle = json_pack("{s:s, s:s, s:I, s:o, s:o}", "resourceType", "Bundle", "type", "searchset",
                       "total", (json_int_t)total, "link", links, "entry", entries);
    audit_read(store, j, "AuditEvent search", (long)json_array_size(rows));
    json_decref(rows);
    set_json(j, 200, bundle, "application/fhir+json");
}

/* GET /audit/$export: NDJSON, one AuditEvent a line, streamed a page at a time. Each call
 * fills the next chunk; the loop sends it and hands the job back (job.stream). */
static void handle_audit_export(spb_store *store, job *j)
{
    spb_audit_scope scope;
    spb_audit_filter f;
    audit_params ap;
    json_t *rows = NULL, *row;
    int more = 0;
    size_t i, len = 0, cap = 65536;
    char *buf;
    spb_err err;

    spb_err_clear(&err);
    if (!audit_scope_of(&j->who, &scope)) {
        audit_forbidden(store, j, NULL, "this certificate may not read audit records");
        return;
    }
    if (audit_params_parse(j, 'e', &ap) < 0)
        return;
    if (!j->stream_started && !audit_params_allowed(j->srv, store, j, &ap))
        return;
    audit_filter_of(&ap, &f);
    f.after_id = j->cursor;
    f.limit = 500;
    if (spb_audit_query(store, &scope, &f, &rows, &more, &err) < 0) {
        if (j->stream_started) {
            j->stream = 2; /* cut short: the client sees the answer end early */
            j->status = 200;
            j->reply = strdup("");
            return;
        }
        j->status = 503;
        j->reply = outcome_text(SPB_ERETRY, SPB_ISSUE_EXCEPTION, err.message, "try again later");
        return;
    }
    buf = malloc(cap);
    if (buf == NULL) {
        json_decref(rows);
        return;
    }
    buf[0] = '\0';
    json_array_foreach(rows, i, row)
    {
        json_t *ev = spb_audit_to_fhir(row);
        char *line = json_dumps(ev, JSON_COMPACT);
        size_t n = line ? strlen(line) : 0;
        json_decref(ev);
        if (line == NULL)
            continue;
        if (len + n + 2 > cap) {
            char *grown = realloc(buf, (len + n + 2) * 2);
            if (grown == NULL) {
                free(line);
                break;
            }
            buf = grown;
            cap = (len + n + 2) * 2;
        }
        memcpy(buf + len, line, n);
        len += n;
        buf[len++] = '\n';
        buf[len] = '\0';
        free(line);
        j->cursor = json_integer_value(json_object_get(row, "id"));
    }
    if (!j->stream_started)
        audit_read(store, j, "export", 0);
    json_decref(rows);
    j->status = 200;
    j->reply = buf;
    j->reply_type = "application/fhir+ndjson";
    j->stream = more ? 1 : 2;
}

static void handle_audit_report(spb_store *store, job *j)
{
    spb_audit_scope scope;
    spb_report_filter f;
    audit_params ap;
    json_t *report = NULL;
    spb_err err;

    spb_err_clear(&err);
    if (!audit_scope_of(&j->who, &scope)) {
        audit_forbidden(store, j, NULL, "this certificate may not read reports");
        return;
    }
    if (audit_params_parse(j, 'r', &ap) < 0 || !audit_params_allowed(j->srv, store, j, &ap))
        return;
    memset(&f, 0, sizeof(f));
    f.region = ap.region;
    f.practice = ap.practice;
    f.since_ms = ap.since;
    f.until_ms = ap.until;
    if (spb_report_build(store, &scope, &f, &report, &err) < 0) {
        j->status = err.code == SPB_ETOOBIG ? 413 : 503;
        j->reply = outcome_text(err.code, SPB_ISSUE_EXCEPTION, err.message,
                                "narrow the report with since, until or practice");
        return;
    }
    audit_read(store, j, "report", (long)json_array_size(json_object_get(report, "rows")));
    if (strcmp(ap.format, "csv") == 0) {
        j->status = 200;
        j->reply = spb_report_csv(report);
        j->reply_type = "text/csv; charset=utf-8";
        json_decref(report);
        return;
    }
    set_json(j, 200, report, "application/json");
}

static void handle_dashboard(spb_store *store, job *j)
{
    spb_audit_scope scope;
    spb_report_filter f;
    spb_audit_filter af;
    spb_audit_status status;
    spb_dashboard_view view;
    json_t *report = NULL, *recent = NULL;
    char chain[256] = "", when[32];
    int more = 0;
    spb_err err;

    spb_err_clear(&err);
    if (!audit_scope_of(&j->who, &scope)) {
        audit_forbidden(store, j, NULL, "this certificate may not see the dashboard");
        return;
    }
    memset(&f, 0, sizeof(f));
    memset(&af, 0, sizeof(af));
    af.limit = 20;
    af.newest_first = 1;
    if (spb_report_build(store, &scope, &f, &report, &err) < 0 ||
        spb_audit_query(store, &scope, &af, &recent, &more, &err) < 0 ||
        spb_audit_status_get(store, &status, &err) < 0) {
        json_decref(report);
        json_decref(recent);
        j->status = 503;
        j->reply = outcome_text(SPB_ERETRY, SPB_ISSUE_EXCEPTION, err.message, "try again later");
        return;
    }
    spb_audit_format_time(status.last_checkpoint_at, when);
    if (status.checkpoints == 0)
        snprintf(chain, sizeof(chain),
                 "Audit records are chained by SHA-256; no checkpoint "
                 "has been signed yet.");
    else if (scope.role == SPB_ROLE_ADMIN)
        snprintf(chain, sizeof(chain),
                 "Audit chain: %lld records; the newest signed checkpoint (%s) covers up to "
                 "record %lld. Check it with spbridge audit verify.",
                 (long long)status.records, when, (long long)status.covered_to);
    else
        snprintf(chain, sizeof(chain),
                 "Audit records are chained by SHA-256; the newest signed checkpoint is from %s.",
                 when);
    memset(&view, 0, sizeof(view));
    view.viewer = j->who.name;
    view.scope = &scope;
    view.report = report;
    view.recent = recent;
    view.chain = chain;
    audit_read(store, j, "dashboard", (long)json_array_size(json_object_get(report, "rows")));
    j->status = 200;
    j->reply = spb_dashboard_html(&view);
    j->reply_type = "text/html; charset=utf-8";
    json_decref(report);
    json_decref(recent);
}

static void handle_dashboard_css(job *j)
{
    size_t len;
    const unsigned char *css = spb_dashboard_css(&len);
    j->reply = malloc(len + 1);
    if (j->reply == NULL)
        return;
    memcpy(j->reply, css, len);
    j->reply[len] = '\0';
    j->status = 200;
    j->reply_type = "text/css; charset=utf-8";
}

/* GET /audit/...: the FHIR search, one AuditEvent, the export or the report. */
static void handle_audit(spb_store *store, job *j, const char *rest)
{
    if (strcmp(rest, "AuditEvent") == 0)
        handle_audit_events(store, j, NULL);
    else if (strncmp(rest, "AuditEvent/", 11) == 0)
        handle_audit_events(store, j, rest + 11);
    else if (strcmp(rest, "$export") == 0 || strcmp(rest, "%24export") == 0)
        handle_audit_export(store, j);
    else if (strcmp(rest, "report") == 0)
        handle_audit_report(store, j);
    else
        bad_request(j, 404, "no such audit endpoint",
                    "GET /audit/AuditEvent, /audit/$export, /audit/report");
}

/* Intake thread, every second (the loop's timer): a signed checkpoint when due. */
static void audit_tick(server *srv, spb_store *store, job *j)
{
    spb_audit_settings as;
    spb_err err;
    spb_err_clear(&err);
    pthread_rwlock_rdlock(&srv->rt.lock);
    spb_audit_settings_of(srv->rt.cfg, &as);
    pthread_rwlock_unlock(&srv->rt.lock);
    if (spb_audit_checkpoint_due(store, &as, "periodic", spb_now_ms(), &err) < 0 &&
        spb_now_ms() - srv->audit_warned_at > 60000) {
        srv->audit_warned_at = spb_now_ms();
        spb_log_err("audit_checkpoint_failed", &err);
    }
    atomic_store(&srv->audit_tick_pending, 0);
    j->status = 0;
    j->reply = strdup("");
}

/* Intake thread, after start and each reload: the practice -> region table for audit
 * records, copied out of the configuration first so no lock is held while writing. */
static void audit_regions(server *srv, spb_store *store, job *j)
{
    spb_audit_region *regions = calloc(SPB_CONFIG_MAX_PRACTICES, sizeof(*regions));
    int n;
    spb_err err;
    spb_err_clear(&err);
    j->status = 0;
    j->reply = strdup("");
    if (regions == NULL)
        return;
    pthread_rwlock_rdlock(&srv->rt.lock);
    n = spb_audit_regions_of(srv->rt.cfg, regions, SPB_CONFIG_MAX_PRACTICES);
    pthread_rwlock_unlock(&srv->rt.lock);
    if (spb_audit_sync_regions(store, regions, n, &err) < 0)
        spb_log_err("audit_regions_failed", &err);
    free(regions);
}

/* Loop thread: an internal job with no client (audit ticks, region updates). */
static void internal_job(server *srv, const char *path)
{
    job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return;
    j->srv = srv;
    snprintf(j->path, sizeof(j->path), "%s", path);
    srv->pending++;
    enqueue(srv, j);
}

static void on_audit_timer(evutil_socket_t fd, short what, void *arg)
{
    server *srv = arg;
    (void)fd;
    (void)what;
    if (srv->draining || atomic_load(&srv->audit_tick_pending))
        return;
    atomic_store(&srv->audit_tick_pending, 1);
    internal_job(srv, "/_internal/audit-checkpoint");
}

/* At start, before any thread: the signing key must work (a bad [audit] setting stops serve
 * before a socket opens) and the practice -> region table follows the configuration. */
static int audit_start(const spb_config *cfg, spb_store *store, spb_err *err)
{
    spb_audit_region *regions = calloc(SPB_CONFIG_MAX_PRACTICES, sizeof(*regions));
    spb_audit_signer *sg = NULL;
    int rc;

    if (regions == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    rc = spb_audit_signer_from_config(&sg, cfg, err);
    spb_audit_signer_free(sg);
    if (rc == 0)
        rc = spb_audit_sync_regions(
            store, regions, spb_audit_regions_of(cfg, regions, SPB_CONFIG_MAX_PRACTICES), err);
    free(regions);
    return rc;
}

/* After every thread has stopped: sign a last checkpoint over what this run wrote, so that
 * records cut from the end while the service is down are found by audit verify. */
static void audit_final_checkpoint(server *srv)
{
    spb_audit_settings as;
    spb_store *store = NULL;
    spb_err err;

    spb_err_clear(&err);
    spb_audit_settings_of(srv->rt.cfg, &as);
    as.checkpoint_every = 1;
    if (spb_store_open(&store, srv->rt.cfg->store_path, &err) < 0 ||
        spb_audit_checkpoint_due(store, &as, "stop", spb_now_ms(), &err) < 0)
        spb_log_err("audit_checkpoint_failed", &err);
    spb_store_close(store);
}

static int load_all(const char *path, spb_config **cfg_out, spb_mapping_set **maps_out,
                    spb_err *err);

/* Loads configuration, mappings and certificates; a set that fails is refused and the old
 * one stays. Runs on an intake thread (see on_hup). */
static void do_reload(server *srv, spb_store *store, job *j)
{
    spb_config *cfg = NULL;
    spb_mapping_set *maps = NULL;
    SSL_CTX *ctx = NULL, *old;
    spb_err err;

    spb_err_clear(&err);
    if (load_all(srv->opts->config_path, &cfg, &maps, &err) == 0)
        ctx = make_ssl_ctx(srv, cfg, &err);
    if (ctx == NULL) {
        spb_log_err("reload_failed", &err);
        spb_log(SPB_LOG_WARN, "reload_refused", "reason",
                "the previous configuration and mappings stay in force", (const char *)NULL);
        spb_store_audit(store, "spbridge", NULL, NULL, "reload", "refused", err.message, NULL);
        free(cfg);
        spb_mapping_set_free(maps);
        j->status = 0;
        j->reply = strdup("");
        return;
    }
    {
        spb_log_level lvl;
        if (spb_log_parse_level(cfg->log_level, &lvl) == 0)
            spb_log_set_level(lvl);
    }
    spb_store_audit(store, "spbridge", NULL, NULL, "reload", "ok", spb_mapping_set_version(maps),
                    NULL);
    /* existing connections keep their SSL (and its reference to the old context) */
    pthread_mutex_lock(&srv->ctx_lock);
    old = srv->ssl_ctx;
    srv->ssl_ctx = ctx;
    pthread_mutex_unlock(&srv->ctx_lock);
    SSL_CTX_free(old);
    srv->server_cert_expiry = cert_expiry_file(cfg->tls_cert);
    srv->client_cert_expiry = cert_expiry_file(cfg->client_cert);
    spb_log(SPB_LOG_INFO, "reloaded", "mappings", spb_mapping_set_version(maps),
            (const char *)NULL);
    spb_runtime_swap(&srv->rt, cfg, maps);
    audit_regions(srv, store, j); /* practice -> region table follows the configuration */
    spb_runtime_wake(&srv->rt);
}

static void process(server *srv, spb_store *store, job *j)
{
    const char *p = j->path;

    j->reply_type = "application/fhir+json";
    if (strncmp(p, "/_internal/audit/", 17) == 0) {
        char step[64] = "", *result;
        snprintf(step, sizeof(step), "%s", p + 17);
        result = strchr(step, '/');
        if (result != NULL)
            *result++ = '\0';
        spb_store_audit(store, j->who.subject, NULL, NULL, step, result ? result : "ok",
                        j->content_type, NULL);
        j->status = 0;
        j->reply = strdup("");
        return;
    }
    if (strcmp(p, "/_internal/certificate-refused") == 0) {
        spb_store_audit(store, j->who.subject, NULL, NULL, "certificate_refused", "refused",
                        j->dialect, NULL);
        j->status = 0;
        j->reply = strdup("");
        return;
    }
    if (strcmp(p, "/metadata") == 0 && j->method == EVHTTP_REQ_GET) {
        /* spbridge's CapabilityStatement, as shipped (docs/conformance.md) */
        json_error_t jerr;
        json_t *cs =
            json_load_file(SPB_CONFORMANCE_DIR "/capabilitystatement-spbridge.json", 0, &jerr);
        if (cs == NULL) {
            j->status = 500;
            j->reply = outcome_text(SPB_ECONFIG, SPB_ISSUE_EXCEPTION,
                                    "the CapabilityStatement cannot be read", NULL);
            return;
        }
        set_json(j, 200, cs, "application/fhir+json");
        return;
    }
    if (strcmp(p, "/healthz") == 0 && j->method == EVHTTP_REQ_GET) {
        spb_store_counts c;
        spb_err err;
        spb_err_clear(&err);
        if (spb_store_counts_get(store, &c, &err) < 0) {
            j->status = 503;
            j->reply = strdup("{\"status\":\"unavailable\",\"store\":\"error\"}");
        } else {
            char text[160];
            snprintf(text, sizeof(text), "{\"status\":\"ok\",\"queueDepth\":%ld,\"dead\":%ld}",
                     c.queued + c.retrying + c.delivering, c.dead);
            j->status = 200;
            j->reply = strdup(text);
        }
        j->reply_type = "application/json";
        return;
    }
    if (strcmp(p, "/metrics") == 0 && j->method == EVHTTP_REQ_GET) {
        if (j->who.role != SPB_ROLE_ADMIN && j->who.role != SPB_ROLE_AUDITOR) {
            j->status = 403;
            j->reply = outcome_text(SPB_EAUTH, SPB_ISSUE_SECURITY,
                                    "metrics are for administrators and auditors", NULL);
            return;
        }
        handle_metrics(srv, store, j);
        return;
    }
    if (strcmp(p, "/events") == 0) {
        if (j->method != EVHTTP_REQ_POST) {
            j->status = 405;
            j->reply = outcome_text(SPB_EINVALID, SPB_ISSUE_NOT_SUPPORTED,
                                    "use POST /events to send events", NULL);
            return;
        }
        handle_post_events(srv, store, j);
        return;
    }
    if (strcmp(p, "/_internal/audit-checkpoint") == 0) {
        audit_tick(srv, store, j);
        return;
    }
    if (strcmp(p, "/_internal/reload") == 0) {
        do_reload(srv, store, j);
        return;
    }
    if (strcmp(p, "/_internal/audit-regions") == 0) {
        audit_regions(srv, store, j);
        return;
    }
    if (strncmp(p, "/audit/", 7) == 0 && j->method == EVHTTP_REQ_GET) {
        handle_audit(store, j, p + 7);
        return;
    }
    if ((strcmp(p, "/dashboard") == 0 || strcmp(p, "/dashboard/") == 0) &&
        j->method == EVHTTP_REQ_GET) {
        handle_dashboard(store, j);
        return;
    }
    if (strcmp(p, "/dashboard/nhsuk.css") == 0 && j->method == EVHTTP_REQ_GET) {
        handle_dashboard_css(j);
        return;
    }
    if (strcmp(p, "/fhir/notify") == 0 && j->method == EVHTTP_REQ_POST) {
        handle_notify(srv, store, j);
        return;
    }
    if (strncmp(p, "/events/", 8) == 0 && j->method == EVHTTP_REQ_GET) {
        handle_get_event(srv, store, j, p + 8);
        return;
    }
    j->status = 404;
    j->reply = outcome_text(SPB_ENOTFOUND, SPB_ISSUE_NOT_FOUND, "no such endpoint",
                            "endpoints: POST /events, GET /events/{id}, POST /fhir/notify, "
                            "GET /metadata, GET /healthz, GET /metrics, GET /audit/AuditEvent, "
                            "GET /audit/$export, GET /audit/report, GET /dashboard");
}

static void *intake_main(void *arg)
{
    server *srv = arg;
    spb_store *store = spb_runtime_open_store(&srv->rt, "intake_store_failed");

    for (;;) {
        job *j;
        pthread_mutex_lock(&srv->qlock);
        while (srv->todo_head == NULL && !atomic_load(&srv->intake_stop))
            pthread_cond_wait(&srv->qcond, &srv->qlock);
        j = srv->todo_head;
        if (j == NULL) {
            pthread_mutex_unlock(&srv->qlock);
            break;
        }
        srv->todo_head = j->next;
        if (srv->todo_head == NULL)
            srv->todo_tail = NULL;
        pthread_mutex_unlock(&srv->qlock);
        if (store == NULL) {
            j->status = 503;
            j->reply = outcome_text(SPB_ERETRY, SPB_ISSUE_EXCEPTION, "the store is unavailable",
                                    "try again later");
            j->reply_type = "application/fhir+json";
        } else {
            process(srv, store, j);
        }
        if (j->reply == NULL) {
            j->status = 500;
            j->reply = strdup("{}");
            j->reply_type = "application/json";
        }
        pthread_mutex_lock(&srv->qlock);
        j->next = srv->done_head;
        srv->done_head = j;
        pthread_mutex_unlock(&srv->qlock);
        event_active(srv->done_ev, EV_READ, 0);
    }
    spb_store_close(store);
    return NULL;
}

/* ------------------------------------------------------------- request entry (loop) */

static void on_request(struct evhttp_request *req, void *arg)
{
    server *srv = arg;
    identity who;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    struct evkeyvalq *hdrs = evhttp_request_get_input_headers(req);
    const char *ct = evhttp_find_header(hdrs, "Content-Type");
    const char *dialect = evhttp_find_header(hdrs, "X-Spbridge-Dialect");
    long max_body;
    job *j;

    if (srv->draining) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        send_outcome(req, 503, SPB_ISSUE_PROCESSING, "spbridge is shutting down",
                     "send again in a moment");
        return;
    }
    identify(srv, req, &who);
    if (!who.known) {
        spb_log(SPB_LOG_WARN, "identity_refused", "subject", who.subject, "reason",
                "the certificate is valid but matches no [client.*] identity", (const char *)NULL);
        atomic_fetch_add(&srv->rt.metrics.refused, 1);
        {
            job *aj = calloc(1, sizeof(*aj));
            if (aj != NULL) {
                aj->srv = srv;
                snprintf(aj->path, sizeof(aj->path), "%s", "/_internal/certificate-refused");
                snprintf(aj->who.subject, sizeof(aj->who.subject), "%s", who.subject);
                snprintf(aj->dialect, sizeof(aj->dialect), "%s", "no matching identity");
                srv->pending++;
                enqueue(srv, aj);
            }
        }
        send_outcome(req, 403, SPB_ISSUE_SECURITY,
                     "this client certificate is not registered with spbridge",
                     "ask the operator to add a [client.NAME] identity for it");
        return;
    }
    pthread_rwlock_rdlock(&srv->rt.lock);
    max_body = srv->rt.cfg->max_body_bytes;
    pthread_rwlock_unlock(&srv->rt.lock);
    if (len > (size_t)max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg), "the request body is %zu bytes, over the limit of %ld", len,
                 max_body);
        atomic_fetch_add(&srv->rt.metrics.refused, 1);
        spb_log(SPB_LOG_WARN, "intake_refused", "identity", who.name, "reason", msg,
                (const char *)NULL);
        audit_later(srv, who.name, "refused", "too_big", msg);
        send_outcome(req, 413, SPB_ISSUE_TOO_LONG, msg,
                     "send one event or consultation per request");
        return;
    }
    if (path != NULL && strncmp(path, "/_internal/", 11) == 0) {
        /* internal jobs (audit records, checkpoints) are made by spbridge only */
        send_outcome(req, 404, SPB_ISSUE_NOT_FOUND, "no such endpoint", NULL);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (j == NULL) {
        send_outcome(req, 503, SPB_ISSUE_EXCEPTION, "out of memory", "try again later");
        return;
    }
    j->srv = srv;
    j->req = req;
    j->evcon = evhttp_request_get_connection(req);
    j->method = evhttp_request_get_command(req);
    j->who = who;
    snprintf(j->path, sizeof(j->path), "%s", path ? path : "/");
    snprintf(j->content_type, sizeof(j->content_type), "%s", ct ? ct : "");
    snprintf(j->dialect, sizeof(j->dialect), "%s", dialect ? dialect : "");
    {
        const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
        const char *host = evhttp_find_header(hdrs, "Host");
        if (query != NULL && strlen(query) >= sizeof(j->query))
            j->query_too_long = 1;
        else if (query != NULL)
            snprintf(j->query, sizeof(j->query), "%s", query);
        if (host != NULL && strlen(host) < sizeof(j->host) &&
            strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") ==
                strlen(host))
            snprintf(j->host, sizeof(j->host), "%s", host);
    }
    if (len > 0) {
        j->body = malloc(len + 1);
        if (j->body == NULL) {
            free(j);
            send_outcome(req, 503, SPB_ISSUE_EXCEPTION, "out of memory", "try again later");
            return;
        }
        evbuffer_remove(in, j->body, len);
        j->body[len] = '\0';
        j->body_len = len;
    }
    evhttp_connection_set_closecb(j->evcon, on_conn_close, j);
    srv->pending++;
    enqueue(srv, j);
}

/* ------------------------------------------------------------- spool folders */

static int ensure_dir(const char *path)
{
    if (mkdir(path, 0750) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

static void spool_one(server *srv, spb_store *store, const char *ods, const char *dir,
                      const char *name)
{
    char from[1024], work[1024], to[1024];
    char *data = NULL;
    size_t len = 0;
    spb_err err;
    spb_intake_meta meta;
    spb_intake_outcome out;
    FILE *f;

    snprintf(from, sizeof(from), "%s/%s", dir, name);
    snprintf(work, sizeof(work), "%s/processing/%s", dir, name);
    /* rename is atomic: a file is taken once. Writers must write under a hidden name
     * (".name") and rename it into the folder when complete; hidden files are skipped. */
    if (rename(from, work) != 0)
        return;
    f = fopen(work, "rb");
    if (f != NULL) {
        long sz;
        if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
            data = malloc((size_t)sz + 1);
            if (data != NULL && fread(data, 1, (size_t)sz, f) == (size_t)sz) {
                len = (size_t)sz;
                data[len] = '\0';
            }
        }
        fclose(f);
    }
    memset(&meta, 0, sizeof(meta));
    char ident[80];
    snprintf(ident, sizeof(ident), "spool:%s", ods);
    meta.identity = ident;
    meta.identity_ods = ods;
    meta.channel = "spool";
    meta.source_name = name;
    spb_err_clear(&err);
    if (data == NULL) {
        spb_log(SPB_LOG_ERROR, "spool_read_failed", "practice", ods, "file", name,
                (const char *)NULL);
        return;
    }
    spb_intake_document(&srv->rt, store, data, len, &meta, ods, NULL, &out);
    free(data);
    if (out.http_status == 500 || out.http_status == 503) {
        /* the store failed: leave the file to be taken again on the next scan */
        rename(work, from);
        json_decref(out.body);
        return;
    }
    if (out.http_status < 300) {
        snprintf(to, sizeof(to), "%s/done/%s", dir, name);
        if (access(to, F_OK) == 0) /* a reused name: keep both */
            snprintf(to, sizeof(to), "%s/done/%s.%lld", dir, name, (long long)spb_now_ms());
        rename(work, to);
    } else {
        char errpath[1100];
        char *text = json_dumps(out.body, JSON_INDENT(2));
        snprintf(to, sizeof(to), "%s/failed/%s", dir, name);
        if (access(to, F_OK) == 0) /* a reused name: keep both */
            snprintf(to, sizeof(to), "%s/failed/%s.%lld", dir, name, (long long)spb_now_ms());
        snprintf(errpath, sizeof(errpath), "%s.error.json", to);
        f = fopen(errpath, "w");
        if (f != NULL && text != NULL) {
            fputs(text, f);
            fputc('\n', f);
            fflush(f);
            fsync(fileno(f));
        }
        if (f != NULL)
            fclose(f);
        free(text);
        rename(work, to);
    }
    json_decref(out.body);
}

static void *spool_main(void *arg)
{
    server *srv = arg;
    spb_store *store = spb_runtime_open_store(&srv->rt, "spool_store_failed");

    if (store == NULL)
        return NULL;
    while (!atomic_load(&srv->intake_stop)) {
        struct {
            char ods[16];
            char dir[512];
        } spools[SPB_CONFIG_MAX_PRACTICES];
        int n = 0;
        long poll_ms;
        pthread_rwlock_rdlock(&srv->rt.lock);
        for (int i = 0; i < srv->rt.cfg->npractices; i++) {
            if (srv->rt.cfg->practices[i].spool_dir[0] == '\0')
                continue;
            snprintf(spools[n].ods, sizeof(spools[n].ods), "%s", srv->rt.cfg->practices[i].ods);
            snprintf(spools[n].dir, sizeof(spools[n].dir), "%s",
                     srv->rt.cfg->practices[i].spool_dir);
            n++;
        }
        poll_ms = srv->rt.cfg->spool_poll_ms;
        pthread_rwlock_unlock(&srv->rt.lock);
        for (int i = 0; i < n && !atomic_load(&srv->intake_stop); i++) {
            DIR *d;
            struct dirent *de;
            char sub[600];
            static const char *subs[] = {"processing", "done", "failed"};
            for (int k = 0; k < 3; k++) {
                snprintf(sub, sizeof(sub), "%s/%s", spools[i].dir, subs[k]);
                ensure_dir(sub);
            }
            d = opendir(spools[i].dir);
            if (d == NULL)
                continue;
            while ((de = readdir(d)) != NULL && !atomic_load(&srv->intake_stop)) {
                char full[1024];
                struct stat stt;
                if (de->d_name[0] == '.')
                    continue; /* hidden files are writers' temporary names */
                snprintf(full, sizeof(full), "%s/%s", spools[i].dir, de->d_name);
                if (stat(full, &stt) != 0 || !S_ISREG(stt.st_mode))
                    continue;
                spool_one(srv, store, spools[i].ods, spools[i].dir, de->d_name);
            }
            closedir(d);
        }
        for (long waited = 0; waited < poll_ms && !atomic_load(&srv->intake_stop); waited += 50)
            usleep(50000);
    }
    spb_store_close(store);
    return NULL;
}

/* Files left in processing/ by a crash go back to be taken again; the store's source key
 * makes a second intake of an already stored event a harmless duplicate. */
static void spool_recover(const spb_config *cfg)
{
    for (int i = 0; i < cfg->npractices; i++) {
        char dir[600];
        DIR *d;
        struct dirent *de;
        if (cfg->practices[i].spool_dir[0] == '\0')
            continue;
        snprintf(dir, sizeof(dir), "%s/processing", cfg->practices[i].spool_dir);
        d = opendir(dir);
        if (d == NULL)
            continue;
        while ((de = readdir(d)) != NULL) {
            char from[1100], to[1100];
            if (de->d_name[0] == '.')
                continue;
            snprintf(from, sizeof(from), "%s/%s", dir, de->d_name);
            snprintf(to, sizeof(to), "%s/%s", cfg->practices[i].spool_dir, de->d_name);
            rename(from, to);
        }
        closedir(d);
    }
}

/* ------------------------------------------------------------- signals */

static int load_all(const char *path, spb_config **cfg_out, spb_mapping_set **maps_out,
                    spb_err *err)
{
    spb_config *cfg = calloc(1, sizeof(*cfg));
    spb_mapping_set *maps = NULL;
    int rc;

    *cfg_out = NULL;
    *maps_out = NULL;
    if (cfg == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    spb_config_defaults(cfg);
    rc = spb_config_load(cfg, path, NULL, err);
    if (rc == 0)
        rc = spb_mapping_set_load(&maps, cfg->mappings_dir, NULL, err);
    if (rc == 0 && (cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0' || cfg->tls_ca[0] == '\0'))
        rc = spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                         "serve needs [server] tls_cert, tls_key and tls_ca");
    if (rc < 0) {
        free(cfg);
        spb_mapping_set_free(maps);
        return rc;
    }
    *cfg_out = cfg;
    *maps_out = maps;
    return 0;
}

/* SIGHUP or changed mapping files: the reload itself (reading and compiling files) runs on
 * an intake thread, never on the event loop. */
static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    internal_job(arg, "/_internal/reload");
}

/* A signature of the mapping folder's files (names, sizes, modification times), two levels
 * deep: a handful of stat calls, cheap enough for the loop thread every few seconds. */
static unsigned long long folder_signature(const char *dir, int depth)
{
    unsigned long long sig = 1469598103934665603ULL;
    DIR *d = opendir(dir);
    struct dirent *de;
    if (d == NULL)
        return 0;
    while ((de = readdir(d)) != NULL) {
        char path[1024];
        struct stat stt;
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (stat(path, &stt) != 0)
            continue;
        if (S_ISDIR(stt.st_mode)) {
            if (depth > 0)
                sig ^= folder_signature(path, depth - 1) * 31;
            continue;
        }
        for (const char *p = de->d_name; *p; p++)
            sig = (sig ^ (unsigned char)*p) * 1099511628211ULL;
        sig ^= ((unsigned long long)stt.st_size << 20) ^ (unsigned long long)stt.st_mtim.tv_sec ^
               ((unsigned long long)stt.st_mtim.tv_nsec << 7);
        sig *= 1099511628211ULL;
    }
    closedir(d);
    return sig;
}

/* Mapping files changed on disk: reload exactly as SIGHUP does (a bad set is refused). */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    server *srv = arg;
    char dir[512];
    unsigned long long sig;
    (void)fd;
    (void)what;
    pthread_rwlock_rdlock(&srv->rt.lock);
    snprintf(dir, sizeof(dir), "%s", srv->rt.cfg->mappings_dir);
    pthread_rwlock_unlock(&srv->rt.lock);
    sig = folder_signature(dir, 2);
    if (sig == srv->mappings_signature)
        return;
    srv->mappings_signature = sig;
    spb_log(SPB_LOG_INFO, "mappings_changed", "dir", dir, (const char *)NULL);
    on_hup(SIGHUP, 0, srv);
}

static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    server *srv = arg;
    (void)fd;
    (void)what;
    if (srv->pending == 0 || spb_now_ms() - srv->drain_started > 30000)
        event_base_loopexit(srv->base, NULL);
}

static void on_term(evutil_socket_t sig, short what, void *arg)
{
    server *srv = arg;
    struct timeval tick = {0, 50000};
    (void)what;
    if (srv->draining)
        return;
    spb_log(SPB_LOG_INFO, "stopping", "signal", sig == SIGINT ? "INT" : "TERM", "reason",
            "finishing in-flight requests and deliveries", (const char *)NULL);
    srv->draining = 1;
    srv->drain_started = spb_now_ms();
    if (srv->watch_timer != NULL)
        event_del(srv->watch_timer);
    if (srv->bound != NULL) {
        evhttp_del_accept_socket(srv->http, srv->bound);
        srv->bound = NULL;
    }
    srv->drain_timer = event_new(srv->base, -1, EV_PERSIST, on_drain_tick, srv);
    event_add(srv->drain_timer, &tick);
}

/* ------------------------------------------------------------- main */

/* Serve, step 1: configuration, mappings and the runtime they live in. */
static int serve_init(server *srv, spb_err *err)
{
    spb_config *cfg = NULL;
    spb_mapping_set *maps = NULL;
    spb_log_level lvl;
    int rc = load_all(srv->opts->config_path, &cfg, &maps, err);

    if (rc < 0)
        return rc;
    spb_runtime_init(&srv->rt, cfg, maps);
    if (spb_log_parse_level(cfg->log_level, &lvl) == 0)
        spb_log_set_level(lvl);
    pthread_mutex_init(&srv->qlock, NULL);
    pthread_mutex_init(&srv->ctx_lock, NULL);
    pthread_cond_init(&srv->qcond, NULL);
    srv->locks_ready = 1;
    return 0;
}

/* Step 2: the store, first: one serve per store (a second one would re-queue the first
 * one's deliveries); rows a crash left mid-delivery recovered before any worker runs; the
 * audit chain checked; spool files a crash left half-taken put back. */
static int serve_open_store(server *srv, spb_err *err)
{
    const spb_config *cfg = srv->rt.cfg;
    spb_store *store = NULL;
    char path[600];
    char *slash;
    int recovered = 0, rc;

    snprintf(path, sizeof(path), "%s", cfg->store_path);
    slash = strrchr(path, '/');
    if (slash != NULL) {
        *slash = '\0';
        ensure_dir(path);
    }
    snprintf(path, sizeof(path), "%s.lock", cfg->store_path);
    srv->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (srv->lock_fd < 0 || flock(srv->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rc = spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING,
                         "another spbridge serve is using the store %s", cfg->store_path);
        spb_err_hint(err, "stop it first, or give this one its own store_path");
        return rc;
    }
    rc = spb_store_open(&store, cfg->store_path, err);
    if (rc < 0)
        return rc;
    rc = spb_store_recover(store, spb_now_ms(), 1, &recovered, err);
    if (rc == 0)
        rc = audit_start(cfg, store, err);
    spb_store_close(store);
    if (rc < 0)
        return rc;
    if (recovered > 0) {
        char n[16];
        snprintf(n, sizeof(n), "%d", recovered);
        spb_log(SPB_LOG_WARN, "recovered", "rows", n, "reason",
                "deliveries interrupted by the last stop will be sent again", (const char *)NULL);
    }
    spool_recover(cfg);
    return 0;
}

/* The port the listening socket got (0 in the configuration means any free one). */
static int bound_port(struct evhttp_bound_socket *bound)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    evutil_socket_t fd = evhttp_bound_socket_get_fd(bound);

    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* Step 3: TLS, the event loop, the HTTP server on its socket, timers and signals. */
static int serve_listen(server *srv, spb_err *err)
{
    const spb_config *cfg = srv->rt.cfg;
    struct timeval second = {1, 0};

    srv->ssl_ctx = make_ssl_ctx(srv, cfg, err);
    if (srv->ssl_ctx == NULL)
        return SPB_ECONFIG;
    srv->server_cert_expiry = cert_expiry_file(cfg->tls_cert);
    srv->client_cert_expiry = cert_expiry_file(cfg->client_cert);
    srv->base = event_base_new();
    srv->http = srv->base != NULL ? evhttp_new(srv->base) : NULL;
    if (srv->http == NULL)
        return spb_err_set(err, SPB_ERR, SPB_ISSUE_EXCEPTION, "cannot start the event loop");
    evhttp_set_bevcb(srv->http, bevcb, srv);
    evhttp_set_gencb(srv->http, on_request, srv);
    /* evhttp's own limit sits above ours so an oversize body gets our OperationOutcome */
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)cfg->max_body_bytes * 2 + 65536);
    evhttp_set_max_headers_size(srv->http, 64 * 1024);
    evhttp_set_timeout(srv->http, 60);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    srv->bound = evhttp_bind_socket_with_handle(srv->http, cfg->listen_address,
                                                (ev_uint16_t)cfg->listen_port);
    if (srv->bound == NULL) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_PROCESSING, "cannot listen on %s:%ld",
                    cfg->listen_address, cfg->listen_port);
        spb_err_hint(err, "choose a free [server] listen_port, or stop what uses it");
        return SPB_ECONFIG;
    }
    srv->port = bound_port(srv->bound);
    srv->done_ev = event_new(srv->base, -1, EV_PERSIST | EV_READ, on_done, srv);
    event_add(srv->done_ev, NULL);
    srv->audit_timer = event_new(srv->base, -1, EV_PERSIST, on_audit_timer, srv);
    event_add(srv->audit_timer, &second);
    srv->sig_term = evsignal_new(srv->base, SIGTERM, on_term, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, on_term, srv);
    srv->sig_hup = evsignal_new(srv->base, SIGHUP, on_hup, srv);
    event_add(srv->sig_term, NULL);
    event_add(srv->sig_int, NULL);
    event_add(srv->sig_hup, NULL);
    if (cfg->watch_mappings_ms > 0) {
        struct timeval every = {cfg->watch_mappings_ms / 1000,
                                (cfg->watch_mappings_ms % 1000) * 1000};
        srv->mappings_signature = folder_signature(cfg->mappings_dir, 2);
        srv->watch_timer = event_new(srv->base, -1, EV_PERSIST, on_watch, srv);
        event_add(srv->watch_timer, &every);
    }
    return 0;
}

/* Step 4: the threads. If the follower cannot start, the delivery workers already running
 * are stopped before anything they use is freed. */
static int serve_start_threads(server *srv, spb_err *err)
{
    int rc = spb_delivery_start(&srv->delivery, &srv->rt, err);

    if (rc < 0)
        return rc;
    rc = spb_follower_start(&srv->follower, &srv->rt, err);
    if (rc < 0) {
        spb_delivery_stop(srv->delivery);
        srv->delivery = NULL;
        return rc;
    }
    for (long i = 0; i < srv->rt.cfg->intake_workers && i < MAX_INTAKE; i++) {
        if (pthread_create(&srv->intake[srv->nintake], NULL, intake_main, srv) == 0)
            srv->nintake++;
    }
    if (pthread_create(&srv->spool, NULL, spool_main, srv) == 0)
        srv->spool_started = 1;
    return 0;
}

/* Says where it listens: the log, and the port file tests and scripts wait for. */
static void announce(const server *srv)
{
    const spb_config *cfg = srv->rt.cfg;
    char port_s[16];

    snprintf(port_s, sizeof(port_s), "%d", srv->port);
    spb_log(SPB_LOG_INFO, "listening", "address", cfg->listen_address, "port", port_s, "mappings",
            spb_mapping_set_version(srv->rt.maps), "store", cfg->store_path, (const char *)NULL);
    if (srv->opts->port_file != NULL) {
        char tmp[600];
        FILE *f;
        snprintf(tmp, sizeof(tmp), "%s.tmp", srv->opts->port_file);
        f = fopen(tmp, "w");
        if (f != NULL) {
            fprintf(f, "%d\n", srv->port);
            fclose(f);
            rename(tmp, srv->opts->port_file);
        }
    }
}

/* Step 5, after the loop: intake threads finish their jobs, then delivery finishes the
 * attempts in hand, then the last audit checkpoint. */
static void serve_drain(server *srv)
{
    atomic_store(&srv->intake_stop, 1);
    pthread_mutex_lock(&srv->qlock);
    pthread_cond_broadcast(&srv->qcond);
    pthread_mutex_unlock(&srv->qlock);
    for (int i = 0; i < srv->nintake; i++)
        pthread_join(srv->intake[i], NULL);
    if (srv->spool_started)
        pthread_join(srv->spool, NULL);
    on_done(-1, 0, srv); /* answers finished during the drain, if clients are still there */
    spb_follower_stop(srv->follower);
    spb_delivery_stop(srv->delivery);
    srv->follower = NULL;
    srv->delivery = NULL;
    audit_final_checkpoint(srv);
    spb_log(SPB_LOG_INFO, "stopped", (const char *)NULL);
}

/* Frees whatever the steps made, in reverse order; each part only if it was made. */
static void serve_free(server *srv)
{
    struct event *events[] = {srv->sig_term,    srv->sig_int, srv->sig_hup,    srv->drain_timer,
                              srv->watch_timer, srv->done_ev, srv->audit_timer};

    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        if (events[i] != NULL)
            event_free(events[i]);
    }
    if (srv->http != NULL)
        evhttp_free(srv->http);
    if (srv->base != NULL)
        event_base_free(srv->base);
    SSL_CTX_free(srv->ssl_ctx);
    if (srv->locks_ready)
        pthread_mutex_destroy(&srv->ctx_lock);
    if (srv->rt.cfg != NULL)
        spb_runtime_destroy(&srv->rt);
    /* queued jobs never processed (startup failure): free them */
    while (srv->todo_head != NULL) {
        job *j = srv->todo_head;
        srv->todo_head = j->next;
        job_free(j);
    }
    if (srv->lock_fd >= 0)
        close(srv->lock_fd); /* releases the store lock */
    free(srv);
}

int spb_serve(const spb_serve_opts *opts, spb_err *err)
{
    server *srv = calloc(1, sizeof(*srv));
    int rc;

    if (srv == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "out of memory");
    srv->opts = opts;
    srv->lock_fd = -1;
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    rc = serve_init(srv, err);
    if (rc == 0)
        rc = serve_open_store(srv, err);
    if (rc == 0)
        rc = serve_listen(srv, err);
    if (rc == 0)
        rc = serve_start_threads(srv, err);
    if (rc == 0) {
        announce(srv);
        event_base_dispatch(srv->base);
        serve_drain(srv);
    }
    serve_free(srv);
    return rc;
}
