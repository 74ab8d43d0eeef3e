/*
 * Bounded, network-free XML parsing.
 *
 * Why a custom front end rather than xmlReadMemory: we need to (1) refuse a DOCTYPE before
 * any entity declaration is processed, (2) stop at a depth we choose rather than libxml2's
 * built-in 256, and (3) report the exact line and column. Wrapping the SAX2 handlers of a
 * push-free memory parser context gives all three without touching libxml2's own parsing.
 */
#include "spbridge/xml_input.h"

#include <ctype.h>

#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct parse_state {
    startElementNsSAX2Func orig_start;
    endElementNsSAX2Func orig_end;
    int depth;
    int max_depth;
    int refused; /* an spb error was recorded by a handler */
    spb_err *err;
    const char *name;
} parse_state;

static xmlParserInputPtr no_external_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    (void)url;
    (void)id;
    (void)ctxt;
    return NULL; /* never fetch anything: files, http or otherwise */
}

static void silent_generic_error(void *ctx, const char *msg, ...)
{
    (void)ctx;
    (void)msg;
}

void spb_xml_global_init(void)
{
    xmlInitParser();
    xmlSetExternalEntityLoader(no_external_loader);
    xmlSetGenericErrorFunc(NULL, silent_generic_error);
}

/* UTF-8 check with position, so "not UTF-8" comes with a line and column. */
static int check_utf8(const unsigned char *s, size_t len, int *line, int *col)
{
    size_t i = 0;
    int l = 1, c = 1;

    while (i < len) {
        unsigned char b = s[i];
        size_t need;
        unsigned int cp;
        if (b < 0x80) {
            if (b == '\n') {
                l++;
                c = 1;
            } else {
                c++;
            }
            i++;
            continue;
        }
        if ((b & 0xe0) == 0xc0) {
            need = 1;
            cp = b & 0x1f;
        } else if ((b & 0xf0) == 0xe0) {
            need = 2;
            cp = b & 0x0f;
        } else if ((b & 0xf8) == 0xf0) {
            need = 3;
            cp = b & 0x07;
        } else {
            goto bad;
        }
        for (size_t k = 1; k <= need; k++) {
            if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
                goto bad;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* overlong forms, surrogates and out-of-range code points are not UTF-8 */
        if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            goto bad;
        i += need + 1;
        c++;
    }
    return 0;
bad:
    *line = l;
    *col = c;
    return -1;
}

/* The XML declaration may name an encoding; only UTF-8 is accepted. */
static int declared_encoding_ok(const char *data, size_t len, char *found, size_t found_size)
{
    const char *end, *p;
    size_t decl_len;

    if (len < 5 || memcmp(data, "<?xml", 5) != 0)
        return 1;
    end = memchr(data, '>', len < 200 ? len : 200);
    if (end == NULL)
        return 1;
    decl_len = (size_t)(end - data);
    for (p = data; p + 8 < data + decl_len; p++) {
        if (memcmp(p, "encoding", 8) == 0) {
            const char *q = p + 8;
            char quote;
            size_t n = 0;
            while (q < end && (*q == ' ' || *q == '='))
                q++;
            if (q >= end || (*q != '"' && *q != '\''))
                return 1;
            quote = *q++;
            while (q < end && *q != quote && n + 1 < found_size)
                found[n++] = *q++;
            found[n] = '\0';
            return strcasecmp(found, "UTF-8") == 0 || strcasecmp(found, "UTF8") == 0;
        }
    }
    return 1;
}

static void on_start(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri,
                     int nb_namespaces, const xmlChar **namespaces, int nb_attributes,
                     int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr ctxt = ctx;
    parse_state *st = ctxt->_private;

    if (++st->depth > st->max_depth) {
        spb_err_set(st->err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                    "elements are nested deeper than the limit of %d", st->max_depth);
        spb_err_hint(st->err, "flatten the document or raise xml_max_depth in the "
                              "configuration if this depth is legitimate");
        spb_err_where(st->err, st->name, xmlSAX2GetLineNumber(ctxt), xmlSAX2GetColumnNumber(ctxt),
                      NULL);
        st->refused = 1;
        xmlStopParser(ctxt);
        return;
    }
    st->orig_start(ctx, localname, prefix, uri, nb_namespaces, namespaces, nb_attributes,
                   nb_defaulted, attributes);
}

static void on_end(void *ctx, const xmlChar *localname, const xmlChar *prefix, const xmlChar *uri)
{
    xmlParserCtxtPtr ctxt = ctx;
    parse_state *st = ctxt->_private;

    st->depth--;
    st->orig_end(ctx, localname, prefix, uri);
}

static void on_doctype(void *ctx, const xmlChar *name, const xmlChar *external_id,
                       const xmlChar *system_id)
{
    xmlParserCtxtPtr ctxt = ctx;
    parse_state *st = ctxt->_private;

    (void)name;
    (void)external_id;
    (void)system_id;
    spb_err_set(st->err, SPB_EINVALID, SPB_ISSUE_SECURITY,
                "the document has a DOCTYPE declaration, which spbridge refuses");
    spb_err_hint(st->err, "remove the <!DOCTYPE ...>: DTDs can declare external or "
                          "recursively expanding entities (XXE, billion laughs), so no "
                          "dialect may use them");
    spb_err_where(st->err, st->name, xmlSAX2GetLineNumber(ctxt), xmlSAX2GetColumnNumber(ctxt),
                  NULL);
    st->refused = 1;
    xmlStopParser(ctxt);
}

int spb_xml_parse(xmlDocPtr *out, const char *data, size_t len, const char *name,
                  const spb_xml_limits *limits, spb_err *err)
{
    xmlParserCtxtPtr ctxt = NULL;
    xmlDocPtr doc = NULL;
    parse_state st;
    char enc[32] = "";
    int line = 0, col = 0;
    int rc = SPB_EINVALID;
    size_t max_bytes = limits && limits->max_bytes ? limits->max_bytes : SPB_XML_DEFAULT_MAX_BYTES;
    int max_depth = limits && limits->max_depth ? limits->max_depth : SPB_XML_DEFAULT_MAX_DEPTH;

    *out = NULL;
    if (len > max_bytes) {
        spb_err_set(err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG,
                    "the document is %zu bytes, over the limit of %zu", len, max_bytes);
        spb_err_hint(err, "send one event or one consultation per document, or raise "
                          "xml_max_bytes in the configuration");
        spb_err_where(err, name, 0, 0, NULL);
        return SPB_ETOOBIG;
    }
    if (len == 0) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_STRUCTURE, "the document is empty");
        spb_err_hint(err, "send an XML document");
        spb_err_where(err, name, 1, 1, NULL);
        return SPB_EINVALID;
    }
    if (len >= 2 && (((unsigned char)data[0] == 0xfe && (unsigned char)data[1] == 0xff) ||
                     ((unsigned char)data[0] == 0xff && (unsigned char)data[1] == 0xfe))) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_STRUCTURE,
                    "the document is UTF-16; spbridge accepts UTF-8 only");
        spb_err_hint(err, "re-export the document as UTF-8");
        spb_err_where(err, name, 1, 1, NULL);
        return SPB_EINVALID;
    }
    if (!declared_encoding_ok(data, len, enc, sizeof(enc))) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_STRUCTURE,
                    "the XML declaration names encoding '%s'; spbridge accepts UTF-8 only", enc);
        spb_err_hint(err, "re-export the document as UTF-8 and declare encoding=\"UTF-8\"");
        spb_err_where(err, name, 1, 1, NULL);
        return SPB_EINVALID;
    }
    if (check_utf8((const unsigned char *)data, len, &line, &col) < 0) {
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_STRUCTURE, "the text is not valid UTF-8");
        spb_err_hint(err, "re-export the document as UTF-8; a byte sequence at this position "
                          "is in another encoding (often Windows-1252 or Latin-1)");
        spb_err_where(err, name, line, col, NULL);
        return SPB_EINVALID;
    }
    if (len > (size_t)0x7fffffff)
        return spb_err_set(err, SPB_ETOOBIG, SPB_ISSUE_TOO_LONG, "document too large");

    ctxt = xmlCreateMemoryParserCtxt(data, (int)len);
    if (ctxt == NULL) {
        rc = spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "cannot create an XML parser");
        goto out;
    }
    memset(&st, 0, sizeof(st));
    st.max_depth = max_depth;
    st.err = err;
    st.name = name;
    st.orig_start = ctxt->sax->startElementNs;
    st.orig_end = ctxt->sax->endElementNs;
    ctxt->sax->startElementNs = on_start;
    ctxt->sax->endElementNs = on_end;
    ctxt->sax->internalSubset = on_doctype;
    ctxt->_private = &st;
    xmlCtxtUseOptions(ctxt, XML_PARSE_NONET | XML_PARSE_NOCDATA | XML_PARSE_NOWARNING |
                                XML_PARSE_NOERROR | XML_PARSE_NOBLANKS | XML_PARSE_BIG_LINES);
    xmlParseDocument(ctxt);
    if (st.refused) {
        rc = err->code;
        goto out;
    }
    if (!ctxt->wellFormed || ctxt->myDoc == NULL) {
        xmlErrorPtr xe = xmlCtxtGetLastError(ctxt);
        char msg[256] = "the document is not well-formed XML";
        size_t n;
        if (xe != NULL && xe->message != NULL) {
            snprintf(msg, sizeof(msg), "not well-formed XML: %s", xe->message);
            n = strlen(msg);
            while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
                msg[--n] = '\0';
        }
        spb_err_set(err, SPB_EINVALID, SPB_ISSUE_STRUCTURE, "%s", msg);
        spb_err_hint(err, "fix the XML at this position (a truncated document ends early; "
                          "check the sender wrote the whole file)");
        spb_err_where(err, name, xe ? xe->line : 0, xe ? xe->int2 : 0, NULL);
        rc = SPB_EINVALID;
        goto out;
    }
    doc = ctxt->myDoc;
    ctxt->myDoc = NULL;
    *out = doc;
    rc = 0;
out:
    if (ctxt != NULL) {
        if (ctxt->myDoc != NULL)
            xmlFreeDoc(ctxt->myDoc);
        ctxt->myDoc = NULL;
        xmlFreeParserCtxt(ctxt);
    }
    return rc;
}

/* ---- XSD validation, schemas compiled once per path ---- */

#define SCHEMA_CACHE_MAX 8

static struct {
    char path[512];
    xmlSchemaPtr schema;
} schema_cache[SCHEMA_CACHE_MAX];
static pthread_mutex_t schema_lock = PTHREAD_MUTEX_INITIALIZER;

static xmlParserInputPtr local_file_loader(const char *url, const char *id, xmlParserCtxtPtr ctxt)
{
    (void)id;
    /* Schema includes are relative file paths inside the configured schema folder. */
    if (url == NULL || strstr(url, "://") != NULL)
        return NULL;
    return xmlNewInputFromFile(ctxt, url);
}

static xmlSchemaPtr schema_get(const char *xsd_path, spb_err *err)
{
    xmlSchemaPtr schema = NULL;
    xmlSchemaParserCtxtPtr pctxt = NULL;

    pthread_mutex_lock(&schema_lock);
    for (int i = 0; i < SCHEMA_CACHE_MAX; i++) {
        if (schema_cache[i].schema != NULL && strcmp(schema_cache[i].path, xsd_path) == 0) {
            schema = schema_cache[i].schema;
            goto out;
        }
    }
    xmlSetExternalEntityLoader(local_file_loader);
    pctxt = xmlSchemaNewParserCtxt(xsd_path);
    if (pctxt != NULL)
        schema = xmlSchemaParse(pctxt);
    xmlSetExternalEntityLoader(no_external_loader);
    if (schema == NULL) {
        spb_err_set(err, SPB_ECONFIG, SPB_ISSUE_EXCEPTION, "cannot load the XML schema %s",
                    xsd_path);
        spb_err_hint(err, "check schema_dir in the configuration points at the GP2GP schema "
                          "folder (the one holding schema/RCMR_IN030000UK06.xsd)");
        goto out;
    }
    for (int i = 0; i < SCHEMA_CACHE_MAX; i++) {
        if (schema_cache[i].schema == NULL) {
            snprintf(schema_cache[i].path, sizeof(schema_cache[i].path), "%s", xsd_path);
            schema_cache[i].schema = schema;
            break;
        }
    }
out:
    if (pctxt != NULL)
        xmlSchemaFreeParserCtxt(pctxt);
    pthread_mutex_unlock(&schema_lock);
    return schema;
}

typedef struct {
    spb_err *err;
    int seen;
} schema_errs;

/*
 * libxml2 quotes the offending value in schema messages ("The value '1951-13-14' is not
 * valid"). Values may be patient data, which must not reach logs, so every quoted string is
 * withheld except element names ('{ns}name') and the allowed values of an enumeration set.
 */
static void redact_values(char *msg, size_t size)
{
    static const char *const keep_words[] = {
        "enumeration",  "pattern",      "length",      "minLength",      "maxLength",
        "minInclusive", "maxInclusive", "totalDigits", "fractionDigits", NULL};
    char out[400];
    size_t o = 0;
    int in_set = 0;

    for (const char *p = msg; *p && o + 16 < sizeof(out); p++) {
        if (*p == '{' && p[1] == '\'') {
            in_set = 1; /* an enumeration's allowed values: {'a', 'b'} */
        } else if (*p == '}' && in_set) {
            in_set = 0;
        } else if (*p == '\'' && !in_set) {
            const char *end = strchr(p + 1, '\'');
            size_t n = end ? (size_t)(end - p - 1) : 0;
            int keep = 0;
            if (end == NULL) {
                /* a quote left open: the message was cut inside a value */
                memcpy(out + o, "'(withheld)", 11);
                o += 11;
                break;
            }
            /* element names ('{ns}name'), types, and the name after "attribute " */
            keep = p[1] == '{' || strncmp(p + 1, "xs:", 3) == 0 ||
                   (p - msg >= 10 && strncmp(p - 10, "attribute ", 10) == 0);
            for (size_t k = 0; !keep && keep_words[k]; k++)
                keep = strlen(keep_words[k]) == n && strncmp(p + 1, keep_words[k], n) == 0;
            if (keep) {
                if (o + n + 2 >= sizeof(out))
                    break;
                memcpy(out + o, p, n + 2);
                o += n + 2;
            } else {
                memcpy(out + o, "'(withheld)'", 12);
                o += 12;
            }
            p = end;
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
    snprintf(msg, size, "%s", out);
}

/* Replaces every occurrence of `value` (and of it without surrounding white space) in
 * `msg` with "(withheld)". */
static void withhold(char *msg, size_t size, const char *value)
{
    char needle[400], out[400];
    const char *v = value;
    size_t n, o = 0;

    while (isspace((unsigned char)*v))
        v++;
    snprintf(needle, sizeof(needle), "%s", v);
    n = strlen(needle);
    while (n > 0 && isspace((unsigned char)needle[n - 1]))
        needle[--n] = '\0';
    if (n == 0)
        return;
    for (const char *p = msg; *p && o + 12 < sizeof(out);) {
        if (strncmp(p, needle, n) == 0) {
            memcpy(out + o, "(withheld)", 10);
            o += 10;
            p += n;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    snprintf(msg, size, "%s", out);
}

/*
 * The value a schema message is about, withheld by what it is rather than by guessing at
 * quotes (a value may itself hold quotes or braces): the offending attribute's value, or
 * the element's text when it has no child elements.
 */
static void withhold_node_value(char *msg, size_t size, xmlNodePtr node)
{
    const char *attr = strstr(msg, "attribute '");
    xmlChar *value = NULL;

    if (node == NULL || node->type != XML_ELEMENT_NODE)
        return;
    if (attr != NULL) {
        char name[128];
        const char *end = strchr(attr + 11, '\'');
        size_t n = end ? (size_t)(end - attr - 11) : 0;
        if (n == 0 || n >= sizeof(name))
            return;
        memcpy(name, attr + 11, n);
        name[n] = '\0';
        for (xmlAttrPtr a = node->properties; a != NULL && value == NULL; a = a->next) {
            if (xmlStrEqual(a->name, BAD_CAST name))
                value = xmlNodeGetContent((xmlNodePtr)a);
        }
    } else {
        int leaf = 1;
        for (xmlNodePtr c = node->children; c != NULL; c = c->next)
            leaf = leaf && c->type != XML_ELEMENT_NODE;
        if (leaf)
            value = xmlNodeGetContent(node);
    }
    if (value != NULL)
        withhold(msg, size, (const char *)value);
    xmlFree(value);
}

static void schema_error(void *user, xmlErrorPtr xe)
{
    schema_errs *se = user;
    char msg[400];
    size_t n;

    if (se->seen++ > 0 || xe == NULL)
        return;
    snprintf(msg, sizeof(msg), "%s", xe->message ? xe->message : "schema violation");
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    withhold_node_value(msg, sizeof(msg), (xmlNodePtr)xe->node);
    redact_values(msg, sizeof(msg));
    spb_err_set(se->err, SPB_EINVALID, SPB_ISSUE_STRUCTURE, "not valid against the schema: %s",
                msg);
    spb_err_hint(se->err, "fix the element at this line so the document matches the XSD");
    spb_err_where(se->err, NULL, xe->line, 0, NULL);
}

int spb_xml_validate_schema(xmlDocPtr doc, const char *xsd_path, spb_err *err)
{
    xmlSchemaPtr schema;
    xmlSchemaValidCtxtPtr vctxt = NULL;
    schema_errs se = {err, 0};
    int rc;

    schema = schema_get(xsd_path, err);
    if (schema == NULL)
        return SPB_ECONFIG;
    vctxt = xmlSchemaNewValidCtxt(schema);
    if (vctxt == NULL)
        return spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "cannot validate");
    xmlSchemaSetValidStructuredErrors(vctxt, schema_error, &se);
    rc = xmlSchemaValidateDoc(vctxt, doc);
    xmlSchemaFreeValidCtxt(vctxt);
    if (rc != 0) {
        if (se.seen == 0)
            spb_err_set(err, SPB_EINVALID, SPB_ISSUE_STRUCTURE, "not valid against the schema");
        return SPB_EINVALID;
    }
    return 0;
}

void spb_xml_global_cleanup(void)
{
    pthread_mutex_lock(&schema_lock);
    for (int i = 0; i < SCHEMA_CACHE_MAX; i++) {
        if (schema_cache[i].schema != NULL)
            xmlSchemaFree(schema_cache[i].schema);
        schema_cache[i].schema = NULL;
    }
    pthread_mutex_unlock(&schema_lock);
    xmlCleanupParser();
}
