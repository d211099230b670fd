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

/**
 * Default cap on a stored blob. Application images are 100 MB to 1 GB as `docker save`
 * tarballs; operators with larger images raise it.
 */
export const DEFAULT_MAX_BLOB_BYTES = 2 * 1024 * 1024 * 1024

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
