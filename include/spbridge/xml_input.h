/*
 * Hardened XML reading for every dialect.
 *
 * GP systems and integration engines send XML we did not write, so parsing is bounded and
 * refuses anything that could reach the network or expand without limit: input size and
 * element depth are capped, any DOCTYPE is refused (it is how XXE and "billion laughs"
 * entity bombs arrive), no external resource is ever loaded, and the text must be UTF-8.
 * Errors carry the line and column of the problem.
 */
#ifndef SPB_XML_INPUT_H
#define SPB_XML_INPUT_H

#include <libxml/tree.h>
#include <stddef.h>

#include "spbridge/error.h"

typedef struct spb_xml_limits {
    size_t max_bytes; /* largest accepted document */
    int max_depth;    /* deepest accepted element nesting */
} spb_xml_limits;

#define SPB_XML_DEFAULT_MAX_BYTES (16u * 1024u * 1024u)
#define SPB_XML_DEFAULT_MAX_DEPTH 128

/* Process-wide libxml2 setup (no network, no entity loading); call once at start. */
void spb_xml_global_init(void);

/*
 * Parses `len` bytes named `name` (for messages) into a document the caller frees with
 * xmlFreeDoc. Returns 0, SPB_EINVALID (not well-formed, not UTF-8, DOCTYPE),
 * or SPB_ETOOBIG (over max_bytes or max_depth).
 */
int spb_xml_parse(xmlDocPtr *out, const char *data, size_t len, const char *name,
                  const spb_xml_limits *limits, spb_err *err);

/*
 * Validates `doc` against the XSD at `xsd_path` (compiled once and cached for the
 * process). Schema imports are resolved from the local folder only.
 */
int spb_xml_validate_schema(xmlDocPtr doc, const char *xsd_path, spb_err *err);

/* Frees cached schemas (tests and clean shutdown). */
void spb_xml_global_cleanup(void);

#endif
