import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { ProxyError } from '../src/errors.ts'
import { StreamSlots } from '../src/stream-slots.ts'

describe('StreamSlots', () => {
  it('grants up to the cap at once, then in arrival order as slots are released', async () => {
    const slots = new StreamSlots(2, 10, 5_000)
    await slots.acquire()
    await slots.acquire()
    const order: number[] = []
    const third = slots.acquire().then(() => order.push(3))
    const fourth = slots.acquire().then(() => order.push(4))
    assert.equal(slots.waiting, 2)
    slots.release()
    await third
    assert.deepEqual(order, [3])
    assert.equal(slots.inUse, 2)
    slots.release()
    await fourth
    assert.deepEqual(order, [3, 4])
    slots.release()
    slots.release()
    assert.equal(slots.inUse, 0)
  })

  it('refuses with ERR_INSTANCE_BUSY beyond the waiting bound and after the wait limit', async () => {
    const slots = new StreamSlots(1, 1, 50)
    await slots.acquire()
    const waited = slots.acquire()
    await assert.rejects(slots.acquire(), (e: ProxyError) => e.code === 'ERR_INSTANCE_BUSY')
    await assert.rejects(waited, (e: ProxyError) => e.code === 'ERR_INSTANCE_BUSY')
    assert.equal(slots.waiting, 0)
    slots.release()
    assert.equal(slots.inUse, 0)
  })
})
