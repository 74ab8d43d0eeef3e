/*
 * Bounded growable buffer (buf.h). Capacity doubles, so n appends cost O(total bytes);
 * the maximum is checked before any allocation, so an oversize input never allocates more
 * than the limit.
 */
#include "spbridge/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/error.h"

void spb_buf_init(spb_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max < SIZE_MAX / 2 ? max : SIZE_MAX / 2; /* so capacities never overflow */
}

static int grow(spb_buf *b, size_t need)
{
    size_t cap = b->cap ? b->cap : (b->max < 255 ? b->max + 1 : 256);
    char *grown;

    while (cap < need + 1)
        cap = cap > (b->max + 1) / 2 ? b->max + 1 : cap * 2;
    grown = realloc(b->data, cap);
    if (grown == NULL)
        return SPB_ENOMEM;
    b->data = grown;
    b->cap = cap;
    return 0;
}

int spb_buf_append(spb_buf *b, const void *data, size_t n)
{
    if (b->failed)
        return b->failed;
    if (n > b->max || b->len > b->max - n) {
        b->failed = SPB_ETOOBIG;
        return b->failed;
    }
    if (b->len + n + 1 > b->cap && grow(b, b->len + n) < 0) {
        b->failed = SPB_ENOMEM;
        return b->failed;
    }
    if (n > 0)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int spb_buf_puts(spb_buf *b, const char *s)
{
    return spb_buf_append(b, s, strlen(s));
}

int spb_buf_printf(spb_buf *b, const char *fmt, ...)
{
    char small[512];
    char *big = NULL;
    va_list ap;
    int n, rc;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return spb_buf_append(b, "", 0);
    if ((size_t)n < sizeof(small))
        return spb_buf_append(b, small, (size_t)n);
    if ((size_t)n > b->max - (b->len < b->max ? b->len : b->max)) {
        b->failed = b->failed ? b->failed : SPB_ETOOBIG;
        return b->failed;
    }
    big = malloc((size_t)n + 1);
    if (big == NULL) {
        b->failed = b->failed ? b->failed : SPB_ENOMEM;
        return b->failed;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    rc = spb_buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

char *spb_buf_take(spb_buf *b, size_t *len)
{
    char *out = b->data ? b->data : strdup("");
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
    return out;
}

void spb_buf_free(spb_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}
