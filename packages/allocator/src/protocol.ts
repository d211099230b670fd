import { InvalidNameError, NotFoundError, RegistryUnavailableError } from '@mtc/hash-lookup/core'
import { PROTOCOL_PREFIX } from '@mtc/p2pnode'

/**
 * "Start an instance of service X": one JSON request, one JSON reply once the instance
 * answers through the overlay (or a typed error), framed by p2pnode's RpcStream.
 */
export const ALLOCATE_PROTOCOL = `/${PROTOCOL_PREFIX}/alloc/1.0.0`
/** What an allocator has room for, asked before choosing one. */
export const ALLOCATOR_STATUS_PROTOCOL = `/${PROTOCOL_PREFIX}/alloc-status/1.0.0`

/** The instances of one service this allocator runs, and its rollout of the service. */
export const ALLOCATOR_INSTANCES_PROTOCOL = `/${PROTOCOL_PREFIX}/alloc-instances/1.0.0`

export interface InstancesRequest {
  service: string
}

export interface InstanceReport {
  peerId: string
  imageId: string
  /** At its last health round (the instance's own status). */
  ready: boolean
  /** Being stopped after a replacement got ready. */
  draining: boolean
}

export interface RolloutReport {
  /** The image being rolled out (the record's). */
  imageId: string
  version: number
  state: 'rolling' | 'done' | 'failed'
  /** Why it failed. */
  message?: string
  /** ISO 8601 */
  startedAt: string
  endedAt?: string
}

export interface InstancesReply {
  instances: InstanceReport[]
  /** The last rollout of the service by this allocator, if any. */
  rollout?: RolloutReport
}

export interface AllocateRequest {
  service: string
  /**
   * Scale out: start another instance even if this host runs one (a start of the service
   * already in flight here is shared), up to the record's maxInstances on this host.
   */
  scaleOut?: boolean
}

export interface AllocatedInstance {
  service: string
  /** The instance's proxy: peer ID and full multiaddrs (each ending in /p2p/<peerId>). */
  peerId: string
  addrs: string[]
  /** False when a start already in flight, or a running instance, was handed out. */
  started: boolean
}

export interface AllocateReply {
  instance: AllocatedInstance
}

export interface AllocatorStatusReply {
  running: number
  maxInstances: number
  /** Starts in flight. */
  starting: number
  /** Per service: instances running and starting here (what scaling decisions count). */
  services?: Record<string, { running: number; starting: number }>
}

/** A full host: callers ask another allocator. */
export const NO_CAPACITY = 'ERR_NO_CAPACITY'

/**
 * The allocator's error codes (the `code` of an `{ok:false}` reply). ERR_UNKNOWN_SERVICE
 * and ERR_INVALID_NAME come from the registry unchanged (their codes are the registry's).
 */
export const ALLOCATION_ERRORS = [
  { code: NotFoundError.code, meaning: 'no such service in the registry' },
  { code: InvalidNameError.code, meaning: 'not a valid service name' },
  { code: NO_CAPACITY, meaning: 'this host runs --max-instances already' },
  { code: 'ERR_IMAGE_UNAVAILABLE', meaning: 'the image could not be found, fetched or verified' },
  { code: 'ERR_START_FAILED', meaning: 'the container did not start, or exited' },
  { code: 'ERR_TIMEOUT', meaning: 'the instance did not become ready in time' },
  { code: RegistryUnavailableError.code, meaning: 'no hl-service answered' },
] as const
