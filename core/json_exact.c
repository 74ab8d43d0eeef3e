/*
 * Exact-number JSON reading (see json_exact.h). A single pass over the text copies it,
 * wrapping each number token outside strings in quotes with a leading U+0001 marker; FHIR
 * strings never contain control characters, so a marked string is unambiguous.
 */
#include "spbridge/json_exact.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MARK     "\\u0001"
#define MARK_LEN 6

json_t *spb_json_loads_exact(const char *text, size_t max_len, json_error_t *error)
{
    size_t len = strnlen(text, max_len + 1);
    size_t cap, o = 0;
    char *buf;
    int in_string = 0;
    json_t *out;

    if (len > max_len) {
        if (error != NULL)
            snprintf(error->text, sizeof(error->text), "JSON longer than %zu bytes", max_len);
        return NULL;
    }
    /* worst case: every byte a one-digit number gets 2 quotes and the marker */
    cap = len * (3 + MARK_LEN) + 1;
    buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            buf[o++] = c;
            if (c == '\\' && i + 1 < len)
                buf[o++] = text[++i];
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"') {
            in_string = 1;
            buf[o++] = c;
        } else if (c == '-' || isdigit((unsigned char)c)) {
            size_t j = i;
            while (j < len &&
                   (isdigit((unsigned char)text[j]) || text[j] == '-' || text[j] == '+' ||
                    text[j] == '.' || text[j] == 'e' || text[j] == 'E'))
                j++;
            buf[o++] = '"';
            memcpy(buf + o, MARK, MARK_LEN);
            o += MARK_LEN;
            memcpy(buf + o, text + i, j - i);
            o += j - i;
            buf[o++] = '"';
            i = j - 1;
        } else {
            buf[o++] = c;
        }
    }
    buf[o] = '\0';
    out = json_loadb(buf, o, JSON_REJECT_DUPLICATES, error);
    free(buf);
    return out;
}

const char *spb_json_number_text(const json_t *v)
{
    const char *s = json_string_value(v);
    if (s == NULL || s[0] != '\x01')
        return NULL;
    return s + 1;
}

const char *spb_json_string(const json_t *v)
{
    const char *s = json_string_value(v);
    if (s == NULL || s[0] == '\x01')
        return NULL;
    return s;
}
