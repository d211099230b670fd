/**
 * An etcd3 client configured to fail fast: the library's defaults retry behind a circuit
 * breaker and reconnect with a backoff growing to minutes, which would leave hl-service
 * hanging or unavailable long after a local etcd restart.
 */

import { Etcd3, type IOptions } from 'etcd3'
import {
  DEFAULT_ETCD_TIMEOUT_MS,
  ETCD_RECONNECT_BACKOFF_MAX_MS,
  ETCD_RECONNECT_BACKOFF_MIN_MS,
} from '../constants.ts'

export interface EtcdClientInit {
  /** Deadline of each unary call, default `DEFAULT_ETCD_TIMEOUT_MS`. */
  timeoutMs?: number
}

type HostPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>

/**
 * Calls straight through. The default per-host circuit breaker keeps refusing calls for 5 s
 * after three failures, i.e. for 5 s after etcd is back.
 */
const passThrough = {
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
  execute: async (fn: (context: { signal: AbortSignal }) => unknown, signal?: AbortSignal) =>
    fn({ signal: signal ?? new AbortController().signal }),
} as unknown as HostPolicy

export function createEtcdClient(endpoints: string[], init: EtcdClientInit = {}): Etcd3 {
  const timeoutMs = init.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS
  return new Etcd3({
    hosts: endpoints,
    grpcOptions: {
      'grpc.initial_reconnect_backoff_ms': ETCD_RECONNECT_BACKOFF_MIN_MS,
      'grpc.max_reconnect_backoff_ms': ETCD_RECONNECT_BACKOFF_MAX_MS,
    },
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + timeoutMs }),
    faultHandling: { host: () => passThrough },
  })
}
