/*
 * Identifier checks shared by every dialect. NHS numbers are validated with the
 * modulus 11 algorithm from the NHS Data Dictionary: weights 10..2 over the first nine
 * digits, check = 11 - (sum mod 11), 11 becomes 0 and 10 means the number is invalid.
 */
#include "spbridge/ident.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* spbridge's UUID namespace, itself a v4 UUID fixed for all time. */
static const unsigned char spb_namespace[16] = {0x6b, 0x1e, 0x3a, 0x52, 0x8c, 0x4d, 0x4f, 0x0a,
                                                0x9d, 0x27, 0x51, 0x3e, 0xa0, 0x44, 0x7c, 0x19};

int spb_nhs_number_check(char out[SPB_NHS_NUMBER_LEN + 1], const char *in, spb_err *err)
{
    char digits[SPB_NHS_NUMBER_LEN + 1];
    size_t n = 0, len;
    int sum = 0, check;

    if (in == NULL || *in == '\0')
        return spb_err_set(err, SPB_EINVALID, SPB_ISSUE_REQUIRED, "the NHS number is missing");
    len = strlen(in);
    /* Accept bare digits or the printed 3-3-4 grouping with a single space or hyphen. */
    if (len == 12 && (in[3] == ' ' || in[3] == '-') && in[7] == in[3]) {
        for (size_t i = 0; i < len; i++) {
            if (i == 3 || i == 7)
                continue;
            if (!isdigit((unsigned char)in[i]))
                goto bad_format;
            digits[n++] = in[i];
        }
    } else if (len == 10) {
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)in[i]))
                goto bad_format;
            digits[n++] = in[i];
        }
    } else {
        goto bad_format;
    }
    digits[n] = '\0';
    for (int i = 0; i < 9; i++)
        sum += (digits[i] - '0') * (10 - i);
    check = 11 - (sum % 11);
    if (check == 11)
        check = 0;
    if (check == 10 || check != digits[9] - '0') {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_VALUE,
                    "the NHS number fails its modulus 11 check digit");
        spb_err_hint(err, "check the number against the patient's record (PDS); a mistyped "
                          "digit or a test number with a wrong check digit causes this");
        return SPB_EINVALID;
    }
    memcpy(out, digits, sizeof(digits));
    return 0;

bad_format:
    spb_err_set(err, SPB_EINVALID, SPB_ISSUE_VALUE,
                "the NHS number is not 10 digits (got %zu characters)", len);
    spb_err_hint(err, "send the ten digits, optionally grouped as 3-3-4 with spaces");
    return SPB_EINVALID;
}

int spb_ods_check(char *out, size_t out_size, const char *in, spb_err *err)
{
    size_t len;

    if (in == NULL || *in == '\0')
        return spb_err_set(err, SPB_EINVALID, SPB_ISSUE_REQUIRED,
                           "the practice ODS code is missing");
    len = strlen(in);
    if (len < 3 || len > 12 || len >= out_size)
        goto bad;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)in[i]))
            goto bad;
        out[i] = (char)toupper((unsigned char)in[i]);
    }
    out[len] = '\0';
    return 0;
bad:
    spb_err_set(err, SPB_EINVALID, SPB_ISSUE_VALUE,
                "'%.40s' is not an ODS organisation code (3 to 12 letters and digits)", in);
    spb_err_hint(err, "use the practice's ODS code, e.g. B83002");
    return SPB_EINVALID;
}

int spb_uuid_is_valid(const char *s)
{
    if (s == NULL || strlen(s) != SPB_UUID_LEN)
        return 0;
    for (int i = 0; i < SPB_UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

void spb_uuid_lower(char out[SPB_UUID_LEN + 1], const char *in)
{
    for (int i = 0; i < SPB_UUID_LEN; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[SPB_UUID_LEN] = '\0';
}

int spb_uuid_v5(char out[SPB_UUID_LEN + 1], const char *name)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = -1;

    if (ctx == NULL)
        return -1;
    if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, spb_namespace, sizeof(spb_namespace)) != 1 ||
        EVP_DigestUpdate(ctx, name, strlen(name)) != 1 || EVP_DigestFinal_ex(ctx, md, &md_len) != 1)
        goto out;
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50); /* version 5 */
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, SPB_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0], md[1],
             md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
             md[14], md[15]);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}
