#!/usr/bin/env python3
"""Validate upstream request bodies built by llmfd against the providers'
OpenAPI specs: anthropic__* files against CreateMessageParams in the
Anthropic spec, openai__* files against CreateChatCompletionRequest in the
OpenAI spec. $refs resolve within each spec file. OpenAPI 3.0's
`nullable: true` (still used in places) is rewritten to allow null, and
a `"type": null` (no constraint, from the Anthropic generator) dropped.

The stored Anthropic spec predates three request shapes the API accepts
and the Python SDK types (PROVIDERS.md [APY]; INGRESS.md §1.2): image
sources of type "url", tool_choice {"type": "none"}, and PDF document
blocks in a message (the spec has them only in its Beta schemas, as
BetaRequestPDFBlock, which is used as it is). ANTHROPIC_OVERLAY and
overlay_anthropic add exactly those three; everything else is validated
as the spec says.

usage: validate.py ANTHROPIC_SPEC.json OPENAI_SPEC.yaml BODY..."""
import json
import os
import sys

import jsonschema
import yaml

TARGETS = {
    "anthropic": "CreateMessageParams",
    "openai": "CreateChatCompletionRequest",
}


def denull(node):
    """Rewrite {nullable: true, ...} into anyOf [schema, null], recursively."""
    if isinstance(node, list):
        return [denull(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: denull(v) for k, v in node.items()}
    # the Anthropic generator writes "type": null for "no constraint"
    if "type" in out and out["type"] is None:
        del out["type"]
    if isinstance(out.get("type"), list):
        out["type"] = ["null" if t is None else t for t in out["type"]]
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


ANTHROPIC_OVERLAY = {
    "URLImageSource": {
        "type": "object", "additionalProperties": False,
        "required": ["type", "url"],
        "properties": {"type": {"const": "url"}, "url": {"type": "string"}},
    },
    "ToolChoiceNone": {
        "type": "object", "additionalProperties": False,
        "required": ["type"], "properties": {"type": {"const": "none"}},
    },
}


def overlay_anthropic(spec):
    """Add the url image source, tool_choice none and PDF documents (see
    the docstring)."""
    sc = spec["components"]["schemas"]
    sc.update(ANTHROPIC_OVERLAY)
    src = sc["RequestImageBlock"]["properties"]["source"]
    src.pop("discriminator", None)
    src["oneOf"].append({"$ref": "#/components/schemas/URLImageSource"})
    tc = sc["ToolChoice"]
    key = "oneOf" if "oneOf" in tc else "anyOf"
    tc.pop("discriminator", None)
    tc[key].append({"$ref": "#/components/schemas/ToolChoiceNone"})
    items = sc["InputMessage"]["properties"]["content"]["anyOf"][1]["items"]
    pdf = "#/components/schemas/BetaRequestPDFBlock"
    items["discriminator"]["mapping"]["document"] = pdf
    items["oneOf"].append({"$ref": pdf})


def validator(spec, name):
    """A validator for components.schemas[name] with refs into spec."""
    root = {"$ref": "#/components/schemas/" + name,
            "components": denull(spec["components"])}
    cls = jsonschema.Draft202012Validator
    return cls(root, format_checker=jsonschema.FormatChecker())


def load_specs(anthropic_path, openai_path):
    """Both specs, parsed."""
    with open(anthropic_path) as f:
        anthropic = json.load(f)
    with open(openai_path) as f:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        openai = yaml.load(f, Loader=loader)
    overlay_anthropic(anthropic)
    return {"anthropic": anthropic, "openai": openai}


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    specs = load_specs(argv[1], argv[2])
    vals = {k: validator(specs[k], v) for k, v in TARGETS.items()}
    # guard against a vacuous validator: known-bad bodies must fail
    if vals["anthropic"].is_valid({"model": "m", "messages": []}) or \
            vals["openai"].is_valid({"model": "m", "messages": "x"}):
        print("FAIL validator accepts known-bad bodies")
        return 1
    bad = checked = 0
    for path in argv[3:]:
        kind = os.path.basename(path).split("__", 1)[0]
        if kind not in vals:
            continue
        with open(path) as f:
            body = json.load(f)
        errs = sorted(vals[kind].iter_errors(body), key=lambda e: e.path)
        checked += 1
        if errs:
            bad += 1
            print("FAIL %s (%s)" % (os.path.basename(path), TARGETS[kind]))
            for e in errs[:5]:
                print("  at /%s: %s" % ("/".join(map(str, e.path)),
                                        e.message[:300]))
        else:
            print("ok   %s" % os.path.basename(path))
    print("%d bodies checked, %d failed" % (checked, bad))
    return 1 if bad or not checked else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
