#!/usr/bin/env python3
"""Builds the fuzz seed corpora.

  fuzz/corpus/<target>/        small committed seed set (a handful of files per target)
  fuzz/corpus-local/<target>/  gitignored: every real input from the webhook corpus (tests/corpus) and the
                               mapping files, plus whatever libFuzzer adds during runs

Usage: python3 fuzz/make_seeds.py [--corpus tests/corpus] [--mappings mappings]
Re-running overwrites the seeds it writes and leaves libFuzzer's own files alone.
"""
import argparse
import gzip
import json
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Indices into CONTENT_TYPES in fuzz_targets/body_auto.rs.
CT_JSON, CT_FORM, CT_FORM_1251, CT_MULTIPART, CT_XML, CT_TEXT, CT_NONE = 0, 2, 3, 4, 5, 7, 8
# Encoding modes in body_auto.rs: 0 none, 1 raw gzip, 3 harness-gzip, 4 harness-zlib.
ENC_NONE, ENC_RAW_GZIP, ENC_GZIP, ENC_ZLIB = 0, 1, 3, 4


def multipart(boundary: bytes, parts) -> bytes:
    out = b"preamble\r\n"
    for name, filename, ctype, data in parts:
        out += b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"" + name + b"\""
        if filename is not None:
            out += b"; filename=\"" + filename + b"\""
        out += b"\r\n"
        if ctype:
            out += b"Content-Type: " + ctype + b"\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


MP_PARTS = [
    (b"contact[name]", None, None, b"Ann Lee"),
    (b"contact[city]", None, b"text/plain; charset=windows-1251", b"\xca\xe8\xe5\xe2"),
    (b"tags[]", None, None, b"a"),
    (b"tags[]", None, None, b"b"),
    (b"contact[photo]", b"me.png", b"image/png", b"\x89PNG\r\n\x1a\n--XyZ-not-a-boundary\r\n"),
    (b"\xd0\xb8\xd0\xbc\xd1\x8f", None, None, "Иван".encode()),
]

XML_DOCS = [
    b'<?xml version="1.0" encoding="UTF-8"?>\n<order id="42" xmlns:x="urn:x"><x:item qty="2">A&amp;B</x:item>'
    b"<item>C</item><note><![CDATA[<raw> & text]]></note><empty/><!-- c --></order>",
    b'<?xml version="1.0" encoding="windows-1251"?><r><name>\xc8\xe2\xe0\xed</name><a>1</a><a>2</a></r>',
    b"<a><b><c><d>deep &#x41;&#66;&lt;&quot;</d></c></b></a>",
    b'<!DOCTYPE r [<!ENTITY e "x">]><r x="1" y=\'2\'>&e;<?pi data?>text<s/>tail</r>',
    b"\xff\xfe<\x00a\x00>\x001\x00<\x00/\x00a\x00>\x00",
    b"<rss version=\"2.0\"><channel><title>T</title><item><title>I1</title></item><item><title>I2</title></item></channel></rss>",
]

FORM_SYNTH = [
    b"a[]=1&a[]=2&b[c][d]=x&b[c][e]=y&0=a&1=b&n=%FF%FEok&flag&x=1&x=2&x[]=3&p=a+b%20c",
    b"leads%5Bstatus%5D%5B0%5D%5Bid%5D=25399013&leads[status][1][id]=7&a[b=1&[x]=2&c[d]e=3&z[1]=x&z[3]=y",
    b"name=%C8%E2%E0%ED+%CF%E5%F2%F0%EE%E2&contact[city]=%CA%E8%E5%E2&a%5B%E8%EC%FF%5D=1",
]


def write(dirpath: Path, name: str, data: bytes):
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / name).write_bytes(data)


def sig_seed(case, shared: Path) -> bytes:
    lines = []
    if case.get("now") is not None:
        lines.append(f":now {case['now']}")
    if case.get("request_url"):
        lines.append(f":url {case['request_url']}")
    if case.get("method"):
        lines.append(f":method {case['method']}")
    lines.append(f":preset {case['provider']}")
    secret = case.get("secret")
    if isinstance(secret, str) and case["provider"] not in ("sendgrid", "paddle-classic") and "\n" not in secret:
        lines.append(f":secret {secret}")
    for k, v in (case.get("headers") or {}).items():
        lines.append(f"{k}: {v}")
    body = (shared / case["body_file"]).read_bytes() if case.get("body_file") else b""
    return "\n".join(lines).encode() + b"\n\n" + body


SIG_SYNTH = {
    # Presets without a manifest vector: well-formed headers around the clock ({ts}/{ms}).
    "webflow": ":preset webflow\nx-webflow-timestamp: {ms}\nx-webflow-signature: " + "ab" * 32 + "\n\n{\"triggerType\":\"form_submission\"}",
    "calendly": ":preset calendly\nCalendly-Webhook-Signature: t={ts},v1=" + "cd" * 32 + "\n\n{\"event\":\"invitee.created\"}",
    "typeform": ":preset typeform\n:sign\nTypeform-Signature: sha256=AAAA\n\n{\"event_id\":\"x\"}",
    "hubspot-v3": ":preset hubspot\n:url https://www.example.com/webhook_uri?a=%20b\nX-HubSpot-Request-Timestamp: {ms}\n"
                  "X-HubSpot-Signature-v3: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n[{\"subscriptionType\":\"contact.creation\"}]",
    "mailchimp": ":preset mailchimp\n:url https://hub.example/hooks/m?token=It%27s+a+Secret+to+Everybody\n\ntype=subscribe&data[email]=a%40b.c",
    "bitrix24": ":preset bitrix24\n\nevent=ONCRMLEADADD&auth[application_token]=It%27s+a+Secret+to+Everybody",
    "all-presets": "Stripe-Signature: t={ts},v1=00\nwebhook-id: msg_1\nwebhook-timestamp: {ts}\nwebhook-signature: v1,AAAA\n"
                   "X-Slack-Request-Timestamp: {ts}\nX-Slack-Signature: v0=00\nPaddle-Signature: ts={ts};h1=00\n"
                   "X-Twilio-Email-Event-Webhook-Timestamp: {ts}\nX-Twilio-Email-Event-Webhook-Signature: MEUCIQ==\n\n{}",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", dest="shared", default=str(HERE.parent / "tests" / "corpus"))
    ap.add_argument("--mappings", default=str(HERE.parent / "mappings"))
    args = ap.parse_args()
    shared, mappings = Path(args.shared), Path(args.mappings)
    seed, local = HERE / "corpus", HERE / "corpus-local"

    bodies = sorted(
        p for p in shared.rglob("*")
        if p.is_file() and p.suffix in (".json", ".txt")
        and not {"jsonpath-cts", "mustache-spec"} & set(p.relative_to(shared).parts)
        and p.name != "manifest.json" and p.stat().st_size <= 65536
    )

    def is_form(p: Path) -> bool:
        return p.suffix == ".txt" and b"=" in p.read_bytes()[:200] and not p.read_bytes().lstrip().startswith((b"{", b"["))

    # --- body_auto: [content-type index, encoding mode] + body
    ba = "body_auto"
    write(seed / ba, "json_stripe", bytes([CT_JSON, ENC_NONE]) + (shared / "stripe/sig/evt_test_webhook.json").read_bytes())
    write(seed / ba, "json_gzip_harness", bytes([CT_JSON, ENC_GZIP]) + (shared / "hubspot/sig/contact_creation_batch.json").read_bytes())
    write(seed / ba, "form_twilio", bytes([CT_FORM, ENC_NONE]) + (shared / "twilio/voice_params.txt").read_bytes())
    write(seed / ba, "form_cp1251", bytes([CT_FORM_1251, ENC_NONE]) + FORM_SYNTH[2])
    write(seed / ba, "form_raw_gzip", bytes([CT_FORM, ENC_RAW_GZIP]) + gzip.compress(FORM_SYNTH[0], mtime=0))
    write(seed / ba, "multipart", bytes([CT_MULTIPART, ENC_NONE]) + multipart(b"XyZ", MP_PARTS))
    write(seed / ba, "xml", bytes([CT_XML, ENC_ZLIB]) + XML_DOCS[0])
    write(seed / ba, "text", bytes([CT_TEXT, ENC_NONE]) + b"hello \xe2\x9c\x93 world")
    for p in bodies:
        ct = CT_FORM if is_form(p) else CT_JSON
        tag = "_".join(p.relative_to(shared).parts)
        write(local / ba, tag, bytes([ct, ENC_NONE]) + p.read_bytes())
        write(local / ba, tag + ".gz", bytes([ct, ENC_RAW_GZIP]) + gzip.compress(p.read_bytes(), mtime=0))
        write(local / ba, tag + ".z", bytes([ct, 2]) + zlib.compress(p.read_bytes()))
    for i, x in enumerate(XML_DOCS):
        write(local / ba, f"xml{i}", bytes([CT_XML, ENC_NONE]) + x)

    # --- form: the body as is
    for rel in ["amocrm/lead_update.txt", "bitrix24/ONCRMLEADADD.txt", "slack/slash_command_webhook_collect.txt",
                "paddle-classic/subscription_created.txt", "mandrill/send_event.txt"]:
        write(seed / "form", rel.replace("/", "_"), (shared / rel).read_bytes())
    for i, f in enumerate(FORM_SYNTH):
        write(seed / "form", f"synthetic{i}", f)
    for p in bodies:
        if is_form(p):
            write(local / "form", "_".join(p.relative_to(shared).parts), p.read_bytes())

    # --- xml: [content-type index] + document
    for i, x in enumerate(XML_DOCS):
        sel = {1: 3, 4: 4}.get(i, 1)  # the windows-1251 doc with a 1251 header, UTF-16 with utf-16le
        write(seed / "xml", f"doc{i}", bytes([sel]) + x)
        write(local / "xml", f"doc{i}_nohdr", bytes([0]) + x)

    # --- multipart: [ctl: len | 0x40 quoted | 0x80 charset] + boundary + body
    write(seed / "multipart", "fields_files", bytes([3]) + b"XyZ" + multipart(b"XyZ", MP_PARTS))
    write(seed / "multipart", "quoted_space", bytes([0x40 | 3]) + b"a b" + multipart(b"a b", MP_PARTS[:2]))
    write(seed / "multipart", "charset_1251", bytes([0x80 | 5]) + b"-----" + multipart(b"-----", MP_PARTS[1:3]))
    write(seed / "multipart", "nameless",
          bytes([3]) + b"XyZ" + b"--XyZ\r\nContent-Type: text/plain\r\n\r\nhello\r\n--XyZ--\r\n")
    b = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
    write(local / "multipart", "webkit", bytes([len(b)]) + b + multipart(b, MP_PARTS))

    # --- signature_headers: manifest signature cases (+ synthetic ones for presets without vectors)
    manifest = json.loads((shared / "manifest.json").read_text())
    cases = [c for c in manifest["cases"] if c.get("kind") == "signature" and c.get("body_file")]
    committed_providers = set()
    for c in cases:
        data = sig_seed(c, shared)
        write(local / "signature_headers", c["id"], data)
        if c["provider"] not in committed_providers and len(data) < 4096 and len(committed_providers) < 10:
            committed_providers.add(c["provider"])
            write(seed / "signature_headers", c["id"], data)
    for name, text in SIG_SYNTH.items():
        target = seed if name in ("webflow", "calendly", "hubspot-v3", "all-presets") else local
        write(target / "signature_headers", "synthetic_" + name, text.encode())

    # --- mapping_compile: mapping files (all mapping.yaml under mappings/; committed: up to 6)
    maps = sorted(mappings.glob("*/mapping.yaml"))
    for p in maps:
        write(local / "mapping_compile", p.parent.name + ".yaml", p.read_bytes())
    for p in [m for m in maps if m.parent.name in ("stripe-deals", "amocrm-leads", "email-events",
                                                    "sendgrid-events", "typeform-hubspot", "bitrix24-leads")]:
        write(seed / "mapping_compile", p.parent.name + ".yaml", p.read_bytes())

    n = sum(1 for _ in seed.rglob("*") if _.is_file())
    size = sum(p.stat().st_size for p in seed.rglob("*") if p.is_file())
    print(f"committed seeds: {n} files, {size} bytes; local: {sum(1 for _ in local.rglob('*') if _.is_file())} files")


if __name__ == "__main__":
    main()
