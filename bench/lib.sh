# bench/lib.sh -- shell helpers the bench scripts source.

# A TCP port on 127.0.0.1 nobody listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# Wait until a TCP port (or a Unix socket path) accepts; $2 tries (100),
# 50 ms apart. 0, or 1 when it never did.
wait_up() {
	for _ in $(seq "${2:-100}"); do
		if [[ $1 == /* ]]; then
			[ -S "$1" ] && return 0
		else
			(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		fi
		sleep 0.05
	done
	return 1
}
