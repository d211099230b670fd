/**
 * Every limit and default of the hl-service storage layer, with where the number came from.
 * Options objects default to these; README's limits table lists the same names.
 */

// --- names and references ----------------------------------------------------------------

/** A service name is one DNS label (RFC 1035 §2.3.4), so it can appear in host names. */
export const SERVICE_NAME_MAX_LENGTH = 63

/** Docker's reference grammar caps the repository name (`NameTotalLengthMax`). */
export const IMAGE_REPOSITORY_MAX_LENGTH = 255

/** Docker's reference grammar: a tag is `[\w][\w.-]{0,127}`. */
export const IMAGE_TAG_MAX_LENGTH = 128

/** Tag assumed when a reference names neither tag nor digest, as `docker pull` does. */
export const DEFAULT_IMAGE_TAG = 'latest'

/** Registry assumed for references without a registry host, as the Docker CLI does. */
export const DEFAULT_REGISTRY = 'docker.io'

/** Namespace Docker Hub puts single-component ("official") repositories in. */
export const OFFICIAL_REPOSITORY_NAMESPACE = 'library'

// --- service records -----------------------------------------------------------------------

/**
 * Upper bound on an RTT requirement. A "latency requirement" over a minute is a typo, and
 * bounding it keeps the value meaningful to the proxy's timers.
 */
export const MAX_RTT_MS = 60_000

/** Upper bound on the CPU requirement; larger than any single host we schedule on. */
export const MAX_CPUS = 1024

/** A health path is a request target; 256 characters is plenty for `/healthz?deep=1`. */
export const HEALTH_PATH_MAX_LENGTH = 256
/** Health-check period bounds: 100 ms (a check costs one local HTTP request) to 10 min. */
export const MIN_HEALTH_INTERVAL_MS = 100
export const MAX_HEALTH_INTERVAL_MS = 600_000
/** Failed checks in a row before an instance is not ready, at most. */
export const MAX_HEALTH_THRESHOLD = 100

/**
 * Earlier versions kept per record (`hl-cli history`, `hl-cli rollback`): enough to go
 * back a few updates; each is under 1 KiB, so one history value stays small.
 */
export const RECORD_HISTORY_LENGTH = 10

// --- etcd ----------------------------------------------------------------------------------

/** Key prefix of service records; several hl-services share one cluster under it. */
export const DEFAULT_ETCD_PREFIX = '/mtc/services/'

/**
 * Deadline of one store operation (all its etcd calls together). A healthy single-member
 * etcd answers in milliseconds; 2 s lets a down registry fail fast enough for a CLI user.
 */
export const DEFAULT_ETCD_TIMEOUT_MS = 2_000

/** Page size of `list()` when the caller gives none. */
export const DEFAULT_LIST_LIMIT = 100

/**
 * Largest page of `list()`. Records are under 1 KiB, so a page stays far below gRPC's
 * default 4 MiB message limit.
 */
export const MAX_LIST_LIMIT = 1_000

/**
 * Attempts of an unconditional `put()` (read, then compare-and-swap) before it gives up with
 * a ConflictError; more than a handful means the record is being hammered by other writers.
 */
export const MAX_PUT_ATTEMPTS = 5

/**
 * gRPC reconnect backoff towards etcd. grpc-js defaults to 1 s growing to 120 s, which would
 * keep the registry unavailable for minutes after a local etcd restart.
 */
export const ETCD_RECONNECT_BACKOFF_MIN_MS = 100
export const ETCD_RECONNECT_BACKOFF_MAX_MS = 1_000

// --- etcd supervisor -----------------------------------------------------------------------

/** IANA-registered etcd ports. */
export const DEFAULT_ETCD_CLIENT_PORT = 2379
export const DEFAULT_ETCD_PEER_PORT = 2380

export const DEFAULT_ETCD_HOST = '127.0.0.1'
export const DEFAULT_ETCD_MEMBER_NAME = 'mtc-hl'

/** How long a fresh etcd may take to answer /health; it needs well under 2 s on a laptop. */
export const ETCD_START_TIMEOUT_MS = 15_000

/** Interval between /health probes while etcd starts. */
export const ETCD_HEALTH_POLL_MS = 100

/** Deadline of one /health probe. */
export const ETCD_HEALTH_TIMEOUT_MS = 1_000

/** Grace period between SIGTERM and SIGKILL; etcd flushes its WAL in well under a second. */
export const ETCD_STOP_TIMEOUT_MS = 5_000

/** Restart backoff after etcd dies: doubles from the minimum up to the maximum. */
export const ETCD_RESTART_BACKOFF_MIN_MS = 100
export const ETCD_RESTART_BACKOFF_MAX_MS = 10_000

/** A run this long counts as healthy again and resets the restart backoff. */
export const ETCD_STABLE_RUN_MS = 30_000

// --- image tarballs --------------------------------------------------------------------------

/**
 * Largest JSON entry (manifest.json, index.json, OCI manifest, image config) read from a
 * tarball. The OCI distribution spec asks registries to accept manifests of at least 4 MiB;
 * real image configs are tens of KiB.
 */
export const MAX_TARBALL_JSON_BYTES = 4 * 1024 * 1024

/** Total JSON kept in memory while inspecting one tarball. */
export const MAX_TARBALL_METADATA_BYTES = 16 * 1024 * 1024

/** Nesting of OCI image indexes followed (multi-platform images use one level). */
export const MAX_OCI_INDEX_DEPTH = 4

// --- blob store ------------------------------------------------------------------------------

/** Default cap on a stored blob: the blob layer's (`@mtc/blobs`). */
export { DEFAULT_MAX_BLOB_BYTES } from '@mtc/blobs/core'

/**
 * Period of the background sweep for unreferenced blobs. Deletes through this hl-service
 * sweep at once; this catches records changed through another hl-service on the same etcd.
 * One sweep reads every record (a few hundred bytes each), so every 10 min costs nothing.
 */
export const BLOB_GC_INTERVAL_MS = 10 * 60_000

/** Record pages (of MAX_LIST_LIMIT) a sweep reads at most: a million records; beyond, it deletes nothing. */
export const BLOB_GC_MAX_RECORD_PAGES = 1_000

// --- overlay service -------------------------------------------------------------------------

/** How long an upload waits for its blob's DHT announcement before writing the record anyway (re-announced in the background). */
export const BLOB_ANNOUNCE_TIMEOUT_MS = 5_000

/** How often hl-service checks etcd for the `mtc_hl_etcd_up` gauge. */
export const ETCD_HEALTH_CHECK_INTERVAL_MS = 5_000

/** How long a client looks for a reachable hl-service through the DHT. */
export const HL_LOOKUP_TIMEOUT_MS = 15_000

// --- change notices (HL_WATCH) and the client's record cache ---------------------------------

/**
 * hl-service sends a heartbeat on every change-notice stream this often, so a client notices
 * a silent registry (a partition, a hung process) within WATCH_IDLE_TIMEOUT_MS and stops
 * trusting its cache; the bytes are negligible (a 3-byte frame per subscriber).
 */
export const WATCH_HEARTBEAT_MS = 10_000

/** A change-notice stream silent this long (three heartbeats missed) is given up. */
export const WATCH_IDLE_TIMEOUT_MS = 3 * WATCH_HEARTBEAT_MS

/**
 * Change-notice streams hl-service serves at once: one per proxy or allocator process, so
 * this is the mesh size it keeps informed; beyond it clients fall back to short TTLs.
 */
export const MAX_WATCHERS = 10_000

/** Change-notice streams per connection: one per client process, with room for a reconnection and a tool. */
export const MAX_WATCH_STREAMS_PER_CONNECTION = 4

/**
 * Names per change notice; a larger batch (a bulk import, an etcd watch burst) is sent as a
 * reset instead. 256 names of at most 63 characters keep a notice far below the 64 KiB
 * message limit of the overlay protocols.
 */
export const MAX_NAMES_PER_NOTICE = 256

/**
 * Answers (a record, or "no such service") a client caches: a proxy or allocator uses a few
 * hundred services; the cap bounds what a client that makes up names can make it keep
 * (~1 KiB per record).
 */
export const RECORD_CACHE_MAX_ENTRIES = 10_000

/**
 * Reads of one client in flight at once; more wait their turn. Below the 32 streams per
 * connection hl-service accepts per protocol, so a burst of new names is served, not refused.
 */
export const RECORD_CACHE_MAX_READS = 16

/**
 * Without change notices (the stream is down, or an older hl-service), a "no such service"
 * answer is trusted this long: a registration takes effect within it.
 */
export const RECORD_CACHE_NEGATIVE_TTL_MS = 1_000

/** Without change notices, a record is trusted this long. */
export const RECORD_CACHE_POSITIVE_TTL_MS = 30_000

/** One read from hl-service. */
export const RECORD_CACHE_READ_TIMEOUT_MS = 5_000

/** After a failed read or lookup, the registry counts as down (not asked) this long. */
export const RECORD_CACHE_RETRY_MS = 10_000

/** hl-service opens its etcd watch again this long after etcd cancelled it. */
export const WATCH_REOPEN_DELAY_MS = 1_000

/** A lost change-notice stream is opened again after this, doubling up to 10 s. */
export const WATCH_BACKOFF = { initialMs: 250, maxMs: 10_000, factor: 2 }
