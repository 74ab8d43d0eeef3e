#!/usr/bin/env python3
"""Realistic GP2GP referral messages for golden cases, built from NHS England's schema-valid
800 KB RCMR_IN030000UK06 sample in ../shared by literal substitution (nothing of it is copied
into this repository).

usage: make_record.py SHARED_DIR SCENARIO   (prints the message on stdout)

Every scenario starts from the same practice: the extract's author (AgentOrgSDS) is A82038,
and the directory's "TEMPLE SOWERBY MEDICAL PRACTICE" entries gain that ODS code, so the
sender is known the way GP systems send it. Then it adds organisations to the agentDirectory
and RequestStatements to the first consultation, as a scenario needs. Each substitution
must find its text exactly once, so a changed sample fails loudly instead of quietly
producing another message.
"""
import sys

SNOMED = "2.16.840.1.113883.2.1.3.2.4.15"
CTV3 = "2.16.840.1.113883.2.1.3.2.4.14"
READV2 = "2.16.840.1.113883.2.1.6.2"
ODS = "2.16.840.1.113883.2.1.4.3"

# agentDirectory ids in the sample (see the sample's agentDirectory)
GP_WHITCOMBE = "72DB5398-C825-4498-88CA-899A3653EC04"  # General Medical Practitioner
GP_MCAVENUE = "2D70F602-6BB1-47E0-B2EC-39912A59787D"  # General Medical Practitioner
CLERK = "BB811863-B9FB-4283-A19E-92D077EA403D"  # Clerical Worker (titled "Dr")
SERVICE = "5E1A0C3B-7D2F-4A68-9B1C-0D2E3F405162"  # added: a configured SP service
HUB = "6F2B1D4C-8E30-4B79-AC2D-1E3F40516273"  # added: a community hub, no ODS code
OTHER = "7A3C2E5D-9F41-4C8A-BD3E-2F4051627384"  # added: another organisation with ODS
LINK_WORKER = "8B4D3F6E-A052-4D9B-8E4F-305162738495"  # added: a link worker at X26SP1
LONE_WORKER = "9C5E4A7F-B163-4EAC-9F50-4162738495A6"  # added: a link worker, no organisation


def replace_once(text, old, new):
    count = text.count(old)
    if count != 1:
        sys.exit(f"make_record: expected one {old[:60]!r} in the sample, found {count}")
    return text.replace(old, new)


def org_agent(agent_id, name, ods=None, role="Social prescribing service"):
    ident = f'<id root="{ODS}" extension="{ods}"/>' if ods else ""
    return (f'<part typeCode="PART"><Agent classCode="AGNT"><id root="{agent_id}"/>'
            f'<code nullFlavor="UNK"><originalText>{role}</originalText></code>'
            f'<agentOrganization classCode="ORG" determinerCode="INSTANCE">{ident}'
            f'<name>{name}</name></agentOrganization></Agent></part>')


def request(stmt_id, code, system, display, when, recipient=None, participants=(),
            priority=None, text=None, translation=None):
    out = [f'<component typeCode="COMP"><RequestStatement classCode="OBS" moodCode="RQO">',
           f'<id root="{stmt_id}"/>',
           f'<code code="{code}" codeSystem="{system}" displayName="{display}">']
    if translation:
        out.append(f'<translation code="{translation[0]}" codeSystem="{translation[1]}" '
                   f'displayName="{display}"/>')
    out.append('</code>')
    if text:
        out.append(f'<text>{text}</text>')
    out.append(f'<statusCode code="COMPLETE"/><effectiveTime><center nullFlavor="NI"/>'
               f'</effectiveTime><availabilityTime value="{when}"/>')
    if priority:
        out.append(f'<priorityCode code="{priority}" codeSystem="{SNOMED}"/>')
    if recipient:
        out.append(f'<responsibleParty typeCode="RESP"><agentRef classCode="AGNT">'
                   f'<id root="{recipient}"/></agentRef></responsibleParty>')
    for type_code, ref in participants:
        out.append(f'<Participant typeCode="{type_code}" contextControlCode="OP">'
                   f'<agentRef classCode="AGNT"><id root="{ref}"/></agentRef></Participant>')
    out.append('</RequestStatement></component>')
    return "".join(out)


def base(shared):
    with open(f"{shared}/gp2gp/samples/RCMR_IN030000UK06-schema-example.xml",
              encoding="utf-8") as f:
        text = f.read()
    # a valid NHS number for the patient, the practice as the extract's author
    text = replace_once(text, 'extension="1234567890"', 'extension="9434765919"')
    text = replace_once(text, """    <author typeCode="AUT">
        <time value="20200101010101" />
        <AgentOrgSDS classCode="AGNT">
            <agentOrganizationSDS classCode="ORG" determinerCode="INSTANCE">
                <id root="1.2.826.0.1285.0.1.10" extension="GP2GPTEST" />""",
                        """    <author typeCode="AUT">
        <time value="20200101010101" />
        <AgentOrgSDS classCode="AGNT">
            <agentOrganizationSDS classCode="ORG" determinerCode="INSTANCE">
                <id root="1.2.826.0.1285.0.1.10" extension="A82038" />""")
    text = text.replace("""<representedOrganization classCode="ORG" determinerCode="INSTANCE">
            <name>TEMPLE SOWERBY MEDICAL PRACTICE</name>""",
                        f"""<representedOrganization classCode="ORG" determinerCode="INSTANCE">
            <id root="{ODS}" extension="A82038"/>
            <name>TEMPLE SOWERBY MEDICAL PRACTICE</name>""")
    return text


def add_agents(text, agents):
    return replace_once(text, "    </agentDirectory>", "".join(agents) + "    </agentDirectory>")


def add_requests(text, requests):
    # into the first consultation (CDFC5DF7...), before its first component
    anchor = """                <id root="2D70F602-6BB1-47E0-B2EC-39912A59787D"/>
            </agentRef>
        </Participant2>
        <component typeCode="COMP" >
    <ObservationStatement classCode="OBS" moodCode="EVN">
        <id root="263B2A9F-0B1D-4697-943A-328F70E068DE" />"""
    head, tail = anchor.split("        <component typeCode=\"COMP\" >", 1)
    return replace_once(text, anchor,
                        head + "".join(requests) + "        <component typeCode=\"COMP\" >" + tail)


def addressed(text):
    """Two referrals in one record: one addressed to a configured social prescribing
    service (SNOMED CT, urgent), one to a community hub that has no ODS code (CTV3)."""
    text = add_agents(text, [org_agent(SERVICE, "Wharfedale Social Prescribing Service", "X26SP1"),
                             org_agent(HUB, "Ilkley Community Hub")])
    return add_requests(text, [
        request("0A6F3E2D-1C4B-4A59-8E7D-6C5B4A392817", "871731000000106", SNOMED,
                "Referral to social prescribing service", "20100114104500", recipient=SERVICE,
                participants=[("PPRF", GP_WHITCOMBE)], priority="394849002"),
        request("1B7A4F3E-2D5C-4B6A-9F8E-7D6C5B4A3928", "XaaEC", CTV3,
                "Referral to social prescribing service", "20100114104600", recipient=HUB,
                participants=[("PRF", GP_MCAVENUE)], priority="394848005"),
    ])


def other_org(text):
    """A referral addressed to another organisation with an ODS code that is not a
    configured service: it is the performer, the practice's own service takes it."""
    text = add_agents(text, [org_agent(OTHER, "Aire Valley Wellbeing CIC", "B86011")])
    return add_requests(text, [
        request("2C8B5A4F-3E6D-4C7B-AF9E-8E7D6C5B4A39", "8T09.", READV2,
                "Referral to social prescribing service", "20100114104700", recipient=OTHER,
                participants=[("PPRF", GP_WHITCOMBE)]),
    ])


def admin_author(text):
    """The statement's only participant is a clerical worker (an author, not a performer);
    the consultation's performer (Participant2) is a GP, who is the requester. The
    priority is one spbridge does not map (441808003 Delayed priority): left out, with a
    warning, never a refusal. No recipient is named."""
    return add_requests(text, [
        request("3D9C6B5A-4F7E-4D8C-BA0F-9F8E7D6C5B4A", "871731000000106", SNOMED,
                "Referral to social prescribing service", "20100114104800",
                participants=[("AUT", CLERK)], priority="441808003"),
    ])


def person_agent(agent_id, given, family, org=None):
    represented = ""
    if org:
        represented = (f'<representedOrganization classCode="ORG" determinerCode="INSTANCE">'
                       f'<id root="{ODS}" extension="{org[0]}"/><name>{org[1]}</name>'
                       f'</representedOrganization>')
    return (f'<part typeCode="PART"><Agent classCode="AGNT"><id root="{agent_id}"/>'
            f'<code nullFlavor="UNK"><originalText>Link Worker</originalText></code>'
            f'<agentPerson classCode="PSN" determinerCode="INSTANCE"><name><given>{given}'
            f'</given><family>{family}</family></name></agentPerson>{represented}</Agent></part>')


def bare_extract(text):
    """The EhrExtract alone, as some GP systems post it without the HL7 wrapper."""
    start = text.index("<EhrExtract ")
    end = text.index("</EhrExtract>") + len("</EhrExtract>")
    body = text[start:end].replace("<EhrExtract ", '<EhrExtract xmlns="urn:hl7-org:v3" ', 1)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def link_workers(text):
    """A bare EhrExtract with two referrals addressed to named link workers: one who works
    for the configured service X26SP1 (the recipient is that organisation), one with no
    organisation in the record (the recipient is known by name only)."""
    text = add_agents(text, [
        person_agent(LINK_WORKER, "Jo", "Ambler", ("X26SP1", "Wharfedale Social Prescribing Service")),
        person_agent(LONE_WORKER, "Sam", "Keighley")])
    text = add_requests(text, [
        request("4EAD7C6B-5A8F-4E9D-8B1A-0A9F8E7D6C5B", "871731000000106", SNOMED,
                "Referral to social prescribing service", "20100114104900", recipient=LINK_WORKER,
                participants=[("PRF", GP_MCAVENUE)], priority="88694003"),
        request("5FBE8D7C-6B90-4FAE-9C2B-1B0A9F8E7D6C", "871731000000106", SNOMED,
                "Referral to social prescribing service", "20100114105000", recipient=LONE_WORKER,
                participants=[("PPRF", GP_WHITCOMBE)]),
    ])
    return bare_extract(text)


def addressed_uk07(text):
    """The addressed scenario as an RCMR_IN030000UK07 interaction."""
    return addressed(text).replace("RCMR_IN030000UK06", "RCMR_IN030000UK07")


SCENARIOS = {"addressed": addressed, "addressed-uk07": addressed_uk07, "other-org": other_org,
             "admin-author": admin_author, "link-workers": link_workers}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        sys.exit(f"usage: make_record.py SHARED_DIR {{{'|'.join(SCENARIOS)}}}")
    sys.stdout.write(SCENARIOS[sys.argv[2]](base(sys.argv[1])))
