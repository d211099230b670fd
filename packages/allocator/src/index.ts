export { allocatorStatus, requestAllocation } from './client.ts'
export * from './constants.ts'
export * from './protocol.ts'
