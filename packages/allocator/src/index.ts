/**
 * `@mtc/allocator`: what an allocation client needs — request an instance, read an
 * allocator's status, the protocol, errors and limits — without the daemon's dependencies
 * (dockerode). The daemon is `@mtc/allocator/daemon` (src/daemon/), reached from its bin.
 */
export { allocatorInstances, allocatorStatus, requestAllocation } from './client.ts'
export * from './constants.ts'
export { AllocationError, type AllocationErrorCode } from './errors.ts'
export * from './protocol.ts'
