export { allocatorInstances, allocatorStatus, requestAllocation } from './client.ts'
export * from './constants.ts'
export { AllocationError, type AllocationErrorCode } from './errors.ts'
export { ImageProvider } from './image-provider.ts'
export { type Instance, InstanceManager, type InstanceProbe } from './instances.ts'
export { ALLOCATOR, COMMAND, main } from './main.ts'
export { AllocatorMetrics } from './metrics.ts'
export { loadOrCreateOwnerId, OWNER_ID_FILE } from './owner-id.ts'
export { PortPool } from './port-pool.ts'
export * from './protocol.ts'
export { RolloutDriver } from './rollout.ts'
export {
  type ContainerExit,
  type ContainerInfo,
  type ContainerRuntime,
  type ContainerSpec,
  DockerRuntime,
} from './runtime.ts'
export { AllocatorServer } from './server.ts'
