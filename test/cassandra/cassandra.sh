#!/usr/bin/env bash
# Runs one throw-away Apache Cassandra node on loopback for the tests.
#
#   cassandra.sh fetch          copy cassandra-all and its dependencies into lib/ (once)
#   cassandra.sh start          start a node on a fresh data directory (or reuse one, see
#                               CASSANDRA_KEEP_DATA), wait until CQL answers, print host:port
#   cassandra.sh stop           stop the node (SIGTERM: it drains), keeping its data directory
#   cassandra.sh kill           kill the node (SIGKILL: a crash), keeping its data directory
#   cassandra.sh restart-keep   stop, then start again on the same data
#   cassandra.sh status         print host:port and exit 0 when CQL answers, else exit 1
#   cassandra.sh log            print the tail of the node's log
#
# Environment (all optional):
#   CASSANDRA_CQL_PORT       CQL port (19042)
#   CASSANDRA_STORAGE_PORT   inter-node port (CQL port - 2042, so 17000 by default)
#   CASSANDRA_RUN_DIR        where data, logs and the pid file go (run/ beside this script,
#                            or run/<port> for a CQL port other than the default)
#   CASSANDRA_LIB_DIR        where the jars go (lib/ beside this script)
#   CASSANDRA_HEAP           -Xms and -Xmx (1G)
#   CASSANDRA_KEEP_DATA      when 1, start reuses the data directory left by stop
#   CASSANDRA_START_TIMEOUT  seconds to wait for CQL (180)
#   CASSANDRA_DURABLE_SCHEMA when 1, schema changes are flushed as in production; by default
#                            they are not (5x faster), and `kill` loses keyspaces created since start
#   CASSANDRA_VERSION        cassandra-all version to fetch (the one in pom.xml)
#
# start returns at once when a node already answers on the port. The node's log is
# RUN_DIR/log/system.log; stdout and stderr of the JVM go to RUN_DIR/log/stdout.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
host=127.0.0.1
default_cql_port=19042
cql_port=${CASSANDRA_CQL_PORT:-$default_cql_port}
storage_port=${CASSANDRA_STORAGE_PORT:-$((cql_port - 2042))}
if [[ -n ${CASSANDRA_RUN_DIR:-} ]]; then
	run_dir=$CASSANDRA_RUN_DIR
elif [[ $cql_port == "$default_cql_port" ]]; then
	run_dir=$here/run
else
	run_dir=$here/run/$cql_port
fi
lib_dir=${CASSANDRA_LIB_DIR:-$here/lib}
heap=${CASSANDRA_HEAP:-1G}
start_timeout=${CASSANDRA_START_TIMEOUT:-180}
pid_file=$run_dir/cassandra.pid
log_dir=$run_dir/log

die() {
	echo "cassandra.sh: $*" >&2
	exit 1
}

# cql_answers sends a CQL v4 OPTIONS frame and checks that a SUPPORTED frame
# comes back: a listening port alone is not enough, the native transport
# accepts connections a moment before it serves them.
cql_answers() {
	local reply
	reply=$(timeout 3 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "\x04\x00\x00\x00\x05\x00\x00\x00\x00" >&3
		head -c 9 <&3 | od -An -tx1
	' _ "$host" "$cql_port" 2>/dev/null) || return 1
	# Response header: version 0x84, flags, stream 0000, opcode 0x06 (SUPPORTED).
	[[ $(echo $reply) == "84 00 00 00 06 "* ]]
}

running_pid() {
	local pid
	[[ -f $pid_file ]] || return 1
	pid=$(<"$pid_file")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	# Guard against a recycled pid: the process must be our JVM.
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q CassandraDaemon || return 1
	echo "$pid"
}

log_tail() {
	local f
	for f in "$log_dir/stdout.log" "$log_dir/system.log"; do
		[[ -s $f ]] || continue
		echo "--- tail of $f" >&2
		tail -n "${1:-40}" "$f" >&2
	done
}

cmd_fetch() {
	if compgen -G "$lib_dir/cassandra-all-*.jar" >/dev/null && compgen -G "$lib_dir/jna-*.jar" >/dev/null; then
		return 0
	fi
	command -v mvn >/dev/null || die "mvn not found: install maven (Debian package maven) and Java 17"
	local version_arg=()
	[[ -n ${CASSANDRA_VERSION:-} ]] && version_arg=(-Dcassandra.version="$CASSANDRA_VERSION")
	local tmp=$lib_dir.tmp.$$
	rm -rf "$tmp"
	# The plugin version is named: Maven 3.8's default dependency plugin is too old.
	mvn -B -q -f "$here/pom.xml" "${version_arg[@]}" \
		org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" ||
		{ rm -rf "$tmp"; die "fetching cassandra-all with maven failed"; }
	rm -rf "$lib_dir"
	mv "$tmp" "$lib_dir"
}

java_opts() {
	# Cassandra's jvm17-server.options and jvm-server.options, cut to what a
	# test node needs; no -XX:+AlwaysPreTouch, which would touch the whole heap.
	local opts=(
		-Xms"$heap" -Xmx"$heap" -Xss256k
		-XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1
		-XX:+ExitOnOutOfMemoryError
		-Djava.net.preferIPv4Stack=true
		-Dchronicle.analytics.disable=true
		-Djdk.attach.allowAttachSelf=true
		-Dio.netty.tryReflectionSetAccessible=true
		--add-exports java.base/jdk.internal.misc=ALL-UNNAMED
		--add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
		--add-exports java.management/com.sun.jmx.remote.security=ALL-UNNAMED
		--add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
		--add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
		--add-exports java.sql/java.sql=ALL-UNNAMED
		--add-exports java.base/java.lang.ref=ALL-UNNAMED
		--add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
	)
	local p
	for p in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
		java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
		java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal \
		java.base/sun.nio.ch java.base/java.io java.base/java.lang.reflect java.base/java.lang \
		java.base/java.util java.base/java.nio; do
		opts+=(--add-opens "$p=ALL-UNNAMED")
	done
	opts+=(
		-Dcassandra-foreground=yes
		-Dcassandra.config="file://$run_dir/conf/cassandra.yaml"
		-Dcassandra.storagedir="$run_dir/data"
		-Dcassandra.logdir="$log_dir"
		-Dcassandra.triggers_dir="$run_dir/triggers"
		-Dlogback.configurationFile="$run_dir/conf/logback.xml"
		# Start fast: a lone node has no gossip to wait for.
		-Dcassandra.skip_wait_for_gossip_to_settle=0
		-Dcassandra.superuser_setup_delay_ms=0
	)
	# Schema changes skip the flush and the commit log: creating a keyspace
	# and its tables takes a fraction of a second instead of seconds, but
	# a node killed (not stopped) forgets the keyspaces and tables created
	# since it started, and the data in them.
	if [[ ${CASSANDRA_DURABLE_SCHEMA:-0} != 1 ]]; then
		opts+=(-Dcassandra.unsafesystem=true -Dcassandra.test.flush_local_schema_changes=false)
	fi
	printf '%s\n' "${opts[@]}"
}

wait_for_cql() {
	local pid=$1 deadline=$((SECONDS + start_timeout))
	until cql_answers; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log_tail 60
			die "cassandra (pid $pid) exited before CQL answered on $host:$cql_port"
		fi
		if ((SECONDS >= deadline)); then
			log_tail 60
			die "CQL did not answer on $host:$cql_port within ${start_timeout}s (pid $pid still running; see $log_dir)"
		fi
		sleep 0.5
	done
}

cmd_start() {
	local pid
	if cql_answers; then
		echo "$host:$cql_port"
		return 0
	fi
	if pid=$(running_pid); then
		# Started earlier and still coming up: wait for it rather than start a second one.
		wait_for_cql "$pid"
		echo "$host:$cql_port"
		return 0
	fi
	command -v java >/dev/null || die "java not found: install Java 17 (Debian package openjdk-17-jre-headless)"
	cmd_fetch

	if [[ ${CASSANDRA_KEEP_DATA:-0} != 1 ]]; then
		rm -rf "$run_dir/data" "$log_dir"
	fi
	mkdir -p "$run_dir/conf" "$run_dir/data" "$run_dir/triggers" "$log_dir"
	sed -e "s/@CQL_PORT@/$cql_port/g" -e "s/@STORAGE_PORT@/$storage_port/g" \
		"$here/cassandra.yaml" >"$run_dir/conf/cassandra.yaml"
	cp "$here/logback.xml" "$run_dir/conf/logback.xml"
	: >"$log_dir/stdout.log"

	local opts
	mapfile -t opts < <(java_opts)
	local started=$SECONDS
	# setsid: the node outlives the shell that started it, and a Ctrl-C in
	# that shell does not reach it. It must not inherit the lock (fd 9).
	setsid java -cp "$run_dir/conf:$lib_dir/*" "${opts[@]}" \
		org.apache.cassandra.service.CassandraDaemon \
		</dev/null >>"$log_dir/stdout.log" 2>&1 9>&- &
	pid=$!
	echo "$pid" >"$pid_file"
	wait_for_cql "$pid"
	echo "cassandra.sh: CQL answers on $host:$cql_port after $((SECONDS - started))s (pid $pid)" >&2
	echo "$host:$cql_port"
}

# cmd_stop SIGNAL stops the node with SIGNAL (TERM by default), escalating
# to KILL after 60s.
cmd_stop() {
	local pid
	pid=$(running_pid) || {
		rm -f "$pid_file"
		return 0
	}
	kill -"${1:-TERM}" "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 60))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			echo "cassandra.sh: pid $pid ignored SIGTERM for 60s, killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.2
	done
	rm -f "$pid_file"
	# The port may linger a moment after the process is gone.
	deadline=$((SECONDS + 10))
	while cql_answers && ((SECONDS < deadline)); do sleep 0.2; done
}

cmd_status() {
	if cql_answers; then
		echo "$host:$cql_port"
		return 0
	fi
	local pid
	if pid=$(running_pid); then
		echo "cassandra.sh: pid $pid is running but CQL does not answer on $host:$cql_port yet" >&2
	else
		echo "cassandra.sh: not running on $host:$cql_port" >&2
	fi
	return 1
}

# lock serialises start, stop and kill of one node: two test processes
# calling start at once must not launch two JVMs on the same ports.
lock() {
	mkdir -p "$run_dir"
	exec 9>"$run_dir/.lock"
	flock 9
}

case ${1:-} in
start | stop | kill | restart-keep) lock ;;
esac

case ${1:-} in
fetch) cmd_fetch ;;
start) cmd_start ;;
stop) cmd_stop TERM ;;
kill) cmd_stop KILL ;;
restart-keep)
	cmd_stop
	CASSANDRA_KEEP_DATA=1 cmd_start
	;;
status) cmd_status ;;
log) log_tail "${2:-80}" 2>&1 ;;
*)
	sed -n '2,/^set -e/s/^# \{0,1\}//p' "$0" | grep -v '^set -e' >&2
	exit 2
	;;
esac
