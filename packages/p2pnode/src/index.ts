export { iterateUntil, raceSignal } from './abort.ts'
export { Announcer, type AnnouncerOptions } from './announcer.ts'
export { writeFileAtomic } from './atomic-file.ts'
export { Backoff, type BackoffInit } from './backoff.ts'
export * from './constants.ts'
export {
  type Daemon,
  type DaemonContext,
  type DaemonSpec,
  type IO,
  MeshDaemon,
  type MeshDaemonInit,
  runDaemon,
} from './daemon.ts'
export { DaemonFlags } from './daemon-flags.ts'
export {
  type DiscoveryKind,
  discoveryKey,
  findProviders,
  hasDhtPeers,
  NoDhtPeersError,
  type ProviderLookupOptions,
  provide,
  streamProviders,
} from './discovery.ts'
export {
  type ErrorInfo,
  type ErrorTable,
  errorTable,
  InvalidKeyFileError,
  InvalidPskError,
  UsageError,
} from './errors.ts'
export { exitWith } from './exit.ts'
export {
  type CommandSpec,
  type FlagSpec,
  type FlagSpecs,
  type FlagValues,
  helpText,
  parseCommandLine,
  parseDurationFlag,
  parseHostPort,
  parseMultiaddrFlag,
  parsePortNumber,
  parsePositiveNumberFlag,
} from './flags.ts'
export { loadOrCreateKey } from './identity.ts'
export {
  answerDrain,
  answerStatus,
  type InstanceStatus,
  queryStatus,
  requestDrain,
} from './instance-status.ts'
export { keygenMain } from './keygen.ts'
export { Lifecycle, type LifecycleLog } from './lifecycle.ts'
export { findReachableProvider, PeerLocator, type PeerLocatorInit } from './locator.ts'
export { configureLogging } from './logging.ts'
export {
  advertisedMetricsHost,
  hostPort,
  METRICS_INFO_PROTOCOL,
  type MetricsInfo,
  multiaddrHost,
  parseMetricsInfo,
  queryMetricsInfo,
  serveMetricsInfo,
} from './metrics-info.ts'
export {
  MetricsServer,
  type MetricsServerInit,
  type RouteHandler,
  sendJson,
} from './metrics-server.ts'
export {
  agentVersion,
  type MeshLibp2p,
  MeshNode,
  type MeshNodeInit,
  type MeshServices,
  roleFromAgentVersion,
  XOR_BACKEND_METRIC,
} from './node.ts'
export {
  LOG_LEVELS,
  type LogLevel,
  NODE_ENV_HELP,
  NODE_FLAGS,
  type NodeConfig,
  type NodeDefaults,
  resolveNodeConfig,
} from './node-config.ts'
export { http } from './node-http.ts'
export { pskProtector } from './pnet.ts'
export { type PeerProbe, probeStatusAndRtt, type StatusQuery } from './probe.ts'
export { ProviderDirectory, type ProviderDirectoryInit } from './provider-directory.ts'
export {
  derivePsk,
  formatSwarmKey,
  generatePsk,
  type Psk,
  parseSwarmKey,
  readSwarmKeyFile,
} from './psk.ts'
export {
  expectReply,
  handleRpc,
  INTERNAL_ERROR_CODE,
  openRpc,
  ProtocolViolationError,
  RemoteError,
  type RpcHandler,
  type RpcOptions,
  type RpcReply,
  RpcStream,
  wireErrorCode,
} from './rpc.ts'
export { probeRtt } from './rtt.ts'
export { encodeVarint } from './stream-io.ts'
export { waitUntil } from './wait.ts'
export { installedSodiumAddon, SODIUM_ADDON_FILE, xorBackend } from './xsalsa20.ts'
