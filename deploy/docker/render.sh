#!/bin/sh
# tf-render TEMPLATE OUT [MODE]: a deploy/conf template with its ${NAME} placeholders filled from the environment,
# as deploy/ops/stack/conf.py renders it for the local stack (string.Template syntax): only the template's own
# placeholders are substituted, and a placeholder with no value is an error, not an empty string.
set -eu
template=$1 out=$2 mode=${3:-600}
names=$(grep -o '\${[A-Za-z_][A-Za-z0-9_]*}' "$template" | sort -u | tr -d '${}')
for name in $names; do
    eval "set=\${$name+x}"
    [ -n "$set" ] || { echo "tf-render: $template needs \$$name" >&2; exit 1; }
done
list=$(for name in $names; do printf '${%s} ' "$name"; done)
umask 077
envsubst "$list" < "$template" > "$out.tmp"
chmod "$mode" "$out.tmp"
mv "$out.tmp" "$out"
