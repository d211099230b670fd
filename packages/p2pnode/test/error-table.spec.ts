import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { errorTable } from '../src/errors.ts'

const INFOS = [
  { code: 'ERR_A', name: 'AError', message: 'A went wrong', meaning: 'a' },
  { code: 'ERR_B', name: 'BError', message: 'B went wrong', meaning: 'b' },
] as const

class AError extends Error {
  override readonly name = 'AError'
  readonly code = 'ERR_A'
}
class BError extends Error {
  override readonly name = 'BError'
  readonly code = 'ERR_B'
}

describe('errorTable', () => {
  const table = errorTable<typeof INFOS, AError | BError>(INFOS, { ERR_A: AError, ERR_B: BError })

  it("tells the table's codes from any other value a peer may send", () => {
    assert.equal(table.isCode('ERR_A'), true)
    assert.equal(table.isCode('ERR_B'), true)
    for (const other of ['ERR_C', '', 'toString', 'constructor', '__proto__', 7, null, undefined])
      assert.equal(table.isCode(other), false, String(other))
  })

  it("rebuilds a peer's error as its class, with the peer's message", () => {
    const err = table.fromCode('ERR_B', 'from the peer')
    assert.ok(err instanceof BError)
    assert.equal(err.message, 'from the peer')
    assert.equal(table.defaultMessage('ERR_A'), 'A went wrong')
  })
})
