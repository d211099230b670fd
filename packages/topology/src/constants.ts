/** Prefix of every network namespace the harness creates: `mtc-t-<pid>-<seq>[-<host>]`. */
export const NETNS_PREFIX = 'mtc-t-'

/**
 * The simulated WAN's subnet. Host i gets `SUBNET_PREFIX(i+1)/24`; the subnet exists only
 * inside the harness's namespaces, so nothing is ever sent to a real network.
 */
export const SUBNET_PREFIX = '10.99.0.'

/** Hosts per topology: the /24 holds 254 addresses; 64 is far beyond what 2 cores run. */
export const MAX_HOSTS = 64

/** Host names become part of namespace names, so they are short and plain. */
export const HOST_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/

/** Largest RTT a link can be given (ms): beyond it TCP gives up and tests time out. */
export const MAX_RTT_MS = 60_000

/** The name of the WAN interface inside every host namespace (a TUN device). */
export const WAN_IF_PREFIX = 'wan-'

/** How long `ip` and other set-up commands may take before they are killed (ms). */
export const COMMAND_TIMEOUT_MS = 10_000

/** How long the forwarder may take to create its devices, and to answer a command (ms). */
export const FORWARDER_TIMEOUT_MS = 5_000

/** SIGTERM→SIGKILL grace for processes spawned in hosts when the topology is destroyed. */
export const STOP_GRACE_MS = 3_000

/** Probes per pair when measuring, their spacing, and how long one waits for its echo. */
export const PROBE_COUNT = 10
export const PROBE_INTERVAL_MS = 30
export const PROBE_TIMEOUT_MS = 1_000
/** The RTT the forwarder gives base probes (twice forwarder.py's BASE_DELAY_MS). */
export const BASE_PROBE_RTT_MS = 1
/** Measurements of a pair at most, while out of tolerance (see MeasureOptions.attempts). */
export const RTT_ATTEMPTS = 5
/** An echo server ends by itself after this long (s), should it ever be left behind. */
export const ECHO_MAX_LIFETIME_S = 300

/**
 * A measured RTT agrees with the configured one when within 20 % of it, or within 1 ms
 * for small values, plus the base the harness measured for itself (the forwarder and the
 * probes add ~0.3 ms on a quiet machine, more on a busy one).
 */
export const RTT_TOLERANCE_RATIO = 0.2
export const RTT_TOLERANCE_FLOOR_MS = 1

/** Mesh fixture directories: `/tmp/mtc-m-<pid>-<seq>`, short for unix socket paths. */
export const MESH_DIR_PREFIX = 'mtc-m-'
/** A per-host dockerd answers within ~0.2 s here; 20 s leaves room for a slow disk. */
export const DOCKERD_READY_TIMEOUT_MS = 20_000
/** dockerd's own shutdown waits for containerd; with no container left it takes < 1 s. */
export const DOCKERD_STOP_GRACE_MS = 10_000
/** A docker CLI call against a per-host daemon (`docker load` of ~130 MB takes ~1 s). */
export const DOCKER_CALL_TIMEOUT_MS = 60_000

/**
 * Fixed ports inside every host namespace (each has its own loopback and address, so all
 * hosts use the same ones): libp2p on the host's WAN address, metrics on 127.0.0.1.
 */
export const MESH_PORTS = {
  bootstrap: { p2p: 4001, metrics: 9100 },
  allocator: { p2p: 4002, metrics: 9101 },
  'hl-service': { p2p: 4003, metrics: 9102 },
  proxy: { p2p: 4004, metrics: 9103 },
} as const
/** The client proxies' HTTP gateway (127.0.0.1 in their host). */
export const GATEWAY_PORT = 4200
/** Ports the allocators hand to instances: below the ephemeral range (32768+). */
export const INSTANCE_PORT_RANGE = '20000-20399'
/** ping-monitor's probe interval in a mesh: the proxies measure RTTs themselves. */
export const MESH_PING_INTERVAL = '10s'
/** How long a daemon may take to listen (addr file) or answer /healthz. */
export const DAEMON_READY_TIMEOUT_MS = 30_000
/** Until a DHT lookup from a client host finds every allocator and the hl-service. */
export const MESH_DISCOVERY_TIMEOUT_MS = 60_000
