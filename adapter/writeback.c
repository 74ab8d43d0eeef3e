/*
 * Write-back document rendering with libxml2's tree API, so every value is escaped by the
 * library, never by hand. The GP2GP form is a complete EhrExtract (recordTarget with the
 * NHS number, the service in the agentDirectory as author) around one ehrComposition, so a
 * GP system, or spbridge's own gp2gp dialect, can read it without other context.
 */
#include "spbridge/writeback.h"

#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spbridge/ident.h"

#define HL7_NS     "urn:hl7-org:v3"
#define XSI_NS     "http://www.w3.org/2001/XMLSchema-instance"
#define NATIVE_NS  "urn:spbridge:native:1"
#define OID_SNOMED "2.16.840.1.113883.2.1.3.2.4.15"

const char *spb_codesystem_oid(const char *uri)
{
    if (uri == NULL)
        return NULL;
    if (strcmp(uri, "http://snomed.info/sct") == 0)
        return OID_SNOMED;
    if (strcmp(uri, "http://read.info/readv2") == 0)
        return "2.16.840.1.113883.2.1.6.2";
    if (strcmp(uri, "http://read.info/ctv3") == 0)
        return "2.16.840.1.113883.2.1.3.2.4.14";
    if (strncmp(uri, "urn:oid:", 8) == 0)
        return uri + 8;
    return NULL;
}

/* FHIR dateTime -> HL7 v3 TS ("2026-11-21T10:15:00+01:00" -> "20261121101500+0100"). */
static void hl7_ts(char *out, size_t size, const char *fhir)
{
    size_t o = 0;
    int in_zone = 0;
    if (fhir == NULL) {
        out[0] = '\0';
        return;
    }
    for (const char *p = fhir; *p && o + 1 < size; p++) {
        if (*p == 'T' || *p == ':' || (*p == '-' && !in_zone && p - fhir < 10))
            continue;
        if (*p == '.') { /* drop fractional seconds */
            while (p[1] >= '0' && p[1] <= '9')
                p++;
            continue;
        }
        if (*p == 'Z') {
            snprintf(out + o, size - o, "+0000");
            return;
        }
        if ((*p == '+' || *p == '-') && p - fhir >= 10)
            in_zone = 1;
        out[o++] = *p;
    }
    out[o] = '\0';
}

static xmlNodePtr child(xmlNodePtr parent, xmlNsPtr ns, const char *name)
{
    return xmlNewChild(parent, ns, BAD_CAST name, NULL);
}

static void attr(xmlNodePtr n, const char *name, const char *value)
{
    if (value != NULL && *value != '\0')
        xmlNewProp(n, BAD_CAST name, BAD_CAST value);
}

static void id_root(xmlNodePtr parent, xmlNsPtr ns, const char *uuid)
{
    char upper[SPB_UUID_LEN + 1];
    for (int i = 0; i < SPB_UUID_LEN && uuid[i]; i++)
        upper[i] = (char)(uuid[i] >= 'a' && uuid[i] <= 'f' ? uuid[i] - 32 : uuid[i]);
    upper[SPB_UUID_LEN] = '\0';
    attr(child(parent, ns, "id"), "root", upper);
}

static int coded(xmlNodePtr n, const char *system, const char *code, const char *display)
{
    const char *oid = spb_codesystem_oid(system);
    attr(n, "code", code);
    attr(n, "codeSystem", oid ? oid : system);
    attr(n, "displayName", display);
    return 0;
}

/* Serialises and frees `doc`; returns a malloc'd NUL-terminated copy. */
static char *dump_doc(xmlDocPtr doc, size_t *len, spb_err *err)
{
    xmlChar *mem = NULL;
    int size = 0;
    char *out = NULL;

    xmlDocDumpFormatMemoryEnc(doc, &mem, &size, "UTF-8", 1);
    if (mem == NULL) {
        spb_err_set(err, SPB_ENOMEM, SPB_ISSUE_EXCEPTION, "cannot render the write-back");
        goto out;
    }
    out = malloc((size_t)size + 1);
    if (out != NULL) {
        memcpy(out, mem, (size_t)size);
        out[size] = '\0';
        *len = (size_t)size;
    }
out:
    xmlFree(mem);
    xmlFreeDoc(doc);
    return out;
}

static char *render_gp2gp(const spb_wb_doc *d, size_t *len, spb_err *err)
{
    xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "EhrExtract");
    xmlNsPtr ns = xmlNewNs(root, BAD_CAST HL7_NS, NULL);
    xmlNsPtr xsi = xmlNewNs(root, BAD_CAST XSI_NS, BAD_CAST "xsi");
    xmlNodePtr n, folder, comp, agent, org;
    char ts[40], uuid[SPB_UUID_LEN + 1], service_agent[SPB_UUID_LEN + 1], name[200];

    xmlSetNs(root, ns);
    xmlDocSetRootElement(doc, root);
    attr(root, "classCode", "EXTRACT");
    attr(root, "moodCode", "EVN");
    hl7_ts(ts, sizeof(ts), d->recorded);
    snprintf(name, sizeof(name), "extract|%s", d->doc_uuid);
    spb_uuid_v5(uuid, name);
    id_root(root, ns, uuid);
    attr(child(root, ns, "statusCode"), "code", "COMPLETE");
    attr(child(root, ns, "availabilityTime"), "value", ts);
    n = child(child(root, ns, "recordTarget"), ns, "patient");
    attr(n->parent, "typeCode", "RCT");
    attr(n, "classCode", "PAT");
    n = child(n, ns, "id");
    attr(n, "root", "2.16.840.1.113883.2.1.4.1");
    attr(n, "extension", d->nhs_number);
    n = child(root, ns, "author");
    attr(n, "typeCode", "AUT");
    attr(child(n, ns, "time"), "value", ts);
    n = child(child(n, ns, "AgentOrgSDS"), ns, "agentOrganizationSDS");
    attr(n->parent, "classCode", "AGNT");
    attr(n, "classCode", "ORG");
    attr(n, "determinerCode", "INSTANCE");
    n = child(n, ns, "id");
    attr(n, "root", "1.2.826.0.1285.0.1.10");
    attr(n, "extension", d->practice_ods);

    folder = child(child(root, ns, "component"), ns, "ehrFolder");
    attr(folder->parent, "typeCode", "COMP");
    attr(folder, "classCode", "FOLDER");
    attr(folder, "moodCode", "EVN");
    snprintf(name, sizeof(name), "folder|%s", d->doc_uuid);
    spb_uuid_v5(uuid, name);
    id_root(folder, ns, uuid);
    attr(child(folder, ns, "statusCode"), "code", "COMPLETE");
    attr(child(folder, ns, "availabilityTime"), "value", ts);
    /* the service, as the author of the entries */
    snprintf(name, sizeof(name), "service-agent|%s", d->service_ods ? d->service_ods : "");
    spb_uuid_v5(service_agent, name);
    agent =
        child(child(child(child(folder, ns, "responsibleParty"), ns, "agentDirectory"), ns, "part"),
              ns, "Agent");
    attr(agent->parent->parent->parent, "typeCode", "RESP");
    attr(agent->parent->parent, "classCode", "AGNT");
    attr(agent->parent, "typeCode", "PART");
    attr(agent, "classCode", "AGNT");
    id_root(agent, ns, service_agent);
    org = child(agent, ns, "agentOrganization");
    attr(org, "classCode", "ORG");
    attr(org, "determinerCode", "INSTANCE");
    if (d->service_ods != NULL && d->service_ods[0] != '\0') {
        n = child(org, ns, "id");
        attr(n, "root", "2.16.840.1.113883.2.1.4.3");
        attr(n, "extension", d->service_ods);
    }
    xmlNewTextChild(org, ns, BAD_CAST "name",
                    BAD_CAST(d->service_name ? d->service_name : "Social prescribing service"));

    comp = child(child(folder, ns, "component"), ns, "ehrComposition");
    attr(comp->parent, "typeCode", "COMP");
    attr(comp, "classCode", "COMPOSITION");
    attr(comp, "moodCode", "EVN");
    id_root(comp, ns, d->doc_uuid);
    coded(child(comp, ns, "code"), "http://snomed.info/sct", "24591000000103", "Other report");
    attr(child(comp, ns, "statusCode"), "code", "COMPLETE");
    attr(child(child(comp, ns, "effectiveTime"), ns, "center"), "value", ts);
    attr(child(comp, ns, "availabilityTime"), "value", ts);
    n = child(comp, ns, "author");
    attr(n, "typeCode", "AUT");
    attr(n, "contextControlCode", "OP");
    attr(child(n, ns, "time"), "value", ts);
    n = child(n, ns, "agentRef");
    attr(n, "classCode", "AGNT");
    id_root(n, ns, service_agent);
    for (size_t i = 0; i < d->nentries; i++) {
        const spb_wb_entry *e = &d->entries[i];
        xmlNodePtr obs = child(child(comp, ns, "component"), ns, "ObservationStatement");
        char ets[40], note[600];
        attr(obs->parent, "typeCode", "COMP");
        attr(obs, "classCode", "OBS");
        attr(obs, "moodCode", "EVN");
        snprintf(name, sizeof(name), "entry|%s|%zu", d->doc_uuid, i);
        spb_uuid_v5(uuid, name);
        id_root(obs, ns, uuid);
        coded(child(obs, ns, "code"), e->system, e->code, e->display);
        attr(child(obs, ns, "statusCode"), "code", "COMPLETE");
        hl7_ts(ets, sizeof(ets), e->effective ? e->effective : d->recorded);
        attr(child(child(obs, ns, "effectiveTime"), ns, "center"), "value", ets);
        attr(child(obs, ns, "availabilityTime"), "value", ts);
        if (e->value_kind != NULL) {
            xmlNodePtr v = child(obs, ns, "value");
            if (strcmp(e->value_kind, "quantity") == 0) {
                xmlNewNsProp(v, xsi, BAD_CAST "type", BAD_CAST "PQ");
                attr(v, "value", e->value);
                attr(v, "unit", e->unit && *e->unit ? e->unit : "1");
            } else if (strcmp(e->value_kind, "integer") == 0) {
                xmlNewNsProp(v, xsi, BAD_CAST "type", BAD_CAST "INT");
                attr(v, "value", e->value);
            } else if (strcmp(e->value_kind, "code") == 0) {
                xmlNewNsProp(v, xsi, BAD_CAST "type", BAD_CAST "CD");
                coded(v, e->value_system, e->value_code, e->value_display);
            } else if (strcmp(e->value_kind, "boolean") == 0) {
                xmlNewNsProp(v, xsi, BAD_CAST "type", BAD_CAST "BL");
                attr(v, "value", e->value);
            } else {
                xmlNewNsProp(v, xsi, BAD_CAST "type", BAD_CAST "ST");
                xmlNodeAddContent(v, BAD_CAST(e->value ? e->value : ""));
            }
        }
        /* the link to the original referral and the service's Task version */
        snprintf(note, sizeof(note),
                 "Social prescribing referral urn:uuid:%s; %s version %s (%s%s%s)%s%s", d->referral,
                 d->task_ref, d->version, d->status, d->business_status ? ", " : "",
                 d->business_status ? d->business_status : "",
                 d->reason_text && i == 0 ? ". Reason: " : "",
                 d->reason_text && i == 0 ? d->reason_text : "");
        n = child(obs, ns, "pertinentInformation");
        attr(n, "typeCode", "PERT");
        attr(child(n, ns, "sequenceNumber"), "value", "+1");
        n = child(n, ns, "pertinentAnnotation");
        attr(n, "classCode", "OBS");
        attr(n, "moodCode", "EVN");
        xmlNewTextChild(n, ns, BAD_CAST "text", BAD_CAST note);
        n = child(obs, ns, "Participant");
        attr(n, "typeCode", "PRF");
        attr(n, "contextControlCode", "OP");
        n = child(n, ns, "agentRef");
        attr(n, "classCode", "AGNT");
        id_root(n, ns, service_agent);
    }
    return dump_doc(doc, len, err);
}

static char *render_native(const spb_wb_doc *d, size_t *len, spb_err *err)
{
    xmlDocPtr doc = xmlNewDoc(BAD_CAST "1.0");
    xmlNodePtr root = xmlNewNode(NULL, BAD_CAST "outcome");
    xmlNsPtr ns = xmlNewNs(root, BAD_CAST NATIVE_NS, NULL);
    xmlNodePtr n;

    xmlSetNs(root, ns);
    xmlDocSetRootElement(doc, root);
    attr(root, "id", d->doc_uuid);
    attr(root, "referral", d->referral);
    attr(root, "task", d->task_ref);
    attr(root, "version", d->version);
    attr(child(root, ns, "practice"), "ods", d->practice_ods);
    xmlNewTextChild(root, ns, BAD_CAST "recorded", BAD_CAST(d->recorded ? d->recorded : ""));
    n = child(root, ns, "service");
    attr(n, "ods", d->service_ods);
    attr(n, "name", d->service_name);
    xmlNewTextChild(child(root, ns, "patient"), ns, BAD_CAST "nhsNumber", BAD_CAST d->nhs_number);
    xmlNewTextChild(root, ns, BAD_CAST "status", BAD_CAST d->status);
    if (d->business_status != NULL)
        xmlNewTextChild(root, ns, BAD_CAST "businessStatus", BAD_CAST d->business_status);
    if (d->reason_text != NULL)
        xmlNewTextChild(root, ns, BAD_CAST "reason", BAD_CAST d->reason_text);
    for (size_t i = 0; i < d->nentries; i++) {
        const spb_wb_entry *e = &d->entries[i];
        xmlNodePtr en = child(root, ns, "entry");
        attr(en, "system", e->system);
        attr(en, "code", e->code);
        attr(en, "display", e->display);
        attr(en, "source", e->source);
        if (e->effective != NULL)
            attr(en, "effective", e->effective);
        if (e->value_kind != NULL) {
            xmlNodePtr v = child(en, ns, "value");
            attr(v, "kind", e->value_kind);
            attr(v, "value", e->value);
            attr(v, "unit", e->unit);
            attr(v, "system", e->value_system);
            attr(v, "code", e->value_code);
            attr(v, "display", e->value_display);
        }
    }
    return dump_doc(doc, len, err);
}

char *spb_writeback_render(const spb_wb_doc *d, size_t *len, spb_err *err)
{
    *len = 0;
    if (d->format != NULL && strcmp(d->format, "native") == 0)
        return render_native(d, len, err);
    return render_gp2gp(d, len, err);
}
