// Package ipam allocates container addresses for the bridge-lite plugin.
//
// ipam.type "host-local" runs in process and shares its data directory with
// the reference host-local binary: one file per address under
// <dataDir>/<network>/ holding "<containerID>\r\n<ifname>", a
// "last_reserved_ip.<rangeSetIndex>" marker per range set and an flock on
// "<dataDir>/<network>/lock" held for every allocation and release. Either
// implementation may therefore serve the same network, one after the other or
// at the same time.
//
// Where this package goes beyond host-local:
//   - A reservation is written to a hidden temp file, fsynced and then moved
//     into place with renameat2(RENAME_NOREPLACE) (link(2) where the file
//     system lacks it), so a crash never leaves a half-written reservation.
//     Temp names start with ".nsnet-"; a scanning DEL and GC delete stale ones.
//   - ADD does not scan the directory for an earlier reservation of the same
//     attachment; the plugin's own state rules out a double ADD, and skipping
//     the scan keeps ADD flat as the network fills.
//   - DEL given the addresses recorded at ADD touches only those files.
//   - CHECK verifies the exact addresses, GC frees what the runtime no longer
//     lists and STATUS reports an exhausted pool or an unusable data directory.
//   - Loopback nameservers from resolvConf are dropped: a container in its own
//     network namespace cannot reach the host's stub resolver.
//
// Error codes: invalid configuration or requested addresses give
// types.ErrInvalidNetworkConfig (7), undecodable JSON types.ErrDecodingFailure
// (6), a missing container ID or bad CNI_ARGS types.ErrInvalidEnvironmentVariables
// (4), a lock not obtained within ten seconds types.ErrTryAgainLater (11), an
// exhausted pool or a taken requested address on ADD types.ErrInternal (999),
// and STATUS failures types.ErrPluginNotAvailable (50).
//
// Any other ipam.type is executed from CNI_PATH as a delegate plugin.
package ipam
