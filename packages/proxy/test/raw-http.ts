import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Sends raw bytes on a new TCP connection (in pieces, `pauseMs` apart) and resolves with
 * everything the peer answered once it closes, or after `timeoutMs` (then the socket is
 * destroyed). `abortAfterMs`: destroy the socket that long after the last piece was sent
 * (a client that goes away mid-request).
 */
export async function rawExchange(
  port: number,
  pieces: Array<string | Buffer>,
  options: { pauseMs?: number; abortAfterMs?: number; timeoutMs?: number } = {},
): Promise<string> {
  const socket = connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  const closed = new Promise<void>((resolve) => {
    socket.on('close', () => resolve())
    socket.on('error', () => {})
  })
  const timer = setTimeout(() => socket.destroy(), options.timeoutMs ?? 10_000)
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    for (const [i, piece] of pieces.entries()) {
      if (i > 0 && options.pauseMs != null) await sleep(options.pauseMs)
      if (socket.destroyed) break
      socket.write(piece)
    }
    if (options.abortAfterMs != null) {
      await Promise.race([sleep(options.abortAfterMs), closed])
      socket.destroy()
    }
    await closed
  } finally {
    clearTimeout(timer)
  }
  return Buffer.concat(chunks).toString('latin1')
}

/** The status codes of every response in `answer` (raw bytes of one connection). */
export function statusCodes(answer: string): number[] {
  return [...answer.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]))
}

/** Opens a raw connection and keeps it (for clients that never read). */
export function openRaw(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => resolve(socket))
    socket.once('error', reject)
  })
}
