import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Stream } from '@libp2p/interface'
import { STREAM_MAX_WINDOW_BYTES, STREAM_MIN_WINDOW_BYTES } from '../src/constants.ts'
import { type BudgetedStream, StreamBudget } from '../src/stream-budget.ts'

/** The window fields of a yamux stream, and the lengths the budget reads. */
function fakeStream(recvWindow: number): BudgetedStream & {
  stream: { maxStreamWindowSize: number; recvWindow: number }
} {
  const stream = {
    maxStreamWindowSize: 16 * 1024 * 1024,
    recvWindow,
    readBufferLength: 1000,
    writeBufferLength: 10,
  }
  return {
    stream: stream as unknown as Stream & typeof stream,
    readableLength: 5,
    writableLength: 1,
  }
}

describe('StreamBudget', () => {
  it('shares the budget: each stream’s window is capped, between yamux’s initial and the maximum', () => {
    const budget = new StreamBudget(8 * 1024 * 1024)
    const a = fakeStream(16 * 1024 * 1024)
    budget.add(a)
    assert.equal(a.stream.maxStreamWindowSize, STREAM_MAX_WINDOW_BYTES)
    assert.equal(a.stream.recvWindow, STREAM_MAX_WINDOW_BYTES)
    const more = Array.from({ length: 7 }, () => fakeStream(256 * 1024))
    for (const s of more) budget.add(s)
    // 8 MiB among 8 streams: 1 MiB each, the first one's grown window cut down too.
    assert.equal(budget.windowBytes, 1024 * 1024)
    assert.equal(a.stream.maxStreamWindowSize, 1024 * 1024)
    assert.equal(a.stream.recvWindow, 1024 * 1024)
    for (let i = 0; i < 100; i++) budget.add(fakeStream(256 * 1024))
    assert.equal(budget.windowBytes, STREAM_MIN_WINDOW_BYTES)
    assert.deepEqual(budget.buffered(), { in: 108 * 1005, out: 108 * 11 })
    // As streams close, the others may grow again (up to the maximum).
    for (const s of more) budget.remove(s)
    budget.remove(a)
    assert.equal(budget.openStreams, 100)
    assert.equal(budget.windowBytes, STREAM_MIN_WINDOW_BYTES)
  })

  it('leaves streams of other muxers alone', () => {
    const budget = new StreamBudget(1024)
    const other = { stream: {} as Stream, readableLength: 0, writableLength: 0 }
    budget.add(other)
    assert.deepEqual(Object.keys(other.stream), [])
  })
})
