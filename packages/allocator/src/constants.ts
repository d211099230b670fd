/**
 * Longest an allocation may take end to end: fetching a 1 GB image over the overlay at
 * ~60 MB/s plus `docker load` and the instance's start fit in two minutes.
 */
export const ALLOCATION_TIMEOUT_MS = 120_000

/** Ports handed to instances; each instance takes PORTS_PER_INSTANCE consecutive ones. */
export const DEFAULT_PORT_RANGE = { first: 20000, last: 29999 }
/** proxy (PROXY_PORT), service (SERVICE_PORT), metrics (METRICS_PORT), overlay (P2P_PORT). */
export const PORTS_PER_INSTANCE = 4
/** A small host runs a handful of services; an operator raises it with --max-instances. */
export const DEFAULT_MAX_INSTANCES = 16
/** The original stopped nothing; 10 minutes idle keeps warm what is used in bursts. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000
/**
 * How often idle instances are looked for; also the fallback that notices exited
 * containers when Docker's event stream is down (it notices them at once otherwise).
 */
export const REAP_INTERVAL_MS = 5_000
/**
 * How often allocators survey each other and the leader checks every service's minimum
 * instances: "an instance within 10 s of `hl-cli add`" with room for a start of ~1 s.
 */
export const KEEPER_INTERVAL_MS = 1_000
/** The other allocators are looked up in the DHT again this often (as the proxy's list). */
export const KEEPER_PEERS_REFRESH_MS = 30_000
/** One survey step (DHT lookup of the allocators, a status query); as the proxy's probe. */
export const KEEPER_LOOKUP_TIMEOUT_MS = 2_000
/** A survey this old is not trusted by the reaper (it counts this host's instances only). */
export const SURVEY_MAX_AGE_MS = 10_000
/** Records listed per round, at most: bounds a round's work in a large registry. */
export const KEEPER_MAX_SERVICES = 10_000
/** Docker's event stream is opened again this long after it ended or failed. */
export const EVENTS_RETRY_MS = 1_000
/** A container that failed to start and could not be removed is tried again this long after. */
export const REMOVE_RETRY_MS = 1_000
/** From container start to "answers through the overlay"; Node services start in < 1 s. */
export const DEFAULT_START_TIMEOUT_MS = 30_000
/** Readiness polling: first wait, and the cap it doubles up to. */
export const READY_POLL_INITIAL_MS = 20
export const READY_POLL_MAX_MS = 250
/**
 * Draining (rolling updates): an instance told to drain is stopped once it had no request
 * for a second, but not before DRAIN_NOTICE_MS (proxies probe their instances every
 * second: by then every active one saw it draining), and at the latest after the drain
 * timeout (`--drain-timeout`: long requests get that long to finish).
 */
export const DRAIN_NOTICE_MS = 3_000
export const DRAIN_POLL_MS = 250
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000
/** How often the allocator checks its instances' health and the records of their services. */
export const ROLLOUT_CHECK_INTERVAL_MS = 1_000
/**
 * Health rounds in a row an instance that was ready reports not ready before it is
 * replaced (the instance's own --health-threshold already debounced its checks).
 */
export const UNHEALTHY_ROUNDS = 2
/** A container gets this long to stop on SIGTERM before Docker kills it. */
export const CONTAINER_STOP_TIMEOUT_S = 5
/** Where an instance finds its PSK and identity (read-only bind mounts). */
export const CONTAINER_PSK_PATH = '/run/mtc/swarm.key'
export const CONTAINER_KEY_PATH = '/run/mtc/identity.key'
/** Labels on every managed container. managed-by: the peer ID of the allocator that started it. */
export const LABEL_MANAGED_BY = 'mtc.managed-by'
/**
 * The allocator that owns the container (re-adopts, counts and reaps it): the ID kept in
 * its data directory (owner-id.ts), which outlives a change of peer identity.
 */
export const LABEL_OWNER = 'mtc.owner'
export const LABEL_SERVICE = 'mtc.service'
export const LABEL_PEER_ID = 'mtc.peer-id'
export const LABEL_PORTS = 'mtc.ports'
export const LABEL_IMAGE_ID = 'mtc.image-id'
/**
 * Deadline of one blob fetch from one provider: this much, plus 1 ms per KB (a 1 MB/s
 * floor), before the next provider is tried.
 */
export const BLOB_FETCH_IDLE_MS = 30_000
/** Providers of a blob tried before giving up. */
export const BLOB_FETCH_MAX_PROVIDERS = 5
