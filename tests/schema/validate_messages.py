#!/usr/bin/env python3
"""Validate the Anthropic Messages ingress goldens (tests/data/messages/,
which tests/unit/test_ingress_messages.c holds byte-for-byte or
semantically equal to what worker/ingress/messages.c produces) against the
specs:

  to_chat_*.out.json   canonical chat bodies -> OpenAI CreateChatCompletionRequest
                   (llmfd's own fields and top_k, which the engine consumes
                   or drops before any upstream call, removed first)
  reply_*.out.json  Messages replies      -> Anthropic Message
  stream_*.out     Messages SSE streams  -> every event "event: X" with a
                   data object of type X that is a MessageStreamEvent, ping
                   or error event
  err_*.json       error bodies          -> Anthropic ErrorResponse

The stored Anthropic spec is from 2024-11 (specs/SOURCES.md) and predates
shapes the API now returns; RESPONSE_OVERLAY adds exactly those, taken from
anthropics/anthropic-sdk-python @009b035 src/anthropic/types/ (INGRESS.md
[APY]): stop reasons pause_turn, refusal, model_context_window_exceeded
(stop_reason.py); thinking blocks and thinking_delta (thinking_block.py,
thinking_delta.py); error types request_too_large, timeout_error,
billing_error (shared/*_error.py); ping and error events. Known-bad bodies
must fail, so a vacuous validator cannot pass.

usage: validate_messages.py ANTHROPIC_SPEC.json OPENAI_SPEC.yaml DATA_DIR"""
import glob
import json
import os
import sys

import jsonschema

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import validate  # noqa: E402  (same directory: load_specs, validator)

LLMFD_FIELDS = ("fallbacks", "num_retries", "timeout", "stream_timeout",
                "metadata", "top_k")
STOP_REASONS = ["end_turn", "max_tokens", "stop_sequence", "tool_use",
                "pause_turn", "refusal", "model_context_window_exceeded"]

RESPONSE_OVERLAY = {
    "ThinkingBlock": {
        "type": "object", "required": ["type", "thinking", "signature"],
        "properties": {"type": {"const": "thinking"},
                       "thinking": {"type": "string"},
                       "signature": {"type": "string"}},
    },
    "ThinkingDelta": {
        "type": "object", "required": ["type", "thinking"],
        "properties": {"type": {"const": "thinking_delta"},
                       "thinking": {"type": "string"}},
    },
    "PingEvent": {
        "type": "object", "additionalProperties": False,
        "required": ["type"], "properties": {"type": {"const": "ping"}},
    },
    "ErrorEvent": {
        "type": "object", "required": ["type", "error"],
        "properties": {"type": {"const": "error"},
                       "error": {"$ref": "#/components/schemas/ErrorObject"}},
    },
}
NEW_ERRORS = ("request_too_large", "timeout_error", "billing_error")


def one_of(schema):
    """The oneOf/anyOf list of a schema, with its discriminator dropped."""
    schema.pop("discriminator", None)
    return schema["oneOf"] if "oneOf" in schema else schema["anyOf"]


def ref(name):
    return {"$ref": "#/components/schemas/" + name}


def overlay_responses(spec):
    """Add the reply shapes the stored spec predates (see the docstring)."""
    sc = spec["components"]["schemas"]
    sc.update(RESPONSE_OVERLAY)
    for name in ("Message", "MessageDelta"):
        sc[name]["properties"]["stop_reason"] = {
            "anyOf": [{"enum": STOP_REASONS}, {"type": "null"}]}
    one_of(sc["ContentBlock"]).append(ref("ThinkingBlock"))
    one_of(sc["ContentBlockStartEvent"]["properties"]["content_block"]) \
        .append(ref("ThinkingBlock"))
    one_of(sc["ContentBlockDeltaEvent"]["properties"]["delta"]) \
        .append(ref("ThinkingDelta"))
    errs = one_of(sc["ErrorResponse"]["properties"]["error"])
    for t in NEW_ERRORS:
        sc["Error_" + t] = {
            "type": "object", "required": ["type", "message"],
            "properties": {"type": {"const": t},
                           "message": {"type": "string"}}}
        errs.append(ref("Error_" + t))
    sc["ErrorObject"] = {"oneOf": list(errs)}
    sc["StreamEvent"] = {"oneOf": one_of(sc["MessageStreamEvent"]) +
                         [ref("PingEvent"), ref("ErrorEvent")]}


def sse_events(text):
    """(event name, data object) for each event of an SSE text; raises
    ValueError on anything but "event: X\\ndata: {json}\\n\\n" events."""
    if not text.endswith("\n\n"):
        raise ValueError("stream does not end with a blank line")
    out = []
    for ev in text[:-2].split("\n\n"):
        lines = ev.split("\n")
        if len(lines) != 2 or not lines[0].startswith("event: ") or \
                not lines[1].startswith("data: "):
            raise ValueError("malformed event %r" % ev[:80])
        data = json.loads(lines[1][6:])
        if data.get("type") != lines[0][7:]:
            raise ValueError("event %s carries type %r" %
                             (lines[0][7:], data.get("type")))
        out.append(data)
    return out


def chat_body(path):
    """A canonical chat body without llmfd's fields."""
    with open(path) as f:
        body = json.load(f)
    for k in LLMFD_FIELDS:
        body.pop(k, None)
    return body


def errors_of(val, doc):
    return sorted(val.iter_errors(doc), key=lambda e: list(e.path))


def check(kind, val, path):
    """Validation errors (strings) of one golden file."""
    if kind == "stream":
        with open(path) as f:
            try:
                docs = sse_events(f.read())
            except ValueError as e:
                return [str(e)]
    elif kind == "chat":
        docs = [chat_body(path)]
    else:
        with open(path) as f:
            docs = [json.load(f)]
    errs = []
    for d in docs:
        errs += ["at /%s: %s" % ("/".join(map(str, e.path)), e.message[:300])
                 for e in errors_of(val, d)]
    return errs


KNOWN_BAD = {
    "reply": [{"type": "message", "role": "assistant"},
              {"id": "m", "type": "message", "role": "assistant",
               "model": "x", "content": [{"type": "text"}],
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": 1, "output_tokens": 1}},
              {"id": "m", "type": "message", "role": "assistant",
               "model": "x", "content": [], "stop_reason": "stop",
               "stop_sequence": None,
               "usage": {"input_tokens": 1, "output_tokens": 1}}],
    "stream": [{"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta"}},
               {"type": "message_delta", "delta": {"stop_reason": "x"},
                "usage": {"output_tokens": 1}},
               {"type": "ping", "extra": 1}],
    "error": [{"type": "error", "error": {"type": "server_error",
                                          "message": "x"}},
              {"error": {"type": "api_error", "message": "x"}}],
    "chat": [{"model": "m", "messages": "x"}],
}


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    specs = validate.load_specs(argv[1], argv[2])
    overlay_responses(specs["anthropic"])
    vals = {
        "chat": validate.validator(specs["openai"],
                                   "CreateChatCompletionRequest"),
        "reply": validate.validator(specs["anthropic"], "Message"),
        "stream": validate.validator(specs["anthropic"], "StreamEvent"),
        "error": validate.validator(specs["anthropic"], "ErrorResponse"),
    }
    for kind, docs in KNOWN_BAD.items():
        for d in docs:
            if vals[kind].is_valid(d):
                print("FAIL %s validator accepts known-bad %s" % (kind, d))
                return 1
    files = {"chat": "to_chat_*.out.json", "reply": "reply_*.out.json",
             "stream": "stream_*.out", "error": "err_*.json"}
    bad = checked = 0
    for kind, pat in files.items():
        paths = sorted(glob.glob(os.path.join(argv[3], pat)))
        if not paths:
            print("FAIL no %s files under %s" % (pat, argv[3]))
            return 1
        for path in paths:
            errs = check(kind, vals[kind], path)
            checked += 1
            name = os.path.basename(path)
            if errs:
                bad += 1
                print("FAIL %s (%s)" % (name, kind))
                for e in errs[:5]:
                    print("  " + e)
            else:
                print("ok   %s" % name)
    print("%d messages goldens checked, %d failed" % (checked, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
