/**
 * docs/ERRORS.md and docs/LIMITS.md are what src/docs.ts makes from the code: every error
 * code that leaves a process and every limit, as the packages define them today.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { ERRORS_DOC, errorsDoc, LIMITS_DOC, limitsDoc } from '../src/docs.ts'

const REGENERATE = 'out of date: run `node packages/testkit/src/docs.ts` and commit the result'

describe('mesh-wide docs', () => {
  it('docs/ERRORS.md lists exactly the error codes of the packages', async () => {
    assert.equal(await readFile(ERRORS_DOC, 'utf8'), await errorsDoc(), REGENERATE)
  })

  it('docs/LIMITS.md lists exactly the limits of the packages, with their values', async () => {
    assert.equal(await readFile(LIMITS_DOC, 'utf8'), await limitsDoc(), REGENERATE)
  })

  it('covers every table: a code of each package and a limit of each', async () => {
    const errors = await errorsDoc()
    for (const code of ['ERR_USAGE', 'ERR_UNKNOWN_BLOB', 'ERR_FORBIDDEN', 'ERR_TIMEOUT'])
      assert.match(errors, new RegExp(`\\| \`${code}\` `))
    assert.match(errors, /\| `ERR_UNKNOWN_SERVICE` +\| hl-service, allocator, proxy \(HTTP 404\)/)
    const limits = await limitsDoc()
    assert.match(limits, /\| `RPC_MAX_MESSAGE_BYTES` +\| 64 KiB +\|/)
    assert.match(limits, /\| `DEFAULT_MAX_BLOB_BYTES` +\| 2 GiB +\|/)
  })
})
