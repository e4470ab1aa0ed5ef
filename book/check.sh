#!/usr/bin/env bash
# Builds the book and fails on anything mdbook only logs: a missing included
# file is logged as an error but still exits 0, and an include whose anchor
# does not exist silently includes nothing. So this script checks every
# `{{#include path:anchor}}` itself, then builds and fails on any ERROR/WARN.
#
# Usage: bash book/check.sh   (from anywhere; needs mdbook on PATH)
set -euo pipefail
book="$(cd "$(dirname "$0")" && pwd)"
status=0

while IFS= read -r hit; do
    chapter="${hit%%:*}"
    rest="${hit#*:}"
    spec="${rest#*\{\{#include }"
    spec="${spec%%\}\}*}"
    path="${spec%%:*}"
    anchor=""
    [[ "$spec" == *:* ]] && anchor="${spec#*:}"
    file="$(dirname "$chapter")/$path"
    if [[ ! -f "$file" ]]; then
        echo "book: $chapter includes $path, which does not exist" >&2
        status=1
        continue
    fi
    # Line ranges (`:10:20`) are not checked; anchors must exist, opened and closed.
    if [[ -n "$anchor" && ! "$anchor" =~ ^[0-9:]+$ ]]; then
        if ! grep -q "ANCHOR: $anchor\$" "$file" || ! grep -q "ANCHOR_END: $anchor\$" "$file"; then
            echo "book: $chapter includes $path:$anchor, but $path has no \`ANCHOR: $anchor\` / \`ANCHOR_END: $anchor\` pair" >&2
            status=1
        fi
    fi
done < <(grep -o '{{#include [^}]*}}' -H "$book"/src/*.md || true)

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! mdbook build "$book" >"$log" 2>&1; then
    cat "$log" >&2
    echo "book: mdbook build failed" >&2
    exit 1
fi
if grep -E '(^|[[:space:]])(ERROR|WARN)[[:space:]]' "$log" >&2; then
    echo "book: mdbook reported the problems above" >&2
    status=1
fi
[[ $status -eq 0 ]] && echo "book: built $(grep -c '\.md)' "$book/src/SUMMARY.md") chapters into $book/book, every include resolved"
exit $status
