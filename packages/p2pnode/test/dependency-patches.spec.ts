import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'

/** Noise's frame length: 2 bytes big-endian; throws a RangeError when short, as Noise's does. */
function uint16Length(calls: number[]) {
  return (data: Uint8ArrayList | Uint8Array): number => {
    calls.push(data.byteLength)
    if (data.byteLength < 2) throw new RangeError('Could not decode int16BE')
    return data instanceof Uint8Array ? (data[0] << 8) | data[1] : data.getUint16(0)
  }
}

function frame(payload: number[]): Uint8Array {
  return Uint8Array.from([payload.length >> 8, payload.length & 0xff, ...payload])
}

// patches/@libp2p__utils@7.4.1.patch: every encrypted chunk goes through this decoder,
// and an exception per chunk (with its stack trace) cost ~5 µs each.
describe('LengthPrefixedDecoder (patched)', () => {
  it('stops at an empty buffer instead of asking the length decoder to throw', () => {
    const calls: number[] = []
    const decoder = new LengthPrefixedDecoder({
      lengthDecoder: uint16Length(calls),
      encodingLength: () => 2,
    })
    const out = [...decoder.decode(frame([1, 2, 3]))].map((b) => [...b.subarray()])
    assert.deepEqual(out, [[1, 2, 3]])
    assert.deepEqual(calls, [5], 'the length decoder never sees an empty buffer')
  })

  it('still waits for a split length prefix and a split body', () => {
    const calls: number[] = []
    const decoder = new LengthPrefixedDecoder({
      lengthDecoder: uint16Length(calls),
      encodingLength: () => 2,
    })
    const whole = Uint8Array.from([...frame([7, 8]), ...frame([9])])
    const got: number[][] = []
    for (const part of [whole.subarray(0, 1), whole.subarray(1, 3), whole.subarray(3)]) {
      for (const b of decoder.decode(part)) got.push([...b.subarray()])
    }
    assert.deepEqual(got, [[7, 8], [9]])
  })
})
