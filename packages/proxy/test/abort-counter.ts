/**
 * Preloaded into a proxy by request-cost.spec.ts (`node --import`): counts
 * AbortController.abort() calls in the process and writes the count to
 * `$ABORT_COUNT_DIR/<pid>` every 50 ms, for the test to read from outside.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

const dir = process.env.ABORT_COUNT_DIR
if (dir != null) {
  let count = 0
  const abort = AbortController.prototype.abort
  AbortController.prototype.abort = function (this: AbortController, reason?: unknown): void {
    count++
    abort.call(this, reason)
  }
  const file = join(dir, String(process.pid))
  setInterval(() => writeFileSync(file, String(count)), 50).unref()
}
