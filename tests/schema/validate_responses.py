#!/usr/bin/env python3
"""Validate what the Responses ingress produces (dump_responses.c) against
the OpenAI spec:

  create__*    the client requests used as fixtures: CreateResponse
  chat__*      canonical Chat bodies: CreateChatCompletionRequest
  response__*  Response objects: Response
  events__*    event streams: every event against the Response*Event
               schema its "type" names, plus the framing and order of
               INGRESS.md 2.5 (event line = data.type, sequence_number
               0, 1, 2, ...; created and in_progress first; items added,
               streamed and done in turn; one terminal event, last, whose
               response.output holds exactly the items that were done)

Two overlays, and nothing else differs from the spec:
- the spec's ResponseErrorCode enum lacks two codes llmfd sends in
  response.failed because Codex acts on them (INGRESS.md 2.6, 2.7):
  context_length_exceeded and insufficient_quota; ERROR_CODE_OVERLAY adds
  exactly those;
- InputItem is a oneOf whose EasyInputMessage and Item/InputMessage
  branches both match a typed user/developer message such as
  {"type":"message","role":"user","content":[{"type":"input_text",...}]}
  (what Codex sends); OpenAPI picks one by the discriminator, which
  jsonschema ignores, so InputItem is checked as anyOf.

usage: validate_responses.py OPENAI_SPEC.yaml FILE..."""
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate  # noqa: E402  (denull, validator)

import yaml  # noqa: E402

ERROR_CODE_OVERLAY = ["context_length_exceeded", "insufficient_quota"]
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def load_spec(path):
    """The OpenAI spec with the error-code overlay."""
    with open(path) as f:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        spec = yaml.load(f, Loader=loader)
    sc = spec["components"]["schemas"]
    sc["ResponseErrorCode"]["enum"].extend(ERROR_CODE_OVERLAY)
    sc["InputItem"]["anyOf"] = sc["InputItem"].pop("oneOf")
    sc["InputItem"].pop("discriminator", None)
    return spec


def event_schemas(spec):
    """Map event type -> schema name, from ResponseStreamEvent."""
    sc = spec["components"]["schemas"]
    out = {}
    for ref in sc["ResponseStreamEvent"]["anyOf"]:
        name = ref["$ref"].rsplit("/", 1)[1]
        enum = sc[name].get("properties", {}).get("type", {}).get("enum")
        if enum:
            out[enum[0]] = name
    return out


class Checker:
    """Validators built lazily, one per schema name."""

    def __init__(self, spec):
        self.spec = spec
        self.vals = {}
        self.types = event_schemas(spec)

    def errors(self, name, doc):
        if name not in self.vals:
            self.vals[name] = validate.validator(self.spec, name)
        errs = sorted(self.vals[name].iter_errors(doc), key=lambda e: e.path)
        return ["at /%s: %s" % ("/".join(map(str, e.path)), e.message[:300])
                for e in errs[:5]]


def parse_sse(text):
    """[(event name, data dict)], or raise ValueError on bad framing."""
    if not text.endswith("\n\n"):
        raise ValueError("stream does not end with a blank line")
    events = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        if len(lines) != 2 or not lines[0].startswith("event: ") or \
                not lines[1].startswith("data: "):
            raise ValueError("bad event block: %r" % block[:200])
        events.append((lines[0][7:], json.loads(lines[1][6:])))
    return events


def check_order(events):
    """Problems with the INGRESS.md 2.5 order of a parsed stream."""
    bad = []
    names = [e for e, _ in events]
    if names[:2] != ["response.created", "response.in_progress"]:
        bad.append("does not start with created, in_progress")
    terms = [i for i, n in enumerate(names) if n in TERMINAL]
    if terms != [len(names) - 1]:
        bad.append("terminal events at %s of %d" % (terms, len(names)))
    open_item, done = None, []
    for i, (name, d) in enumerate(events):
        if d.get("sequence_number") != i:
            bad.append("event %d has sequence_number %r"
                       % (i, d.get("sequence_number")))
        if name == "response.output_item.added":
            if open_item is not None:
                bad.append("item added while %s is open" % open_item)
            if d["output_index"] != len(done):
                bad.append("output_index %d, expected %d"
                           % (d["output_index"], len(done)))
            open_item = d["item"]["id"]
        elif name == "response.output_item.done":
            if d["item"]["id"] != open_item:
                bad.append("done for %s, open %s"
                           % (d["item"]["id"], open_item))
            done.append(d["item"])
            open_item = None
        elif "item_id" in d and d["item_id"] != open_item:
            bad.append("%s for %s, open %s" % (name, d["item_id"], open_item))
    last = events[-1][1].get("response", {})
    out = last.get("output", [])
    if names[-1] == "response.failed" and open_item is not None:
        out = out[:-1]  # the cut item is reported, not done
    if out != done:
        bad.append("final output is not the items that were done")
    return bad


def check_stream(chk, path):
    """Problems with one events__ file."""
    with open(path) as f:
        try:
            events = parse_sse(f.read())
        except ValueError as e:
            return [str(e)]
    bad = []
    for i, (name, d) in enumerate(events):
        if d.get("type") != name:
            bad.append("event %d: line says %s, data says %s"
                       % (i, name, d.get("type")))
        schema = chk.types.get(name)
        if schema is None:
            bad.append("event %d: no schema for type %s" % (i, name))
            continue
        bad += ["event %d (%s) %s" % (i, name, e)
                for e in chk.errors(schema, d)]
    return bad + check_order(events)


MINIMAL_RESPONSE = {
    "id": "resp_1", "object": "response", "created_at": 0,
    "status": "completed", "error": None, "incomplete_details": None,
    "instructions": None, "model": "m", "tools": [], "output": [],
    "parallel_tool_calls": True, "metadata": {}, "tool_choice": "auto",
    "temperature": 1, "top_p": 1}
MINIMAL_DELTA = {
    "type": "response.output_text.delta", "sequence_number": 4,
    "item_id": "msg_1", "output_index": 0, "content_index": 0,
    "delta": "x", "logprobs": []}


def guard(chk):
    """Failures unless known-good documents pass and known-bad ones fail,
    so the checks cannot pass vacuously."""
    bad = []
    if chk.errors("Response", MINIMAL_RESPONSE):
        bad.append("minimal Response rejected")
    for k, v in (("output", [{"type": "message"}]), ("status", "bogus"),
                 ("usage", {"input_tokens": 1})):
        doc = dict(MINIMAL_RESPONSE, **{k: v})
        if not chk.errors("Response", doc):
            bad.append("Response with bad %s accepted" % k)
    if chk.errors("ResponseTextDeltaEvent", MINIMAL_DELTA):
        bad.append("minimal output_text.delta rejected")
    doc = copy.deepcopy(MINIMAL_DELTA)
    del doc["logprobs"]
    if not chk.errors("ResponseTextDeltaEvent", doc):
        bad.append("output_text.delta without logprobs accepted")
    if not chk.errors("CreateResponse", {"model": "m", "input": 5}):
        bad.append("CreateResponse with input 5 accepted")
    if not chk.errors("CreateChatCompletionRequest",
                      {"model": "m", "messages": "x"}):
        bad.append("chat body with messages 'x' accepted")
    stream = [("response.created", {}), ("response.output_item.added",
              {"output_index": 1, "item": {"id": "a"}, "sequence_number": 1})]
    if not check_order(stream):
        bad.append("out-of-order stream accepted")
    return bad


KINDS = {"create": "CreateResponse", "chat": "CreateChatCompletionRequest",
         "response": "Response"}


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    chk = Checker(load_spec(argv[1]))
    fails = guard(chk)
    for f in fails:
        print("FAIL guard: %s" % f)
    checked = bad = 0
    seen = set()
    for path in argv[2:]:
        kind = os.path.basename(path).split("__", 1)[0]
        if kind == "events":
            errs = check_stream(chk, path)
        elif kind in KINDS:
            with open(path) as f:
                errs = chk.errors(KINDS[kind], json.load(f))
        else:
            continue
        seen.add(kind)
        checked += 1
        if errs:
            bad += 1
            print("FAIL %s" % os.path.basename(path))
            for e in errs[:8]:
                print("  %s" % e)
        else:
            print("ok   %s" % os.path.basename(path))
    missing = set(KINDS) | {"events"}
    missing -= seen
    if missing:
        print("FAIL nothing of kind %s checked" % ", ".join(sorted(missing)))
    print("%d responses files checked, %d failed" % (checked, bad))
    return 1 if bad or fails or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
