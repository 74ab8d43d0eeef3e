/*
 * A growable byte buffer with a maximum fixed when it is made. Every buffer spbridge fills
 * from input or for output (a response body, a CSV report, a page, a document read from a
 * file) has a limit, and going past it is an input error (SPB_ETOOBIG), never an
 * allocation that grows for ever. After a failed append the buffer keeps what it had and
 * ignores further appends, so a caller can append many pieces and check once.
 */
#ifndef SPB_BUF_H
#define SPB_BUF_H

#include <stddef.h>

typedef struct spb_buf {
    char *data; /* NUL-terminated; NULL until something is appended */
    size_t len;
    size_t cap;
    size_t max; /* the most bytes it may hold, not counting the NUL */
    int failed; /* 0, or SPB_ETOOBIG / SPB_ENOMEM from the first failed append */
} spb_buf;

/* An empty buffer that may hold up to `max` bytes. */
void spb_buf_init(spb_buf *b, size_t max);

/* Appends `n` bytes; returns 0, SPB_ETOOBIG (past max: nothing appended) or SPB_ENOMEM. */
int spb_buf_append(spb_buf *b, const void *data, size_t n);

/* Appends a NUL-terminated string; as spb_buf_append. */
int spb_buf_puts(spb_buf *b, const char *s);

/* Appends formatted text; as spb_buf_append. */
int spb_buf_printf(spb_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Hands the bytes to the caller (free() them; never NULL unless out of memory: an empty
 * buffer gives ""), with their length in `len` when given, and empties the buffer. */
char *spb_buf_take(spb_buf *b, size_t *len);

/* Frees what the buffer holds and empties it. NULL-safe. */
void spb_buf_free(spb_buf *b);

#endif
