import { isServiceName } from '@mtc/hash-lookup/client'
import { ProxyError } from './errors.ts'

export interface GatewayTarget {
  service: string
  /** The path on the instance: what followed the service name, query string kept. */
  path: string
}

/** `/<service>/<rest>?<query>` → `{service, path: '/<rest>?<query>'}`; `/<service>` → `/`. */
export function parseGatewayTarget(url: string): GatewayTarget {
  if (!url.startsWith('/')) throw new ProxyError('ERR_BAD_PATH', 'not an absolute path')
  const q = url.indexOf('?')
  const pathname = q < 0 ? url : url.slice(0, q)
  const query = q < 0 ? '' : url.slice(q)
  const slash = pathname.indexOf('/', 1)
  const service = slash < 0 ? pathname.slice(1) : pathname.slice(1, slash)
  if (service === '') throw new ProxyError('ERR_BAD_PATH', 'no service name')
  if (!isServiceName(service)) throw new ProxyError('ERR_BAD_SERVICE_NAME')
  const rest = slash < 0 ? '/' : pathname.slice(slash)
  return { service, path: `${rest}${query}` }
}
