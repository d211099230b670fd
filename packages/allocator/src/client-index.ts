/** What an allocation client needs, without the daemon's (dockerode): `@mtc/allocator/client`. */
export { allocatorStatus, requestAllocation } from './client.ts'
export { ALLOCATION_TIMEOUT_MS } from './constants.ts'
export * from './protocol.ts'
