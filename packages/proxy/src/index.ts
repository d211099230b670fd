export { type AllocationRequest, type Allocator, noAllocator } from './allocator.ts'
export * from './constants.ts'
export {
  ERROR_HEADER,
  PROXY_ERRORS,
  ProxyError,
  type ProxyErrorCode,
} from './errors.ts'
export { type InstanceStatus, queryStatus } from './instance-status.ts'
export { COMMAND, main, parsePositionals, proxySpec } from './main.ts'
export { MeshAgent, type MeshAgentInit } from './mesh-agent.ts'
export { MeshProxy, type MeshProxyInit } from './mesh-proxy.ts'
export {
  mergeRequirements,
  noRequirementsSource,
  parseRequirements,
  type Requirements,
  type RequirementsSource,
  readRequirementsFile,
} from './requirements.ts'
export { type Candidate, LatencyStats, type Ranking, rank } from './selector.ts'
export { parseGatewayTarget } from './service-name.ts'
export { StreamClosedError, StreamDuplex, type StreamDuplexOptions } from './stream-duplex.ts'
