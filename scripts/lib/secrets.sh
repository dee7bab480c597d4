# shellcheck shell=bash
# Secrets of a run folder other than the database passwords (those are
# mariadb.sh's): the JWT signing key (auth.jwt_key_file) and the first
# admin's password (auth.admin_password_file), and the demo customer's
# password (`make run` seeds customer@shop.local with it). Each is generated once, as
# hex from /dev/urandom, mode 600, and reused on every start. Source it; it
# defines names only and runs nothing.

# secrets_make FILE BYTES: writes BYTES random bytes as hex to FILE unless it
# already holds something.
secrets_make() {
	local file=$1 bytes=$2
	[[ -s $file ]] && return 0
	(umask 077 && od -An -N"$bytes" -tx1 /dev/urandom | tr -d ' \n' >"$file.new" &&
		mv -- "$file.new" "$file")
}

# secrets_ensure DIR: the secrets folder of a run folder (<run dir>/secrets).
secrets_ensure() {
	local dir=$1
	mkdir -p -- "$dir"
	chmod 700 -- "$dir"
	# 32 random bytes, 64 hex characters: HS256 wants a key of at least 32.
	secrets_make "$dir/jwt.key" 32
	secrets_make "$dir/admin.password" 24
	secrets_make "$dir/customer.password" 12
}
