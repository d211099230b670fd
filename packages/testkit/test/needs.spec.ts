import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { inCi, skipUnlessCi } from '../src/needs.ts'

describe('skipUnlessCi', () => {
  it('is CI when CI is set to anything but empty, 0 or false', () => {
    assert.equal(inCi({}), false)
    for (const v of ['', '0', 'false', 'FALSE']) assert.equal(inCi({ CI: v }), false, v)
    for (const v of ['true', '1', 'yes']) assert.equal(inCi({ CI: v }), true, v)
  })

  it('outside CI: the reason, as a skip', () => {
    assert.equal(skipUnlessCi('needs dockerd', {}), 'needs dockerd')
    assert.equal(skipUnlessCi(undefined, {}), undefined)
  })

  it('in CI: a missing need throws instead of skipping', () => {
    assert.throws(
      () => skipUnlessCi('needs dockerd', { CI: 'true' }),
      /needs dockerd: required in CI/,
    )
    assert.equal(skipUnlessCi(undefined, { CI: 'true' }), undefined)
  })
})
