import { connect, type Socket } from 'node:net'
import { quantile } from './stats.ts'

/** Requests before the measured ones: the connection and the client's code warm up. */
const WARMUP_REQUESTS = 200
/** Bounds the samples whatever the speed (a 60 µs path for 10 s is ~170 k). */
const MAX_REQUESTS = 1_000_000
/** A request without its whole answer by then fails the run. */
const ANSWER_TIMEOUT_MS = 10_000
const HEAD_END = Buffer.from('\r\n\r\n')

/** What one sequential run measured; latencies in ms. */
export interface Sequential {
  requests: number
  p50: number
  p99: number
  /** Answers other than 200. */
  errors: number
}

/**
 * GETs `url` one request at a time on one keep-alive connection for `seconds`; each
 * request is timed from its write to the last byte of its answer.
 *
 * The added latency at one connection is measured this way, not with wrk or Node's http
 * client, because on this 2-vCPU VM either client's own cost shows in the tail (2026-11-29,
 * one-service loopback mesh, 4 s per client, p99 direct → mesh):
 *  - wrk: 0.27–1.18 → 1.27–2.65 ms; its slow requests, in a syscall trace, reached the
 *    service 1.7–3 ms after wrk wrote them, which a blocking client does not meet (why, we
 *    did not establish);
 *  - Node's http client: 0.25–0.32 → 1.55–1.67 ms, and +0.10–0.13 ms at p50 through the mesh
 *    only: its CPU per request (~3× this client's) competes with the mesh's processes;
 *  - this client: 0.12–0.15 → 0.74–0.88 ms; a blocking C client: 0.09–0.11 → 0.93–1.19.
 * It reads only what the bench's services send: a head, then a Content-Length body.
 */
export async function sequentialLatency(url: string, seconds: number): Promise<Sequential> {
  const target = new URL(url)
  const request = Buffer.from(
    `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n\r\n`,
    'latin1',
  )
  const samples: number[] = []
  let errors = 0
  let conn: Connection | undefined
  try {
    // A connection the server closes after an answer (`Connection: close`, as nginx does
    // after `keepalive_requests`) is replaced before the next request, not timed.
    const get = async (): Promise<number> => {
      if (conn?.closing !== false) {
        conn?.socket.destroy()
        conn = await Connection.open(target)
      }
      conn.socket.write(request)
      return await conn.next()
    }
    for (let i = 0; i < WARMUP_REQUESTS; i++) await get()
    const end = performance.now() + seconds * 1000
    while (samples.length < MAX_REQUESTS) {
      if (conn?.closing !== false) await get() // a new connection's first request is unmeasured
      const t0 = performance.now()
      const status = await get()
      const t1 = performance.now()
      samples.push(t1 - t0)
      if (status !== 200) errors++
      if (t1 >= end) break
    }
  } finally {
    conn?.socket.destroy()
  }
  return {
    requests: samples.length,
    p50: quantile(samples, 0.5),
    p99: quantile(samples, 0.99),
    errors,
  }
}

/** A keep-alive connection, read one answer at a time: each `next()` resolves with the
 * status of the next whole answer (head and Content-Length body); `closing` once an answer
 * said `Connection: close`. */
class Connection {
  closing = false
  readonly socket: Socket
  private buffered: Buffer = Buffer.alloc(0)
  private waiting?: { resolve: (status: number) => void; reject: (err: Error) => void }
  private failed?: Error

  private constructor(socket: Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
      this.settle()
    })
    const gone = (err?: Error) => this.fail(err ?? new Error('the connection closed'))
    socket.on('error', gone)
    socket.on('close', () => gone())
  }

  static async open(target: URL): Promise<Connection> {
    const socket = connect(Number(target.port), target.hostname)
    socket.setNoDelay(true)
    const conn = new Connection(socket)
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    return conn
  }

  next(): Promise<number> {
    if (this.failed != null) return Promise.reject(this.failed)
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => this.fail(new Error(`no whole answer within ${ANSWER_TIMEOUT_MS} ms`)),
        ANSWER_TIMEOUT_MS,
      )
      this.waiting = {
        resolve: (status) => {
          clearTimeout(timer)
          resolve(status)
        },
        reject: (err) => {
          clearTimeout(timer)
          reject(err)
        },
      }
      this.settle()
    })
  }

  private settle(): void {
    if (this.waiting == null) return
    const headEnd = this.buffered.indexOf(HEAD_END)
    if (headEnd < 0) return
    const head = this.buffered.toString('latin1', 0, headEnd)
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head)
    const length = /\r\ncontent-length: *(\d+)\r?$/im.exec(head)
    if (status == null || length == null || /\r\ntransfer-encoding:/i.test(head)) {
      this.fail(new Error(`an answer the bench does not expect: ${head.slice(0, 200)}`))
      return
    }
    const total = headEnd + HEAD_END.length + Number(length[1])
    if (this.buffered.length < total) return
    if (/\r\nconnection: *close\r?$/im.test(head)) this.closing = true
    this.buffered = this.buffered.subarray(total)
    const { resolve } = this.waiting
    this.waiting = undefined
    resolve(Number(status[1]))
  }

  private fail(err: Error): void {
    this.failed ??= err
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.reject(err)
  }
}
