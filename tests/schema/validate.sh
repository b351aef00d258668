#!/bin/sh
# Schema test: build the request bodies llmfd sends upstream (via
# tests/schema/dump_bodies.c linked against BUILD/libllmfd.a) for every
# client fixture under tests/data, and validate them against the specs in
# SPECS (default /work/shared/specs): Anthropic CreateMessageParams and
# OpenAI CreateChatCompletionRequest; then the Responses ingress outputs
# (tests/schema/dump_responses.c, validate_responses.py: CreateResponse,
# Response, the Response*Event schemas). Needs python3-jsonschema and
# python3-yaml (Debian). Usage: tests/schema/validate.sh [BUILD]
set -eu
cd "$(dirname "$0")/../.."
BUILD=${1:-${LLMFD_BUILD:-build}}
SPECS=${LLMFD_SPECS:-/work/shared/specs}
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
CC=${CC:-cc}
case "$BUILD" in
*asan*) SAN="-fsanitize=address,undefined" ;;
*) SAN= ;;
esac
PKGS="libevent libevent_openssl openssl libconfig"

make -s "$BUILD/libllmfd.a"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
# shellcheck disable=SC2046,SC2086
$CC -std=c11 -D_GNU_SOURCE -I. $SAN $(pkg-config --cflags $PKGS) \
    -o "$tmp/dump_bodies" tests/schema/dump_bodies.c "$BUILD/libllmfd.a" \
    $(pkg-config --libs $PKGS) -lm
# shellcheck disable=SC2046,SC2086
$CC -std=c11 -D_GNU_SOURCE -I. $SAN $(pkg-config --cflags $PKGS) \
    -o "$tmp/dump_responses" tests/schema/dump_responses.c \
    "$BUILD/libllmfd.a" $(pkg-config --libs $PKGS) -lm
mkdir "$tmp/bodies" "$tmp/responses"
"$tmp/dump_bodies" "$tmp/bodies" tests/data/*/req_*.in.json \
    tests/schema/requests/*.json
# Responses ingress: its outputs, and the adapters' bodies built from its
# canonical Chat bodies (validated with the rest below).
"$tmp/dump_responses" "$tmp/responses" "$tmp/bodies" tests/data/responses/* \
    tests/data/anthropic/stream_*.out tests/data/azure/stream_*.out \
    tests/data/gemini/stream_*.out tests/data/anthropic/resp_*.out.json \
    tests/data/azure/resp_*.out.json tests/data/gemini/resp_*.out.json
"$PYTHON" tests/schema/validate.py "$SPECS/anthropic-openapi.json" \
    "$SPECS/openai-openapi.yaml" "$tmp"/bodies/*
# The Anthropic Messages ingress goldens (canonical chat bodies, replies,
# event streams, error bodies).
"$PYTHON" tests/schema/validate_messages.py "$SPECS/anthropic-openapi.json" \
    "$SPECS/openai-openapi.yaml" tests/data/messages
"$PYTHON" tests/schema/validate_responses.py "$SPECS/openai-openapi.yaml" \
    "$tmp"/responses/*
