/**
 * The allocator daemon (`@mtc/allocator/daemon`, for its bin, tests and benches): Docker
 * runtime, instances, image provider, overlay server, metrics; `ALLOCATOR`/`main` run it.
 * What other packages use is the root, `@mtc/allocator`: the client surface.
 */
export { ImageProvider } from './image-provider.ts'
export { type Instance, InstanceManager, type InstanceProbe } from './instances.ts'
export { ALLOCATOR, COMMAND, main } from './main.ts'
export { AllocatorMetrics } from './metrics.ts'
export { loadOrCreateOwnerId, OWNER_ID_FILE } from './owner-id.ts'
export { PortPool } from './port-pool.ts'
export { RolloutDriver } from './rollout.ts'
export {
  type ContainerExit,
  type ContainerInfo,
  type ContainerRuntime,
  type ContainerSpec,
  DockerRuntime,
} from './runtime.ts'
export { AllocatorServer } from './server.ts'
