export {
  type AllocationReason,
  type AllocationRequest,
  type Allocator,
  noAllocator,
} from './allocator.ts'
export * from './constants.ts'
export {
  ERROR_HEADER,
  PROXY_ERRORS,
  ProxyError,
  type ProxyErrorCode,
} from './errors.ts'
// The daemon (main, COMMAND, proxySpec) is `@mtc/proxy/daemon`: a root loads no daemon.
export { MeshAgent, type MeshAgentInit } from './mesh-agent.ts'
export { MeshAllocator, type MeshAllocatorInit } from './mesh-allocator.ts'
export { MeshProxy, type MeshProxyInit } from './mesh-proxy.ts'
export { OnDemand, type OnDemandInit } from './on-demand.ts'
export { RegistryRequirements, type RegistryRequirementsInit } from './registry-requirements.ts'
export {
  mergeRequirements,
  noRequirementsSource,
  parseRequirements,
  type Requirements,
  type RequirementsSource,
  readRequirementsFile,
} from './requirements.ts'
export { type ResponseHead, ResponseParser } from './response-parser.ts'
export { type Candidate, LatencyStats, type Ranking, rank } from './selector.ts'
export { parseGatewayTarget } from './service-name.ts'
export { StreamClosedError, StreamDuplex, type StreamDuplexOptions } from './stream-duplex.ts'
export { type Preface, PrefaceError, PrefaceReader } from './stream-preface.ts'
