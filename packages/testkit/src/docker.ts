import { join } from 'node:path'
import { REPO_ROOT, runToEnd } from './index.ts'

/**
 * Helpers for tests that need Docker: the daemon is started by scripts/setup.sh
 * (scripts/dockerd.sh), the images are built by scripts/build-images.sh.
 */

/** A docker CLI call (`docker info` and the like) must answer within this. */
export const DOCKER_CALL_TIMEOUT_MS = 30_000
/** scripts/build-images.sh: a few seconds warm, ~10 s cold; generous for a slow disk. */
export const IMAGE_BUILD_TIMEOUT_MS = 180_000

/** Runs `docker ARGS...`; throws with its stderr when it fails (unless `allowFail`). */
export async function docker(
  args: string[],
  { timeoutMs = DOCKER_CALL_TIMEOUT_MS, allowFail = false } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await runToEnd('docker', args, { timeoutMs })
  if (r.code !== 0 && !allowFail) {
    throw new Error(`docker ${args[0]} failed (${r.code}): ${r.stderr.trim().split('\n').at(-1)}`)
  }
  return r
}

/** Whether a Docker daemon answers. */
export async function dockerAvailable(): Promise<boolean> {
  try {
    return (await docker(['info'], { allowFail: true })).code === 0
  } catch {
    return false // no docker CLI at all
  }
}

let images: Promise<void> | undefined

/**
 * Builds mtc/base and the demo images once per process (scripts/build-images.sh; its
 * layer cache makes a rebuild of unchanged images a matter of seconds).
 */
export function ensureImages(): Promise<void> {
  images ??= (async () => {
    if (!(await dockerAvailable())) {
      throw new Error('no Docker daemon answers: start one with `bash scripts/dockerd.sh`')
    }
    const r = await runToEnd('bash', [join(REPO_ROOT, 'scripts/build-images.sh')], {
      timeoutMs: IMAGE_BUILD_TIMEOUT_MS,
    })
    if (r.code !== 0) {
      throw new Error(`scripts/build-images.sh failed (${r.code}):\n${r.stderr.trim()}`)
    }
  })()
  return images
}

/** Force-removes every container (running or not) carrying `label` (`key` or `key=value`). */
export async function removeContainers(label: string): Promise<number> {
  const ids = (await docker(['ps', '-aq', '--filter', `label=${label}`])).stdout
    .split('\n')
    .filter((id) => id !== '')
  if (ids.length > 0) await docker(['rm', '-f', '-v', ...ids])
  return ids.length
}
