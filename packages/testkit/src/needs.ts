/**
 * Whether the tests run in CI: `CI` set to anything but "", "0" or "false" (GitHub Actions
 * and most CI services set `CI=true`).
 */
export function inCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = env.CI?.trim().toLowerCase()
  return ci != null && ci !== '' && ci !== '0' && ci !== 'false'
}

/**
 * The skip reason of a test that cannot run here (`missing`: what it needs and lacks, e.g.
 * "needs dockerd"), or undefined when nothing is missing. In CI, where set-up installs
 * everything the tests need, a missing need is a broken set-up: it throws instead, so the
 * test file fails loudly rather than passing as skipped.
 */
export function skipUnlessCi(
  missing: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  if (missing == null) return undefined
  if (inCi(env)) throw new Error(`${missing}: required in CI (CI=${env.CI}), not skipped`)
  return missing
}
