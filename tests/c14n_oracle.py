#!/usr/bin/python3
"""Independent exclusive-c14n oracle (libxml2 through Python lxml) for
tests/it/c14n_oracle.rs. For each XML file given, prints one JSON line:
per element in document order, its exclusive canonical form (without
comments), the same with every in-scope prefix in the InclusiveNamespaces
PrefixList, and, for an element with a direct ds:Signature child, its form
after the enveloped-signature transform. Bytes are base64.

lxml quirks handled here: `inclusive_ns_prefixes` silently ignores
`#default` (not used), and `remove()` drops the removed element's tail, so
the tail is moved to the previous node first (the enveloped transform keeps
the whitespace after the Signature)."""
import base64
import json
import sys

from lxml import etree

DSIG = "{http://www.w3.org/2000/09/xmldsig#}Signature"


def parse(path):
    parser = etree.XMLParser(resolve_entities=False, remove_blank_text=False, no_network=True)
    return etree.parse(path, parser)


def c14n(el, prefixes=None):
    return base64.b64encode(etree.tostring(
        el, method="c14n", exclusive=True, with_comments=False,
        inclusive_ns_prefixes=prefixes)).decode()


def main():
    for path in sys.argv[1:]:
        out = []
        try:
            tree = parse(path)
        except etree.XMLSyntaxError as e:
            print(json.dumps({"file": path, "error": str(e)}))
            continue
        elements = list(tree.getroot().iter(etree.Element))
        for i, el in enumerate(elements):
            prefixes = sorted(p for p in el.nsmap if p is not None)
            item = {"plain": c14n(el), "prefixes": prefixes, "inclusive": c14n(el, prefixes), "enveloped": None}
            if any(c.tag == DSIG for c in el):
                fresh = list(parse(path).getroot().iter(etree.Element))[i]
                sig = next(c for c in fresh if c.tag == DSIG)
                tail = sig.tail or ""
                prev = sig.getprevious()
                if prev is not None:
                    prev.tail = (prev.tail or "") + tail
                else:
                    fresh.text = (fresh.text or "") + tail
                sig.tail = None
                fresh.remove(sig)
                item["enveloped"] = c14n(fresh)
            out.append(item)
        print(json.dumps({"file": path, "elements": out}))


main()
