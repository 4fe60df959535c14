#!/usr/bin/python3
"""libxml2's (Python lxml's) verdict on each document of a JSON list:
prints a JSON list of booleans (True = well-formed). Used by
tests/it/wellformed.rs: samlgate's parser must refuse whatever libxml2
refuses (it may refuse more: DTDs, PIs, comments beside text, ...)."""
import json
import sys

from lxml import etree

docs = json.load(open(sys.argv[1]))
out = []
for d in docs:
    try:
        etree.fromstring(d.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True))
        out.append(True)
    except etree.XMLSyntaxError:
        out.append(False)
print(json.dumps(out))
