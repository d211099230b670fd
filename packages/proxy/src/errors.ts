import { http } from '@mtc/p2pnode'
import type { ClientResponse } from './client-response.ts'
import { ALLOCATION_FAILURE_HOLD_MS } from './constants.ts'

/**
 * Every error the proxy answers over HTTP: the code goes out in the `X-Mtc-Error`
 * header and at the start of the text body. The README lists exactly these (a test
 * checks it). Codes marked "instance" are produced by the service-mode proxy of the
 * instance and are read by the calling gateway to decide on a retry.
 */
export const PROXY_ERRORS = {
  ERR_BAD_PATH: {
    status: 400,
    message: 'the path must start with /<service>/ (an absolute path with a service name)',
  },
  ERR_BAD_SERVICE_NAME: {
    status: 400,
    message: 'not a service name (lower-case letters, digits and inner dashes, at most 63)',
  },
  ERR_BAD_REQUEST: { status: 400, message: 'malformed HTTP request' },
  ERR_BAD_FRAMING: {
    status: 400,
    message:
      'ambiguous request framing (Content-Length/Transfer-Encoding, Host, or one named in Connection); the connection is closed',
  },
  ERR_UNKNOWN_SERVICE: {
    status: 404,
    message: 'no instance of this service is known, and no allocator knows the service',
  },
  ERR_REQUEST_TIMEOUT: { status: 408, message: 'the request head did not arrive in time' },
  ERR_HEADERS_TOO_LARGE: { status: 431, message: 'the request head is too large' },
  ERR_NOT_SUPPORTED: { status: 501, message: 'CONNECT is not proxied (tunnels are not forwarded)' },
  ERR_INSTANCE_UNREACHABLE: {
    status: 502,
    message: 'the request could not be delivered to an instance, or its connection was lost',
  },
  ERR_SERVICE_RESET: {
    status: 502,
    message: 'instance: the service closed the connection before answering',
  },
  ERR_NO_INSTANCE: {
    status: 503,
    message: 'the service has instances, but none answers or is ready now',
  },
  ERR_INSTANCES_TOO_FAR: {
    status: 503,
    message: "every instance is above the service's hard RTT limit",
  },
  ERR_OVERLOADED: { status: 503, message: 'too many requests in flight through this proxy' },
  ERR_INSTANCE_BUSY: {
    status: 503,
    message: 'every stream to the instance is in use, and none was freed in time',
  },
  ERR_QUEUE_FULL: {
    status: 503,
    message: 'too many requests already wait for an instance of this service to start',
  },
  ERR_ALLOCATION_TIMEOUT: {
    status: 503,
    message: 'an instance is being started, but none was ready within --allocation-timeout',
  },
  ERR_ALLOCATION_FAILED: {
    status: 503,
    message: 'no instance could be started: the allocators failed or did not answer',
    retryAfterSeconds: ALLOCATION_FAILURE_HOLD_MS / 1000,
  },
  ERR_NO_CAPACITY: {
    status: 503,
    message: 'no instance could be started: every allocator is full',
    retryAfterSeconds: ALLOCATION_FAILURE_HOLD_MS / 1000,
  },
  ERR_SHUTTING_DOWN: { status: 503, message: 'the proxy is shutting down' },
  ERR_SERVICE_UNREACHABLE: {
    status: 503,
    message: 'instance: the service does not accept connections',
  },
  ERR_UPSTREAM_TIMEOUT: {
    status: 504,
    message: 'the instance did not answer in time',
  },
} as const satisfies Record<string, { status: number; message: string; retryAfterSeconds?: number }>

export type ProxyErrorCode = keyof typeof PROXY_ERRORS

/** Header naming the mtc error code of an error response. */
export const ERROR_HEADER = 'x-mtc-error'

/** Seconds a client should wait before retrying a 503 (instances may be starting), unless
 * the code says otherwise. */
const RETRY_AFTER_SECONDS = 1

/** An error the proxy answers as HTTP with its code; `detail` adds a sentence. */
export class ProxyError extends Error {
  override readonly name = 'ProxyError'
  readonly code: ProxyErrorCode
  readonly status: number

  constructor(code: ProxyErrorCode, detail?: string, options?: ErrorOptions) {
    super(
      detail != null ? `${PROXY_ERRORS[code].message}: ${detail}` : PROXY_ERRORS[code].message,
      options,
    )
    this.code = code
    this.status = PROXY_ERRORS[code].status
  }
}

/** The status line, headers and body of an error answer. */
export function errorResponse(err: ProxyError): {
  status: number
  headers: Record<string, string>
  body: string
} {
  const body = `${err.code}: ${err.message}\n`
  const headers: Record<string, string> = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    [ERROR_HEADER]: err.code,
  }
  if (err.status === 503) {
    const entry = PROXY_ERRORS[err.code]
    const seconds = 'retryAfterSeconds' in entry ? entry.retryAfterSeconds : RETRY_AFTER_SECONDS
    headers['retry-after'] = String(seconds)
  }
  return { status: err.status, headers, body }
}

/** Answers `res` with the error, unless a response already started (then it is cut). */
export function sendError(res: ClientResponse, err: ProxyError): void {
  if (res.destroyed) return // the client is gone: nobody to tell
  if (res.headersSent) {
    res.destroy(err)
    return
  }
  const { status, headers, body } = errorResponse(err)
  res.writeHead(status, undefined, Object.entries(headers).flat())
  res.end(body)
}

/** The same answer written raw on a socket whose HTTP parser failed (clientError). */
export function rawErrorResponse(err: ProxyError): string {
  const { status, headers, body } = errorResponse(err)
  const lines = [`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}`, 'connection: close']
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`)
  return `${lines.join('\r\n')}\r\n\r\n${body}`
}
