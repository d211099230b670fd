/** What an allocation client needs, without the daemon's (dockerode): `@mtc/allocator/client`. */
export { allocatorInstances, allocatorStatus, requestAllocation } from './client.ts'
export {
  ALLOCATION_TIMEOUT_MS,
  LABEL_MANAGED_BY,
  LABEL_OWNER,
  LABEL_PEER_ID,
  LABEL_PORTS,
  LABEL_SERVICE,
} from './constants.ts'
export * from './protocol.ts'
