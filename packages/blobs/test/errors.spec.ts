import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import * as errors from '../src/errors.ts'

const { BLOB_ERRORS, BlobError, blobErrorFromCode, isBlobErrorCode } = errors

describe('blob error table', () => {
  it('lists exactly the exported error classes', () => {
    const classes = Object.values(errors as Record<string, unknown>).filter(
      (v): v is new () => errors.BlobError =>
        typeof v === 'function' && v.prototype instanceof BlobError,
    )
    const fromClasses = classes.map((Class) => {
      const err = new Class()
      return { code: err.code, name: err.name, message: err.message }
    })
    const fromTable = BLOB_ERRORS.map(({ code, name, message }) => ({ code, name, message }))
    const byCode = (a: { code: string }, b: { code: string }) => a.code.localeCompare(b.code)
    assert.deepEqual(fromClasses.sort(byCode), [...fromTable].sort(byCode))
  })

  it('rebuilds each error from its code, and only known codes', () => {
    for (const { code, name } of BLOB_ERRORS) {
      const err = blobErrorFromCode(code, 'remote said so')
      assert.equal(err.name, name)
      assert.equal(err.message, 'remote said so')
    }
    assert.equal(isBlobErrorCode('ERR_UNKNOWN_BLOB'), true)
    assert.equal(isBlobErrorCode('ERR_UNKNOWN_SERVICE'), false)
    assert.equal(isBlobErrorCode('constructor'), false)
  })

  it('the README lists exactly these codes and classes', async () => {
    const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8')
    const rows = [...readme.matchAll(/^\| `(ERR_[A-Z_]+)` +\| `(\w+)` +\|/gm)].map(
      (m) => `${m[1]} ${m[2]}`,
    )
    assert.deepEqual(
      rows,
      BLOB_ERRORS.map((e) => `${e.code} ${e.name}`),
    )
  })
})
