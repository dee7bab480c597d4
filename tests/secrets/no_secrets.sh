#!/usr/bin/env bash
# No password, password hash or token in any log line or event of the run.
#
#   no_secrets.sh REPO TOPIC_TOOL
#
# Runs last in the suite (tests/secrets/CMakeLists.txt makes it depend on
# every other test). Looks through every file under $SHOP_LOG_DIR (the
# test run folder's logs: each Shop program's, MariaDB's, Kafka's) and
# every record (key, headers, value) of every shop.* topic on
# $SHOP_KAFKA_BROKERS, dead-letter topics included, for:
#   - the passwords the tests use (string literals of the test sources
#     named *PASSWORD* or assigned to a password field, 12 characters or
#     more) and the first admin's ($SHOP_SECRETS_DIR/admin.password);
#   - argon2 hashes ("$argon2");
#   - JWT-shaped strings (eyJ<base64url>.eyJ<base64url>.);
#   - refresh tokens (rt1.<uuid>.<43 base64url characters>).
# First it proves that it can fail: a secret of each kind planted in a
# scratch log folder and on a scratch topic must be found.
set -euo pipefail
repo=${1:?usage: no_secrets.sh REPO TOPIC_TOOL}
topic_tool=${2:?usage: no_secrets.sh REPO TOPIC_TOOL}
: "${SHOP_LOG_DIR:?}" "${SHOP_KAFKA_BROKERS:?}" "${SHOP_SECRETS_DIR:?}"
work=$(mktemp -d /tmp/shop-no-secrets-XXXXXX)
scratch_topic=""
cleanup() {
	rm -rf -- "$work"
	if [ -n "$scratch_topic" ]; then
		"$topic_tool" delete "$SHOP_KAFKA_BROKERS" "$scratch_topic" >/dev/null 2>&1 || true
	fi
}
trap cleanup EXIT

# What to look for: regular expressions and fixed strings.
cat >"$work/patterns" <<'PAT'
\$argon2(id|i|d)?\$
eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.
rt1\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[A-Za-z0-9_-]{43}
PAT
{
	grep -rhoE --include='*.c' '#define [A-Z_]*PASSWORD[A-Z_]* "[^"]{12,}"' "$repo/tests" |
		sed -E 's/^[^"]*"(.*)"$/\1/'
	grep -rhoE --include='*.c' 'password = "[^"]{12,}"' "$repo/tests" | sed -E 's/^[^"]*"(.*)"$/\1/'
	if [ -s "$SHOP_SECRETS_DIR/admin.password" ]; then cat "$SHOP_SECRETS_DIR/admin.password"; echo; fi
} | sed '/^$/d' | sort -u >"$work/passwords"
[ -s "$work/passwords" ] || { echo "no_secrets: found no test password to look for" >&2; exit 1; }

# Prints the offending lines (secrets masked to their first 12
# characters) of the files given; exit 0 when there are some.
find_secrets() {
	local hits=1
	if grep -a -n -H -E -f "$work/patterns" "$@" 2>/dev/null | cut -c1-300 | sed -E 's/(eyJ[A-Za-z0-9_-]{4})[A-Za-z0-9_.-]*/\1.../g; s/(rt1\.[0-9a-f]{4})[A-Za-z0-9_.-]*/\1.../g'; then hits=0; fi
	if grep -a -n -H -F -f "$work/passwords" "$@" 2>/dev/null | cut -c1-120 | sed -E 's/:.*$/: <a test password>/'; then hits=0; fi
	return $hits
}

# Every record of the topics given, one line each: key, headers, value.
dump_topics() {
	local t
	for t in "$@"; do
		kcat -C -q -b "$SHOP_KAFKA_BROKERS" -t "$t" -o beginning -e -f '%t %p %o %k %h %s\n' 2>/dev/null || true
	done
}

# ---- Negative control: planted secrets are found ------------------------------------------
jwt='eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJlLWhlcmU'
rt='rt1.0190c3c2-7e4a-7b3c-8f00-1234567890ab.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
argon='$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g'
password=$(head -n1 "$work/passwords")
mkdir -p "$work/planted"
for secret in "$jwt" "$rt" "$argon" "$password"; do
	printf '{"level":"info","msg":"planted %s"}\n' "$secret" >"$work/planted/p.log"
	if ! find_secrets "$work/planted/p.log" >/dev/null; then
		echo "no_secrets: the negative control failed: a planted secret (${secret:0:8}...) was not found" >&2
		exit 1
	fi
done
scratch_topic="shop.no-secrets-$$-$(date +%s).v1"
"$topic_tool" create "$SHOP_KAFKA_BROKERS" "$scratch_topic"
printf 'k\tvalue with %s inside\n' "$jwt" |
	kcat -P -b "$SHOP_KAFKA_BROKERS" -t "$scratch_topic" -K '\t' -H "ce_actor=$rt" 2>/dev/null
dump_topics "$scratch_topic" >"$work/planted/events"
if ! grep -q . "$work/planted/events" || ! find_secrets "$work/planted/events" >/dev/null; then
	echo "no_secrets: the negative control failed: a planted event secret was not found" >&2
	exit 1
fi
echo "no_secrets: the negative control found every planted secret"

# ---- The run's logs and events ----------------------------------------------------------
status=0
mapfile -t logs < <(find "$SHOP_LOG_DIR" -type f | sort)
echo "no_secrets: ${#logs[@]} log files under $SHOP_LOG_DIR, $(wc -l <"$work/passwords") passwords"
if [ "${#logs[@]}" -gt 0 ] && find_secrets "${logs[@]}"; then
	echo "no_secrets: FAIL: secrets in the logs above" >&2
	status=1
fi
mapfile -t topics < <(kcat -L -b "$SHOP_KAFKA_BROKERS" 2>/dev/null | sed -nE 's/^ *topic "(shop\.[^"]+)".*/\1/p' | grep -v '^shop\.no-secrets-' | sort -u)
dump_topics "${topics[@]}" >"$work/events"
echo "no_secrets: $(wc -l <"$work/events") records of ${#topics[@]} topics"
if find_secrets "$work/events"; then
	echo "no_secrets: FAIL: secrets in the events above" >&2
	status=1
fi
[ "$status" = 0 ] && echo "no_secrets: no password, hash or token in the logs or events"
exit "$status"
