import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as errors from '../src/errors.ts'

const { BlobError, ERRORS, HashLookupError, errorFromCode, isErrorCode } = errors

function isErrorClass(value: unknown): value is new () => errors.RegistryError {
  return (
    typeof value === 'function' &&
    (value.prototype instanceof HashLookupError || value.prototype instanceof BlobError)
  )
}

/** Every exported error class, found by shape so a new class cannot be missed. */
const classes = Object.values(errors as Record<string, unknown>).filter(isErrorClass)

describe('error table', () => {
  it('has unique codes and names', () => {
    assert.equal(new Set(ERRORS.map((e) => e.code)).size, ERRORS.length)
    assert.equal(new Set(ERRORS.map((e) => e.name)).size, ERRORS.length)
  })

  it('lists exactly the exported error classes', () => {
    const fromClasses = classes.map((Class) => {
      const err = new Class()
      return { code: err.code, name: err.name, message: err.message }
    })
    const fromTable = ERRORS.map(({ code, name, message }) => ({ code, name, message }))
    const byCode = (a: { code: string }, b: { code: string }) => a.code.localeCompare(b.code)
    assert.deepEqual(fromClasses.sort(byCode), [...fromTable].sort(byCode))
  })

  it('rebuilds each error from its code', () => {
    for (const { code, name } of ERRORS) {
      const err = errorFromCode(code, 'remote said so')
      assert.equal(err.name, name)
      assert.equal(err.code, code)
      assert.equal(err.message, 'remote said so')
      assert.ok(err instanceof Error)
    }
  })

  it('recognises only known codes', () => {
    assert.equal(isErrorCode('ERR_UNKNOWN_SERVICE'), true)
    assert.equal(isErrorCode('ERR_NOPE'), false)
    assert.equal(isErrorCode('toString'), false)
    assert.equal(isErrorCode(undefined), false)
  })
})
