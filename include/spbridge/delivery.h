/*
 * Delivery workers: threads that take due outbox rows and POST their transaction Bundles
 * to the social prescribing service over mutual TLS (libcurl), never on the event loop.
 * Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with
 * exponential backoff and jitter, honouring Retry-After; permanent ones (other 4xx) are
 * dead-lettered with the server's answer kept. Each row is independent: one failing
 * referral never holds up another.
 */
#ifndef SPB_DELIVERY_H
#define SPB_DELIVERY_H

#include "spbridge/error.h"
#include "spbridge/runtime.h"

typedef struct spb_delivery spb_delivery;

/* How spbridge connects to services as a TLS client (copied from the configuration, so a
 * reload never changes it under a request in flight). */
typedef struct spb_tls_client {
    char client_cert[512], client_key[512], key_pass[256], ca_file[512], pin[256];
    long connect_timeout_ms, timeout_ms;
} spb_tls_client;

/* Fills `t` from [delivery] (reading the key passphrase file). Caller holds the read lock. */
void spb_tls_client_from_config(spb_tls_client *t, const spb_config *cfg);

/* Applies mutual TLS, timeouts and protocol limits to a curl handle (after curl_easy_reset). */
void spb_curl_apply_tls(void *curl, const spb_tls_client *t);

/* Starts the configured number of workers, each with its own store handle. */
int spb_delivery_start(spb_delivery **out, spb_runtime *rt, spb_err *err);

/* Stops: workers finish the attempt in hand (bounded by the delivery timeout) and exit. */
void spb_delivery_stop(spb_delivery *d);

/* Backoff before attempt `attempt + 1` (exposed for tests): base * 2^(attempt-1), capped,
 * with jitter in [delay/2, delay]. `rnd` is a random value in [0, 1). */
long spb_backoff_ms(long base_ms, long max_ms, int attempt, double rnd);

/* Parses a Retry-After header value (seconds or an HTTP date) into milliseconds from now;
 * -1 when absent or unreadable. */
long spb_retry_after_ms(const char *value, long now_s);

#endif
