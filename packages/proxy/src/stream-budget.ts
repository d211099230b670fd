import type { Stream } from '@libp2p/interface'
import {
  STREAM_BUFFER_BUDGET_BYTES,
  STREAM_MAX_WINDOW_BYTES,
  STREAM_MIN_WINDOW_BYTES,
} from './constants.ts'

/** A stream this budget tracks: its libp2p stream and what the Node side holds. */
export interface BudgetedStream {
  readonly stream: Stream
  readonly readableLength: number
  readonly writableLength: number
}

/** The fields of @chainsafe/libp2p-yamux's YamuxStream that size its receive window. */
interface YamuxWindow {
  maxStreamWindowSize?: unknown
  recvWindow?: unknown
}

/**
 * What the mesh streams of this process may buffer for a reader that stopped reading.
 * A paused stream stops granting yamux window, but what it granted still arrives, and
 * yamux grows a stream's window up to 16 MiB on a fast path: 40 stalled downloads held
 * ~30 MB each. So each stream's receive window is capped at the process budget shared
 * by the streams open (at most STREAM_MAX_WINDOW_BYTES each, never below yamux's
 * initial window, which the remote may always use): a stream buffers at most its window
 * plus the Node side's high-water marks. A window shrinks as streams open, but what it
 * already granted stays granted: streams that stall as they open hold up to the budget
 * × (1 + ln(n / 16)) together (~60 MiB for 40), or n × 256 KiB.
 */
export class StreamBudget {
  private readonly streams = new Set<BudgetedStream>()
  private readonly totalBytes: number
  private window: number

  constructor(totalBytes = STREAM_BUFFER_BUDGET_BYTES) {
    this.totalBytes = totalBytes
    this.window = STREAM_MAX_WINDOW_BYTES
  }

  /** The receive window each stream may grow to now. */
  get windowBytes(): number {
    return this.window
  }

  get openStreams(): number {
    return this.streams.size
  }

  add(s: BudgetedStream): void {
    this.streams.add(s)
    this.rebalance()
    capWindow(s.stream, this.window)
  }

  remove(s: BudgetedStream): void {
    if (this.streams.delete(s)) this.rebalance()
  }

  /** Bytes held now for the streams, each way (Node side and libp2p's buffers). */
  buffered(): { in: number; out: number } {
    let inBytes = 0
    let outBytes = 0
    for (const s of this.streams) {
      inBytes += s.readableLength + (s.stream.readBufferLength ?? 0)
      outBytes += s.writableLength + (s.stream.writeBufferLength ?? 0)
    }
    return { in: inBytes, out: outBytes }
  }

  private rebalance(): void {
    const share = Math.floor(this.totalBytes / Math.max(1, this.streams.size))
    const window = Math.min(STREAM_MAX_WINDOW_BYTES, Math.max(STREAM_MIN_WINDOW_BYTES, share))
    if (window === this.window) return
    const shrinking = window < this.window
    this.window = window
    for (const s of this.streams) {
      if (shrinking) capWindow(s.stream, window)
      else setMaxWindow(s.stream, window)
    }
  }
}

/** Sets how far the stream's window may grow (yamux streams; other muxers: nothing). */
function setMaxWindow(stream: Stream, bytes: number): boolean {
  const y = stream as unknown as YamuxWindow
  if (typeof y.maxStreamWindowSize !== 'number') return false
  y.maxStreamWindowSize = bytes
  return true
}

/** Caps the window: the next window update grants no more than `bytes` outstanding. */
function capWindow(stream: Stream, bytes: number): void {
  if (!setMaxWindow(stream, bytes)) return
  const y = stream as unknown as YamuxWindow
  if (typeof y.recvWindow === 'number' && y.recvWindow > bytes) y.recvWindow = bytes
}

/** The process's budget, shared by every StreamDuplex (gateway and instance side). */
export const streamBudget = new StreamBudget()
