#!/usr/bin/env bash
# Demo: attach a container netns to a bridge-lite + portmap-lite network with cnitool (ADD,
# CHECK, DEL), all inside a throw-away "host" netns so the machine's own network is never
# touched. The container publishes port 80 as the host's port 8080.
#   CNI_PATH   where the plugins are (default /opt/cni/bin, where `make install` puts them)
#   DEMO_TYPE  bridge plugin to run (default bridge-lite; "bridge" runs the reference plugin)
#   DEMO_PORTMAP  port-mapping plugin (default portmap-lite; "portmap" is the reference one)
# Needs root, iproute2, iputils-ping, socat and Go (to install cnitool once into the user cache).
set -euo pipefail

CNI_PATH=${CNI_PATH:-/opt/cni/bin}
DEMO_TYPE=${DEMO_TYPE:-bridge-lite}
DEMO_PORTMAP=${DEMO_PORTMAP:-portmap-lite}
CNITOOL_VERSION=v1.3.1
NET=nsnet-demo

[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
found=
IFS=: read -ra dirs <<<"$CNI_PATH"
for p in "$DEMO_TYPE" "$DEMO_PORTMAP"; do
	found=
	for d in "${dirs[@]}"; do [ -x "$d/$p" ] && found=$d/$p && break; done
	[ -n "$found" ] || { echo "demo: plugin $p not found in CNI_PATH=$CNI_PATH (run: make install)" >&2; exit 1; }
done

# cnitool lives in the same cache the test harness uses, so it is installed once.
tooldir=${XDG_CACHE_HOME:-$HOME/.cache}/nsnet-test/cnitool-$CNITOOL_VERSION
cnitool=$tooldir/cnitool
if [ ! -e "$tooldir/.complete" ]; then
	echo "== installing cnitool $CNITOOL_VERSION into $tooldir"
	mkdir -p "$tooldir"
	PATH=$PATH:/usr/local/go/bin GOBIN=$tooldir GOWORK=off \
		go install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"
	touch "$tooldir/.complete"
fi

id=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
host=nsnt$id-host ext=nsnt$id-ext ctr=nsnt$id-c1
tmp=$(mktemp -d)
added=0

server=
ports='{"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}'
in_host() { ip netns exec "$host" env NETCONFPATH="$tmp/net.d" CNI_PATH="$CNI_PATH" CAP_ARGS="$ports" "$@"; }

cleanup() {
	local rc=$?
	set +e
	[ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
	# An ADD that was made is always DELeted; this also drops cnitool's cache entry in /var/lib/cni.
	[ $added = 1 ] && in_host "$cnitool" del "$NET" "/run/netns/$ctr" >/dev/null
	for n in "$ctr" "$ext" "$host"; do ip netns del "$n" 2>/dev/null; done
	rm -rf "$tmp"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== sandbox: host netns $host, outside world $ext, container $ctr"
ip netns add "$host"; ip netns add "$ext"; ip netns add "$ctr"
for n in "$host" "$ext" "$ctr"; do ip -n "$n" link set lo up; done
ip -n "$host" link add up0 mtu 1400 type veth peer name up1 mtu 1400 netns "$ext"
ip -n "$host" addr add 10.97.0.1/24 dev up0; ip -n "$host" link set up0 up
ip -n "$ext" addr add 10.97.0.2/24 dev up1; ip -n "$ext" link set up1 up
ip -n "$host" route add default via 10.97.0.2

mkdir -p "$tmp/net.d"
cat >"$tmp/net.d/10-$NET.conflist" <<CONF
{
  "cniVersion": "1.0.0",
  "name": "$NET",
  "plugins": [{
    "type": "$DEMO_TYPE",
    "bridge": "nsdemo0",
    "isDefaultGateway": true,
    "ipMasq": true,
    "hairpinMode": true,
    "stateDir": "$tmp/state",
    "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": "$tmp/ipam"}
  }, {
    "type": "$DEMO_PORTMAP",
    "capabilities": {"portMappings": true},
    "stateDir": "$tmp/portmap-state"
  }]
}
CONF
echo "== network config ($tmp/net.d/10-$NET.conflist)"
cat "$tmp/net.d/10-$NET.conflist"

echo "== cnitool add $NET /run/netns/$ctr"
added=1
in_host "$cnitool" add "$NET" "/run/netns/$ctr"
echo

addr=$(ip -n "$ctr" -4 -o addr show dev eth0 | awk '{print $4}')
gw=$(ip -n "$ctr" -4 route show default | awk '{print $3}')
echo "== container IP: $addr, gateway: $gw"
ip netns exec "$ctr" ping -c 1 -W 1 "$gw"
echo "== container -> outside world (10.97.0.2), masqueraded by the host"
ip netns exec "$ctr" ping -c 1 -W 1 10.97.0.2

echo "== outside world -> host port 10.97.0.1:8080 -> container port 80"
ip netns exec "$ctr" socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo hello from the container - you connect from $SOCAT_PEERADDR' &
server=$!
for _ in $(seq 50); do ip netns exec "$ctr" ss -ltn | grep -q ':80 ' && break; sleep 0.1; done
reply=$(ip netns exec "$ext" socat -T 2 - TCP:10.97.0.1:8080 </dev/null)
[ -n "$reply" ] || { echo "demo: no reply through the published port" >&2; exit 1; }
echo "$reply"

echo "== cnitool check"
in_host "$cnitool" check "$NET" "/run/netns/$ctr"
echo "ok"

echo "== cnitool del"
in_host "$cnitool" del "$NET" "/run/netns/$ctr"
added=0
if ip -n "$ctr" link show eth0 >/dev/null 2>&1; then
	echo "demo: eth0 still in the container after DEL" >&2
	exit 1
fi
echo "eth0 removed from the container; cleaning up the sandbox"
